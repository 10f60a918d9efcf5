"""Helpers of the online-eval tests: resources over a home, trace rows, running a request."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import dagster as dg

GROUNDED = "Premium costs $17.99 a month and lets 4 screens watch at once in 4K."
CONTEXT = "[HC-001] Plans\nPremium costs $17.99 a month: 4 screens at once, 4K with HDR."
AT = dt.datetime(2026, 6, 29, 9, 0, tzinfo=dt.UTC)


def resources_for(home: Path) -> dict[str, Any]:
    from resources import LakeResource, LLMResource, PromptRegistryResource, TraceStoreResource

    lake = LakeResource(home=str(home), lake_root="", duckdb_memory_limit="")
    traces = TraceStoreResource(lake=lake)
    return {
        "lake": lake,
        "traces": traces,
        "prompts": PromptRegistryResource(lake=lake),
        "llm": LLMResource(lake=lake, traces=traces),
    }


def call(i: int, at: dt.datetime = AT, **values: Any) -> dict[str, Any]:
    """A production support-assistant call (a one-span trace) `i` minutes after `at`."""
    from mallard.llm.tracing import trace_row

    defaults = {
        "trace_id": f"{i:032x}",
        "timestamp": at + dt.timedelta(minutes=i),
        "endpoint": "openai-gpt-4o-mini",
        "model": "gpt-4o-mini",
        "prompt_name": "support_assistant",
        "prompt_version": 1,
        "input": "How much is Premium and how many screens?",
        "output": GROUNDED,
        "retrieved_ids": ["HC-001"],
        "retrieved_text": CONTEXT,
        "latency_ms": 800.0,
        "status": "ok",
    }
    return trace_row(**{**defaults, **values})


def append(home: Path, rows: list[dict[str, Any]]) -> int:
    """Append rows to the home's traces table in one commit; the new Delta version."""
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    from mallard.traces.schema import trace_schema

    path = home / "lake" / "traces"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_deltalake(str(path), pa.Table.from_pylist(rows, schema=trace_schema()), mode="append")
    return DeltaTable(str(path)).version()


def execute(request: dg.RunRequest, asset: dg.AssetsDefinition, resources: dict, instance):
    """Run what a sensor requested, as the daemon would (its tags and config), in process."""
    config = {k: v for k, v in (request.run_config or {}).items() if k != "execution"}
    result = dg.materialize(
        [asset], instance=instance, resources=resources, run_config=config, tags=request.tags
    )
    assert result.success
    return result


HERE_DIR = Path(__file__).resolve().parent
