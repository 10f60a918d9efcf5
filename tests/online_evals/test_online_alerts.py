"""Alert rules on production quality: they fire on the sample world's regression naming the
prompt version, not before it and not on untrusted grades; alerts deduplicate and renotify; the
rules run as asset checks."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import pytest
from online_helpers import resources_for
from sample_dates import TEST_END_DATE

from assets.online_evals import ALERT_CHECKS, llm_quality_trends
from catalog.online_evals import error_rate_high, grounding_drop, grounding_median
from mallard.config import load_settings
from mallard.evals import online_scores
from mallard.evals.graders import GradeContext, Grounding
from mallard.evals.online import OnlineEval, grade, gradeable
from mallard.evals.online_alerts import QualityAlertRule, evaluate, notify
from mallard.monitoring.alerts import AlertSink
from mallard.sample_world.generate import WorldSpec, _traces_frame
from mallard.specs import DeclarationError

SPEC = WorldSpec(end_date=TEST_END_DATE, customers=100, traces_per_day=40)


@pytest.fixture(scope="module")
def world():
    """The sample world's traces, graded for grounding as the catalog's online eval grades them."""
    import pyarrow as pa

    from mallard.traces.schema import trace_schema

    frame = _traces_frame(SPEC)
    rows, _, _ = gradeable(pa.Table.from_pandas(frame, schema=trace_schema()), cutoff=None)
    rows = [r for r in rows if r["status"] == "ok"]
    spec = OnlineEval(name="support_assistant_live", graders=("grounding",))
    scores = grade(spec, [Grounding()], rows, GradeContext(), run_id="r", traces_version=0)
    import pandas as pd

    return frame, pd.DataFrame(scores)


def day_end(trace_day: int) -> dt.datetime:
    start = SPEC.day_start(SPEC.days - SPEC.trace_days + trace_day)
    return (start + dt.timedelta(days=1)).to_pydatetime()


def test_rules_fire_on_the_regression_naming_the_prompt_version(world) -> None:
    frame, scores = world
    assert evaluate(grounding_drop, scores=scores, as_of=day_end(5)) == []
    (drop,) = evaluate(grounding_drop, scores=scores, as_of=day_end(10))  # the first bad day
    assert drop.group["prompt_versions"] == [2] and "version(s) [2]" in drop.reason
    assert drop.value > 0.4 and drop.subject.startswith("support_assistant (gpt-4o-mini)")
    # the day after, both windows are regressed: no drop, but the median is low for v2 only
    assert evaluate(grounding_drop, scores=scores, as_of=day_end(12)) == []
    low = evaluate(grounding_median, scores=scores, as_of=day_end(12))
    assert {f.group["prompt_version"] for f in low} == {2}
    assert evaluate(grounding_median, scores=scores, as_of=day_end(8)) == []
    # an untrusted judge's grades never raise an alert
    untrusted = scores.assign(trusted=False)
    assert evaluate(grounding_drop, scores=untrusted, as_of=day_end(10)) == []


def test_the_error_rate_rule(world) -> None:
    frame, _ = world
    assert evaluate(error_rate_high, traces=frame) == []  # the world's 1.5 % stays under 5 %
    failing = frame.assign(
        status=["error" if i % 10 == 0 else s for i, s in enumerate(frame["status"])]
    )
    fired = evaluate(
        dataclasses.replace(error_rate_high, window=dt.timedelta(days=3)), traces=failing
    )
    assert {f.group["endpoint"] for f in fired} >= {"openai-gpt-4o-mini"}
    assert all(f.value > 0.05 for f in fired)


class Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_alerts_deduplicate_and_renotify(world, tmp_path) -> None:
    _, scores = world
    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Hook.received.clear()
    try:
        sink = AlertSink(tmp_path / "alerts.sqlite", f"http://127.0.0.1:{server.server_port}/")
        (firing,) = evaluate(grounding_drop, scores=scores, as_of=day_end(10))
        now = dt.datetime(2026, 6, 27, 1, tzinfo=dt.UTC)
        assert notify(sink, grounding_drop, firing, now=now) == "sent"
        later = now + dt.timedelta(hours=2)
        assert notify(sink, grounding_drop, firing, now=later) == "suppressed"
        again = now + grounding_drop.renotify + dt.timedelta(minutes=1)
        assert notify(sink, grounding_drop, firing, now=again) == "sent"
    finally:
        server.shutdown()
    assert len(sink.list(kind="quality")) == 2
    assert len(Hook.received) == 2 and "version(s) [2]" in Hook.received[0]["text"]
    assert Hook.received[0]["mallard"]["details"]["rule"] == "grounding_drop"


def test_a_bad_rule_is_refused_naming_the_field() -> None:
    with pytest.raises(DeclarationError, match="metric='p99' is unknown"):
        QualityAlertRule(name="r", metric="p99", threshold=0.5)
    with pytest.raises(DeclarationError, match="needs eval_name= and grader="):
        QualityAlertRule(name="r", metric="pass_rate", threshold=0.5)
    with pytest.raises(DeclarationError, match=r"threshold=1.5 must be within \[0, 1\]"):
        QualityAlertRule(name="r", metric="error_rate", threshold=1.5)
    with pytest.raises(DeclarationError, match="renotify=.* must be a positive dt.timedelta"):
        QualityAlertRule(name="r", metric="error_rate", threshold=0.1, renotify=dt.timedelta(0))


def test_the_rules_run_as_checks_on_the_trends_asset(world, tmp_path) -> None:
    _, scores = world
    home = tmp_path / "home"
    settings = load_settings(home=home)
    regressed = scores[scores["trace_timestamp"] <= day_end(10)]
    online_scores.append(regressed.to_dict("records"), settings=settings)
    resources = resources_for(home)
    from resources import AlertSinkResource

    resources["alerts"] = AlertSinkResource(lake=resources["lake"])
    checks = [
        c for c in ALERT_CHECKS if llm_quality_trends.key in {k.asset_key for k in c.check_keys}
    ]
    result = dg.materialize(
        [llm_quality_trends, *checks], resources=resources, raise_on_error=False
    )
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not evaluations["alert_grounding_drop"].passed
    assert evaluations["alert_grounding_drop"].metadata["notified"].value == 1
    median = evaluations["alert_grounding_median_low"]
    assert (
        not median.passed
        and "version 2" in median.description
        and "over 1 d, prompt" in median.description
    )
    stored = resources["alerts"].sink().list(kind="quality")
    assert {a.details["rule"] for a in stored} == {"grounding_drop", "grounding_median_low"}
    assert [
        a.details.get("prompt_versions") for a in stored if a.details["rule"] == "grounding_drop"
    ] == [[2]]
    # the next check within the renotify interval records nothing new
    again = dg.materialize([llm_quality_trends, *checks], resources=resources, raise_on_error=False)
    suppressed = {e.check_name: e for e in again.get_asset_check_evaluations()}
    assert suppressed["alert_grounding_drop"].metadata["suppressed"].value == 1
    assert len(resources["alerts"].sink().list(kind="quality")) == 2


def test_the_latency_and_cost_rules(world) -> None:
    frame, _ = world
    from catalog.online_evals import cost_per_user_daily, latency_p95_high
    from mallard.traces.gradeable import gradeable_frame

    rows = gradeable_frame(frame)
    assert evaluate(latency_p95_high, traces=rows) == []  # the world's p95 is about 1.9 s
    assert evaluate(cost_per_user_daily, traces=rows) == []  # a user spends ~$0.0002 a day
    # the last two days' openai calls slow down fivefold (over 2 d: six hours of the test
    # world hold too few calls); failed calls do not count
    two_days = dataclasses.replace(latency_p95_high, window=dt.timedelta(days=2))
    assert evaluate(two_days, traces=rows) == []
    end = rows["timestamp"].max()
    slow = (rows["endpoint"] == "openai-gpt-4o-mini") & (
        rows["timestamp"] > end - dt.timedelta(days=2)
    )
    (fired,) = evaluate(
        two_days,
        traces=rows.assign(latency_ms=rows["latency_ms"].where(~slow, rows["latency_ms"] * 5)),
    )
    assert fired.subject == "openai-gpt-4o-mini (gpt-4o-mini)" and fired.value > 3000
    assert "p95 latency" in fired.reason and "ms > 3,000 ms over 2 d" in fired.reason
    # one user's calls of the last day cost 100 times more
    user = rows.loc[rows["timestamp"] > end - dt.timedelta(days=1), "user_id"].iloc[0]
    heavy = (rows["user_id"] == user) & (rows["timestamp"] > end - dt.timedelta(days=1))
    costly = rows.assign(cost_usd=rows["cost_usd"].where(~heavy, rows["cost_usd"] * 100 + 0.01))
    (spent,) = evaluate(cost_per_user_daily, traces=costly)
    assert spent.subject == f"user {user}" and spent.value > 0.01
    assert spent.group["user_id"] == user and "over 1 d" in spent.reason
    with pytest.raises(DeclarationError, match=r"threshold=0 must be > 0 \(milliseconds\)"):
        QualityAlertRule(name="r", metric="latency_p95", threshold=0)


def test_the_traffic_rules_run_as_checks_on_their_assets(tmp_path) -> None:
    """latency_p95 on llm_model_comparison, cost_per_user on llm_costs, recorded as `latency`
    and `cost` alerts."""
    from online_helpers import append, call

    from assets.online_evals import llm_costs, llm_model_comparison
    from resources import AlertSinkResource

    home = tmp_path / "home"
    rows = [call(i, latency_ms=4000.0 + i, cost_usd=0.0005, user_id="u-heavy") for i in range(25)]
    append(home, rows)
    resources = resources_for(home)
    resources["alerts"] = AlertSinkResource(lake=resources["lake"])
    targets = {llm_model_comparison.key, llm_costs.key}
    checks = [c for c in ALERT_CHECKS if {k.asset_key for k in c.check_keys} & targets]
    result = dg.materialize(
        [llm_model_comparison, llm_costs, *checks], resources=resources, raise_on_error=False
    )
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not evaluations["alert_latency_p95_high"].passed
    assert not evaluations["alert_cost_per_user_daily"].passed
    assert evaluations["alert_error_rate_high"].passed
    sink = resources["alerts"].sink()
    (latency,) = sink.list(kind="latency")
    assert latency.subject == "openai-gpt-4o-mini (gpt-4o-mini)"
    (cost,) = sink.list(kind="cost")
    assert cost.subject == "user u-heavy" and cost.details["value"] == pytest.approx(0.0125)
