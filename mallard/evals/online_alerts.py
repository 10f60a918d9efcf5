"""Alert rules on production quality, declared in catalog/online_evals.py and evaluated as asset
checks on the analytics assets:

    QualityAlertRule("grounding_drop", metric="pass_rate_drop", threshold=0.2,
                     eval_name="support_assistant_live", grader="grounding",
                     window=dt.timedelta(days=1))

| metric | fires when, over the window | grouped by |
| --- | --- | --- |
| `median_score` | the median score is below `threshold` | prompt, prompt version, model |
| `pass_rate` | the pass rate is below `threshold` | prompt, prompt version, model |
| `pass_rate_drop` | the pass rate fell by more than `threshold` against the previous window | prompt, model |
| `error_rate` | the share of failed production calls is above `threshold` | endpoint, model |
| `latency_p95` | the p95 latency of successful production calls is above `threshold` ms | endpoint, model |
| `cost_per_user` | a user's production spend is above `threshold` USD | user |

A window ends at `as_of`: the newest trace the figures hold (so a replayed or late world is
judged as of its own time, not the wall clock). A group needs `min_count` graded traces (calls)
in the window, and in the previous one for a drop. Score rules count only trusted grades: an
untrusted judge's scores are shown, but never raise an alert. An alert names the prompt
versions it saw in the window.

`notify` records a firing in the alert history (`mallard.monitoring.alerts`) and its webhook,
once per rule and group until `renotify` has passed since the last one (the history itself is
the deduplication state).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mallard.specs import DeclarationError, check_identifier

if TYPE_CHECKING:
    import pandas as pd

    from mallard.monitoring.alerts import AlertSink

METRICS = {
    "median_score": "quality",
    "pass_rate": "quality",
    "pass_rate_drop": "quality",
    "error_rate": "error_rate",
    "latency_p95": "latency",
    "cost_per_user": "cost",
}
TRAFFIC_METRICS = ("error_rate", "latency_p95", "cost_per_user")
"""Metrics over the production traces themselves (the others are over online_scores)."""
UNITS = {"latency_p95": "milliseconds", "cost_per_user": "USD"}
SEVERITIES = ("info", "warning", "critical")


@dataclass(frozen=True)
class QualityAlertRule:
    """Alert when `metric` crosses `threshold` over `window` (see the module's table)."""

    name: str
    metric: str
    threshold: float
    eval_name: str | None = None
    grader: str | None = None
    window: dt.timedelta = dt.timedelta(days=1)
    min_count: int = 20
    renotify: dt.timedelta = dt.timedelta(hours=6)
    severity: str = "warning"
    description: str = ""

    def __post_init__(self) -> None:
        check_identifier("QualityAlertRule", self.name)
        where = f"QualityAlertRule {self.name!r}"
        if self.metric not in METRICS:
            raise DeclarationError(
                f"{where}: metric={self.metric!r} is unknown; choose one of {sorted(METRICS)}"
            )
        if self.metric not in TRAFFIC_METRICS and not (self.eval_name and self.grader):
            raise DeclarationError(
                f"{where}: metric={self.metric!r} needs eval_name= and grader= (whose scores)"
            )
        if self.metric in UNITS:
            if math.isnan(self.threshold) or self.threshold <= 0:
                raise DeclarationError(
                    f"{where}: threshold={self.threshold} must be > 0 ({UNITS[self.metric]})"
                )
        elif math.isnan(self.threshold) or not 0 <= self.threshold <= 1:
            raise DeclarationError(
                f"{where}: threshold={self.threshold} must be within [0, 1] (a score, rate or "
                "drop in pass rate)"
            )
        for label in ("window", "renotify"):
            value = getattr(self, label)
            if not isinstance(value, dt.timedelta) or value <= dt.timedelta(0):
                raise DeclarationError(
                    f"{where}: {label}={value!r} must be a positive dt.timedelta, "
                    "e.g. dt.timedelta(hours=6)"
                )
        if self.min_count < 1:
            raise DeclarationError(f"{where}: min_count={self.min_count} must be ≥ 1")
        if self.severity not in SEVERITIES:
            raise DeclarationError(
                f"{where}: severity={self.severity!r}; choose one of {list(SEVERITIES)}"
            )

    @property
    def kind(self) -> str:
        return METRICS[self.metric]


@dataclass(frozen=True)
class Firing:
    """One group over its threshold: what, how far, and the prompt versions it saw."""

    rule: str
    subject: str
    value: float
    threshold: float
    reason: str
    count: int
    as_of: dt.datetime
    group: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.rule}:{self.subject}"


def _span(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86_400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _window(frame: pd.DataFrame, column: str, start: dt.datetime, end: dt.datetime) -> Any:
    return frame[(frame[column] > start) & (frame[column] <= end)]


def _versions(group: pd.DataFrame) -> list[int]:
    return sorted(int(v) for v in group["prompt_version"].unique())


def evaluate(
    rule: QualityAlertRule,
    *,
    scores: pd.DataFrame | None = None,
    traces: pd.DataFrame | None = None,
    as_of: dt.datetime | None = None,
) -> list[Firing]:
    """The groups over the rule's threshold in the window ending `as_of` (default: the newest
    trace in the figures). `scores`: online_scores rows (current); `traces`: gradeable rows."""
    if rule.metric == "error_rate":
        return _error_rate(rule, traces, as_of)
    if rule.metric == "latency_p95":
        return _latency(rule, traces, as_of)
    if rule.metric == "cost_per_user":
        return _cost_per_user(rule, traces, as_of)
    if scores is None or scores.empty:
        return []
    part = scores[
        (scores["eval_name"] == rule.eval_name)
        & (scores["grader"] == rule.grader)
        & (scores["error"] == "")
        & scores["trusted"].astype(bool)
    ]
    if part.empty:
        return []
    end = as_of or part["trace_timestamp"].max().to_pydatetime()
    current = _window(part, "trace_timestamp", end - rule.window, end)
    out = []
    if rule.metric == "pass_rate_drop":
        before = _window(part, "trace_timestamp", end - 2 * rule.window, end - rule.window)
        for (prompt, model), group in current.groupby(["prompt_name", "model"], sort=True):
            earlier = before[(before["prompt_name"] == prompt) & (before["model"] == model)]
            if len(group) < rule.min_count or len(earlier) < rule.min_count:
                continue
            now_rate, then_rate = float(group["passed"].mean()), float(earlier["passed"].mean())
            drop = then_rate - now_rate
            if drop > rule.threshold:
                versions = _versions(group)
                subject = f"{prompt} ({model}) / {rule.grader}"
                out.append(
                    Firing(
                        rule.name,
                        subject,
                        drop,
                        rule.threshold,
                        f"{rule.grader} pass rate fell from {then_rate:.0%} to {now_rate:.0%} "
                        f"(−{100 * drop:.0f} points > {100 * rule.threshold:.0f}) over "
                        f"{_span(rule.window)}, prompt {prompt} version(s) {versions}, "
                        f"{len(group)} traces",
                        len(group),
                        end,
                        {"prompt_name": prompt, "model": model, "prompt_versions": versions},
                    )
                )
        return out
    keys = ["prompt_name", "prompt_version", "model"]
    for (prompt, version, model), group in current.groupby(keys, sort=True):
        if len(group) < rule.min_count:
            continue
        if rule.metric == "median_score":
            value, label = float(group["score"].median()), "median score"
        else:
            value, label = float(group["passed"].mean()), "pass rate"
        if value < rule.threshold:
            subject = f"{prompt} v{int(version)} ({model}) / {rule.grader}"
            out.append(
                Firing(
                    rule.name,
                    subject,
                    value,
                    rule.threshold,
                    f"{rule.grader} {label} {value:.2f} < {rule.threshold:.2f} over "
                    f"{_span(rule.window)}, prompt {prompt} version {int(version)}, "
                    f"{len(group)} traces",
                    len(group),
                    end,
                    {"prompt_name": prompt, "prompt_version": int(version), "model": model},
                )
            )
    return out


def _error_rate(
    rule: QualityAlertRule, traces: pd.DataFrame | None, as_of: dt.datetime | None
) -> list[Firing]:
    if traces is None or traces.empty:
        return []
    end = as_of or traces["timestamp"].max().to_pydatetime()
    current = _window(traces, "timestamp", end - rule.window, end)
    out = []
    for (endpoint, model), group in current.groupby(["endpoint", "model"], sort=True):
        if len(group) < rule.min_count:
            continue
        rate = float((group["status"] == "error").mean())
        if rate > rule.threshold:
            versions = _versions(group[group["prompt_name"] != ""])
            out.append(
                Firing(
                    rule.name,
                    f"{endpoint} ({model})",
                    rate,
                    rule.threshold,
                    f"error rate {rate:.1%} > {rule.threshold:.1%} over {_span(rule.window)} on "
                    f"{endpoint} ({model}), {len(group)} calls, prompt versions {versions}",
                    len(group),
                    end,
                    {"endpoint": endpoint, "model": model, "prompt_versions": versions},
                )
            )
    return out


def _latency(
    rule: QualityAlertRule, traces: pd.DataFrame | None, as_of: dt.datetime | None
) -> list[Firing]:
    if traces is None or traces.empty:
        return []
    end = as_of or traces["timestamp"].max().to_pydatetime()
    current = _window(traces[traces["status"] != "error"], "timestamp", end - rule.window, end)
    out = []
    for (endpoint, model), group in current.groupby(["endpoint", "model"], sort=True):
        if len(group) < rule.min_count:
            continue
        p95 = float(group["latency_ms"].quantile(0.95))
        if p95 > rule.threshold:
            versions = _versions(group[group["prompt_name"] != ""])
            out.append(
                Firing(
                    rule.name,
                    f"{endpoint} ({model})",
                    p95,
                    rule.threshold,
                    f"p95 latency {p95:,.0f} ms > {rule.threshold:,.0f} ms over "
                    f"{_span(rule.window)} on {endpoint} ({model}), {len(group)} calls, "
                    f"prompt versions {versions}",
                    len(group),
                    end,
                    {"endpoint": endpoint, "model": model, "prompt_versions": versions},
                )
            )
    return out


def _cost_per_user(
    rule: QualityAlertRule, traces: pd.DataFrame | None, as_of: dt.datetime | None
) -> list[Firing]:
    if traces is None or traces.empty:
        return []
    end = as_of or traces["timestamp"].max().to_pydatetime()
    current = _window(traces, "timestamp", end - rule.window, end)
    current = current[current["user_id"].fillna("") != ""]
    out = []
    for user, group in current.groupby("user_id", sort=True):
        if len(group) < rule.min_count:
            continue
        spend = float(group["cost_usd"].sum())
        if spend > rule.threshold:
            models = sorted(str(m) for m in group["model"].unique())
            out.append(
                Firing(
                    rule.name,
                    f"user {user}",
                    spend,
                    rule.threshold,
                    f"user {user} spent ${spend:.4f} > ${rule.threshold:.4f} over "
                    f"{_span(rule.window)} in {len(group)} calls ({', '.join(models)})",
                    len(group),
                    end,
                    {"user_id": str(user), "models": models},
                )
            )
    return out


def notify(
    sink: AlertSink, rule: QualityAlertRule, firing: Firing, *, now: dt.datetime | None = None
) -> str:
    """Record and send the firing, unless the same rule and group alerted less than `renotify`
    ago: the delivery ("sent", "recorded only" without a webhook, or the failure), or
    "suppressed"."""
    from mallard.monitoring.alerts import Alert

    now = now or dt.datetime.now(dt.UTC)
    for previous in sink.list(kind=rule.kind, subject=firing.subject, limit=50):
        if previous.details.get("key") != firing.key:
            continue
        at = dt.datetime.fromisoformat(
            str(previous.details.get("notified_at") or previous.created_at)
        )
        if now - at < rule.renotify:
            return "suppressed"
        break
    stored = sink.record(
        Alert(
            kind=rule.kind,
            subject=firing.subject,
            reason=firing.reason,
            day=firing.as_of.date(),
            severity=rule.severity,
            details={
                "rule": rule.name,
                "key": firing.key,
                "metric": rule.metric,
                "value": firing.value,
                "threshold": firing.threshold,
                "count": firing.count,
                "as_of": firing.as_of.isoformat(),
                "notified_at": now.isoformat(),
                **firing.group,
            },
        )
    )
    return stored.delivery
