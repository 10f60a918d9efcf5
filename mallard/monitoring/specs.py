"""`MonitoringSpec`: which model is watched, how drift is judged and when it is retrained."""

from __future__ import annotations

from dataclasses import dataclass, field

from mallard.monitoring.decisions import RetrainPolicy
from mallard.monitoring.drift import DriftConfig
from mallard.specs import DeclarationError, check_identifier


@dataclass(frozen=True)
class MonitoringSpec:
    """Monitoring of one declared model.

    Each day the champion scores the entities present in `active_view` (and, for
    `shadow_days` after a promotion, the previous champion scores them too); drift compares the
    day's features with the champion's held-out rows (the reference); outcomes arrive `label_delay_days` later.
    """

    model: str
    active_view: str
    drift: DriftConfig = field(default_factory=DriftConfig)
    policy: RetrainPolicy = field(default_factory=RetrainPolicy)
    shadow_days: int = 14
    label_delay_days: int = 14
    min_outcome_rows: int = 500

    def __post_init__(self) -> None:
        check_identifier("MonitoringSpec", self.model, "model")
        if self.shadow_days < 1:
            raise DeclarationError(f"MonitoringSpec {self.model!r}: shadow_days must be ≥ 1")
        if not 0 < self.policy.drift_share <= 1:
            raise DeclarationError(
                f"MonitoringSpec {self.model!r}: policy.drift_share must be in (0, 1]"
            )
        if self.policy.cooldown_days < 0:
            raise DeclarationError(
                f"MonitoringSpec {self.model!r}: policy.cooldown_days must be ≥ 0"
            )
