"""When to retrain, and when a promotion should be rolled back: decisions without Dagster.

The sensors in `sensors/` feed these functions what the instance recorded and act on the answer,
so the rules are tested directly and read the same in the API, the CLI and the sensors.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class RetrainPolicy:
    """Thresholds that request a retrain, the cooldown between two retrains of a model, and how
    old evidence may be: a drift or performance result from more than `max_evidence_age_days`
    before today never triggers a retrain (a sensor switched on late does not act on a month-old
    signal; a fresh day's result must confirm it)."""

    drift_share: float = 0.3
    max_auc_drop: float = 0.05
    cooldown_days: int = 14
    min_days_observed: int = 1
    max_evidence_age_days: int = 7


@dataclass(frozen=True)
class DayObservation:
    """What monitoring recorded for one model on one simulated day."""

    day: dt.date
    drift_share: float | None = None
    drifted: tuple[str, ...] = ()
    auc: float | None = None
    baseline_auc: float | None = None
    known_on: dt.date | None = None
    """When the evidence became known (outcomes arrive after the label delay); default `day`."""

    @property
    def evidence_day(self) -> dt.date:
        return self.known_on or self.day


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reason: str
    day: dt.date | None = None
    trigger: str | None = None  # drift | performance


def decide_retrain(
    observations: list[DayObservation],
    policy: RetrainPolicy,
    last_retrain_day: dt.date | None,
    today: dt.date | None = None,
) -> RetrainDecision:
    """Retrain when the newest observations cross a threshold, unless within the cooldown or
    older than the policy's evidence age (counted back from `today`)."""
    if not observations:
        return RetrainDecision(False, "no new monitoring results")
    if today is not None:
        oldest_allowed = today - dt.timedelta(days=policy.max_evidence_age_days)
        fresh = [o for o in observations if o.evidence_day >= oldest_allowed]
        if not fresh:
            newest = max(o.evidence_day for o in observations)
            return RetrainDecision(
                False,
                f"stale evidence: the newest result is from {newest}, more than "
                f"{policy.max_evidence_age_days} days before {today}; not acted on",
                newest,
            )
        observations = fresh
    latest = max(observations, key=lambda o: o.day)
    if last_retrain_day is not None and (latest.day - last_retrain_day).days < policy.cooldown_days:
        return RetrainDecision(
            False,
            f"in cooldown: last retrain on {last_retrain_day}, next allowed from "
            f"{last_retrain_day + dt.timedelta(days=policy.cooldown_days)}",
            latest.day,
        )
    drifting = [
        o for o in observations if o.drift_share is not None and o.drift_share >= policy.drift_share
    ]
    if len(drifting) >= policy.min_days_observed:
        worst = max(drifting, key=lambda o: o.drift_share or 0.0)
        features = ", ".join(worst.drifted) or "?"
        return RetrainDecision(
            True,
            f"drift share {worst.drift_share:.2f} ≥ {policy.drift_share:.2f} on {worst.day} ({features})",
            latest.day,
            "drift",
        )
    dropping = [
        o
        for o in observations
        if o.auc is not None
        and o.baseline_auc is not None
        and o.baseline_auc - o.auc > policy.max_auc_drop
    ]
    if dropping:
        worst = min(dropping, key=lambda o: (o.auc or 0.0) - (o.baseline_auc or 0.0))
        # `dropping` keeps only observations with both AUCs
        auc, baseline = worst.auc or 0.0, worst.baseline_auc or 0.0
        return RetrainDecision(
            True,
            f"AUC {auc:.3f} on {worst.day} is {baseline - auc:.3f} below the "
            f"champion's evaluation AUC {baseline:.3f} (allowed drop {policy.max_auc_drop:.2f})",
            latest.day,
            "performance",
        )
    shares = [o.drift_share for o in observations if o.drift_share is not None]
    peak = f"peak drift share {max(shares):.2f}" if shares else "no drift results"
    return RetrainDecision(False, f"below thresholds ({peak})", latest.day)
