"""The trace store: the `traces` Delta table, its writer, and the API server's ingestion buffer."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from resources.lake import LakeResource

if TYPE_CHECKING:
    from mallard.lake.buffer import DurableBuffer
    from mallard.traces.store import TraceStore


class TraceStoreResource(dg.ConfigurableResource):
    """The `traces` table under the lake root: what LLM clients record and ingestion appends.

    The ingestion buffer (`buffer`) fsyncs each acknowledged batch under `<home>/buffers/traces`
    and appends to the table every `flush_s` seconds (or at `flush_rows` spans), one commit per
    flush, each (trace_id, span_id) once; past `max_pending_rows` spans not yet committed, the
    API answers 429 with Retry-After."""

    lake: LakeResource
    flush_s: float = 2.0
    flush_rows: int = 5000
    max_pending_rows: int = 100_000

    def store(self) -> TraceStore:
        from mallard.traces.store import trace_store

        return trace_store(self.lake.settings())

    def buffer(self) -> DurableBuffer:
        return self.store().buffer(
            self.lake.settings().buffers_dir / "traces",
            flush_rows=self.flush_rows,
            flush_interval_s=self.flush_s,
            max_pending_rows=self.max_pending_rows,
        )
