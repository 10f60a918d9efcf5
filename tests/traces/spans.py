"""OTLP export requests built from raw protobuf (opentelemetry-proto), and their OTLP JSON."""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from mallard.traces.replay import set_attributes


def new_trace_id() -> bytes:
    return os.urandom(16)


def new_span_id() -> bytes:
    return os.urandom(8)


def request(
    spans: list[dict[str, Any]], *, resource: dict[str, Any] | None = None
) -> ExportTraceServiceRequest:
    """Each span: trace_id, span_id (bytes), name, attributes, and optionally parent, start
    and end (ns), status (code, message), events [(name, attributes)], kind."""
    out = ExportTraceServiceRequest()
    resource_spans = out.resource_spans.add()
    if resource:
        set_attributes(resource_spans.resource, resource)
    scope = resource_spans.scope_spans.add()
    scope.scope.name = "tests"
    now = time.time_ns()
    for given in spans:
        span = scope.spans.add()
        span.trace_id = given["trace_id"]
        span.span_id = given["span_id"]
        if given.get("parent"):
            span.parent_span_id = given["parent"]
        span.name = given.get("name", "span")
        span.start_time_unix_nano = given.get("start", now)
        span.end_time_unix_nano = given.get("end", span.start_time_unix_nano + 5_000_000)
        if "kind" in given:
            span.kind = given["kind"]
        set_attributes(span, given.get("attributes", {}))
        if "status" in given:
            span.status.code, span.status.message = given["status"]
        for name, values in given.get("events", []):
            event = span.events.add()
            event.name = name
            event.time_unix_nano = span.start_time_unix_nano
            set_attributes(event, values)
    return out


def llm_spans(count: int) -> tuple[ExportTraceServiceRequest, list[tuple[str, str]]]:
    """`count` one-span traces of GenAI LLM calls, and their (trace_id, span_id) keys in hex."""
    spans = []
    for i in range(count):
        spans.append(
            {
                "trace_id": new_trace_id(),
                "span_id": new_span_id(),
                "name": "chat gpt-4o-mini",
                "attributes": {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.usage.input_tokens": 20 + i,
                    "gen_ai.usage.output_tokens": 5,
                    "gen_ai.input.messages": json.dumps(
                        [{"role": "user", "parts": [{"type": "text", "content": f"q{i}"}]}]
                    ),
                },
            }
        )
    return request(spans), [(s["trace_id"].hex(), s["span_id"].hex()) for s in spans]


def to_json(message: ExportTraceServiceRequest) -> bytes:
    """The request in OTLP JSON: camelCase names, ids as hex (not protobuf's base64)."""
    from google.protobuf.json_format import MessageToDict

    document = MessageToDict(message)
    for resource_spans in document.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return json.dumps(document).encode()
