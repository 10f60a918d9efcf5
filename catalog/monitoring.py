"""Which models are watched in production, and the rules that retrain or roll them back."""

from mallard.monitoring.decisions import RetrainPolicy
from mallard.monitoring.drift import DriftConfig
from mallard.monitoring.specs import MonitoringSpec

churn_monitoring = MonitoringSpec(
    model="churn_classifier",
    active_view="usage_7d",
    drift=DriftConfig(sample_size=5_000),
    # Evidence older than a week before today does not trigger a retrain: a fresh day must confirm it.
    policy=RetrainPolicy(
        drift_share=0.25, max_auc_drop=0.05, cooldown_days=14, max_evidence_age_days=7
    ),
    shadow_days=21,
    label_delay_days=14,
)

MONITORED = [churn_monitoring]
