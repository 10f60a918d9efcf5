"""The names of assets, jobs and partitions, each derived by one function from a declaration.

Assets, sensors, jobs, the demo and the CLI use these; nothing rebuilds a name from a string.
"""

import datetime as dt

import dagster as dg

MODEL_STAGES = ("candidate", "training_statistics", "evaluation", "champion", "explanations")
MONITORING_STAGES = ("predictions", "drift", "outcomes", "performance")


def model_asset(model: str, stage: str) -> str:
    """A model's asset for one stage: `churn_classifier_champion`."""
    if stage not in MODEL_STAGES:
        raise ValueError(f"unknown model stage {stage!r}: choose one of {MODEL_STAGES}")
    return f"{model}_{stage}"


def model_assets(model: str) -> list[str]:
    return [model_asset(model, stage) for stage in MODEL_STAGES]


def monitoring_asset(model: str, stage: str) -> str:
    """A watched model's monitoring asset: `churn_classifier_drift`."""
    if stage not in MONITORING_STAGES:
        raise ValueError(f"unknown monitoring stage {stage!r}: choose one of {MONITORING_STAGES}")
    return f"{model}_{stage}"


def retrain_job(model: str) -> str:
    return f"retrain_{model}"


def monitor_job(model: str) -> str:
    return f"monitor_{model}"


def outcomes_job(model: str) -> str:
    return f"collect_outcomes_{model}"


def weekly_schedule(job: str) -> str:
    return f"weekly_{job}"


def dataset_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["eval_datasets", name])


def offline_eval_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["offline_evals", name])


def promotion_key(name: str) -> dg.AssetKey:
    """The prompt gate of an eval: `prompt_promotions/support_assistant_gate` (its own display
    name, distinct from the eval's `offline_evals/support_assistant`)."""
    return dg.AssetKey(["prompt_promotions", f"{name}_gate"])


def offline_eval_job(name: str) -> str:
    return f"offline_eval_{name}"


def prompt_version_partitions(name: str) -> str:
    """The dynamic partitions (one per prompt version) of an offline eval."""
    return f"{name}_prompt_versions"


def prompt_version_key(version: int) -> str:
    return f"v{version}"


def partition_version(key: str) -> int:
    """The prompt version of a partition key such as `v2`."""
    if not key.startswith("v") or not key[1:].isdigit():
        raise ValueError(f"partition {key!r} is not a prompt version such as v2")
    return int(key[1:])


# Maintenance
LAKE_MAINTENANCE = "lake_maintenance"
MAINTAIN_LAKE_JOB = "maintain_lake"


# Canary
def canary_asset(model: str) -> str:
    """A model's canary analysis (challenger against champion): `churn_classifier_canary_analysis`."""
    return f"{model}_canary_analysis"


def canary_job(model: str) -> str:
    return f"canary_{model}"


# Traces
TRACES_ASSET = "traces"


# Online evals
ONLINE_EVAL_SENSOR = "online_evals"


def online_eval_key(name: str) -> dg.AssetKey:
    """An online eval's hourly asset: `online_evals/support_assistant`."""
    return dg.AssetKey(["online_evals", name])


def online_eval_job(name: str) -> str:
    return f"online_eval_{name}"


def shadow_job(name: str) -> str:
    """The job that runs an online eval's shadow comparison: `shadow_support_assistant_live`."""
    return f"shadow_{name}"


LLM_ANALYTICS_JOB = "llm_analytics"
"""Quality trends, the model comparison and costs, with the alert and budget checks on them."""


def hour_key(hour: dt.datetime) -> str:
    """The hourly partition key of a UTC hour: `2026-06-30-09:00`."""
    return hour.astimezone(dt.UTC).strftime("%Y-%m-%d-%H:%M")
