"""Trace rows sent as JSON (`POST /v1/traces`): the table's columns, checked, defaults filled.

A row is one span. Only `trace_id` and `timestamp` are required: a row without a `span_id` is a
one-span trace (span id `CALL_SPAN_ID`, so a retried row keeps its key), with
kind `llm` unless it says otherwise. A field the schema does not have is refused (put it in
`attributes`), as is a wrong type, a negative count, a kind or status not in the lists.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mallard.traces.schema import CALL_SPAN_ID, normalize_trace_id

MAX_ROWS = 10_000
INT32 = 2**31 - 1


class TraceRowIn(BaseModel):
    """One span as a JSON row of the traces table."""

    model_config = ConfigDict(extra="forbid")

    trace_id: str = Field(min_length=1, max_length=128)
    span_id: str = Field(
        "", max_length=128, description="default: 0000000000000001, the span of a one-span trace"
    )
    parent_span_id: str = Field("", max_length=128)
    span_kind: Literal["llm", "retrieval", "chain", "tool", "other"] = "llm"
    span_name: str = ""
    timestamp: dt.datetime = Field(description="when the call started; naive times are UTC")
    endpoint: str = ""
    provider: str = ""
    model: str = ""
    prompt_name: str = ""
    prompt_version: int = Field(0, ge=0, le=INT32)
    user_id: str = ""
    session_id: str = ""
    run_id: str = Field("", description="set only by Mallard's own processes")
    input: str = ""
    output: str = ""
    retrieved_ids: list[str] = Field(default_factory=list)
    retrieved_text: str = ""
    latency_ms: float = Field(0.0, ge=0, allow_inf_nan=False)
    prompt_tokens: int = Field(0, ge=0, le=INT32)
    completion_tokens: int = Field(0, ge=0, le=INT32)
    cost_usd: float = Field(0.0, ge=0, allow_inf_nan=False)
    status: Literal["ok", "error"] = "ok"
    error: str = ""
    cache: str = "miss"
    attributes: dict[str, Any] | str = Field(default_factory=dict)

    @field_validator("attributes")
    @classmethod
    def _json_object(cls, value: dict[str, Any] | str) -> dict[str, Any] | str:
        if isinstance(value, str):
            try:
                parsed = json.loads(value)
            except ValueError:
                raise ValueError("a string of attributes must be a JSON object") from None
            if not isinstance(parsed, dict):
                raise ValueError("a string of attributes must be a JSON object")
        return value

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: dt.datetime) -> dt.datetime:
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)

    def row(self) -> dict[str, Any]:
        """The row as the table stores it (ids normalized, attributes as JSON text)."""
        row = self.model_dump()
        row["trace_id"] = normalize_trace_id(self.trace_id)
        row["span_id"] = self.span_id or CALL_SPAN_ID
        if not isinstance(self.attributes, str):
            row["attributes"] = json.dumps(self.attributes, default=str, ensure_ascii=False)
        return row


class TraceBatch(BaseModel):
    """`POST /v1/traces`: up to 10,000 rows, written all or none."""

    model_config = ConfigDict(extra="forbid")

    rows: list[TraceRowIn] = Field(min_length=1, max_length=MAX_ROWS)
