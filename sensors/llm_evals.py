"""Sensors of the eval loop: a new prompt version gets its offline-eval partition and run."""

import dagster as dg

from assets.names import offline_eval_job, prompt_version_key, prompt_version_partitions
from catalog.evals import EVALS
from resources import PromptRegistryResource


def missing_partitions(instance: dg.DagsterInstance, registry) -> dict[str, list[str]]:
    """Per eval: partition keys for registered prompt versions that are not partitions yet."""
    out = {}
    for ev in EVALS:
        existing = set(instance.get_dynamic_partitions(prompt_version_partitions(ev.name)))
        keys = [prompt_version_key(v.version) for v in registry.versions(ev.prompt)]
        out[ev.name] = [k for k in keys if k not in existing]
    return out


def add_prompt_version_partitions(instance: dg.DagsterInstance, registry) -> dict[str, list[str]]:
    """Add a partition per registered prompt version to every offline eval; returns what was added
    (for drivers that run jobs in process, where no sensor ticks)."""
    added = missing_partitions(instance, registry)
    for ev in EVALS:
        if added[ev.name]:
            instance.add_dynamic_partitions(prompt_version_partitions(ev.name), added[ev.name])
    return added


def build_prompt_version_sensor(jobs: list) -> dg.SensorDefinition:
    """The sensor that partitions and evaluates new prompt versions, targeting the eval jobs."""

    @dg.sensor(
        name="prompt_version_partitions",
        jobs=jobs,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def prompt_version_partitions_sensor(
        context: dg.SensorEvaluationContext, prompts: PromptRegistryResource
    ):
        """Adds a partition to each offline eval for every newly registered prompt version and
        requests its eval run (in the `local_llm` pool, one at a time)."""
        missing = missing_partitions(context.instance, prompts.registry())
        requests, runs = [], []
        for ev in EVALS:
            if missing[ev.name]:
                requests.append(
                    dg.AddDynamicPartitionsRequest(
                        prompt_version_partitions(ev.name), missing[ev.name]
                    )
                )
                runs += [
                    dg.RunRequest(
                        job_name=offline_eval_job(ev.name),
                        partition_key=key,
                        run_key=f"{ev.name}:{key}",
                    )
                    for key in missing[ev.name]
                ]
        if not requests:
            return dg.SkipReason("every registered prompt version has its eval partition")
        return dg.SensorResult(run_requests=runs, dynamic_partitions_requests=requests)

    return prompt_version_partitions_sensor
