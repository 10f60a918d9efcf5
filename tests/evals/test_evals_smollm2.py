"""The real path with the local SmolLM2-135M (loads in under a second; not a real judge): every
judge kind's protocol and parsing, and `mallard evals run|compare|show|calibrate|promote` on two
items for the grounded and the regressed support-assistant prompt."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from evals_helpers import seed_home

from cli.evals import evals


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("smollm2") / "home"
    seed_home(home)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MALLARD_HOME", str(home))
        patch.setenv("MALLARD_LLM_THREADS", "2")
        patch.delenv("MALLARD_JUDGE_ENDPOINT", raising=False)
        from catalog.llm import DEMO_ENDPOINT  # noqa: F401 - the judges run on it when the variable is unset
        from mallard.config import get_settings
        from mallard.llm.prompts import PromptRegistry, sync_prompt_files

        sync_prompt_files(PromptRegistry.default(get_settings()), "catalog/prompts")
        yield home


def invoke(*args: str) -> str:
    result = CliRunner().invoke(evals, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_every_judge_kind_parses_smollm2_replies(home):
    from catalog.llm import ENDPOINTS
    from mallard.config import get_settings
    from mallard.evals.graders import (
        ContextRelevanceJudge,
        FaithfulnessJudge,
        GradeContext,
        PairwiseJudge,
        Panel,
        ReferenceAgreementJudge,
        RubricJudge,
        Sample,
    )
    from mallard.llm.client import LLMClient

    client = LLMClient(ENDPOINTS, settings=get_settings(), semantic_cache=False)
    ctx = GradeContext(client=client)
    article = "[HC-001] Plans\nStandard costs $12.99 a month and allows 2 streams. Basic has ads."
    sample = Sample(
        item_id="x",
        output="Standard costs $12.99 a month [HC-001].",
        inputs={"question": "Price of Standard?"},
        reference="Standard is $12.99 per month.",
        contexts=[article],
        context_ids=["HC-001"],
        other_output="It is free.",
    )
    judges = [
        FaithfulnessJudge(endpoint="smollm2-local"),
        ReferenceAgreementJudge(endpoint="smollm2-local"),
        RubricJudge(endpoint="smollm2-local", rubric="Must give the monthly price."),
        ContextRelevanceJudge(endpoint="smollm2-local"),
    ]
    try:
        for judge in judges:
            grade = judge.grade(sample, ctx)
            assert not grade.error, grade.reason
            # the verdict token's probabilities, not the one sampled token
            assert grade.details["verdict_path"] == "logprobs" and 0.0 <= grade.score <= 1.0
            if judge.name != "rubric":
                assert grade.score == grade.details["p_yes"] == grade.raw
            else:
                assert 1.0 <= grade.raw <= 5.0
            assert (
                grade.prompt_tokens > 50 and grade.completion_tokens > 0 and grade.cost_usd == 0.0
            )
            assert grade.details["model"] == "SmolLM2-135M-Instruct-Q4_1"
        pairwise = PairwiseJudge(endpoint="smollm2-local").grade(sample, ctx)
        assert not pairwise.error and pairwise.details["outcome"] in ("win", "tie", "loss")
        assert pairwise.details["verdict_path"] == "logprobs"
        assert -1.0 <= pairwise.details["margin"] <= 1.0
        panel = Panel("panel", judges[:2], mode="majority").grade(sample, ctx)
        assert panel.cached and not panel.error  # both members' calls are LLM-cache hits by now
    finally:
        client.close()


def test_cli_run_compare_calibrate_promote_show(home):
    items = [
        "--item",
        "Q-014",
        "--item",
        "Q-061",
        "--grader",
        "grounding",
        "--grader",
        "cites_retrieved_article",
    ]
    # the eval's judge is the composite faithfulness judge, unfitted here: it is untrusted and
    # left out of these runs (fitting it: test_evals_alignment); SmolLM2 judges in `calibrate`
    first = invoke("run", "support_assistant", "--version", "1", *items)
    assert "support_assistant v1 on support_questions v0" in first and "ALL (mean)" in first
    invoke("run", "--version", "2", *items)
    again = json.loads(invoke("run", "--version", "1", *items, "--json"))
    assert again["grades_cached"] == again["grades"] == 4 and again["answers_cached"] == 2
    assert again["cost_usd"] == 0.0

    calibration = invoke("calibrate", "--limit", "2", "--judge", "faithfulness_llm")
    assert "faithfulness_llm" in calibration and "SmolLM2" in calibration

    compared = invoke("compare", "--baseline", "1", "--candidate", "2", "--no-pairwise")
    assert "2 paired items" in compared and "gate: would refuse" in compared
    assert "only 2 paired items; the gate needs at least 5" in compared

    promoted = invoke("promote", "--no-pairwise")
    assert "v2 vs live v1: refused" in promoted
    assert "judge 'faithfulness' is not calibrated" in promoted
    assert "mallard evals align faithfulness" in promoted

    shown = invoke("show")
    assert "v1" in shown and "v2" in shown and "live" in shown and "refused" in shown
    detail = invoke("show", "--version", "2")
    assert "worst items" in detail
