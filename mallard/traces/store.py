"""The trace store: the `traces` Delta table, its writers and its readers.

The table's one schema is `mallard.traces.schema`. Two writers: the LLM client's recorder
(Mallard's own calls, buffered in memory) and the ingestion buffer of the API server (spans sent
by applications: a durable write-behind buffer whose sink stores each `(trace_id, span_id)`
once, `mallard.traces.sink`). Readers: `frame` (the spans), `gradeable` (one row per trace,
`mallard.traces.gradeable`), `summary` (volume per hour, model and prompt version).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from mallard.lake.buffer import DurableBuffer
    from mallard.llm.tracing import TraceRecorder
    from mallard.traces.migrate import Migration


@dataclass(frozen=True)
class TraceStore:
    """One `traces` table: where it lives, the writers that append to it, and reads of it."""

    table_path: Path

    def recorder(self, **options: Any) -> TraceRecorder:
        """A buffered writer (one Delta commit per flush); close it to flush what is left."""
        from mallard.llm.tracing import TraceRecorder

        return TraceRecorder(self.table_path, **options)

    def buffer(
        self,
        directory: Path | str,
        *,
        flush_rows: int = 5000,
        flush_interval_s: float = 2.0,
        max_pending_rows: int | None = 100_000,
        dedupe: bool = True,
    ) -> DurableBuffer:
        """The ingestion buffer: spans fsynced under `directory` before the answer, appended
        in one commit per flush, each (trace_id, span_id) once; full at `max_pending_rows`."""
        from mallard.lake.buffer import DurableBuffer
        from mallard.traces.sink import TraceSink

        return DurableBuffer(
            directory,
            TraceSink(self.table_path, dedupe=dedupe),
            flush_rows=flush_rows,
            flush_interval_s=flush_interval_s,
            max_pending_rows=max_pending_rows,
            name="traces",
        )

    def exists(self) -> bool:
        return (self.table_path / "_delta_log").exists()

    def migrate(self) -> Migration | None:
        """Rewrite an old (one row per call) table in the span schema; None if it is current."""
        from mallard.traces.migrate import migrate

        return migrate(self.table_path)

    def version(self) -> int | None:
        """The table's current Delta version, or None before the first write."""
        if not self.exists():
            return None
        from deltalake import DeltaTable

        return DeltaTable(str(self.table_path)).version()

    def arrow(self, columns: list[str] | None = None) -> Any:
        """The table as Arrow in the current schema (an old table is upgraded as it is read),
        one row per (trace_id, span_id)."""
        from deltalake import DeltaTable

        from mallard.traces.migrate import upgrade
        from mallard.traces.schema import trace_schema

        if not self.exists():
            return trace_schema().empty_table()
        table = once_per_key(upgrade(DeltaTable(str(self.table_path)).to_pyarrow_table()))
        return table.select(columns) if columns else table

    def read(self) -> list[dict[str, Any]]:
        """Every row of the table (for tests and small reports); empty when nothing was written."""
        return self.arrow().to_pylist()

    def frame(self, *, since: dt.datetime | None = None) -> pd.DataFrame:
        """The spans as a DataFrame, oldest first (those at or after `since`, when given)."""
        frame = self.arrow().to_pandas()
        if since is not None:
            frame = frame[frame["timestamp"] >= since]
        return frame.sort_values(["timestamp", "trace_id"], kind="stable").reset_index(drop=True)

    def spans(self, trace_id: str) -> list[dict[str, Any]]:
        """One trace's spans, by start time."""
        import pyarrow.compute as pc

        from mallard.traces.schema import normalize_trace_id

        table = self.arrow()
        wanted = normalize_trace_id(trace_id)
        found = table.filter(pc.equal(table.column("trace_id"), wanted)).to_pylist()
        return sorted(found, key=lambda s: s["timestamp"])

    def gradeable(self, *, include_own: bool = False) -> pd.DataFrame:
        """One row per trace, as the graders see it (mallard.traces.gradeable)."""
        from mallard.traces.gradeable import gradeable_frame

        return gradeable_frame(self.frame(), include_own=include_own)

    def summary(self, *, hours: int = 48, now: dt.datetime | None = None) -> dict[str, Any]:
        """What the table holds: spans and traces (Mallard's own and production), spans by kind,
        and volume per hour (the last `hours`), per model and per prompt version."""
        frame = self.frame()
        if frame.empty:
            return {
                "spans": 0,
                "traces": 0,
                "own_spans": 0,
                "production_spans": 0,
                "by_kind": {},
                "per_hour": [],
                "per_model": [],
                "per_prompt_version": [],
            }
        own = frame["run_id"] != ""
        hour = frame["timestamp"].dt.floor("h")
        latest = now or frame["timestamp"].max().to_pydatetime()
        recent = frame[
            hour
            >= (latest - dt.timedelta(hours=hours - 1)).replace(minute=0, second=0, microsecond=0)
        ]
        per_hour = (
            recent.assign(
                hour=recent["timestamp"].dt.floor("h"),
                errors=recent["status"] == "error",
                own=recent["run_id"] != "",
            )
            .groupby("hour")
            .agg(
                spans=("span_id", "size"),
                traces=("trace_id", "nunique"),
                errors=("errors", "sum"),
                own=("own", "sum"),
            )
            .reset_index()
        )
        calls = frame[frame["span_kind"] == "llm"]
        per_model = (
            calls.assign(errors=calls["status"] == "error")
            .groupby(["model"], dropna=False)
            .agg(
                calls=("span_id", "size"),
                errors=("errors", "sum"),
                prompt_tokens=("prompt_tokens", "sum"),
                completion_tokens=("completion_tokens", "sum"),
                cost_usd=("cost_usd", "sum"),
                p50_latency_ms=("latency_ms", "median"),
                p99_latency_ms=("latency_ms", lambda s: float(s.quantile(0.99))),
            )
            .reset_index()
            .sort_values("calls", ascending=False)
        )
        prompts = calls[calls["prompt_name"] != ""]
        per_prompt = (
            prompts.groupby(["prompt_name", "prompt_version"])
            .agg(calls=("span_id", "size"), traces=("trace_id", "nunique"))
            .reset_index()
            .sort_values(["prompt_name", "prompt_version"])
        )
        return {
            "spans": len(frame),
            "traces": int(frame["trace_id"].nunique()),
            "own_spans": int(own.sum()),
            "production_spans": int((~own).sum()),
            "by_kind": {k: int(v) for k, v in frame["span_kind"].value_counts().items()},
            "first": frame["timestamp"].min().isoformat(),
            "last": frame["timestamp"].max().isoformat(),
            "per_hour": [{**r, "hour": r["hour"].isoformat()} for r in _records(per_hour)],
            "per_model": _records(per_model),
            "per_prompt_version": _records(per_prompt),
        }


def once_per_key(table: Any) -> Any:
    """`table` with one row per (trace_id, span_id), the first. A flush skips the keys the table
    holds, but two server workers flushing the same retried batch at once both append it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if table.num_rows < 2:
        return table
    keys = table.select(["trace_id", "span_id"]).append_column(
        "row", pa.array(range(table.num_rows), type=pa.int64())
    )
    first = keys.group_by(["trace_id", "span_id"], use_threads=False).aggregate([("row", "min")])
    if first.num_rows == table.num_rows:
        return table
    rows = first.column("row_min")
    return table.take(pc.take(rows, pc.sort_indices(rows)))


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    import numpy as np

    return [
        {str(k): (v.item() if isinstance(v, np.generic) else v) for k, v in record.items()}
        for record in frame.to_dict("records")
    ]


def trace_store(settings: Any) -> TraceStore:
    """The trace store of a deployment's lake: `<lake>/traces`."""
    return TraceStore(Path(settings.lake_dir) / "traces")
