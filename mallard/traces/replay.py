"""Trace rows back to OTLP: each call as the spans an instrumented application would send.

`otlp_request(rows)` turns rows of the traces table (one row per call: the sample world's
production traces) into an `ExportTraceServiceRequest`: per call a root `chain` span (the
application's request: the question, the answer, the user and session), a `retrieval` span with
the retrieved documents (OpenInference `retrieval.documents`), and the `llm` span (GenAI
attributes: model, provider, tokens, messages, the error). Sent to `/v1/otlp/v1/traces`, the
gradeable rows of what is stored equal the rows replayed (mallard.traces.gradeable), which is
what tests/traces/test_replay.py checks on the sample world.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from mallard.traces.schema import CALL_SPAN_ID, normalize_trace_id


def _value(target: Any, value: Any) -> None:
    if isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, list | tuple):
        target.array_value.SetInParent()
        for item in value:
            _value(target.array_value.values.add(), item)
    elif isinstance(value, dict):
        target.kvlist_value.SetInParent()
        for key, item in value.items():
            pair = target.kvlist_value.values.add()
            pair.key = str(key)
            _value(pair.value, item)
    else:
        target.string_value = str(value)


def set_attributes(span: Any, values: dict[str, Any]) -> None:
    """Append `values` to a span's (or resource's) attributes as OTLP AnyValues."""
    for key, value in values.items():
        pair = span.attributes.add()
        pair.key = key
        _value(pair.value, value)


def _nanos(timestamp: Any) -> int:
    seconds = int(timestamp.timestamp())
    return seconds * 1_000_000_000 + timestamp.microsecond * 1000


def _derived(trace_id: str, role: str) -> bytes:
    return hashlib.sha256(f"{trace_id}/{role}".encode()).digest()[:8]


def _documents(ids: list[str], text: str) -> list[tuple[str, str]]:
    """The retrieved text cut into one piece per id where each starts with `[id] ` (as the
    sample world writes it); else the whole text under the first id. Joining the pieces with a
    blank line gives the text back."""
    if not ids:
        return [("", text)] if text else []
    starts: list[int] = []
    position = 0
    for doc_id in ids:
        found = text.find(f"[{doc_id}] ", position)
        if found < 0 or (starts and text[found - 2 : found] != "\n\n") or (not starts and found):
            return [(ids[0], text), *((i, "") for i in ids[1:])]
        starts.append(found)
        position = found + 1
    ends = [s - 2 for s in starts[1:]] + [len(text)]
    return [(doc_id, text[s:e]) for doc_id, s, e in zip(ids, starts, ends, strict=True)]


def otlp_request(rows: Iterable[dict[str, Any]]) -> Any:
    """An ExportTraceServiceRequest holding each row (one call) as root, retrieval and LLM spans."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for row in rows:
        trace_hex = normalize_trace_id(str(row["trace_id"]))
        trace_id = bytes.fromhex(trace_hex)
        if len(trace_id) != 16:
            raise ValueError(f"trace id {row['trace_id']!r} is not a 128-bit id")
        span_id = bytes.fromhex(row.get("span_id") or CALL_SPAN_ID)
        start = _nanos(row["timestamp"])
        end = start + round(float(row["latency_ms"]) * 1_000_000)
        root_id, retrieval_id = _derived(trace_hex, "root"), _derived(trace_hex, "retrieval")
        ids = list(row.get("retrieved_ids") or [])
        documents = _documents(ids, row.get("retrieved_text") or "")

        root = scope.spans.add()
        root.trace_id, root.span_id, root.name = trace_id, root_id, "request"
        root.start_time_unix_nano = start - 2_000_000 - (1_000_000 if documents else 0)
        root.end_time_unix_nano = end + 1_000_000
        values: dict[str, Any] = {"openinference.span.kind": "CHAIN"}
        for key, column in (("input.value", "input"), ("output.value", "output")):
            if row.get(column):
                values[key] = row[column]
        for key, column in (("user.id", "user_id"), ("session.id", "session_id")):
            if row.get(column):
                values[key] = row[column]
        set_attributes(root, values)

        if documents:
            retrieval = scope.spans.add()
            retrieval.trace_id, retrieval.span_id = trace_id, retrieval_id
            retrieval.parent_span_id, retrieval.name = root_id, "retrieve"
            retrieval.start_time_unix_nano = start - 2_000_000
            retrieval.end_time_unix_nano = start - 1_000_000
            values = {"openinference.span.kind": "RETRIEVER"}
            if row.get("input"):
                values["input.value"] = row["input"]
            for index, (doc_id, content) in enumerate(documents):
                values[f"retrieval.documents.{index}.document.id"] = doc_id
                if content:
                    values[f"retrieval.documents.{index}.document.content"] = content
            set_attributes(retrieval, values)

        call = scope.spans.add()
        call.trace_id, call.span_id, call.parent_span_id = trace_id, span_id, root_id
        call.name = row.get("span_name") or ""
        call.start_time_unix_nano, call.end_time_unix_nano = start, end
        values = {}
        if row.get("model"):
            values["gen_ai.response.model"] = row["model"]
        if row.get("provider"):
            values["gen_ai.provider.name"] = row["provider"]
        values["gen_ai.usage.input_tokens"] = int(row.get("prompt_tokens") or 0)
        values["gen_ai.usage.output_tokens"] = int(row.get("completion_tokens") or 0)
        if row.get("input"):
            values["gen_ai.input.messages"] = json.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": row["input"]}]}]
            )
        if row.get("output"):
            values["gen_ai.output.messages"] = json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": row["output"]}]}]
            )
        if row.get("cost_usd"):
            values["mallard.cost_usd"] = float(row["cost_usd"])
        for key, column in (
            ("mallard.endpoint", "endpoint"),
            ("mallard.prompt.name", "prompt_name"),
            ("mallard.run_id", "run_id"),
        ):
            if row.get(column):
                values[key] = row[column]
        if row.get("prompt_version"):
            values["mallard.prompt.version"] = int(row["prompt_version"])
        values["mallard.cache"] = row.get("cache") or "miss"
        if row.get("status") == "error":
            call.status.code = 2
            kind, separator, message = str(row.get("error") or "").partition(": ")
            if separator and kind and " " not in kind:
                values["error.type"] = kind
                call.status.message = message
            else:
                call.status.message = str(row.get("error") or "")
        extra = row.get("attributes") or "{}"
        values.update(json.loads(extra) if isinstance(extra, str) else extra)
        set_attributes(call, values)
    return request
