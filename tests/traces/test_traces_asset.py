"""The traces table as an asset: its metadata shows the volume per hour, model and prompt
version, and materializing it migrates an old table."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from assets.traces import traces_table
from mallard.llm.tracing import trace_row
from mallard.traces.store import TraceStore
from resources import LakeResource, TraceStoreResource


def test_the_asset_records_volume_per_hour_model_and_prompt_version(tmp_path) -> None:
    home = tmp_path / "home"
    store = TraceStore(home / "lake" / "traces")
    at = dt.datetime(2026, 6, 30, 9, 0, tzinfo=dt.UTC)
    recorder = store.recorder(flush_interval_s=3600)
    for i in range(30):
        recorder.record(
            trace_row(
                timestamp=at + dt.timedelta(minutes=7 * i),
                model="gpt-4o-mini" if i % 3 else "qwen",
                prompt_name="support_assistant",
                prompt_version=1 if i < 20 else 2,
                run_id="run-1" if i == 0 else "",
                status="error" if i == 5 else "ok",
                latency_ms=100.0 + i,
                prompt_tokens=10,
            )
        )
    recorder.close()
    lake = LakeResource(home=str(home), lake_root="", duckdb_memory_limit="")
    result = dg.materialize([traces_table], resources={"traces": TraceStoreResource(lake=lake)})
    assert result.success
    metadata = result.asset_materializations_for_node("traces")[0].metadata
    assert metadata["dagster/row_count"].value == 30
    assert (metadata["production_spans"].value, metadata["own_spans"].value) == (29, 1)
    hours = {r.data["hour"]: r.data["spans"] for r in metadata["volume_per_hour"].records}
    assert sum(hours.values()) == 30 and len(hours) == 4  # 09:00 … 12:23
    assert hours[at.isoformat()] == 9
    models = {r.data["model"]: r.data for r in metadata["volume_per_model"].records}
    assert models["gpt-4o-mini"]["calls"] == 20 and models["qwen"]["calls"] == 10
    assert models["qwen"]["errors"] == 0 and models["gpt-4o-mini"]["errors"] == 1
    assert models["qwen"]["prompt_tokens"] == 100
    versions = {
        (r.data["prompt_name"], r.data["prompt_version"]): r.data["calls"]
        for r in metadata["volume_per_prompt_version"].records
    }
    assert versions == {("support_assistant", 1): 20, ("support_assistant", 2): 10}
    assert metadata["spans_by_kind"].value == {"llm": 30}
