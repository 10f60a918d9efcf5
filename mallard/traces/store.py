"""The trace store: the `traces` Delta table, its buffered writer and its readers.

The table's one schema is `mallard.traces.schema`; the LLM client's recorder, the sample world
and (later) the ingestion routes all write through a store built here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mallard.llm.tracing import TraceRecorder


@dataclass(frozen=True)
class TraceStore:
    """One `traces` table: where it lives, a recorder that writes to it, and reads of it."""

    table_path: Path

    def recorder(self, **options: Any) -> TraceRecorder:
        """A buffered writer (one Delta commit per flush); close it to flush what is left."""
        from mallard.llm.tracing import TraceRecorder

        return TraceRecorder(self.table_path, **options)

    def exists(self) -> bool:
        return (self.table_path / "_delta_log").exists()

    def read(self) -> list[dict[str, Any]]:
        """Every row of the table (for tests and small reports); empty when nothing was written."""
        from mallard.llm.tracing import read_traces

        return read_traces(self.table_path) if self.exists() else []

    def version(self) -> int | None:
        """The table's current Delta version, or None before the first write."""
        if not self.exists():
            return None
        from deltalake import DeltaTable

        return DeltaTable(str(self.table_path)).version()


def trace_store(settings: Any) -> TraceStore:
    """The trace store of a deployment's lake: `<lake>/traces`."""
    return TraceStore(Path(settings.lake_dir) / "traces")
