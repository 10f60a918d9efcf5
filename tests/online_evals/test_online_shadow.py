"""Shadow against live: a planted gain is recommended, identical versions are not (at most α/2
false promotions over 400 null trials), too little traffic says so, and the combined rule of
offline and online evidence on each of its branches."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pyarrow as pa
from sample_dates import TEST_END_DATE

from mallard.evals.graders import Grounding
from mallard.evals.online import gradeable, sample_of
from mallard.evals.shadow import compare, promotion_rule, recommend, sign_test
from mallard.sample_world.generate import HELPCENTRE_DIR, WorldSpec, _traces_frame
from mallard.traces.schema import trace_schema


def scores(n: int, seed: int, shift: float = 0.0) -> tuple[dict, dict]:
    rng = random.Random(seed)
    live, shadow = {}, {}
    for i in range(n):
        base = rng.random()
        live[f"t{i}"] = min(1, max(0, base + rng.gauss(0, 0.1)))
        shadow[f"t{i}"] = min(1, max(0, base + shift + rng.gauss(0, 0.1)))
    return live, shadow


def test_a_planted_gain_is_promoted_and_a_loss_kept() -> None:
    live, shadow = scores(200, seed=1, shift=0.08)
    gain = compare("grounding", live, shadow)
    assert gain.recommendation == "promote" and gain.interval.low > 0 and gain.sign_p < 0.05
    loss = compare("grounding", shadow, live)
    assert loss.recommendation == "keep" and loss.significant_loss
    assert recommend([gain, loss]) == ("keep", f"grounding: {loss.reason}")


def test_identical_versions_are_never_promoted_beyond_the_binomial_bound() -> None:
    trials, alpha = 400, 0.05
    promoted = 0
    for seed in range(trials):
        live, shadow = scores(60, seed=1000 + seed)
        result = compare("g", live, shadow, resamples=500, seed=seed)
        promoted += result.recommendation == "promote"
    bound = trials * alpha / 2 + 3 * math.sqrt(trials * alpha / 2 * (1 - alpha / 2))
    assert promoted <= bound, (promoted, bound)


def test_too_little_traffic_or_power_asks_for_more() -> None:
    live, shadow = scores(10, seed=3, shift=0.2)
    few = compare("g", live, shadow)
    assert few.recommendation == "needs more traffic" and "10 paired traces < 30" in few.reason
    noisy_live = {f"t{i}": float(i % 2) for i in range(40)}
    noisy_shadow = {f"t{i}": float((i // 2) % 2) for i in range(40)}
    unsure = compare("g", noisy_live, noisy_shadow)
    assert unsure.recommendation == "needs more traffic" and unsure.power < 0.8
    same = {f"t{i}": 0.9 for i in range(100)}
    assert compare("g", same, dict(same)).recommendation == "keep"  # nothing to gain
    assert sign_test(0, 0) == 1.0 and sign_test(10, 0) < 0.01


def test_a_grounded_shadow_on_the_regressed_traffic_is_recommended() -> None:
    """Live: the regressed prompt's answers from trace day 10; shadow: what the grounded prompt
    answers to the same questions with the same retrieved articles (the scripted server's
    grounded answer), both graded by grounding."""
    spec = WorldSpec(end_date=TEST_END_DATE, customers=100, traces_per_day=20)
    frame = _traces_frame(spec)
    rows, _, _ = gradeable(pa.Table.from_pandas(frame, schema=trace_schema()), cutoff=None)
    regressed = [r for r in rows if r["prompt_version"] == 2 and r["status"] == "ok"]
    seeds = {
        s["question_id"]: s
        for s in map(json.loads, (HELPCENTRE_DIR / "trace_seeds.jsonl").read_text().splitlines())
    }
    grader = Grounding()
    live, shadow = {}, {}
    for row in regressed:
        question = json.loads(row["attributes"])["question_id"]
        live[row["trace_id"]] = grader.grade(sample_of(row)).score
        grounded = {**row, "output": seeds[question]["grounded_answer"]}
        shadow[row["trace_id"]] = grader.grade(sample_of(grounded)).score
    result = compare("grounding", live, shadow)
    assert result.pairs == len(regressed) > 30
    assert result.recommendation == "promote", result.reason
    assert result.interval.low > 0.1  # the grounded answers ground better by > 10 points
    assert 0.5 < result.power < 1  # to detect ±0.05 with 82 pairs: reported, not needed here


def test_the_combined_rule_on_each_branch() -> None:
    live, shadow = scores(200, seed=5, shift=-0.08)
    loss = compare("grounding", live, shadow)
    untrusted_loss = compare("judge", live, shadow, trusted=False)
    even = compare("grounding", *scores(200, seed=6))
    few = compare("grounding", *scores(5, seed=7))

    refused = promotion_rule(False, ["grounding −0.09 beyond tolerance"], [even])
    assert not refused.promote and refused.reasons[0] == "offline gate refused"
    alone = promotion_rule(True, [], None)
    assert alone.promote and "no shadow traffic" in alone.reasons[-1]
    lost = promotion_rule(True, [], [loss])
    assert not lost.promote and "shadow loses on grounding" in lost.reasons[-1]
    ignored = promotion_rule(True, [], [untrusted_loss, even])
    assert ignored.promote and any("untrusted" in r for r in ignored.reasons)
    waiting = promotion_rule(True, [], [few])
    assert waiting.promote  # too little traffic does not block; a significant loss would


def test_a_replay_answers_live_traces_with_the_shadow_prompt_as_mallards_own_calls(
    tmp_path,
) -> None:
    """The scripted OpenAI-compatible server stands in for `openai-gpt-4o-mini` (a simulation):
    it answers a prompt that gives it the articles and asks it to use only them with the seed's
    grounded answer, any other prompt with the regressed one."""
    from prometheus_client import CollectorRegistry

    from mallard.config import load_settings
    from mallard.evals.shadow import replay
    from mallard.llm.client import LLMClient
    from mallard.llm.endpoints import Endpoint, Endpoints
    from mallard.llm.metrics import LLMMetrics
    from mallard.llm.prompts.registry import PromptRegistry
    from mallard.llm.prompts.template import PromptTemplate
    from mallard.llm.testing import FakeOpenAIServer
    from mallard.sample_world.assistant import scripted_answer
    from mallard.traces.store import TraceStore

    spec = WorldSpec(end_date=TEST_END_DATE, customers=100, traces_per_day=8)
    frame = _traces_frame(spec)
    rows, _, _ = gradeable(pa.Table.from_pandas(frame, schema=trace_schema()), cutoff=None)
    regressed = [r for r in rows if r["prompt_version"] == 2 and r["status"] == "ok"]
    live = [r for r in regressed if r["endpoint"] == "openai-gpt-4o-mini"][:30]
    local = next(r for r in regressed if r["endpoint"] == "qwen-1.5b-local")
    prompts = Path(__file__).resolve().parents[2] / "catalog" / "prompts" / "support_assistant"
    registry = PromptRegistry(tmp_path / "prompts.sqlite")
    grounded, _ = registry.register(PromptTemplate.from_file(prompts / "v1_grounded.toml"))
    settings = load_settings(home=tmp_path / "home")
    store = TraceStore(tmp_path / "home" / "lake" / "traces")
    with FakeOpenAIServer(model="gpt-4o-mini", reply=scripted_answer) as server:
        endpoints = Endpoints(
            [
                Endpoint(
                    name="openai-gpt-4o-mini",
                    provider="openai-compatible",
                    model="gpt-4o-mini",
                    base_url=server.base_url,
                    timeout_s=5,
                )
            ]
        )
        client = LLMClient(
            endpoints,
            settings=settings,
            metrics=LLMMetrics(CollectorRegistry()),
            semantic_cache=False,
            traces=store.recorder(),
        )
        try:
            shadow = replay([*live, local], grounded, client, run_id="shadow-run")
        finally:
            client.close()
    *shadow, failed = shadow  # an endpoint this deployment cannot reach: an error row
    assert failed["status"] == "error" and "no endpoint named 'qwen-1.5b-local'" in failed["error"]
    assert [r["error"] for r in shadow] == [""] * len(live)
    assert {r["prompt_version"] for r in shadow} == {grounded.version}
    grader = Grounding()
    result = compare(
        "grounding",
        {r["trace_id"]: grader.grade(sample_of(r)).score for r in live},
        {r["trace_id"]: grader.grade(sample_of(r)).score for r in shadow},
        min_pairs=20,
    )
    assert result.recommendation == "promote", result.reason
    # the replayed calls are Mallard's own: the online evals never grade them
    recorded = store.arrow()
    assert recorded.num_rows == len(live)
    assert set(recorded.column("run_id").to_pylist()) == {"shadow-run"}
    assert gradeable(recorded, cutoff=None)[0] == []


def test_the_replayed_traces_are_the_newest_graded_ones_of_other_versions_and_endpoints() -> None:
    import pandas as pd

    from mallard.evals.shadow import shadow_live_pairs

    def row(i: int, version: int, endpoint: str, error: str = "") -> dict:
        stamp = pd.Timestamp("2026-06-30", tz="UTC") + pd.Timedelta(minutes=i)
        return {
            "trace_id": f"t{i}",
            "trace_timestamp": stamp,
            "prompt_version": version,
            "endpoint": endpoint,
            "error": error,
        }

    live = pd.DataFrame(
        [
            row(0, 2, "openai-gpt-4o-mini"),
            row(1, 2, "qwen-1.5b-local"),  # the fallback model answered
            row(2, 1, "openai-gpt-4o-mini"),  # already the candidate's version
            row(3, 2, "openai-gpt-4o-mini", error="TimeoutError"),  # no live grade to pair
            row(4, 2, "openai-gpt-4o-mini"),
            row(5, 3, "openai-gpt-4o-mini"),
        ]
    )
    assert shadow_live_pairs(live, 1, 10) == (["t0", "t1", "t4", "t5"], [2, 3])
    assert shadow_live_pairs(live, 1, 2, ["openai-gpt-4o-mini"]) == (["t4", "t5"], [2, 3])
    assert shadow_live_pairs(live, 1, 10, ["openai-gpt-4o-mini"])[0] == ["t0", "t4", "t5"]


def test_a_grader_outside_shadow_graders_is_shown_but_never_decides() -> None:
    import pytest

    from mallard.evals.online import OnlineEval
    from mallard.specs import DeclarationError

    live, shadow = scores(200, seed=1, shift=0.08)
    gain = compare("grounding", live, shadow)
    loss = compare("answer_relevance", shadow, live)
    assert recommend([gain, loss])[0] == "keep"
    shown = compare("answer_relevance", shadow, live, deciding=False)
    assert recommend([gain, shown]) == ("promote", f"grounding: {gain.reason}")
    verdict = promotion_rule(True, [], [gain, shown])
    assert verdict.promote and any(
        "shown but not deciding: ['answer_relevance']" in r for r in verdict.reasons
    )
    assert not promotion_rule(True, [], [gain, loss]).promote

    spec = OnlineEval(name="x", graders=("grounding", "refusal"), shadow_graders="grounding")
    assert spec.shadow_decides("grounding") and not spec.shadow_decides("refusal")
    with pytest.raises(DeclarationError, match=r"shadow_graders \['relevance'\] are not among"):
        OnlineEval(name="x", graders=("grounding",), shadow_graders=("relevance",))

    from mallard.evals.shadow import ShadowRun

    run = ShadowRun("x", "p", 1, [2], 200, 0, [gain, shown], "promote", "", 0.0, "r", "now")
    kept = ShadowRun.from_dict(json.loads(json.dumps(run.as_dict())))
    assert [c.decides for c in kept.comparisons] == [True, False]
