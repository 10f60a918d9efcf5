"""Canary and A/B: the sticky split, the unpaired comparison of the variants, the decision.

- `in_challenger`: an entity meets the challenger when the first 8 bytes of SHA-256 over the
  model's name and the entity's canonical key (sorted JSON, as the prediction log stores it),
  read as a fraction of 2⁶⁴, fall below the share. The same key always gets the same variant,
  in every process; raising the share only moves entities to the challenger.
- `compare_variants`: the two variants answered two separate groups of entities (not the same
  rows), so the test is unpaired. For a metric that is a mean of per-row values (accuracy: row
  correct; MAE: |error|; MSE: error²) it is Welch's t-test, with a Welch–Satterthwaite
  interval; for any other metric (AUC, PR-AUC, F1, precision, recall, RMSE, R²) a two-sample
  bootstrap that resamples each group on its own and reads the percentile interval. Either way
  the standard error comes from each group's own variance, and the sample size the declared
  power needs follows from it: N = (z₁₋α/₂ + z_power)² · (n_c·v_c/(1 − s) + n_t·v_t/s) / δ²
  in total at share s, where v is the variance of a group's metric estimate.
- `decide_canary`: promote, roll back or wait (see `mallard.models.specs.Canary`).
- `record_canary`: the decision goes to the promotion gate's record (`set_champion` /
  `record_decision`: version tags, the decision run) and to the alert sink.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from mallard.config import Settings
    from mallard.features.sources import Source
    from mallard.models.registry import Decision
    from mallard.models.specs import Canary
    from mallard.monitoring.alerts import AlertSink

CHALLENGER_ROLE = "challenger"
CANARY_TAG = "mallard.canary"  # on the challenger's version: promoted | rolled_back (it ended)
ENDED = ("promoted", "rolled_back")
# Metrics that are the mean of a per-row value: compared with Welch's t-test.
MEAN_METRICS = ("accuracy", "mae", "mse")


def entity_key(key: dict[str, Any]) -> str:
    """The canonical text of an entity key (the prediction log's `entity_key`)."""
    return json.dumps(key, default=str, sort_keys=True)


def split_point(model: str, key: dict[str, Any] | str) -> float:
    """Where an entity falls in [0, 1) for a model's split."""
    text = key if isinstance(key, str) else entity_key(key)
    digest = hashlib.sha256(f"{model}\x00{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def in_challenger(model: str, key: dict[str, Any] | str, share: float) -> bool:
    """Whether this entity meets the challenger of `model` at `share` (sticky)."""
    return split_point(model, key) < share


def binomial_bounds(n: int, p: float, confidence: float = 0.999) -> tuple[int, int]:
    """The central `confidence` range of Binomial(n, p) counts (exact, in log space): how many
    of n entities a split with share p sends to the challenger, but for 1 − confidence of
    the time."""
    tail = (1 - confidence) / 2
    logs = [
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + (k * math.log(p) if k else 0.0)
        + ((n - k) * math.log1p(-p) if n - k else 0.0)
        for k in range(n + 1)
    ]
    pmf = [math.exp(v) for v in logs]
    low, cumulative = 0, 0.0
    while low < n and cumulative + pmf[low] <= tail:
        cumulative += pmf[low]
        low += 1
    high, cumulative = n, 0.0
    while high > 0 and cumulative + pmf[high] <= tail:
        cumulative += pmf[high]
        high -= 1
    return low, high


# ------------------------------------------------------------------------------------------------
# The comparison
# ------------------------------------------------------------------------------------------------


def _normal_quantile(p: float) -> float:
    from mallard.models.gate import _normal_quantile as quantile

    return quantile(p)


@dataclass(frozen=True)
class CanaryComparison:
    """challenger − champion on the deciding metric, oriented so that positive = better."""

    metric: str
    test: str  # welch | two_sample_bootstrap
    champion: float
    challenger: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    standard_error: float
    n_champion: int
    n_challenger: int
    significance: float
    power: float
    min_effect: float
    share: float
    required_total: int  # outcomes in all, at the share, for the declared power
    required_champion: int
    required_challenger: int
    higher_is_better: bool
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def still_needed_champion(self) -> int:
        return max(0, self.required_champion - self.n_champion)

    @property
    def still_needed_challenger(self) -> int:
        return max(0, self.required_challenger - self.n_challenger)

    @property
    def still_needed(self) -> int:
        """Outcomes of traffic still needed, at the share, until both groups are large enough."""
        return int(
            math.ceil(
                max(
                    self.still_needed_challenger / self.share,
                    self.still_needed_champion / (1 - self.share),
                )
            )
        )

    @property
    def powered(self) -> bool:
        return self.still_needed_champion == 0 and self.still_needed_challenger == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "still_needed": self.still_needed,
            "still_needed_champion": self.still_needed_champion,
            "still_needed_challenger": self.still_needed_challenger,
            "powered": self.powered,
        }


def _per_row(metric: str, y: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    import numpy as np

    if metric == "accuracy":
        return (prediction == y).astype(float)
    if metric == "mae":
        return np.abs(prediction - y)
    return (prediction - y) ** 2  # mse


def required_total(
    variance_champion: float,
    variance_challenger: float,
    n_champion: int,
    n_challenger: int,
    *,
    share: float,
    min_effect: float,
    significance: float,
    power: float,
) -> int:
    """Outcomes in all (at `share` to the challenger) for a two-sided test at `significance` to
    detect `min_effect` with probability `power`; `variance_*` are the variances of each group's
    metric estimate at its current size (so n·v is the per-row variance)."""
    z = _normal_quantile(1 - significance / 2) + _normal_quantile(power)
    per_row = (
        n_champion * variance_champion / (1 - share) + n_challenger * variance_challenger / share
    )
    return int(math.ceil(z * z * per_row / (min_effect * min_effect)))


def compare_variants(
    metric: str,
    champion_y: Any,
    champion_prediction: Any,
    challenger_y: Any,
    challenger_prediction: Any,
    *,
    share: float,
    min_effect: float,
    significance: float = 0.05,
    power: float = 0.8,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> CanaryComparison:
    """The unpaired comparison of two groups' outcomes on `metric` (see the module docstring).

    `*_prediction` are scores for AUC and PR-AUC, labels for accuracy/F1/precision/recall and
    values for the regression metrics, as the promotion gate reads them.
    """
    import numpy as np

    from mallard.models.gate import METRICS, bootstrap_weights, metric_value, weighted_metric

    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    yc = np.asarray(champion_y, dtype=float)
    pc = np.asarray(champion_prediction, dtype=float)
    yt = np.asarray(challenger_y, dtype=float)
    pt = np.asarray(challenger_prediction, dtype=float)
    nc, nt = len(yc), len(yt)
    if nc < 2 or nt < 2 or len(pc) != nc or len(pt) != nt:
        raise ValueError("each variant needs at least 2 outcomes, with a prediction for each")
    higher = METRICS[metric][1]
    sign = 1.0 if higher else -1.0
    value_c = metric_value(metric, yc, pc)
    value_t = metric_value(metric, yt, pt)
    difference = sign * (value_t - value_c)
    details: dict[str, Any] = {}
    if metric in MEAN_METRICS:
        from scipy import stats

        rows_c, rows_t = _per_row(metric, yc, pc), _per_row(metric, yt, pt)
        var_c = float(rows_c.var(ddof=1)) / nc
        var_t = float(rows_t.var(ddof=1)) / nt
        se = math.sqrt(var_c + var_t)
        if se == 0:
            df = float(nc + nt - 2)
            ci_low = ci_high = difference
            p_value = 1.0 if difference == 0 else 0.0
        else:
            df = (var_c + var_t) ** 2 / (var_c**2 / (nc - 1) + var_t**2 / (nt - 1))
            t_crit = float(stats.t.ppf(1 - significance / 2, df))
            ci_low, ci_high = difference - t_crit * se, difference + t_crit * se
            p_value = float(2 * stats.t.sf(abs(difference) / se, df))
        test = "welch"
        details["degrees_of_freedom"] = df
    else:
        rng = np.random.default_rng(seed)
        values_c, values_t = [], []
        for start in range(0, n_bootstrap, 250):
            size = min(250, n_bootstrap - start)
            values_c.append(weighted_metric(metric, yc, pc, bootstrap_weights(nc, size, rng)))
            values_t.append(weighted_metric(metric, yt, pt, bootstrap_weights(nt, size, rng)))
        boot_c, boot_t = np.concatenate(values_c), np.concatenate(values_t)
        ok = np.isfinite(boot_c) & np.isfinite(boot_t)  # a replicate with one class has no AUC
        if ok.sum() < n_bootstrap // 2:
            raise ValueError(
                f"only {int(ok.sum())} of {n_bootstrap} bootstrap replicates had a defined "
                f"{metric}: too few outcomes, or a single class"
            )
        boot_c, boot_t = boot_c[ok], boot_t[ok]
        d = sign * (boot_t - boot_c)
        var_c, var_t = float(boot_c.var(ddof=1)), float(boot_t.var(ddof=1))
        se = math.sqrt(var_c + var_t)
        ci_low = float(np.quantile(d, significance / 2))
        ci_high = float(np.quantile(d, 1 - significance / 2))
        below, above = int((d <= 0).sum()), int((d >= 0).sum())
        p_value = float(min(1.0, 2 * (1 + min(below, above)) / (len(d) + 1)))
        test = "two_sample_bootstrap"
        details["replicates"] = len(d)
    total = required_total(
        var_c,
        var_t,
        nc,
        nt,
        share=share,
        min_effect=min_effect,
        significance=significance,
        power=power,
    )
    return CanaryComparison(
        metric=metric,
        test=test,
        champion=value_c,
        challenger=value_t,
        difference=difference,
        ci_low=float(ci_low),
        ci_high=float(ci_high),
        p_value=p_value,
        standard_error=se,
        n_champion=nc,
        n_challenger=nt,
        significance=significance,
        power=power,
        min_effect=min_effect,
        share=share,
        required_total=total,
        required_champion=int(math.ceil(total * (1 - share))),
        required_challenger=int(math.ceil(total * share)),
        higher_is_better=higher,
        details=details,
    )


# ------------------------------------------------------------------------------------------------
# The decision
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CanaryDecision:
    action: str  # promote | rollback | wait
    reason: str
    comparison: CanaryComparison | None = None

    def evidence(self) -> dict[str, Any]:
        return {"canary": self.comparison.as_dict() if self.comparison else None}


def decide_canary(
    comparison: CanaryComparison | None,
    rule: Canary,
    *,
    champion_version: int,
    challenger_version: int,
    n_champion: int = 0,
    n_challenger: int = 0,
) -> CanaryDecision:
    """Promote when the interval lies above 0, roll back when below 0 (or when powered and
    excluding the declared effect), else wait."""
    who = f"challenger v{challenger_version} vs champion v{champion_version}"
    if (
        comparison is None
        or min(comparison.n_champion, comparison.n_challenger) < rule.min_outcomes
    ):
        if comparison is not None:
            n_champion, n_challenger = comparison.n_champion, comparison.n_challenger
        return CanaryDecision(
            "wait",
            f"waiting for outcomes: {who} has {n_challenger} challenger and {n_champion} champion "
            f"outcomes; each variant needs {rule.min_outcomes} before a decision",
            comparison,
        )
    c = comparison
    level = round(100 * (1 - c.significance))
    verdict = (
        f"{c.metric} {c.challenger:.4f} vs {c.champion:.4f} ({who}), difference "
        f"{c.difference:+.4f}, {level}% CI [{c.ci_low:+.4f}, {c.ci_high:+.4f}] "
        f"({c.test.replace('_', ' ')}, p={c.p_value:.3g}) on {c.n_challenger:,} challenger and "
        f"{c.n_champion:,} champion outcomes"
    )
    power = (
        f"{c.required_total:,} outcomes give power {c.power:.0%} for an effect of "
        f"{c.min_effect:g} at share {c.share:.0%}"
    )
    if c.ci_low > 0:
        return CanaryDecision("promote", f"canary: promote — {verdict}", c)
    if c.ci_high < 0:
        return CanaryDecision("rollback", f"canary: roll back — worse: {verdict}", c)
    if c.powered and c.ci_high < c.min_effect:
        return CanaryDecision(
            "rollback",
            f"canary: roll back — not better by {c.min_effect:g} with the sample the declared "
            f"power needs ({power}): {verdict}",
            c,
        )
    return CanaryDecision(
        "wait",
        f"canary: wait — {verdict}; {power}: {c.still_needed:,} more outcomes needed "
        f"({c.still_needed_challenger:,} challenger, {c.still_needed_champion:,} champion)",
        c,
    )


def record_canary(
    settings: Settings,
    model: str,
    decision: CanaryDecision,
    *,
    champion_version: int,
    challenger_version: int,
    challenger_alias: str | None,
    sink: AlertSink,
) -> Decision:
    """Write the decision where the promotion gate writes its own, and alert on an action.

    promote: `champion` moves to the challenger (`set_champion`); rollback: the champion stays,
    the challenger's version is tagged rolled back (the server stops sending it traffic) and its
    alias is removed; wait: recorded only.
    """
    from mallard.models.registry import client, record_decision, set_champion, version_for_alias
    from mallard.monitoring.alerts import Alert

    c = client(settings)
    evidence = decision.evidence()
    if decision.action == "promote":
        recorded = set_champion(
            settings,
            c,
            model,
            challenger_version,
            action="promote",
            reason=decision.reason,
            evidence=evidence,
        )
        c.set_model_version_tag(model, str(challenger_version), CANARY_TAG, "promoted")
    else:
        recorded = record_decision(
            settings,
            c,
            model=model,
            action=decision.action,
            version=challenger_version,
            champion_before=champion_version,
            champion_after=champion_version,
            reason=decision.reason,
            evidence=evidence,
        )
        if decision.action == "rollback":
            c.set_model_version_tag(model, str(challenger_version), CANARY_TAG, "rolled_back")
            if challenger_alias:
                current = version_for_alias(c, model, challenger_alias)
                if current is not None and int(current.version) == challenger_version:
                    c.delete_registered_model_alias(model, challenger_alias)
    if decision.action in ("promote", "rollback"):
        sink.record(
            Alert(
                "promotion" if decision.action == "promote" else "rollback",
                model,
                decision.reason,
                day=dt.datetime.now(dt.UTC).date(),
                severity="info" if decision.action == "promote" else "warning",
                details={**evidence, "decision_run_id": recorded.run_id},
            )
        )
    return recorded


# ------------------------------------------------------------------------------------------------
# The outcomes of each variant
# ------------------------------------------------------------------------------------------------


def canary_outcomes(
    settings: Settings,
    model: str,
    *,
    champion_version: int,
    challenger_version: int,
    share: float,
    label_source: Source,
    label: str,
    key_columns: list[str],
    as_of: dt.datetime,
) -> pd.DataFrame:
    """The API's predictions of each variant joined with their labels (known by `as_of`).

    Since the challenger's first prediction: the challenger's rows, and the champion's rows of
    entities on the champion's side of the split (a rows-only request without keys never has an
    outcome). One row per entity and day (its last prediction that day), matched with the label
    of that day's start, as the outcome assets match batch predictions.
    """
    import pandas as pd

    from mallard.monitoring.outcomes import join_outcomes
    from mallard.monitoring.predictions import read_predictions
    from mallard.monitoring.scoring import day_start

    logged = read_predictions(settings, model)
    if logged.empty:
        return logged.assign(label=[], variant=[])
    api = logged[(logged["source"] == "api") & (logged["entity_key"] != "{}")]
    challenger = api[
        (api["role"] == CHALLENGER_ROLE) & (api["model_version"] == str(challenger_version))
    ]
    if challenger.empty:
        return challenger.assign(label=[], variant=[])
    started = challenger["timestamp"].min()
    champion = api[
        (api["role"] == "champion")
        & (api["model_version"] == str(champion_version))
        & (api["timestamp"] >= started)
    ]
    champion = champion[[not in_challenger(model, k, share) for k in champion["entity_key"]]]
    frame = pd.concat(
        [champion.assign(variant="champion"), challenger.assign(variant=CHALLENGER_ROLE)],
        ignore_index=True,
    )
    frame["predicted_at"] = frame["timestamp"]
    frame["timestamp"] = pd.to_datetime([day_start(d) for d in frame["day"]], utc=True)
    frame = frame.sort_values("predicted_at").drop_duplicates(
        ["entity_key", "day", "variant"], keep="last"
    )
    return join_outcomes(settings, frame, label_source, label, key_columns, as_of)
