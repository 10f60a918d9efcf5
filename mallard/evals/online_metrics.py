"""Production LLM traffic and online-eval grades as Prometheus metrics, for `/metrics` and the
rules in deploy/prometheus/mallard-rules.yml.

The figures are read from the tables at scrape time, so they are the same for every API worker:
the traces table (production calls only: Mallard's own are left out) and `online_scores` (the
current grade of each trace and grader version). Both tables only grow, so the totals are true
counters. They are recomputed only when either table's Delta version changes.

| metric | type | labels |
| --- | --- | --- |
| `mallard_production_llm_calls_total` | counter | endpoint, model, prompt, prompt_version, status |
| `mallard_production_llm_latency_seconds` | histogram (successful calls) | endpoint, model |
| `mallard_production_llm_tokens_total` | counter | endpoint, model, kind (prompt, completion) |
| `mallard_production_llm_cost_usd_total` | counter | endpoint, model, prompt |
| `mallard_online_eval_grades_total` | counter | eval, grader, prompt, prompt_version, model, result (passed, failed, error), trusted |
| `mallard_online_eval_score` | histogram (successful grades) | eval, grader, prompt, prompt_version, trusted |

There is no user label: per-user cost has too many values for Prometheus and stays in Mallard's
own rules (`cost_per_user`). A counter moves when a trace is stored, not at the trace's own time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
METRIC_NAMES = (
    "mallard_production_llm_calls_total",
    "mallard_production_llm_latency_seconds",
    "mallard_production_llm_tokens_total",
    "mallard_production_llm_cost_usd_total",
    "mallard_online_eval_grades_total",
    "mallard_online_eval_score",
)


def _histogram(values: Any, buckets: tuple[float, ...]) -> tuple[list[tuple[str, float]], float]:
    import numpy as np

    data = np.asarray(values, dtype=float)
    counts = [(f"{b:g}", float((data <= b).sum())) for b in buckets]
    return [*counts, ("+Inf", float(len(data)))], float(data.sum())


class OnlineMetricsCollector:
    """A prometheus-client collector over a deployment's traces and online_scores tables."""

    def __init__(self, settings: Any):
        self.settings = settings
        self._lock = threading.Lock()
        self._key: tuple[Any, Any] | None = None
        self._families: list[Any] = []

    def describe(self) -> list[Any]:
        return []  # computed at scrape time; nothing to check at registration

    def _versions(self) -> tuple[Any, Any]:
        from deltalake import DeltaTable

        from mallard.evals import online_scores
        from mallard.traces.store import trace_store

        out: list[int | None] = []
        paths = (trace_store(self.settings).table_path, online_scores.table_path(self.settings))
        for path in paths:
            try:
                out.append(DeltaTable(str(path)).version())
            except Exception:  # noqa: BLE001 - no table yet: nothing to count
                out.append(None)
        return out[0], out[1]

    def collect(self) -> Iterator[Any]:
        with self._lock:
            key = self._versions()
            if key != self._key:
                self._families = self._build(key)
                self._key = key
            yield from self._families

    def _build(self, versions: tuple[Any, Any]) -> list[Any]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        calls = CounterMetricFamily(
            "mallard_production_llm_calls",
            "Production LLM calls (traces), by endpoint, model, prompt, version and status.",
            labels=["endpoint", "model", "prompt", "prompt_version", "status"],
        )
        latency = HistogramMetricFamily(
            "mallard_production_llm_latency_seconds",
            "Latency of successful production LLM calls.",
            labels=["endpoint", "model"],
        )
        tokens = CounterMetricFamily(
            "mallard_production_llm_tokens",
            "Tokens of production LLM calls, by kind.",
            labels=["endpoint", "model", "kind"],
        )
        cost = CounterMetricFamily(
            "mallard_production_llm_cost_usd",
            "Cost of production LLM calls in US dollars (declared prices).",
            labels=["endpoint", "model", "prompt"],
        )
        grades = CounterMetricFamily(
            "mallard_online_eval_grades",
            "Online-eval grades (the current one per trace and grader version), by result.",
            labels=["eval", "grader", "prompt", "prompt_version", "model", "result", "trusted"],
        )
        scores = HistogramMetricFamily(
            "mallard_online_eval_score",
            "Online-eval scores of successful grades.",
            labels=["eval", "grader", "prompt", "prompt_version", "trusted"],
        )
        traces_version, scores_version = versions
        if traces_version is not None:
            from mallard.traces.store import trace_store

            rows = trace_store(self.settings).gradeable()
            if len(rows):
                rows = rows.assign(prompt_version=rows["prompt_version"].astype(int).astype(str))
                keys = ["endpoint", "model", "prompt_name", "prompt_version", "status"]
                for labels, group in rows.groupby(keys, sort=True):
                    calls.add_metric([str(v) for v in labels], float(len(group)))
                for (endpoint, model), group in rows.groupby(["endpoint", "model"], sort=True):
                    ok = group[group["status"] != "error"]
                    buckets, total = _histogram(ok["latency_ms"] / 1000.0, LATENCY_BUCKETS)
                    latency.add_metric([str(endpoint), str(model)], buckets, total)
                    for kind in ("prompt", "completion"):
                        count = float(group[f"{kind}_tokens"].sum())
                        tokens.add_metric([str(endpoint), str(model), kind], count)
                keys = ["endpoint", "model", "prompt_name"]
                for labels, group in rows.groupby(keys, sort=True):
                    cost.add_metric([str(v) for v in labels], float(group["cost_usd"].sum()))
        if scores_version is not None:
            from mallard.evals import online_scores

            frame = online_scores.current(online_scores.frame(self.settings))
            if len(frame):
                frame = frame.assign(
                    prompt_version=frame["prompt_version"].astype(int).astype(str),
                    trusted=frame["trusted"].map(lambda t: "true" if t else "false"),
                    result=[
                        "error" if e else ("passed" if p else "failed")
                        for e, p in zip(frame["error"], frame["passed"], strict=True)
                    ],
                )
                keys = ["eval_name", "grader", "prompt_name", "prompt_version", "model"]
                for labels, group in frame.groupby([*keys, "result", "trusted"], sort=True):
                    grades.add_metric([str(v) for v in labels], float(len(group)))
                ok = frame[frame["error"] == ""]
                keys = ["eval_name", "grader", "prompt_name", "prompt_version", "trusted"]
                for labels, group in ok.groupby(keys, sort=True):
                    buckets, total = _histogram(group["score"], SCORE_BUCKETS)
                    scores.add_metric([str(v) for v in labels], buckets, total)
        return [calls, latency, tokens, cost, grades, scores]
