"""The post-promotion guard: does the new champion do worse than the one it replaced?

Both were scored on the same entities during the shadow window; once their outcomes are known,
a paired bootstrap of the deciding metric (new − previous) decides. The guard rolls back only
when the whole confidence interval lies below zero: worse beyond chance, by the model's rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class GuardVerdict:
    judged: bool
    rollback: bool
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


def judge_promotion(
    outcomes: pd.DataFrame,
    champion_version: str,
    shadow_version: str,
    metric: str,
    significance: float,
    min_rows: int,
    seed: int = 0,
) -> GuardVerdict:
    """Compare the champion with its shadow on the entities both scored (outcomes known)."""
    from mallard.models.gate import paired_bootstrap

    new = outcomes[
        (outcomes["role"] == "champion") & (outcomes["model_version"] == champion_version)
    ]
    old = outcomes[(outcomes["role"] == "shadow") & (outcomes["model_version"] == shadow_version)]
    paired = new.merge(old, on=["entity_key", "day"], suffixes=("_new", "_old"))
    if len(paired) < min_rows:
        return GuardVerdict(
            False, False, f"waiting for outcomes: {len(paired)} of {min_rows} paired rows known"
        )
    column = "score" if metric == "auc" else "prediction"
    result = paired_bootstrap(
        metric,
        paired["label_new"].to_numpy(dtype=float),
        paired[f"{column}_new"].to_numpy(dtype=float),
        paired[f"{column}_old"].to_numpy(dtype=float),
        alpha=significance,
        seed=seed,
    )
    evidence = {**result.as_dict(), "days": sorted({str(d) for d in paired["day"]})}
    if result.ci_high < 0:
        return GuardVerdict(
            True,
            True,
            (
                f"v{champion_version} {metric} {result.candidate:.4f} vs v{shadow_version} {result.champion:.4f} "
                f"on {len(paired):,} shadow-scored rows: difference {result.improvement:+.4f}, "
                f"{100 * (1 - significance):.0f}% CI [{result.ci_low:+.4f}, {result.ci_high:+.4f}] entirely below 0"
            ),
            evidence,
        )
    return GuardVerdict(
        True,
        False,
        (
            f"v{champion_version} holds: {metric} difference {result.improvement:+.4f} vs v{shadow_version}, "
            f"CI [{result.ci_low:+.4f}, {result.ci_high:+.4f}] on {len(paired):,} rows"
        ),
        evidence,
    )
