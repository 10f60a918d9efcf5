"""A traces table of calls (the schema before spans) becomes one of spans with every row kept:
by the migration itself, and before the first write of the recorder and of the ingestion sink."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from mallard.traces.schema import CALL_SPAN_ID, trace_schema
from mallard.traces.store import TraceStore

OLD_COLUMNS = [
    f
    for f in trace_schema()
    if f.name not in {"span_id", "parent_span_id", "span_kind", "span_name", "provider"}
]
OLD_SCHEMA = pa.schema(OLD_COLUMNS)


def _old_rows(n: int, start: int = 0) -> list[dict]:
    at = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    return [
        {
            "trace_id": f"{i:032x}",
            "timestamp": at + dt.timedelta(minutes=i),
            "endpoint": "openai-gpt-4o-mini",
            "model": "gpt-4o-mini",
            "prompt_name": "support_assistant",
            "prompt_version": 1 + i % 2,
            "user_id": f"u{i}",
            "session_id": "s",
            "run_id": "run-7" if i % 3 == 0 else "",
            "input": f"question {i}",
            "output": f"answer {i}",
            "retrieved_ids": [f"a{i}", "b"],
            "retrieved_text": "context",
            "latency_ms": 100.0 + i,
            "prompt_tokens": i,
            "completion_tokens": 2 * i,
            "cost_usd": i / 1e6,
            "status": "ok",
            "error": "",
            "cache": "miss",
            "attributes": json.dumps({"i": i}),
        }
        for i in range(start, start + n)
    ]


def _old_table(path: Path) -> list[dict]:
    rows = []
    for commit in range(3):  # several commits, as the recorder writes them
        batch = _old_rows(100, commit * 100)
        write_deltalake(str(path), pa.Table.from_pylist(batch, schema=OLD_SCHEMA), mode="append")
        rows += batch
    return rows


def _by_trace(rows: list[dict]) -> dict[str, dict]:
    return {r["trace_id"]: r for r in rows}


def test_the_migration_keeps_every_row(tmp_path: Path) -> None:
    path = tmp_path / "traces"
    old = _old_table(path)
    store = TraceStore(path)
    assert len(store.read()) == 300  # an old table is read in the new schema before migrating
    migration = store.migrate()
    assert migration is not None
    assert (migration.rows_before, migration.rows_after) == (300, 300)
    assert (migration.read_version, migration.written_version) == (2, 3)
    table = DeltaTable(str(path))
    assert table.schema().to_arrow().names == trace_schema().names
    new = _by_trace(store.read())
    assert set(new) == {r["trace_id"] for r in old}
    for trace_id, before in _by_trace(old).items():
        after = new[trace_id]
        assert {k: after[k] for k in before} == before
        assert after["span_id"] == CALL_SPAN_ID
        assert (
            after["parent_span_id"],
            after["span_kind"],
            after["span_name"],
            after["provider"],
        ) == (
            "",
            "llm",
            "",
            "",
        )
    assert sum(bool(r["run_id"]) for r in new.values()) == 100  # Mallard's own stay marked
    assert store.migrate() is None  # once
    old_version = DeltaTable(str(path))
    old_version.load_as_version(2)
    assert old_version.to_pyarrow_table().num_rows == 300  # the old version is still readable


def test_the_recorder_and_the_ingestion_sink_migrate_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "traces"
    _old_table(path)
    store = TraceStore(path)
    recorder = store.recorder(flush_interval_s=3600)
    from mallard.llm.tracing import trace_row

    recorder.record(trace_row(model="m", run_id="run-9", input="own call"))
    assert recorder.flush() == 1
    recorder.close()
    rows = store.read()
    assert (
        len(rows) == 301 and DeltaTable(str(path)).schema().to_arrow().names == trace_schema().names
    )

    other = tmp_path / "other"
    _old_table(other)
    buffer = TraceStore(other).buffer(tmp_path / "wal", flush_interval_s=3600)
    row = {**trace_row(model="m", input="sent"), "trace_id": "f" * 32}
    buffer.append([row])
    assert buffer.flush() == 1
    buffer.close()
    migrated = TraceStore(other).read()
    assert len(migrated) == 301
    assert sorted(r["span_kind"] for r in migrated)[-1] == "llm"


def test_a_row_appended_during_the_migration_is_kept(tmp_path: Path) -> None:
    """The migration read one version; an append of the old schema after that survives it and
    is read with its span columns filled."""
    path = tmp_path / "traces"
    _old_table(path)
    table = DeltaTable(str(path))
    snapshot = table.to_pyarrow_table()
    write_deltalake(
        str(path), pa.Table.from_pylist(_old_rows(1, 999), schema=OLD_SCHEMA), mode="append"
    )
    from mallard.traces.migrate import upgrade

    write_deltalake(table, upgrade(snapshot), mode="overwrite", schema_mode="overwrite")
    rows = _by_trace(TraceStore(path).read())
    assert len(rows) == 301
    late = rows[f"{999:032x}"]
    assert late["span_id"] == CALL_SPAN_ID and late["span_kind"] == "llm"
