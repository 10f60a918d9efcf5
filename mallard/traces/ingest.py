"""Ingestion: a batch of spans (OTLP or JSON rows) checked whole, then written durably whole.

Both routes end here. A batch is parsed and mapped completely before anything is written: a
malformed span refuses the batch (`TraceInputError`, naming the field) and nothing of it is
kept. A good batch is one line of the trace buffer's write-ahead log, fsynced before this
returns (`DurableBuffer.append`): the caller's 2xx means the spans survive a `kill -9`. A full
buffer refuses the batch (`BufferFull`, with the seconds to wait); nothing is dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mallard.traces import otlp

if TYPE_CHECKING:
    from mallard.lake.buffer import DurableBuffer
    from mallard.traces.rows import TraceBatch


@dataclass(frozen=True)
class Accepted:
    """A batch acknowledged: its spans, their traces, their kinds."""

    spans: int
    traces: int
    kinds: dict[str, int]


def _accept(buffer: DurableBuffer, rows: list[dict[str, Any]]) -> Accepted:
    buffer.append(rows)
    kinds: dict[str, int] = {}
    for row in rows:
        kinds[row["span_kind"]] = kinds.get(row["span_kind"], 0) + 1
    return Accepted(len(rows), len({r["trace_id"] for r in rows}), kinds)


def ingest_otlp(
    buffer: DurableBuffer,
    body: bytes,
    content_type: str | None,
    content_encoding: str | None = None,
    *,
    max_bytes: int = 16 * 1024 * 1024,
) -> Accepted:
    """An OTLP/HTTP export request's spans, written durably (raises TraceInputError, BufferFull)."""
    request = otlp.decode(body, content_type, content_encoding, max_bytes=max_bytes)
    rows = otlp.to_rows(request)
    if not rows:
        return Accepted(0, 0, {})
    return _accept(buffer, rows)


def ingest_rows(buffer: DurableBuffer, batch: TraceBatch) -> Accepted:
    """JSON trace rows (already validated), written durably (raises BufferFull)."""
    return _accept(buffer, [row.row() for row in batch.rows])
