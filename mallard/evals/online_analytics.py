"""Figures over production traffic and its online grades: quality trends per prompt version and
model, a model comparison (latency percentiles, error and success rates, tokens, cost), score
distributions, and cost per model, user and prompt per day, week or month.

Inputs are DataFrames: `online_scores` rows (`online_scores.current`) and the gradeable rows of
the traces table (one per production trace, `mallard.traces.gradeable`). Outputs are DataFrames
with one row per group, sorted, ready for an asset's metadata or a paginated API answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

# Weeks start on Monday (pandas names a weekly period by its last day: W-SUN).
PERIODS = {"hour": "h", "day": "D", "week": "W-SUN", "month": "M"}
COST_KEYS = {"model": ["model"], "user": ["user_id"], "prompt": ["prompt_name", "prompt_version"]}
LOW_SCORE, HIGH_SCORE = 0.5, 0.8


def _period(frame: pd.DataFrame, column: str, period: str) -> pd.Series:
    if period not in PERIODS:
        raise ValueError(f"period={period!r}: choose one of {sorted(PERIODS)}")
    stamps = frame[column].dt.tz_convert("UTC").dt.tz_localize(None)
    if period in ("hour", "day"):
        start = stamps.dt.floor(PERIODS[period])
    else:
        start = stamps.dt.to_period(PERIODS[period]).dt.start_time
    return start.dt.tz_localize("UTC")


def quality_trends(scores: pd.DataFrame, *, period: str = "hour") -> pd.DataFrame:
    """Per period, eval, prompt version, model and grader: traces graded, pass rate, mean and
    median score, and how many scored low (< 0.5) and high (≥ 0.8). Failed grades are left
    out; an untrusted judge's rows say so (`trusted` false)."""
    import pandas as pd

    columns = [
        "period",
        "eval_name",
        "prompt_name",
        "prompt_version",
        "model",
        "grader",
        "traces",
        "pass_rate",
        "mean_score",
        "median_score",
        "low",
        "high",
        "trusted",
    ]
    ok = scores[scores["error"] == ""]
    if ok.empty:
        return pd.DataFrame(columns=columns)
    ok = ok.assign(
        period=_period(ok, "trace_timestamp", period),
        low=ok["score"] < LOW_SCORE,
        high=ok["score"] >= HIGH_SCORE,
    )
    keys = ["period", "eval_name", "prompt_name", "prompt_version", "model", "grader"]
    out = (
        ok.groupby(keys, sort=True)
        .agg(
            traces=("trace_id", "nunique"),
            pass_rate=("passed", "mean"),
            mean_score=("score", "mean"),
            median_score=("score", "median"),
            low=("low", "sum"),
            high=("high", "sum"),
            trusted=("trusted", "all"),
        )
        .reset_index()
    )
    return out[columns]


def score_distribution(scores: pd.DataFrame, *, bins: int = 10) -> pd.DataFrame:
    """Per eval and grader: counts of scores in `bins` equal bins of [0, 1], and the low- and
    high-quality counts."""
    import numpy as np
    import pandas as pd

    ok = scores[scores["error"] == ""]
    rows = []
    for (eval_name, grader), group in ok.groupby(["eval_name", "grader"], sort=True):
        counts, _ = np.histogram(group["score"].clip(0, 1), bins=bins, range=(0.0, 1.0))
        rows.append(
            {
                "eval_name": eval_name,
                "grader": grader,
                "graded": int(len(group)),
                "low": int((group["score"] < LOW_SCORE).sum()),
                "high": int((group["score"] >= HIGH_SCORE).sum()),
                "histogram": [int(c) for c in counts],
            }
        )
    return pd.DataFrame(rows, columns=["eval_name", "grader", "graded", "low", "high", "histogram"])


def model_comparison(traces: pd.DataFrame) -> pd.DataFrame:
    """Per endpoint and model: calls, error and success rates, p50/p95/p99 latency of the
    successful calls, tokens (total and per call) and cost (total and per 1,000 calls)."""
    import pandas as pd

    columns = [
        "endpoint",
        "model",
        "calls",
        "errors",
        "error_rate",
        "success_rate",
        "p50_latency_ms",
        "p95_latency_ms",
        "p99_latency_ms",
        "prompt_tokens",
        "completion_tokens",
        "tokens_per_call",
        "cost_usd",
        "cost_per_1k_calls_usd",
    ]
    if traces.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for (endpoint, model), group in traces.groupby(["endpoint", "model"], sort=True):
        errors = int((group["status"] == "error").sum())
        ok = group[group["status"] != "error"]["latency_ms"]
        calls = len(group)
        tokens = int(group["prompt_tokens"].sum() + group["completion_tokens"].sum())
        cost = float(group["cost_usd"].sum())
        rows.append(
            {
                "endpoint": endpoint,
                "model": model,
                "calls": calls,
                "errors": errors,
                "error_rate": errors / calls,
                "success_rate": 1 - errors / calls,
                "p50_latency_ms": float(ok.quantile(0.50)) if len(ok) else None,
                "p95_latency_ms": float(ok.quantile(0.95)) if len(ok) else None,
                "p99_latency_ms": float(ok.quantile(0.99)) if len(ok) else None,
                "prompt_tokens": int(group["prompt_tokens"].sum()),
                "completion_tokens": int(group["completion_tokens"].sum()),
                "tokens_per_call": tokens / calls,
                "cost_usd": cost,
                "cost_per_1k_calls_usd": 1000 * cost / calls,
            }
        )
    return pd.DataFrame(rows, columns=columns).sort_values("calls", ascending=False)


def costs(traces: pd.DataFrame, *, by: str = "model", period: str = "day") -> pd.DataFrame:
    """Cost, calls and tokens per period and model, user or prompt version (`by`)."""
    import pandas as pd

    if by not in COST_KEYS:
        raise ValueError(f"by={by!r}: choose one of {sorted(COST_KEYS)}")
    keys = ["period", *COST_KEYS[by]]
    columns = [*keys, "calls", "tokens", "cost_usd"]
    if traces.empty:
        return pd.DataFrame(columns=columns)
    frame = traces.assign(
        period=_period(traces, "timestamp", period),
        tokens=traces["prompt_tokens"] + traces["completion_tokens"],
    )
    out = (
        frame.groupby(keys, sort=True)
        .agg(calls=("trace_id", "size"), tokens=("tokens", "sum"), cost_usd=("cost_usd", "sum"))
        .reset_index()
    )
    return out[columns]
