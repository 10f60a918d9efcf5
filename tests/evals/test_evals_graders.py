"""Graders: every rule grader, custom graders by name, grounding, embedding similarity, and the
LLM judges' protocol (schema-constrained JSON through the real client against a local server)."""

from __future__ import annotations

import json

import pytest
from evals_helpers import endpoint, scripted_reply

from mallard.evals.graders import (
    Contains,
    ContextRelevanceJudge,
    EmbeddingSimilarity,
    ExactMatch,
    FaithfulnessJudge,
    FunctionGrader,
    Grade,
    GradeContext,
    Grounding,
    JsonSchemaValid,
    NumericTolerance,
    PairwiseJudge,
    Panel,
    ReferenceAgreementJudge,
    Regex,
    RubricJudge,
    Sample,
    grader,
    normalize_text,
    registered,
    resolve,
)
from mallard.evals.graders.base import Grader
from mallard.specs import DeclarationError


def s(output, **kw):
    return Sample(item_id=kw.pop("item_id", "i1"), output=output, **kw)


def test_exact_and_normalized_match():
    exact = ExactMatch()
    assert exact.grade(s("Paris", reference="Paris")).passed
    assert exact.grade(s(" Paris\n", reference="Paris")).score == 1.0  # surrounding whitespace only
    assert not exact.grade(s("paris", reference="Paris")).passed
    norm = ExactMatch("norm", normalize=True)
    assert norm.grade(s("The  Paris!", reference="paris")).passed
    assert norm.grade(s("Ｐａｒｉｓ", reference="paris")).passed  # NFKC full-width letters
    assert normalize_text("An Apple, the pie.") == "apple pie"
    label = ExactMatch("label", target="label", normalize=True)
    assert label.grade(s("PASS", expected_label="pass")).passed
    missing = exact.grade(s("x"))
    assert not missing.passed and missing.error == "missing_target"
    with pytest.raises(DeclarationError, match="target="):
        ExactMatch("bad", target="nope")
    with pytest.raises(DeclarationError, match="threshold"):
        ExactMatch("bad", threshold=2)


def test_contains_and_regex():
    any_of = Contains("c", values=("refund", "credit"))
    assert any_of.grade(s("You get a Refund.")).passed
    assert not any_of.grade(s("No money back")).passed
    all_of = Contains("c2", values=("refund", "7 days", "email"), mode="all")
    half = all_of.grade(s("refund within 7 days"))
    assert half.score == pytest.approx(2 / 3) and not half.passed and "email" in half.reason
    assert not Contains("cs", values=("Refund",), case_sensitive=True).grade(s("refund")).passed
    forbid = Contains("f", values=("guarantee",), forbid=True)
    assert forbid.grade(s("no promises")).passed and not forbid.grade(s("We guarantee it")).passed
    from_item = Contains("m", values_field="must_mention")
    assert from_item.grade(
        s("PS-2001 means too many streams", metadata={"must_mention": ["ps-2001"]})
    ).passed
    assert from_item.grade(s("x", metadata={})).error
    with pytest.raises(DeclarationError):
        Contains("none")
    with pytest.raises(DeclarationError):
        Contains("m", values=("a",), mode="most")
    cite = Regex("cite", pattern=r"\[HC-\d{3}\]")
    assert cite.grade(s("yes [HC-001]")).passed and "HC-001" in cite.grade(s("yes [HC-001]")).reason
    assert not cite.grade(s("yes")).passed
    assert Regex("no_url", pattern=r"https?://", must_match=False).grade(s("none")).passed
    assert Regex("ci", pattern="hello", flags="i").grade(s("HELLO")).passed
    with pytest.raises(DeclarationError, match="not a valid regex"):
        Regex("bad", pattern="(")
    with pytest.raises(DeclarationError, match="flag"):
        Regex("bad", pattern="a", flags="q")


def test_json_schema_and_numeric():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    valid = JsonSchemaValid(schema=schema)
    assert valid.grade(s('{"n": 3}')).passed
    assert valid.grade(s('```json\n{"n": 3}\n```')).passed  # a fenced reply is tolerated
    assert (
        not JsonSchemaValid("strict", schema=schema, strict=True)
        .grade(s('```json\n{"n": 3}\n```'))
        .passed
    )
    wrong = valid.grade(s('{"n": "three"}'))
    assert not wrong.passed and "n" in wrong.reason
    assert not valid.grade(s("no json here")).passed
    with pytest.raises(DeclarationError, match="not a valid JSON schema"):
        JsonSchemaValid("bad", schema={"type": "nonsense"})
    num = NumericTolerance(abs_tol=0.5)
    assert num.grade(s("It costs $12.99 a month", reference="12.99")).passed
    assert num.grade(s("about 13", reference="Premium costs 12.99")).passed
    assert not num.grade(s("about 14", reference="12.99")).passed
    assert NumericTolerance("rel", rel_tol=0.1).grade(s("1,050 users", reference="1000")).passed
    assert NumericTolerance("score", target="score").grade(s("4", expected_score=4.0)).passed
    assert not num.grade(s("no number", reference="3")).passed
    assert num.grade(s("3")).error == "missing_target"
    assert NumericTolerance("neg").grade(s("-2.5e1", reference="-25")).passed


def test_grounding_k_precision():
    g = Grounding(threshold=0.7)
    contexts = ["[HC-001] Plans\nStandard costs $12.99 a month and allows 2 streams."]
    grounded = g.grade(
        s("Standard costs $12.99 a month, with 2 streams [HC-001].", contexts=contexts)
    )
    assert grounded.score == 1.0 and grounded.passed
    made_up = g.grade(s("Standard costs $9.99 and includes free popcorn.", contexts=contexts))
    assert made_up.score < 0.7 and not made_up.passed
    assert "'9.99'" in made_up.reason and "popcorn" in made_up.reason
    assert g.grade(s("anything")).error == "missing_input"


def test_custom_graders_by_name():
    @grader("short_answer", threshold=1.0)
    def short_answer(sample):
        return len(sample.output) <= 10, "length check"

    assert isinstance(short_answer, FunctionGrader) and registered()["short_answer"] is short_answer
    assert resolve(["short_answer"])[0].grade(s("tiny")).passed
    assert not short_answer.grade(s("far too long an answer")).passed

    @grader("scored")
    def scored(sample):
        return 0.25

    assert scored.grade(s("x")).score == 0.25 and not scored.grade(s("x")).passed

    @grader("raises")
    def raises(sample):
        raise RuntimeError("boom")

    assert raises.grade(s("x")).error == "RuntimeError: boom"

    @grader("bad_type")
    def bad_type(sample):
        return "yes"

    with pytest.raises(DeclarationError, match="returned str"):
        bad_type.grade(s("x"))
    with pytest.raises(DeclarationError, match="no grader named"):
        resolve(["nope_never"])
    # The catalog's own custom graders are registered on import
    from catalog.graders import cites_retrieved_article

    assert cites_retrieved_article.grade(s("Yes [HC-001].", context_ids=["HC-001"])).passed
    assert (
        "not retrieved"
        in cites_retrieved_article.grade(s("Yes [HC-009].", context_ids=["HC-001"])).reason
    )
    assert registered()["concise"].grade(s("word " * 160)).score == 0.5


def test_fingerprints_track_configuration():
    a, b = Contains("c", values=("x",)), Contains("c", values=("y",))
    assert (
        a.fingerprint() != b.fingerprint()
        and a.fingerprint() == Contains("c", values=("x",)).fingerprint()
    )


def test_embedding_similarity_with_minilm():
    sim = EmbeddingSimilarity(threshold=0.6)
    grades = sim.grade_many(
        [
            s(
                "You can download on Standard and Premium, not on Basic.",
                reference="Standard and Premium allow downloads; Basic does not.",
            ),
            s(
                "Our office is closed on Sundays.",
                reference="Standard and Premium allow downloads; Basic does not.",
            ),
            s("x"),
        ]
    )
    assert grades[0].passed and grades[0].score > 0.6
    assert not grades[1].passed and grades[1].score < grades[0].score
    assert grades[2].error == "missing_target"


class StubGrader(Grader):
    def __init__(self, name, score, error=""):
        super().__init__(name, threshold=0.5)
        self.value, self.err = score, error

    def grade(self, sample, ctx=None):
        return Grade(
            score=self.value,
            passed=self.value >= 0.5,
            reason=self.name,
            error=self.err,
            cost_usd=0.01,
        )


def test_panel_majority_and_mean():
    majority = Panel("p", [StubGrader("a", 1.0), StubGrader("b", 1.0), StubGrader("c", 0.0)])
    grade = majority.grade(s("x"))
    assert (
        grade.passed
        and grade.score == pytest.approx(2 / 3)
        and grade.cost_usd == pytest.approx(0.03)
    )
    assert (
        not Panel("p", [StubGrader("a", 1.0), StubGrader("b", 0.0)]).grade(s("x")).passed
    )  # 1/2 is no majority
    mean = Panel("m", [StubGrader("a", 0.9), StubGrader("b", 0.3)], mode="mean", threshold=0.6)
    assert mean.grade(s("x")).score == pytest.approx(0.6) and mean.grade(s("x")).passed
    errored = Panel("e", [StubGrader("a", 1.0), StubGrader("b", 0.0, error="down")])
    assert errored.grade(s("x")).passed  # failed members do not vote
    with pytest.raises(DeclarationError):
        Panel("one", [StubGrader("a", 1.0)])


@pytest.fixture
def judge_client(make_client):
    from mallard.llm.testing import FakeOpenAIServer

    with FakeOpenAIServer(reply=scripted_reply) as server:
        yield make_client([endpoint("judge", server)]), server


def test_llm_judges_protocol(judge_client):
    client, server = judge_client
    ctx = GradeContext(client=client, run_id="t")
    article = "[HC-001] Plans\nStandard costs $12.99 a month. It allows 2 streams."
    good = s(
        "Standard costs $12.99 a month [HC-001].",
        inputs={"question": "Price?"},
        contexts=[article],
        context_ids=["HC-001"],
        reference="Standard is $12.99 monthly.",
    )
    bad = s(
        "Standard is free forever.",
        inputs={"question": "Price?"},
        contexts=[article],
        context_ids=["HC-001"],
        reference="Standard is $12.99 monthly.",
    )
    faithful = FaithfulnessJudge(endpoint="judge", min_kappa=0.4)
    yes, no = faithful.grade(good, ctx), faithful.grade(bad, ctx)
    assert (yes.score, yes.passed, no.score, no.passed) == (1.0, True, 0.0, False)
    assert yes.reason.startswith("supported=yes: checked") and yes.details["model"] == "judge-model"
    body = server.requests[0].body
    assert body["response_format"]["type"] in ("json_object", "json_schema")
    schema = body["response_format"].get("schema") or body["response_format"].get(
        "json_schema", {}
    ).get("schema")
    sent = json.dumps(body)
    assert "reasoning" in sent and "Standard costs $12.99" in sent and "Price?" in sent
    assert schema is None or list(schema["properties"]) == [
        "reasoning",
        "supported",
    ]  # reasoning first
    again = faithful.grade(good, ctx)
    assert again.cached and again.score == 1.0  # the LLM layer's exact cache
    assert faithful.grade(s("x", contexts=[]), ctx).error == "missing_input"

    agree = ReferenceAgreementJudge(endpoint="judge")
    assert agree.grade(good, ctx).passed and not agree.grade(bad, ctx).passed
    assert agree.grade(s("x", inputs={"question": "q"}), ctx).error == "missing_input"
    rubric = RubricJudge(endpoint="judge", rubric="Must give the price.")
    high, low = rubric.grade(good, ctx), rubric.grade(bad, ctx)
    assert (high.raw, high.score, high.passed) == (5.0, 1.0, True)
    assert (low.raw, low.score, low.passed) == (1.0, 0.0, False)
    assert "Must give the price." in json.dumps(server.requests[-1].body)
    relevance = ContextRelevanceJudge(endpoint="judge")
    assert relevance.grade(good, ctx).passed
    repeated = faithful.grade_repeated(good, ctx, 3)
    assert len(repeated) == 3 and not any(g.cached for g in repeated)  # repeat skips the caches
    with pytest.raises(DeclarationError, match="needs an LLM client"):
        faithful.grade(good, None)
    assert faithful.fingerprint(ctx) != FaithfulnessJudge(
        endpoint="judge", max_tokens=50
    ).fingerprint(ctx)


def test_pairwise_both_orders_and_position_ties(judge_client):
    client, server = judge_client
    ctx = GradeContext(client=client)
    judge = PairwiseJudge(endpoint="judge")
    cited = "Standard is $12.99 [HC-001]."
    plain = "Standard is cheap."
    win = judge.grade(s(cited, other_output=plain, inputs={"question": "Price?"}), ctx)
    assert (
        win.details["outcome"] == "win" and win.score == 1.0 and win.details["position_consistent"]
    )
    loss = judge.grade(s(plain, other_output=cited, inputs={"question": "Price?"}), ctx)
    assert loss.details["outcome"] == "loss" and loss.score == 0.0
    # Neither cites: the scripted judge always says "A" (position bias) -> the orders disagree -> tie
    tie = judge.grade(
        s("alpha-answer", other_output="beta-answer", inputs={"question": "Price?"}), ctx
    )
    assert {
        k: tie.details[k] for k in ("forward", "backward", "position_consistent", "outcome")
    } == {
        "forward": "A",
        "backward": "A",
        "position_consistent": False,
        "outcome": "tie",
    }
    assert tie.details["sampled_consistent"] is False
    assert tie.score == 0.5 and "disagreed" in tie.reason
    bodies = [json.dumps(r.body) for r in server.requests[-2:]]
    assert bodies[0].index("alpha-answer") < bodies[0].index("beta-answer")
    assert bodies[1].index("beta-answer") < bodies[1].index("alpha-answer")
    assert judge.grade(s("x"), ctx).error == "missing_input"


def test_judge_failure_is_recorded_not_raised(make_client):
    from mallard.llm.testing import FakeOpenAIServer

    with FakeOpenAIServer(reply=lambda body: "not json") as server:
        client = make_client([endpoint("judge", server)])
        grade = FaithfulnessJudge(endpoint="judge").grade(
            s("x", contexts=["c"]), GradeContext(client=client)
        )
    assert (
        not grade.passed
        and grade.error == "StructuredOutputError"
        and "judge call failed" in grade.reason
    )
