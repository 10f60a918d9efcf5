"""Offline eval runs end to end against a scripted model on a local OpenAI-compatible server:
per-item rows in judge_scores, content caching (a rerun makes no model call), comparison with
the pairwise judge, calibration, and the promotion gate moving (or not moving) `live`."""

from __future__ import annotations

import pytest
from evals_helpers import (
    HELPCENTRE,
    ArticleRetriever,
    endpoint,
    register_support_prompts,
    scripted_reply,
)

from catalog.chains import HELPCENTRE as HELPCENTRE_CORPUS
from mallard.evals import store
from mallard.evals.calibration import CalibrationReport, record, run_calibration
from mallard.evals.compare import ComparisonError, compare_versions, promote_prompt
from mallard.evals.graders import FaithfulnessJudge, GradeContext, PairwiseJudge
from mallard.evals.runs import latest_run, run_offline_eval, summarize
from mallard.evals.spec import EvalCatalog, Gate, JudgeCalibration, OfflineEval


@pytest.fixture
def world(settings, make_client):
    import catalog.graders  # noqa: F401 - registers the custom graders
    from catalog.chains import CHAINS
    from catalog.evals import DATASETS, SLICES
    from mallard.llm.prompts import PromptRegistry
    from mallard.llm.testing import FakeOpenAIServer

    faithfulness = FaithfulnessJudge(endpoint="fake", min_kappa=0.4)
    pairwise = PairwiseJudge(endpoint="fake")
    ev = OfflineEval(
        name="support_assistant",
        chain="support_assistant",
        prompt="support_assistant",
        dataset="support_questions",
        slice="support_demo",
        graders=("grounding", "cites_retrieved_article", "faithfulness"),
        pairwise="pairwise",
        gate=Gate(graders=("faithfulness", "grounding"), tolerance=0.05, min_items=5),
    )
    evals = EvalCatalog(
        datasets=DATASETS,
        slices=SLICES,
        graders=[catalog.graders.grounding, faithfulness, pairwise],
        evals=[ev],
        calibration=JudgeCalibration(
            dataset="support_calibration", judges=("faithfulness",), slice="calibration_demo"
        ),
        chains=CHAINS,
    )
    with FakeOpenAIServer(reply=scripted_reply) as server:
        client = make_client([endpoint("fake", server)])
        registry = PromptRegistry.default(settings)
        versions = register_support_prompts(registry, "fake", extra=" Be brief.")
        retriever = ArticleRetriever(HELPCENTRE)
        yield {
            "catalog": evals,
            "client": client,
            "registry": registry,
            "server": server,
            "versions": versions,
            "retrievers": {"helpcentre": retriever},
            "settings": settings,
            "judge": faithfulness,
        }


def run(world, version, **kwargs):
    return run_offline_eval(
        world["catalog"],
        "support_assistant",
        version,
        client=world["client"],
        registry=world["registry"],
        settings=world["settings"],
        retrievers=world["retrievers"],
        **kwargs,
    )


def test_runs_cache_compare_and_gate(world):
    server, settings = world["server"], world["settings"]
    grounded, regressed = run(world, 1), run(world, 2)
    assert len(grounded.rows) == 30 and len(regressed.rows) == 30  # 10 items x 3 graders
    s1, s2 = grounded.summary, regressed.summary
    assert (
        s1["graders"]["faithfulness"]["mean"] == 1.0
        and s2["graders"]["faithfulness"]["mean"] == 0.0
    )
    assert s1["graders"]["cites_retrieved_article"]["mean"] == 1.0
    assert s2["graders"]["cites_retrieved_article"]["mean"] == 0.0
    assert s1["graders"]["grounding"]["mean"] > 0.9 > 0.5 > s2["graders"]["grounding"]["mean"]
    assert set(s1["by_category"]) == {
        "account",
        "billing",
        "devices",
        "plans",
        "playback",
        "privacy",
    }
    assert len(s2["worst_items"]) == 5 and s2["worst_items"][0]["mean_score"] == 0.0
    row = next(r for r in grounded.rows if r["grader"] == "faithfulness")
    assert (row["prompt_name"], row["prompt_version"], row["dataset"], row["dataset_version"]) == (
        "support_assistant",
        1,
        "support_questions",
        0,
    )
    assert (row["endpoint"], row["model"], row["judge_endpoint"], row["judge_model"]) == (
        "fake",
        "fake-model",
        "fake",
        "fake-model",
    )
    assert row["slice"] == "support_demo" and row["retrieved_ids"][0] == row["answer"][-7:-1]
    assert (
        row["reason"].startswith("supported=yes")
        and row["latency_ms"] > 0
        and row["cost_usd"] == 0.0
    )
    assert not row["cached"] and row["answer_cache"] == "miss"
    assert [t.judge for t in grounded.trust] == ["faithfulness"] and not grounded.trust[0].trusted

    # A rerun with nothing changed makes no model call: answers from the LLM cache, grades from ours
    calls = server.completion_calls
    again = run(world, 1)
    assert server.completion_calls == calls
    assert all(r["cached"] for r in again.rows) and {r["answer_cache"] for r in again.rows} == {
        "exact"
    }
    assert [r["score"] for r in again.rows] == [r["score"] for r in grounded.rows]
    assert again.summary["cost_usd"] == 0.0 and again.summary["grades_cached"] == 30
    # Changing one grader recomputes only that grader's grades
    world["catalog"].grader_by_name["faithfulness"] = FaithfulnessJudge(
        endpoint="fake", min_kappa=0.4, max_tokens=99
    )
    changed = run(world, 1)
    assert server.completion_calls == calls + 10
    assert {r["grader"] for r in changed.rows if not r["cached"]} == {"faithfulness"}
    world["catalog"].grader_by_name["faithfulness"] = world["judge"]
    assert latest_run("support_assistant", 1, settings=settings)[0]["run_id"] == changed.run_id

    # Comparison with paired intervals and the pairwise judge (both orders)
    comparison = compare_versions(
        world["catalog"], "support_assistant", 1, 2, settings=settings, client=world["client"]
    )
    faith = comparison.graders["faithfulness"]
    assert (faith.diff, faith.ci_low, faith.ci_high, faith.losses) == (-1.0, -1.0, -1.0, 10)
    assert comparison.pairwise is not None
    assert (comparison.pairwise.wins, comparison.pairwise.ties, comparison.pairwise.losses) == (
        0,
        0,
        10,
    )
    assert comparison.pairwise.position_disagreements == 0
    pairwise_rows = store.read("judge_scores", settings=settings, filters={"grader": "pairwise"})
    assert len(pairwise_rows) == 10 and {r["baseline_prompt_version"] for r in pairwise_rows} == {1}
    assert "| faithfulness | 1.000 | 0.000 | -1.000 |" in comparison.markdown()

    # Calibration of the judge on the human-labelled slice
    reports, info = run_calibration(
        world["catalog"], client=world["client"], settings=settings, corpora=[HELPCENTRE_CORPUS]
    )
    (report,) = reports
    assert info["items"] == 12 and report.items + report.errors == 12
    judged = [r["judge"] == "pass" for r in report.rows]
    human = [r["human"] == "pass" for r in report.rows]
    assert report.accuracy == pytest.approx(
        sum(a == b for a, b in zip(judged, human, strict=True)) / len(judged)
    )
    assert report.fingerprint == world["judge"].fingerprint(GradeContext(client=world["client"]))
    (row,) = store.read("judge_calibration", settings=settings)
    assert (
        row["judge"] == "faithfulness"
        and row["items"] == report.items
        and row["trusted"] == report.trusted
    )

    # The gate: the regressed staging version is refused because of faithfulness (and grounding)
    registry = world["registry"]
    decision = promote_prompt(
        world["catalog"],
        "support_assistant",
        client=world["client"],
        registry=registry,
        settings=settings,
        actor="test",
    )
    assert not decision.promote and not decision.moved and decision.candidate_version == 2
    assert decision.reasons[0].startswith("faithfulness: v2 − v1 = -1.000")
    assert any(r.startswith("grounding: v2 − v1") for r in decision.reasons)
    assert registry.labels("support_assistant")["live"] == 1

    # A good candidate replaces a regressed live version once its judge is trusted
    trusted = CalibrationReport(
        judge="faithfulness",
        fingerprint=report.fingerprint,
        endpoint="fake",
        model="fake-model",
        items=49,
        errors=0,
        accuracy=0.9,
        kappa=0.8,
        spearman=0.7,
        repeat=1,
        flip_rate=0.0,
        score_std=0.0,
        min_kappa=0.4,
    )
    record(
        [trusted],
        dataset="support_calibration",
        dataset_version=0,
        slice_name=None,
        settings=settings,
    )
    registry.promote(
        "support_assistant", 2, reason="simulate a regressed live prompt", actor="test"
    )
    with pytest.raises(ComparisonError, match="no run of prompt v3"):
        compare_versions(world["catalog"], "support_assistant", 2, 3, settings=settings)
    run(world, 3)
    decision = promote_prompt(
        world["catalog"],
        "support_assistant",
        client=world["client"],
        registry=registry,
        settings=settings,
        candidate_version=3,
        actor="gate-test",
    )
    assert decision.promote and decision.moved, decision.reasons
    assert registry.labels("support_assistant")["live"] == 3
    event = registry.history("support_assistant", "live")[-1]
    assert event.actor == "gate-test" and event.reason.startswith("gate of eval support_assistant")
    decisions = sorted(
        store.read("eval_gate_decisions", settings=settings), key=lambda r: r["timestamp"]
    )
    assert [d["promoted"] for d in decisions] == [False, True]
    assert [d["candidate_version"] for d in decisions] == [2, 3] and decisions[1][
        "live_version"
    ] == 2


def test_slices_limits_and_failed_items(world):
    one = run(world, 1, slice_name=None, item_ids=["Q-001", "Q-002"], graders=["grounding"])
    assert {r["item_id"] for r in one.rows} == {"Q-001", "Q-002"} and {
        r["slice"] for r in one.rows
    } == {""}
    limited = run(world, 1, limit=3, graders=["grounding"])
    assert len(limited.rows) == 3
    with pytest.raises(LookupError, match="no item"):
        run(world, 1, item_ids=["Q-999"])
    # A chain failure scores 0 on every grader (it is the candidate's fault), a judge failure is excluded
    world["server"].push_faults(*["500"] * 8)
    failed = run(
        world, 2, item_ids=["Q-003"], slice_name=None, graders=["grounding", "faithfulness"]
    )
    assert {r["answer_status"] for r in failed.rows} == {"failed"}
    assert all(
        r["score"] == 0.0 and not r["error"] and "chain failed" in r["reason"] for r in failed.rows
    )
    summary = summarize(failed.rows)
    assert summary["failed_answers"] == 1 and summary["graders"]["grounding"]["errors"] == 0
