"""The trace store: the `traces` Delta table and its writer."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from resources.lake import LakeResource

if TYPE_CHECKING:
    from mallard.traces.store import TraceStore


class TraceStoreResource(dg.ConfigurableResource):
    """The `traces` table under the lake root: what LLM clients record and ingestion appends."""

    lake: LakeResource

    def store(self) -> TraceStore:
        from mallard.traces.store import trace_store

        return trace_store(self.lake.settings())
