"""The one schema of the `traces` table: one row per span.

Every recorded span (the LLM client's own calls, the sample world's production traces, and
spans ingested through the API, as JSON rows or OTLP) is a row of this schema in the `traces`
Delta table. A trace is the rows that share a `trace_id`; `(trace_id, span_id)` is the key, and
the ingestion routes store a span once however often it is sent. A span's `span_kind` says what
it did (an LLM call, a retrieval, a chain, a tool call); `mallard.traces.gradeable` turns a
trace's spans into the one row the graders see (docs/TRACES.md).

A call recorded as one row (before spans existed, or by the LLM client) is a one-span trace: its
`span_id` is `CALL_SPAN_ID`, its kind `llm` (`mallard.traces.migrate` rewrites old tables so).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

SPAN_KINDS = ("llm", "retrieval", "chain", "tool", "other")
SPAN_KEY = ("trace_id", "span_id")

TRACE_COLUMNS: dict[str, str] = {
    "trace_id": "the trace the span belongs to (OTLP ids: 32 lowercase hex digits)",
    "span_id": "the span's id, unique within its trace (OTLP ids: 16 lowercase hex digits)",
    "parent_span_id": "the parent span's id, empty for a trace's root span",
    "span_kind": "llm, retrieval, chain, tool or other",
    "span_name": "the span's name (OTLP `name`; empty for rows recorded before spans)",
    "timestamp": "UTC time the span (the call) started",
    "endpoint": "declared endpoint name that answered (after failover)",
    "provider": "the model's provider (gen_ai.provider.name: openai, anthropic, …)",
    "model": "model id the endpoint reported",
    "prompt_name": "prompt registry name, empty when no registered prompt was used",
    "prompt_version": "prompt version number, 0 when none",
    "user_id": "end user the call was made for",
    "session_id": "conversation or batch the call belongs to",
    "run_id": "Dagster run or chain run that made the call, empty for production traffic",
    "input": "the user-visible input (question or rendered prompt)",
    "output": "the model's answer text, empty on error",
    "retrieved_ids": "ids of retrieved context documents",
    "retrieved_text": "the retrieved context as given to the model",
    "latency_ms": "wall time of the span in milliseconds",
    "prompt_tokens": "input tokens",
    "completion_tokens": "output tokens",
    "cost_usd": "cost from the endpoint's declared prices (or as the application reported it)",
    "status": "ok or error",
    "error": "error type and message, empty when ok",
    "cache": "miss, exact or semantic",
    "attributes": "JSON object of anything else (every attribute no column holds)",
}

SPAN_COLUMNS = ("span_id", "parent_span_id", "span_kind", "span_name", "provider")
"""The columns the span schema added to the call schema (`mallard.traces.migrate`)."""


def trace_schema() -> pa.Schema:
    """The Arrow schema of the traces table."""
    import pyarrow as pa

    return pa.schema(
        [
            ("trace_id", pa.string()),
            ("span_id", pa.string()),
            ("parent_span_id", pa.string()),
            ("span_kind", pa.string()),
            ("span_name", pa.string()),
            ("timestamp", pa.timestamp("us", tz="UTC")),
            ("endpoint", pa.string()),
            ("provider", pa.string()),
            ("model", pa.string()),
            ("prompt_name", pa.string()),
            ("prompt_version", pa.int32()),
            ("user_id", pa.string()),
            ("session_id", pa.string()),
            ("run_id", pa.string()),
            ("input", pa.string()),
            ("output", pa.string()),
            ("retrieved_ids", pa.list_(pa.string())),
            ("retrieved_text", pa.string()),
            ("latency_ms", pa.float64()),
            ("prompt_tokens", pa.int32()),
            ("completion_tokens", pa.int32()),
            ("cost_usd", pa.float64()),
            ("status", pa.string()),
            ("error", pa.string()),
            ("cache", pa.string()),
            ("attributes", pa.string()),
        ]
    )


CALL_SPAN_ID = "0000000000000001"
"""The span id of a one-span trace: a call recorded as one row (the LLM client's own calls, the
sample world's, rows recorded before spans, JSON rows without a span id). The trace id makes the
key unique; a fixed id keeps a recorded call's row the same whatever its trace id."""


_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")


def normalize_trace_id(trace_id: str) -> str:
    """A trace id as the table keeps ids that are 128-bit numbers: 32 lowercase hex digits, the
    form OTLP's ids take (a UUID loses its dashes); any other string is kept as it is."""
    if _HEX32.match(trace_id):
        return trace_id.lower()
    if _UUID.match(trace_id):
        return trace_id.replace("-", "").lower()
    return trace_id
