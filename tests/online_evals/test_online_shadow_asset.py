"""The shadow_comparison asset: the grounded prompt replayed on the regressed live traffic through
the scripted OpenAI-compatible server standing in for `openai-gpt-4o-mini` (a simulation),
graded by the live eval's graders, is recommended for promotion; its calls are Mallard's own;
without a candidate it says so; and the prompt gate refuses a candidate that loses in shadow."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import dagster as dg
from sample_dates import TEST_END_DATE

from assets.names import hour_key
from assets.online_evals import build_online_eval_asset, build_shadow_asset, hourly_partitions
from catalog.graders import GRADERS
from catalog.online_evals import ONLINE_GRADERS
from mallard.evals.online import OnlineEval, OnlineEvalCatalog, gradeable
from mallard.sample_world.assistant import scripted_answer
from resources import LLMResource

PROMPTS = Path(__file__).resolve().parents[2] / "catalog" / "prompts" / "support_assistant"


class ScriptedLLM(LLMResource):
    """The deployment's LLM resource with the paid endpoint at the scripted server's URL."""

    scripted_url: str

    def endpoints(self):  # type: ignore[no-untyped-def]
        from catalog.llm import ENDPOINTS
        from mallard.llm.endpoints import Endpoints

        paid = replace(ENDPOINTS.get("openai-gpt-4o-mini"), base_url=self.scripted_url)
        return Endpoints([replace(paid, api_key_env=None, fallbacks=(), rate_limit=None)])


def _world(home: Path) -> tuple[int, list[str]]:
    """The sample world's last two trace days (the regressed prompt, version 2) as the traces
    table; how many traces, and their hours' partition keys."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from mallard.sample_world.generate import WorldSpec, _traces_frame
    from mallard.traces.schema import trace_schema

    spec = WorldSpec(end_date=TEST_END_DATE, customers=100, traces_per_day=30)
    frame = _traces_frame(spec)
    frame = frame[frame["timestamp"] >= spec.day_start(spec.days - 2)]
    write_deltalake(
        str(home / "lake" / "traces"),
        pa.Table.from_pandas(frame, schema=trace_schema(), preserve_index=False),
    )
    first = frame["timestamp"].min().floor("h")
    hours = hourly_partitions.get_partition_keys_in_range(
        dg.PartitionKeyRange(hour_key(first), hour_key(frame["timestamp"].max().floor("h")))
    )
    return int(frame["trace_id"].nunique()), hours


def test_a_grounded_shadow_of_the_regressed_prompt_is_recommended_and_gates_promotion(
    online_home, online_resources
) -> None:
    import pyarrow.compute as pc

    from mallard.config import load_settings
    from mallard.evals.shadow import latest_runs, promotion_rule, shadow_evidence
    from mallard.llm.prompts.template import PromptTemplate
    from mallard.llm.testing import FakeOpenAIServer

    traces_before, keys = _world(online_home)
    spec = OnlineEval(
        name="support_shadow",
        prompt="support_assistant",
        graders=("grounding", "refusal"),
        shadow_label="shadow",
        shadow_traces=40,
        # the fallback model's answers are left out: a comparison of two prompts on one model
        shadow_endpoints=("openai-gpt-4o-mini",),
    )
    catalog = OnlineEvalCatalog([spec], [*GRADERS, *ONLINE_GRADERS])
    live_asset = build_online_eval_asset(spec, catalog)
    shadow_asset = build_shadow_asset(spec, catalog)
    settings = load_settings(home=online_home)
    with dg.DagsterInstance.ephemeral() as instance:
        graded = dg.materialize(
            [live_asset],
            instance=instance,
            resources=online_resources,
            tags={
                "dagster/asset_partition_range_start": keys[0],
                "dagster/asset_partition_range_end": keys[-1],
            },
        )
        assert graded.success

        # No candidate yet: the label points nowhere, and the asset says how to fix it.
        nothing = dg.materialize([shadow_asset], instance=instance, resources=online_resources)
        meta = nothing.get_asset_materialization_events()[0].materialization.metadata
        assert meta["recommendation"].value == "needs more traffic"
        assert "label 'shadow' of prompt 'support_assistant' points to no version" in (
            meta["reason"].value
        )

        registry = online_resources["prompts"].registry()
        grounded, _ = registry.register(PromptTemplate.from_file(PROMPTS / "v1_grounded.toml"))
        registry.register(PromptTemplate.from_file(PROMPTS / "v2_ungrounded.toml"))
        registry.promote("support_assistant", grounded.version, label="shadow", reason="test")
        with FakeOpenAIServer(model="gpt-4o-mini", reply=scripted_answer) as server:
            resources = {
                **online_resources,
                "llm": ScriptedLLM(
                    lake=online_resources["lake"],
                    traces=online_resources["traces"],
                    scripted_url=server.base_url,
                ),
            }
            result = dg.materialize([shadow_asset], instance=instance, resources=resources)
        assert result.success
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["recommendation"].value == "promote", meta["reason"].value
    assert meta["candidate_version"].value == grounded.version == 1
    assert meta["live_versions"].value == [2]  # the regressed traffic
    assert meta["replayed"].value == 40
    # every replayed trace was one the hosted model answered, so every replay reached it
    errors = meta["replay_errors"].value
    assert errors == 0 and len(server.requests) == 40
    assert "| grounding |" in meta["comparisons"].value

    (run,) = latest_runs(settings, "support_assistant", grounded.version)
    by_grader = {c.grader: c for c in run.comparisons}
    assert by_grader["grounding"].recommendation == "promote"
    assert by_grader["grounding"].interval.low > 0.1 and by_grader["grounding"].pairs > 20
    assert by_grader["refusal"].recommendation != "promote"  # neither version refuses

    # the replayed calls are recorded with the run's id: Mallard's own, never graded as live
    store = online_resources["traces"].store()
    table = store.arrow()
    own = table.filter(pc.equal(pc.fill_null(table.column("run_id"), ""), result.run_id))
    assert own.num_rows == 40 - errors
    rows, _, own_traces = gradeable(table, cutoff=None)
    assert len(rows) == traces_before and own_traces == 40 - errors

    # the combined rule on this evidence: no trusted loss, so the offline gate decides
    assert promotion_rule(True, [], run.comparisons).promote
    assert not promotion_rule(False, [], run.comparisons).promote
    # what the prompt gate reads: the latest shadow run of that candidate only
    assert shadow_evidence(settings, "support_assistant", 1) == run.comparisons
    assert shadow_evidence(settings, "support_assistant", 2) == []
    assert shadow_evidence(settings, "support_assistant", None) == []


def test_a_shadow_declaration_names_its_prompt_and_one_candidate() -> None:
    import pytest

    from mallard.specs import DeclarationError

    with pytest.raises(DeclarationError, match="shadow_label/shadow_version need prompt="):
        OnlineEval(name="x", graders=("grounding",), shadow_label="shadow")
    with pytest.raises(DeclarationError, match="give shadow_label or shadow_version, not both"):
        OnlineEval(name="x", graders=("g",), prompt="p", shadow_label="s", shadow_version=2)
    with pytest.raises(DeclarationError, match="shadow_traces=0 must be an integer ≥ 1"):
        OnlineEval(name="x", graders=("g",), prompt="p", shadow_version=2, shadow_traces=0)
    assert OnlineEval(name="x", graders=("g",), prompt="p", shadow_version=2).has_shadow
    assert not OnlineEval(name="x", graders=("g",)).has_shadow
