"""The durable write-behind buffer: batched commits, flush on close, replay after kill -9.

A writer process appends rows and reports each acknowledged append; it is killed with SIGKILL
mid-stream, and a new buffer on the same folder must commit every acknowledged row exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable

from mallard.lake.buffer import DeltaSink, DurableBuffer, read_segment


def _schema() -> pa.Schema:
    return pa.schema(
        [("id", pa.int64()), ("writer", pa.string()), ("at", pa.timestamp("us", tz="UTC"))]
    )


def _sink(tmp_path: Path) -> DeltaSink:
    return DeltaSink(tmp_path / "table", _schema)


def _ids(tmp_path: Path) -> list[int]:
    return sorted(DeltaTable(str(tmp_path / "table")).to_pyarrow_table().column("id").to_pylist())


def _commits(tmp_path: Path) -> int:
    return len(DeltaTable(str(tmp_path / "table")).history())


def test_many_appends_become_one_commit_per_flush(tmp_path: Path) -> None:
    import datetime as dt

    buffer = DurableBuffer(tmp_path / "wal", _sink(tmp_path), flush_interval_s=3600)
    at = dt.datetime.now(dt.UTC)
    threads = [
        threading.Thread(
            target=lambda w=w: [
                buffer.append([{"id": w * 100 + i, "writer": str(w), "at": at}]) for i in range(25)
            ]
        )
        for w in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert buffer.pending == 100
    assert buffer.flush() == 100
    assert _commits(tmp_path) == 1
    buffer.append([{"id": 1000, "writer": "x", "at": at}])
    buffer.close()  # the final flush
    assert _ids(tmp_path) == sorted([w * 100 + i for w in range(4) for i in range(25)] + [1000])
    assert _commits(tmp_path) == 2
    assert not list((tmp_path / "wal").glob("*.wal"))
    table = DeltaTable(str(tmp_path / "table")).to_pyarrow_table()
    assert table.schema.field("at").type == pa.timestamp("us", tz="UTC")


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    segment = tmp_path / "x.wal"
    segment.write_bytes(b'[{"id": 1}]\n[{"id": 2}]\n[{"id": 3')
    assert read_segment(segment) == [{"id": 1}, {"id": 2}]


def test_replay_is_idempotent_when_the_commit_landed_before_the_crash(tmp_path: Path) -> None:
    sink = _sink(tmp_path)
    wal = tmp_path / "wal"
    wal.mkdir()
    orphan = wal / "dead-1.wal"
    orphan.write_bytes(b'[{"id": 1, "writer": "dead", "at": null}]\n')
    sink.write([{"id": 1, "writer": "dead", "at": None}], [orphan.name])  # committed, not deleted
    replayed = DurableBuffer(wal, sink)
    assert replayed.flush() == 0
    assert _ids(tmp_path) == [1]
    assert not orphan.exists()


_WRITER = textwrap.dedent(
    """
    import sys, datetime as dt
    import pyarrow as pa
    from mallard.lake.buffer import DeltaSink, DurableBuffer

    schema = lambda: pa.schema(
        [("id", pa.int64()), ("writer", pa.string()), ("at", pa.timestamp("us", tz="UTC"))]
    )
    buffer = DurableBuffer(sys.argv[1], DeltaSink(sys.argv[2], schema), flush_interval_s=0.05,
                           flush_rows=7)
    buffer.start()
    i = 0
    while True:
        buffer.append([{"id": i, "writer": "w", "at": dt.datetime.now(dt.UTC)}])
        print(i, flush=True)  # acknowledged: the row is on disk
        i += 1
    """
)


def test_acknowledged_rows_survive_kill_9(tmp_path: Path) -> None:
    wal, table = tmp_path / "wal", tmp_path / "table"
    process = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(wal), str(table)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    acknowledged = []
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    # Kill it while it is writing and flushing: after some commits have landed.
    log = table / "_delta_log"
    while time.monotonic() < deadline and (
        len(acknowledged) < 200 or len(list(log.glob("*.json")) if log.exists() else []) < 2
    ):
        acknowledged.append(int(process.stdout.readline()))
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    acknowledged += [int(line) for line in process.stdout.read().split()]
    assert DeltaTable.is_deltatable(str(table)), "the writer committed nothing before the kill"
    committed_before = set(_ids(tmp_path))
    assert set(acknowledged) - committed_before, "the kill left nothing to replay: not a test"

    replay = DurableBuffer(wal, DeltaSink(table, _schema))
    replay.flush()
    ids = _ids(tmp_path)
    assert set(acknowledged) <= set(ids), "an acknowledged row was lost"
    assert len(ids) == len(set(ids)), "a row was committed twice"
    assert not list(wal.glob("*.wal"))
    assert replay.flush() == 0  # and a second replay finds nothing to do
