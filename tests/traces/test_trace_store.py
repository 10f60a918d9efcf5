"""The trace store's reads: one row per (trace_id, span_id) even when two server workers appended
the same retried span in the same few seconds (each flush checked the table before the other's
commit)."""

from __future__ import annotations

import pyarrow as pa
from deltalake import write_deltalake

from mallard.llm.tracing import trace_row
from mallard.traces.gradeable import gradeable_row
from mallard.traces.schema import trace_schema
from mallard.traces.store import TraceStore


def test_a_span_two_workers_appended_is_read_once(tmp_path) -> None:
    store = TraceStore(tmp_path / "traces")
    span = {**trace_row(model="m", input="retried"), "trace_id": "a" * 32, "span_id": "b" * 16}
    other = {**trace_row(model="m", input="other"), "trace_id": "c" * 32}
    for rows in ([span, other], [span]):  # the second worker's commit of the same span
        write_deltalake(
            str(store.table_path), pa.Table.from_pylist(rows, schema=trace_schema()), mode="append"
        )
    assert sorted(r["input"] for r in store.read()) == ["other", "retried"]
    assert len(store.spans("a" * 32)) == 1
    assert store.summary()["spans"] == 2
    assert len(store.gradeable()) == 2
    # A reader of the raw table (online evaluation reads a Delta version) gets both copies; the
    # gradeable row counts the span once.
    stored = [{**span, "prompt_tokens": 7}, {**span, "prompt_tokens": 7}]
    assert gradeable_row(stored)["prompt_tokens"] == 7


def test_mallards_own_calls_stay_marked_and_are_never_graded(tmp_path) -> None:
    """A call the LLM client records for a run keeps its run_id through the recorder; the rows
    the graders see leave it out, production traffic beside it stays."""
    store = TraceStore(tmp_path / "traces")
    recorder = store.recorder(flush_interval_s=3600)
    recorder.record(trace_row(model="judge", run_id="run-42", input="grade this"))
    recorder.record(trace_row(model="gpt-4o-mini", input="How do I cancel?"))
    recorder.close()
    own = [r for r in store.read() if r["run_id"]]
    assert [(r["run_id"], r["span_kind"], r["input"]) for r in own] == [
        ("run-42", "llm", "grade this")
    ]
    assert list(store.gradeable()["input"]) == ["How do I cancel?"]
    assert sorted(store.gradeable(include_own=True)["input"]) == ["How do I cancel?", "grade this"]
