"""The llm_evals assets on a test instance: definitions load, datasets import with metadata, the
sensor adds a partition per prompt version, eval partitions materialize (rule graders, a scripted
model on a local server) and the promotion asset records a refusal with its reasons."""

from __future__ import annotations

import dagster as dg
import pytest
from evals_helpers import register_support_prompts, scripted_reply

from resources import resources_for_env


@pytest.fixture
def instance(settings):
    with dg.instance_for_test() as test_instance:
        yield test_instance


def defs_for(settings):
    from assets.llm import LLM_ASSETS
    from assets.llm_evals import EVAL_ASSETS
    from pipelines.jobs import LLM_JOBS, OFFLINE_EVAL_JOBS
    from sensors.llm_evals import build_prompt_version_sensor

    return dg.Definitions(
        assets=[*LLM_ASSETS, *EVAL_ASSETS],
        jobs=LLM_JOBS,
        sensors=[build_prompt_version_sensor(OFFLINE_EVAL_JOBS)],
        resources=resources_for_env(),
    )


def test_definitions_load_with_the_llm_assets(settings):
    defs = defs_for(settings)
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {
        "eval_datasets/support_questions",
        "eval_datasets/support_calibration",
        "judge_calibration",
        "offline_evals/support_assistant",
        "prompt_promotions/support_assistant_gate",
    } <= keys
    assert {
        graph.get(dg.AssetKey.from_user_string(k)).group_name
        for k in keys
        if "/" in k and not k.startswith("prompt_versions")
    } == {"llm_evals"}
    assert defs.resolve_job_def("promote_prompt") is not None


def test_dataset_assets_and_partition_sensor(settings, instance):
    from assets.llm_evals import EVAL_ASSETS
    from mallard.llm.prompts import PromptRegistry
    from pipelines.jobs import OFFLINE_EVAL_JOBS
    from sensors.llm_evals import add_prompt_version_partitions, build_prompt_version_sensor

    datasets = [a for a in EVAL_ASSETS if a.key.path[0] == "eval_datasets"]
    result = dg.materialize(datasets, instance=instance, resources=resources_for_env())
    assert result.success
    events = [
        e.event_specific_data.materialization for e in result.get_asset_materialization_events()
    ]
    meta = {m.asset_key.path[-1]: m.metadata for m in events}
    assert (
        meta["support_questions"]["items"].value == 82
        and meta["support_calibration"]["items"].value == 49
    )
    assert meta["support_questions"]["version"].value == 0

    register_support_prompts(PromptRegistry.default(settings), "smollm2-local")
    prompt_version_partitions = build_prompt_version_sensor(OFFLINE_EVAL_JOBS)
    with dg.build_sensor_context(instance=instance, resources=resources_for_env()) as context:
        tick = prompt_version_partitions(context)
        assert isinstance(tick, dg.SensorResult)
    assert [r.partition_keys for r in tick.dynamic_partitions_requests] == [["v1", "v2"]]
    assert [(r.job_name, r.partition_key) for r in tick.run_requests] == [
        ("offline_eval_support_assistant", "v1"),
        ("offline_eval_support_assistant", "v2"),
    ]
    registry = PromptRegistry.default(settings)
    assert add_prompt_version_partitions(instance, registry) == {"support_assistant": ["v1", "v2"]}
    with dg.build_sensor_context(instance=instance, resources=resources_for_env()) as context:
        assert isinstance(prompt_version_partitions(context), dg.SkipReason)


def test_eval_partitions_and_gate_refusal(settings, instance, monkeypatch):
    import assets.llm_evals as module
    from mallard.llm.prompts import PromptRegistry
    from mallard.llm.testing import FakeOpenAIServer
    from pipelines.demo import demo_eval_runs

    registry = PromptRegistry.default(settings)
    register_support_prompts(registry, "smollm2-local")
    with FakeOpenAIServer(reply=scripted_reply) as server:
        # The local model is served by the scripted server, as production serves every model.
        monkeypatch.setenv("MALLARD_LLM_BASE_URL", server.base_url)
        resources = resources_for_env()
        datasets = [a for a in module.EVAL_ASSETS if a.key.path[0] == "eval_datasets"]
        dg.materialize(datasets, instance=instance, resources=resources)
        config = {
            "ops": {
                "offline_evals__support_assistant": {
                    "config": {
                        "graders": ["grounding", "cites_retrieved_article", "concise"],
                        "limit": 6,
                    }
                }
            }
        }
        defs = defs_for(settings)
        steps = demo_eval_runs(instance)
        assert steps == [
            ("import_eval_datasets", {}),
            ("calibrate_judges", {}),
            ("offline_eval_support_assistant", {"dagster/partition": "v1"}),
            ("offline_eval_support_assistant", {"dagster/partition": "v2"}),
            ("promote_prompt", {}),
        ]
        for job, tags in steps[2:4]:  # as the demo runs them: the partition in the run tags
            result = defs.resolve_job_def(job).execute_in_process(
                instance=instance, tags=tags, run_config=config
            )
            assert result.success
        materialization = result.get_asset_materialization_events()[
            0
        ].event_specific_data.materialization
        meta = materialization.metadata
        assert meta["prompt_version"].value == 2 and meta["items"].value == 6
        assert (
            "| **all** |" in meta["scores"].value
            and meta["mean/cites_retrieved_article"].value == 0.0
        )
        checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
        assert checks["answers_ok"].passed and checks["judges_trusted"].passed  # rule graders only
        (promotion,) = [a for a in module.EVAL_ASSETS if a.key.path[0] == "prompt_promotions"]
        result = dg.materialize(
            [promotion],
            instance=instance,
            resources=resources,
            selection=[promotion.key],
            run_config={
                "ops": {
                    "prompt_promotions__support_assistant_gate": {"config": {"pairwise": False}}
                }
            },
        )
    assert result.success
    meta = result.get_asset_materialization_events()[0].event_specific_data.materialization.metadata
    assert (
        meta["verdict"].value == "refused"
        and meta["live_before"].value == meta["live_after"].value == 1
    )
    reasons = meta["reasons"].value
    assert "faithfulness: no paired scores" in reasons and "grounding: v2 − v1" in reasons
    assert "is not calibrated" in reasons
    assert "| grounding |" in meta["comparison"].value
