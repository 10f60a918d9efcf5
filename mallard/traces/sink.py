"""The traces table as the ingestion buffer's sink: one append per flush, each span once.

Idempotency: `(trace_id, span_id)` is the key. A flush keeps the first of the spans it holds
that share a key, then looks up which of the rest the table already holds and appends only the
others. The lookup reads only the files whose timestamp range (Delta's file statistics) overlaps
the flush's: a retried span is the same span, with the same start time, so the files it could be
in are the ones written around it, a few recent files for live traffic. The cost is measured in
benchmarks/traces_ingest.py and reported by `FlushReport` (`check_s`).

Before its first write the sink migrates an old table to the span schema (mallard.traces.migrate).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mallard.lake.buffer import SEGMENTS_KEY, DeltaSink
from mallard.traces.schema import trace_schema

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True)
class FlushReport:
    """One flush: spans offered, duplicates skipped (within the flush and already stored), spans
    appended, and the seconds spent decoding the rows, looking up stored keys, and writing."""

    offered: int
    duplicates_in_batch: int
    duplicates_stored: int
    appended: int
    prepare_s: float
    check_s: float
    write_s: float
    files_checked: int


class TraceSink(DeltaSink):
    """The `traces` Delta table, deduplicated on (trace_id, span_id) at each flush."""

    def __init__(self, table_path: Path | str, *, dedupe: bool = True) -> None:
        super().__init__(table_path, trace_schema)
        self.dedupe = dedupe
        self._migrated = False
        self._delta: Any = None
        self._lock = threading.Lock()
        self.on_flush: Callable[[FlushReport], None] | None = None
        self.totals = {
            "offered": 0,
            "duplicates": 0,
            "appended": 0,
            "flushes": 0,
            "prepare_s": 0.0,
            "check_s": 0.0,
            "write_s": 0.0,
        }
        self.last: FlushReport | None = None

    def _table(self) -> Any:
        from deltalake import DeltaTable

        if self._delta is None:
            if not DeltaTable.is_deltatable(self.table_path):
                return None
            self._delta = DeltaTable(self.table_path)
        else:
            self._delta.update_incremental()
        return self._delta

    def stored_keys(self, batch: pa.Table) -> tuple[set[tuple[str, str]], int]:
        """The keys of `batch` the table already holds, and how many files were read."""
        import pyarrow as pa
        import pyarrow.compute as pc

        table = self._table()
        if table is None or batch.num_rows == 0:
            return set(), 0
        stamps = batch.column("timestamp")
        low, high = pc.min(stamps).as_py(), pc.max(stamps).as_py()
        dataset = table.to_pyarrow_dataset(
            file_pruning_predicate=[("timestamp", ">=", low), ("timestamp", "<=", high)]
        )
        files = len(dataset.files)
        if not files:
            return set(), 0
        kind = batch.schema.field("timestamp").type
        wanted = pc.unique(batch.column("trace_id"))
        found = dataset.to_table(
            columns=["trace_id", "span_id"],
            filter=(pc.field("trace_id").isin(wanted))
            & (pc.field("timestamp") >= pa.scalar(low, type=kind))
            & (pc.field("timestamp") <= pa.scalar(high, type=kind)),
        )
        return set(
            zip(
                found.column("trace_id").to_pylist(),
                found.column("span_id").to_pylist(),
                strict=True,
            )
        ), files

    def write(self, rows: list[dict[str, Any]], segments: list[str]) -> None:
        from deltalake import CommitProperties, write_deltalake

        from mallard.traces.migrate import migrate

        with self._lock:
            if not self._migrated:
                migrate(self.table_path)
                self._migrated = True
                self._delta = None
            started = time.perf_counter()
            batch = self.table(rows)
            prepared = time.perf_counter()
            keys = list(
                zip(
                    batch.column("trace_id").to_pylist(),
                    batch.column("span_id").to_pylist(),
                    strict=True,
                )
            )
            first: dict[tuple[str, str], int] = {}
            for index, key in enumerate(keys):
                first.setdefault(key, index)
            in_batch = len(keys) - len(first)
            stored: set[tuple[str, str]] = set()
            files = 0
            if self.dedupe:
                stored, files = self.stored_keys(batch)
            keep = [index for key, index in first.items() if key not in stored]
            if len(keep) < len(keys):
                batch = batch.take(sorted(keep))
            checked = time.perf_counter()
            if batch.num_rows:
                Path(self.table_path).parent.mkdir(parents=True, exist_ok=True)
                write_deltalake(
                    self._table() or self.table_path,
                    batch,
                    mode="append",
                    commit_properties=CommitProperties(
                        custom_metadata={SEGMENTS_KEY: json.dumps(segments)}
                    ),
                )
            report = FlushReport(
                offered=len(keys),
                duplicates_in_batch=in_batch,
                duplicates_stored=len(first) - len(keep),
                appended=batch.num_rows,
                prepare_s=prepared - started,
                check_s=checked - prepared,
                write_s=time.perf_counter() - checked,
                files_checked=files,
            )
            self.last = report
            totals = self.totals
            totals["offered"] += report.offered
            totals["duplicates"] += report.duplicates_in_batch + report.duplicates_stored
            totals["appended"] += report.appended
            totals["flushes"] += 1
            totals["prepare_s"] += report.prepare_s
            totals["check_s"] += report.check_s
            totals["write_s"] += report.write_s
        if self.on_flush is not None:
            self.on_flush(report)

    def committed(self, segments: Sequence[str]) -> set[str]:
        with self._lock:
            return super().committed(segments)
