"""Buffered trace recording: each client call becomes a row of `mallard.traces.schema`, a
one-span trace (span id `CALL_SPAN_ID`, kind `llm`) marked with the `run_id` of
the run that made it, so that grading never reads Mallard's own calls as production traffic.

Rows are appended to an in-memory buffer (a list append under a lock, on the hot path) and written
to the `traces` Delta table by a background thread every `flush_interval_s` seconds, when
`flush_rows` rows are waiting, on `flush()`, and at interpreter exit. One Delta commit per flush,
never one per call.
"""

from __future__ import annotations

import atexit
import json
import logging
import threading
import uuid
import weakref
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mallard.traces.schema import CALL_SPAN_ID, TRACE_COLUMNS

log = logging.getLogger(__name__)

_DEFAULTS: dict[str, Any] = {
    "parent_span_id": "",
    "span_kind": "llm",
    "span_name": "",
    "endpoint": "",
    "provider": "",
    "model": "",
    "prompt_name": "",
    "prompt_version": 0,
    "user_id": "",
    "session_id": "",
    "run_id": "",
    "input": "",
    "output": "",
    "retrieved_ids": [],
    "retrieved_text": "",
    "latency_ms": 0.0,
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "cost_usd": 0.0,
    "status": "ok",
    "error": "",
    "cache": "miss",
    "attributes": "{}",
}


def new_trace_id() -> str:
    return uuid.uuid4().hex


def trace_row(**values: Any) -> dict[str, Any]:
    """A complete trace row: defaults filled in, unknown columns refused."""
    unknown = set(values) - set(TRACE_COLUMNS)
    if unknown:
        raise ValueError(
            f"not trace columns: {sorted(unknown)}; the schema is mallard.traces.schema"
        )
    row = {**_DEFAULTS, **values}
    row.setdefault("trace_id", new_trace_id())
    row.setdefault("span_id", CALL_SPAN_ID)  # each call is a one-span trace
    row.setdefault("timestamp", datetime.now(UTC))
    if not isinstance(row["attributes"], str):
        row["attributes"] = json.dumps(row["attributes"], default=str, sort_keys=True)
    return row


class TraceRecorder:
    """Buffers trace rows and appends them to a Delta table in batches."""

    def __init__(
        self,
        table_path: Path | str,
        *,
        flush_rows: int = 1000,
        flush_interval_s: float = 5.0,
        max_buffer_rows: int = 100_000,
    ):
        self.table_path = Path(table_path)
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self.max_buffer_rows = max_buffer_rows
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._migrated = False
        self.written = 0
        self.commits = 0
        self.dropped = 0
        _live.add(self)

    def record(self, row: dict[str, Any]) -> None:
        with self._lock:
            if len(self._rows) >= self.max_buffer_rows:
                self.dropped += 1  # the lake is unwritable for long: keep memory bounded
                return
            self._rows.append(row)
            pending = len(self._rows)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name="mallard-trace-flush", daemon=True
                )
                self._thread.start()
        if pending >= self.flush_rows:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._rows)

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - a flush failure must not kill the flusher
                log.exception(
                    "trace flush to %s failed; rows kept for the next flush", self.table_path
                )

    def flush(self) -> int:
        """Write every buffered row in one Delta commit; returns how many were written."""
        with self._write_lock:
            with self._lock:
                rows, self._rows = self._rows, []
            if not rows:
                return 0
            try:
                import pyarrow as pa
                from deltalake import write_deltalake

                from mallard.traces.migrate import migrate
                from mallard.traces.schema import trace_schema

                if not self._migrated:  # a table of calls becomes one of spans first
                    migrate(self.table_path)
                    self._migrated = True
                table = pa.Table.from_pylist(rows, schema=trace_schema())
                self.table_path.parent.mkdir(parents=True, exist_ok=True)
                write_deltalake(str(self.table_path), table, mode="append")
            except Exception:
                with self._lock:
                    self._rows[:0] = rows
                raise
            self.written += len(rows)
            self.commits += 1
            return len(rows)

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        try:
            self.flush()
        except Exception:  # noqa: BLE001 - at exit there is nobody left to tell but the log
            log.exception("final trace flush to %s failed", self.table_path)


_live: weakref.WeakSet[TraceRecorder] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    for recorder in list(_live):
        recorder.close()


def read_traces(table_path: Path | str) -> list[dict[str, Any]]:
    """Every row of a traces table (for tests and small reports)."""
    from deltalake import DeltaTable

    return DeltaTable(str(table_path)).to_pyarrow_table().to_pylist()
