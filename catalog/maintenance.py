"""How the lake is kept: how long replaced versions stay readable, which tables are compacted."""

import datetime as dt

from mallard.lake.maintenance import MaintenancePolicy

LAKE_MAINTENANCE = MaintenancePolicy(
    # `lake_maintenance`'s run config (retention_hours) overrides it for one run.
    retention=dt.timedelta(days=7),
    # Append-only logs, many small commits each; no reader looks at their versions.
    compact=(
        "predictions",
        "outcomes",
        "traces",
        "judge_scores",
        "judge_calibration",
        "eval_gate_decisions",
        "llm_dead_letters",
    ),
    # Offline evals and gate decisions name the dataset version they used.
    keep_every_version=("eval_datasets",),
)
