"""The deployment's online eval on the sample world's production traces: one sensor tick, one
single-run backfill of every hour, and the regressed prompt of trace day 10 shows."""

from __future__ import annotations

import math

import dagster as dg
from online_helpers import execute
from sample_dates import TEST_END_DATE

from assets.online_evals import ANALYTICS_ASSETS, ONLINE_EVAL_ASSETS, ONLINE_EVAL_JOBS
from catalog.online_evals import support_assistant_live
from mallard.config import load_settings
from mallard.evals import online_scores
from mallard.sample_world.generate import WorldSpec, _traces_frame
from sensors.online_evals import build_online_eval_sensor


def test_the_regressed_prompt_grounds_measurably_less_after_trace_day_10(
    online_home, online_resources
) -> None:
    import pyarrow as pa
    from deltalake import write_deltalake

    from mallard.traces.schema import trace_schema

    spec = WorldSpec(end_date=TEST_END_DATE, customers=100, traces_per_day=12)
    frame = _traces_frame(spec)
    write_deltalake(
        str(online_home / "lake" / "traces"),
        pa.Table.from_pandas(frame, schema=trace_schema(), preserve_index=False),
    )
    sensor = build_online_eval_sensor(ONLINE_EVAL_JOBS)
    (asset,) = ONLINE_EVAL_ASSETS
    # In-memory storage: a sqlite event log takes ~0.1 s per hour's events, 336 hours here.
    with dg.DagsterInstance.ephemeral() as instance:
        with dg.build_sensor_context(instance=instance, resources=online_resources) as ctx:
            result = sensor.evaluate_tick(ctx)
        (request,) = result.run_requests  # 14 days of hours, one single-run backfill
        run = execute(request, asset, online_resources, instance)
        hours = run.get_asset_materialization_events()
        assert len(hours) > 300  # every hour of the 14 trace days

    scores = online_scores.frame(
        load_settings(home=online_home), eval_name="support_assistant_live"
    )
    sampled = {t for t in frame["trace_id"] if support_assistant_live.sampled(t)}
    ok = frame[(frame["status"] == "ok") & frame["trace_id"].isin(sampled)]
    assert set(scores["trace_id"]) == set(ok["trace_id"])  # errored traces are not graded

    grounding = scores[scores["grader"] == "grounding"]
    regressed_at = spec.day_start(spec.days - spec.trace_days + spec.trace_regression_day)
    before = grounding[grounding["trace_timestamp"] < regressed_at]["passed"]
    after = grounding[grounding["trace_timestamp"] >= regressed_at]["passed"]
    assert len(before) > 40 and len(after) > 15
    p1, p2 = before.mean(), after.mean()
    pooled = (before.sum() + after.sum()) / (len(before) + len(after))
    z = (p1 - p2) / math.sqrt(pooled * (1 - pooled) * (1 / len(before) + 1 / len(after)))
    assert p1 - p2 > 0.3 and z > 3, (p1, p2, z)
    # the other graders do not move: the regressed answers stay on topic and leak nothing
    for name in ("no_leak", "refusal"):
        assert scores[scores["grader"] == name]["passed"].all()

    # each hour records its pass rates; the run a plot of them
    metadata = {e.partition: e.materialization.metadata for e in hours}
    busy = max(metadata.values(), key=lambda m: m["traces"].value)
    assert busy["traces"].value > 0 and 0 <= busy["pass_rate/grounding"].value <= 1
    assert busy["grading_cost_usd"].value == 0  # no judge: grading costs nothing
    plots = list(
        (online_home / "reports" / "online_evals" / "support_assistant_live").glob("*.png")
    )
    assert len(plots) == 1 and plots[0].stat().st_size > 5_000

    # the analytics assets over the same tables: the trend shows the regression per version
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(ANALYTICS_ASSETS, instance=instance, resources=online_resources)
    assert result.success
    meta = {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    assert meta["llm_quality_trends"]["graded_traces"].value == len(ok)
    assert "![quality trends](" in meta["llm_quality_trends"]["trends"].value
    comparison = meta["llm_model_comparison"]["comparison"].value
    assert "| openai-gpt-4o-mini | gpt-4o-mini |" in comparison
    assert "| qwen-1.5b-local | qwen2.5-coder-1.5b-instruct |" in comparison
    total = meta["llm_costs"]["total_cost_usd"].value
    assert total == round(float(frame["cost_usd"].sum()), 6) and total > 0
