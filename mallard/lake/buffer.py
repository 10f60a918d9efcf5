"""A durable write-behind buffer: rows are acknowledged once on local disk, written in batches.

`DurableBuffer.append(rows)` writes the rows as one line of a local write-ahead segment and
fsyncs it before it returns, so a caller that has its answer (an API request that got its 2xx)
never loses its rows, even to `kill -9`. A background thread moves the segments into the table
every `flush_interval_s` seconds, when `flush_rows` rows are waiting, and on `close()`: all the
waiting rows in one commit of the sink (never one commit per request), then the segments are
deleted.

Each process writes its own segments and holds an exclusive `flock` on each until it is
committed and deleted. A segment whose lock can be taken belongs to a process that died: any
buffer on the same folder (the restarted server, another worker) replays it at its next flush.
Replay is idempotent: each commit records the names of the segments it holds, and a segment
the table already has is deleted without being written twice (a crash between the commit and
the deletion). A torn last line (a write the crash interrupted, never acknowledged) is skipped.

`DeltaSink` is the sink for a Delta table (the prediction log, traces): rows are decoded to the
table's Arrow schema, appended in one commit that carries the segment names in its metadata.

Backpressure: with `max_pending_rows`, an append that would leave more rows acknowledged and
not yet committed raises `BufferFull` (nothing of it is written) with the seconds after which a
retry should find room; the caller answers 429 or 503 with Retry-After. Nothing is dropped.
"""

from __future__ import annotations

import atexit
import datetime as dt
import fcntl
import json
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

SEGMENTS_KEY = "mallard.buffer_segments"
SUFFIX = ".wal"


class BufferFull(Exception):
    """The buffer holds `max_pending_rows` acknowledged rows its sink has not committed yet:
    the rows offered were not written; retry after `retry_after_s`."""

    def __init__(self, name: str, pending: int, limit: int, retry_after_s: float, failing: bool):
        super().__init__(
            f"buffer {name} holds {pending} rows not yet committed (at most {limit}); "
            f"retry after {retry_after_s:.0f} s"
        )
        self.pending = pending
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.failing = failing  # the sink's last flush failed (not just slow)


class BufferSink(Protocol):
    """Where a buffer's rows go: one commit per `write`, and a way to tell what is committed."""

    def write(self, rows: list[dict[str, Any]], segments: list[str]) -> None:
        """Write `rows` in one commit that records `segments` (the segment names they came from)."""

    def committed(self, segments: Sequence[str]) -> set[str]:
        """Which of `segments` an earlier commit already holds."""


def _encode(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@dataclass
class _Segment:
    path: Path
    fd: int
    written: int = 0  # bytes written
    synced: int = 0  # bytes known to be on disk
    rows: int = 0

    @property
    def name(self) -> str:
        return self.path.name


def _lock_segment(path: Path) -> _Segment | None:
    """Open and lock another process's segment; None if its owner is alive or it is gone."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    if os.fstat(fd).st_nlink == 0:  # committed and deleted while we waited
        os.close(fd)
        return None
    return _Segment(path, fd, written=os.fstat(fd).st_size, synced=os.fstat(fd).st_size)


def read_segment(path: Path) -> list[dict[str, Any]]:
    """The rows of a segment; a torn (unterminated or unreadable) line is skipped."""
    data = path.read_bytes()
    rows: list[dict[str, Any]] = []
    lines = data.split(b"\n")
    for number, line in enumerate(lines[:-1], 1):  # the piece after the last newline is torn
        if not line:
            continue
        try:
            rows.extend(json.loads(line))
        except ValueError:
            log.warning("%s: line %d is not valid JSON, skipped", path, number)
    if lines[-1]:
        log.warning(
            "%s: a torn last line (%d bytes, never acknowledged) skipped", path, len(lines[-1])
        )
    return rows


class DurableBuffer:
    """Rows fsynced to a local segment before `append` returns, committed to `sink` in batches."""

    def __init__(
        self,
        directory: Path | str,
        sink: BufferSink,
        *,
        flush_rows: int = 1000,
        flush_interval_s: float = 2.0,
        name: str = "buffer",
        max_pending_rows: int | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.sink = sink
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self.name = name
        self.max_pending_rows = max_pending_rows
        self._lock = threading.Lock()  # the current segment: writes and rotation
        self._sync_lock = threading.Lock()  # fsyncs (one covers every write before it)
        self._flush_lock = threading.Lock()
        self._segment: _Segment | None = None
        self._sealed: list[_Segment] = []  # rotated or adopted, locked until committed
        self._pending = 0
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.committed_rows = 0
        self.commits = 0
        self.replayed_segments = 0
        self.refused_rows = 0  # offered while the buffer was full (never written)
        self.last_flush_s = 0.0
        self.last_error: str | None = None
        _live.add(self)

    # -- writing ---------------------------------------------------------------------------------
    def _new_segment(self) -> _Segment:
        path = self.directory / (
            f"{self.name}-{os.getpid()}-{time.time_ns()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return _Segment(path, fd)

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        """Write `rows` durably (one line, fsynced); they reach the sink at the next flush."""
        if not rows:
            return
        if self._closed:
            raise RuntimeError(f"buffer {self.name} is closed")
        line = json.dumps(list(rows), default=_encode, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            limit = self.max_pending_rows
            if limit is not None and self._pending and self._pending + len(rows) > limit:
                self.refused_rows += len(rows)
                self._wake.set()
                raise BufferFull(
                    self.name,
                    self._pending,
                    limit,
                    self.retry_after_s(),
                    failing=self.last_error is not None,
                )
            segment = self._segment
            if segment is None:
                segment = self._segment = self._new_segment()
            view = memoryview(line)
            while view:
                view = view[os.write(segment.fd, view) :]
            segment.written += len(line)
            segment.rows += len(rows)
            end = segment.written
            self._pending += len(rows)
            pending = self._pending
        self._sync(segment, end)
        if pending >= self.flush_rows:
            self._wake.set()

    def _sync(self, segment: _Segment, end: int) -> None:
        # Group commit: while one thread fsyncs, the others wait here, and most find their bytes
        # already covered by that fsync when they get the lock.
        with self._sync_lock:
            if segment.synced >= end:
                return
            target = segment.written
            os.fdatasync(segment.fd)
            segment.synced = max(segment.synced, target)

    @property
    def pending(self) -> int:
        """Rows acknowledged and not yet committed (by this process)."""
        return self._pending

    def retry_after_s(self) -> float:
        """When a refused append should be retried: about one flush from now."""
        return max(1.0, self.flush_interval_s, self.last_flush_s)

    # -- flushing --------------------------------------------------------------------------------
    def start(self) -> DurableBuffer:
        """Start the background flusher; its first flush replays segments of dead processes."""
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name=f"mallard-{self.name}-flush", daemon=True
                )
                self._thread.start()
        return self

    def _run(self) -> None:
        first = True
        while not self._closed:
            if not first:
                self._wake.wait(self.flush_interval_s)
                self._wake.clear()
            first = False
            if self._closed:
                break
            try:
                self.flush()
            except Exception as exc:  # noqa: BLE001 - the flusher must outlive a failed flush
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception(
                    "%s: flush to its sink failed; rows kept for the next flush", self.name
                )

    def _seal(self) -> None:
        with self._lock, self._sync_lock:
            segment = self._segment
            if segment is None or segment.rows == 0:
                return
            if segment.synced < segment.written:
                os.fdatasync(segment.fd)
                segment.synced = segment.written
            self._segment = None
            self._sealed.append(segment)

    def _adopt_orphans(self) -> None:
        own = {s.path for s in self._sealed}
        if self._segment is not None:
            own.add(self._segment.path)
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            if path in own:
                continue
            segment = _lock_segment(path)
            if segment is None:
                continue
            if segment.written == 0:  # created, never written: nothing to replay
                path.unlink(missing_ok=True)
                os.close(segment.fd)
                continue
            self.replayed_segments += 1
            self._sealed.append(segment)

    def flush(self) -> int:
        """Commit every waiting row (this process's, and dead processes' segments) in one commit;
        returns the number of rows committed."""
        with self._flush_lock:
            started = time.perf_counter()
            self._seal()
            self._adopt_orphans()
            batch = list(self._sealed)
            if not batch:
                return 0
            names = [s.name for s in batch]
            done = self.sink.committed(names)
            todo = [s for s in batch if s.name not in done]
            rows = [row for s in todo for row in read_segment(s.path)]
            if rows:
                self.sink.write(rows, [s.name for s in todo])
                self.commits += 1
                self.committed_rows += len(rows)
            own_rows = sum(s.rows for s in batch)
            for segment in batch:
                segment.path.unlink(missing_ok=True)
                os.close(segment.fd)
            self._sealed = []
            with self._lock:
                self._pending = max(0, self._pending - own_rows)
            self.last_error = None
            self.last_flush_s = time.perf_counter() - started
            return len(rows)

    def close(self) -> None:
        """Stop the flusher and commit what is waiting (the server's shutdown)."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        try:
            self.flush()
        except Exception:  # noqa: BLE001 - the rows stay on disk and are replayed at next start
            log.exception(
                "%s: final flush failed; its segments are replayed at the next start", self.name
            )
        with self._lock:
            if self._segment is not None and self._segment.rows == 0:
                self._segment.path.unlink(missing_ok=True)
                os.close(self._segment.fd)
                self._segment = None

    def __enter__(self) -> DurableBuffer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


_live: weakref.WeakSet[DurableBuffer] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for buffer in list(_live):
        buffer.close()


def _decoder(arrow_type: Any) -> Callable[[Any], Any] | None:
    import pyarrow as pa

    if pa.types.is_timestamp(arrow_type):
        return lambda v: dt.datetime.fromisoformat(v) if isinstance(v, str) else v
    if pa.types.is_date(arrow_type):
        return lambda v: dt.date.fromisoformat(v[:10]) if isinstance(v, str) else v
    return None


class DeltaSink:
    """A Delta table as a buffer's sink: one append per flush, its segments in the metadata."""

    def __init__(
        self,
        table_path: Path | str,
        schema: Callable[[], pa.Schema],
        *,
        partition_by: Sequence[str] | None = None,
        history_depth: int = 500,
    ) -> None:
        self.table_path = str(table_path)
        self._schema = schema
        self.partition_by = list(partition_by) if partition_by else None
        self.history_depth = history_depth

    def table(self, rows: list[dict[str, Any]]) -> pa.Table:
        """The rows as an Arrow table of the sink's schema (ISO strings back to dates/times)."""
        import pyarrow as pa

        schema = self._schema()
        decoders = {f.name: d for f in schema if (d := _decoder(f.type)) is not None}
        if decoders:
            rows = [
                {
                    k: (decoders[k](v) if k in decoders and v is not None else v)
                    for k, v in r.items()
                }
                for r in rows
            ]
        return pa.Table.from_pylist(rows, schema=schema)

    def write(self, rows: list[dict[str, Any]], segments: list[str]) -> None:
        from deltalake import CommitProperties, write_deltalake

        Path(self.table_path).parent.mkdir(parents=True, exist_ok=True)
        write_deltalake(
            self.table_path,
            self.table(rows),
            mode="append",
            partition_by=self.partition_by,
            commit_properties=CommitProperties(
                custom_metadata={SEGMENTS_KEY: json.dumps(segments)}
            ),
        )

    def committed(self, segments: Sequence[str]) -> set[str]:
        from deltalake import DeltaTable

        if not DeltaTable.is_deltatable(self.table_path):
            return set()
        wanted = set(segments)
        found: set[str] = set()
        for commit in DeltaTable(self.table_path).history(self.history_depth):
            recorded = commit.get(SEGMENTS_KEY) or (commit.get("operationParameters") or {}).get(
                SEGMENTS_KEY
            )
            if recorded:
                found |= wanted & set(json.loads(recorded))
                if found == wanted:
                    break
        return found
