"""The analytics over production traffic and its grades, on hand-made rows whose figures are
known: trends per prompt version, latency percentiles, error rates, costs per period."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from mallard.evals.online_analytics import costs, model_comparison, quality_trends

AT = pd.Timestamp("2026-06-29 09:00", tz="UTC")  # a Monday


def scores() -> pd.DataFrame:
    rows = []
    for i in range(40):
        version = 1 if i < 20 else 2
        rows.append(
            {
                "eval_name": "e",
                "trace_id": f"t{i}",
                "trace_timestamp": AT + pd.Timedelta(minutes=3 * i),
                "prompt_name": "p",
                "prompt_version": version,
                "model": "m",
                "grader": "grounding",
                "score": 0.9 if (version == 1 or i % 4 == 0) else 0.2,
                "passed": version == 1 or i % 4 == 0,
                "error": "" if i != 39 else "timeout",
                "trusted": True,
            }
        )
    return pd.DataFrame(rows)


def test_quality_trends_per_hour_and_prompt_version() -> None:
    hourly = quality_trends(scores(), period="hour")
    assert list(hourly["period"].unique()) == [AT, AT + pd.Timedelta(hours=1)]
    first = hourly[(hourly["period"] == AT) & (hourly["prompt_version"] == 1)].iloc[0]
    assert (first["traces"], first["pass_rate"], first["high"]) == (20, 1.0, 20)
    daily = quality_trends(scores(), period="day")
    v2 = daily[daily["prompt_version"] == 2].iloc[0]
    assert v2["traces"] == 19  # the failed grade is left out
    assert v2["pass_rate"] == pytest.approx(5 / 19) and v2["low"] == 14
    assert v2["median_score"] == pytest.approx(0.2)


def traces() -> pd.DataFrame:
    rows = []
    for i in range(100):
        rows.append(
            {
                "trace_id": f"t{i}",
                "timestamp": AT + pd.Timedelta(days=i // 20),  # Mon … Fri, 20 a day
                "endpoint": "a" if i < 80 else "b",
                "model": "ma" if i < 80 else "mb",
                "user_id": f"u{i % 3}",
                "prompt_name": "p",
                "prompt_version": 1,
                "status": "error" if i % 10 == 0 else "ok",
                "latency_ms": float(i + 1),
                "prompt_tokens": 100,
                "completion_tokens": 20,
                "cost_usd": 0.001 if i < 80 else 0.0,
            }
        )
    return pd.DataFrame(rows)


def test_model_comparison_percentiles_and_error_rates() -> None:
    table = model_comparison(traces()).set_index("endpoint")
    a = table.loc["a"]
    assert (a["calls"], a["errors"]) == (80, 8)
    assert a["error_rate"] == pytest.approx(0.1) and a["success_rate"] == pytest.approx(0.9)
    ok = pd.Series([float(i + 1) for i in range(80) if i % 10])
    assert a["p50_latency_ms"] == ok.quantile(0.5)
    assert a["p99_latency_ms"] == ok.quantile(0.99)
    assert a["tokens_per_call"] == 120 and a["cost_usd"] == pytest.approx(0.08)
    assert table.loc["b", "cost_usd"] == 0.0


def test_costs_per_model_user_and_prompt_per_day_week_and_month() -> None:
    frame = traces()
    per_day = costs(frame, by="model", period="day")
    assert len(per_day) == 5  # ma Mon–Thu, mb Fri
    assert per_day["cost_usd"].sum() == pytest.approx(0.08)
    per_week = costs(frame, by="prompt", period="week")
    assert list(per_week["period"]) == [AT.normalize()]  # the week starts on Monday
    per_month = costs(frame, by="user", period="month")
    assert set(per_month["period"]) == {
        pd.Timestamp("2026-06-01", tz="UTC"),
        pd.Timestamp("2026-07-01", tz="UTC"),
    }
    assert per_month["calls"].sum() == 100
    with pytest.raises(ValueError, match="choose one of"):
        costs(frame, by="tenant")
    assert dt.date(2026, 6, 29).weekday() == 0
