"""The analytics routes on a real server: quality trends, the model comparison and the alert
history, paginated, for readers only."""

from __future__ import annotations

import sys

import httpx
import pyarrow as pa
from deltalake import write_deltalake
from online_helpers import HERE_DIR
from sample_dates import TEST_END_DATE
from serving_helpers import auth, free_port, server_env, start

from mallard.config import load_settings
from mallard.evals import online_scores
from mallard.evals.graders import GradeContext, Grounding
from mallard.evals.online import OnlineEval, grade, gradeable
from mallard.monitoring.alerts import Alert, alert_sink
from mallard.sample_world.generate import WorldSpec, _traces_frame
from mallard.traces.schema import trace_schema


def rule_metrics() -> set[str]:
    """The metric names deploy/prometheus/mallard-rules.yml reads (recorded series left out)."""
    import re

    text = (HERE_DIR.parents[1] / "deploy" / "prometheus" / "mallard-rules.yml").read_text()
    exprs = re.findall(r"expr: \|\n((?:          .*\n)+)", text)
    return set(re.findall(r"\b(mallard_[a-z0-9_]+)", "".join(exprs)))


def test_the_analytics_routes_paginate(online_home, tmp_path) -> None:
    settings = load_settings(home=online_home)
    settings.ensure_home()
    frame = _traces_frame(WorldSpec(end_date=TEST_END_DATE, customers=100, traces_per_day=10))
    table = pa.Table.from_pandas(frame, schema=trace_schema(), preserve_index=False)
    write_deltalake(str(online_home / "lake" / "traces"), table)
    rows, _, _ = gradeable(table, cutoff=None)
    spec = OnlineEval(name="support_assistant_live", graders=("grounding",))
    scores = grade(spec, [Grounding()], rows, GradeContext(), run_id="r", traces_version=0)
    online_scores.append(scores, settings=settings)
    sink = alert_sink(settings)
    for i in range(3):
        sink.record(Alert(kind="quality", subject=f"support_assistant v2 #{i}", reason="drop"))
    from mallard.serving.state import open_server_state

    state = open_server_state(settings)
    try:
        viewer = state.create_key("online-viewer", "viewer").key
    finally:
        state.close()

    port = free_port()
    server = start(
        [sys.executable, str(HERE_DIR / "online_server_app.py"), str(port)],
        server_env(online_home),
        port,
        tmp_path / "server.log",
    )
    try:
        server.wait()
        with httpx.Client(base_url=server.url, headers=auth(viewer), timeout=30) as api:
            first = api.get("/v1/analytics/trends", params={"period": "day", "limit": 5}).json()
            assert len(first["items"]) == 5 and first["next_offset"] == 5
            total, seen, offset = first["total"], [], 0
            while offset is not None:
                got = api.get(
                    "/v1/analytics/trends", params={"period": "day", "limit": 4, "offset": offset}
                ).json()
                seen += got["items"]
                offset = got["next_offset"]
            expected = {
                (r["trace_timestamp"].date(), r["prompt_version"], r["model"])
                for r in scores
                if not r["error"]
            }
            assert len(seen) == total == len(expected)  # a day, version and model a row
            keys = {(r["period"], r["prompt_version"], r["model"]) for r in seen}
            assert len(keys) == len(seen)  # no row on two pages
            days = [r for r in seen if r["model"] == "gpt-4o-mini"]
            v1 = [r["pass_rate"] for r in days if r["prompt_version"] == 1]
            v2 = [r["pass_rate"] for r in days if r["prompt_version"] == 2]
            assert sum(v1) / len(v1) > sum(v2) / len(v2) + 0.3

            models = api.get("/v1/analytics/compare-models", params={"limit": 1}).json()
            assert models["total"] == 2 and models["next_offset"] == 1
            assert models["items"][0]["endpoint"] == "openai-gpt-4o-mini"
            assert models["items"][0]["p95_latency_ms"] >= 0 and "error_rate" in models["items"][0]

            alerts = api.get("/v1/alerts/history", params={"limit": 2}).json()
            assert (alerts["total"], len(alerts["items"]), alerts["next_offset"]) == (3, 2, 2)
            assert alerts["items"][0]["subject"] == "support_assistant v2 #2"  # newest first
            rest = api.get("/v1/alerts/history", params={"limit": 2, "offset": 2}).json()
            assert len(rest["items"]) == 1 and rest["next_offset"] is None

            assert api.get("/v1/analytics/trends", params={"limit": 0}).status_code == 422

            # /metrics: every metric the Prometheus rules name, with the tables' figures
            exposition = api.get("/metrics").text
            for name in rule_metrics():
                assert f"\n{name}{{" in exposition, name
            calls = sum(
                float(line.rsplit(" ", 1)[1])
                for line in exposition.splitlines()
                if line.startswith("mallard_production_llm_calls_total{")
            )
            assert calls == frame["trace_id"].nunique()
            grades = [
                line
                for line in exposition.splitlines()
                if line.startswith("mallard_online_eval_grades_total{")
            ]
            assert sum(float(g.rsplit(" ", 1)[1]) for g in grades) == len(scores)
            assert "user" not in exposition.split("mallard_production_llm_cost_usd_total{")[1][:200]
        assert httpx.get(server.url + "/v1/analytics/trends").status_code == 401
    finally:
        server.stop()
