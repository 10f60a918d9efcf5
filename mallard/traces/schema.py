"""The one schema of an LLM call trace.

Every recorded LLM call (the client's own calls, the sample world's production traces, and
traces ingested later through the API) is a row of this schema in the `traces` Delta table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

TRACE_COLUMNS: dict[str, str] = {
    "trace_id": "string, unique id of the call",
    "timestamp": "UTC time the call started",
    "endpoint": "declared endpoint name that answered (after failover)",
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
    "latency_ms": "wall time of the call in milliseconds",
    "prompt_tokens": "input tokens",
    "completion_tokens": "output tokens",
    "cost_usd": "cost from the endpoint's declared prices",
    "status": "ok or error",
    "error": "error type and message, empty when ok",
    "cache": "miss, exact or semantic",
    "attributes": "JSON object of anything else",
}


def trace_schema() -> pa.Schema:
    """The Arrow schema of the traces table."""
    import pyarrow as pa

    return pa.schema(
        [
            ("trace_id", pa.string()),
            ("timestamp", pa.timestamp("us", tz="UTC")),
            ("endpoint", pa.string()),
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
