"""Probability verdicts: yes/no judges score P(yes), the rubric its expected 1–5 score and the
pairwise judge compares the two orders by probability — read from the verdict token's
log-probabilities on a scripted OpenAI-compatible server and on SmolLM2; an endpoint without
log-probabilities falls back to the parsed verdict, and the grade says which path it took."""

from __future__ import annotations

import json

import pytest
from evals_helpers import endpoint

from mallard.evals.graders import (
    FaithfulnessJudge,
    GradeContext,
    PairwiseJudge,
    ReferenceAgreementJudge,
    RubricJudge,
    Sample,
)
from mallard.evals.graders.verdicts import option_distribution
from mallard.llm.testing import FakeOpenAIServer


def reply(body):
    schema = json.dumps(body.get("response_format") or {})
    if '"score"' in schema:
        return json.dumps({"reasoning": "ok", "score": 4}), {"4": {"4": 0.5, "5": 0.3, "3": 0.2}}
    if '"better"' in schema:
        return json.dumps({"reasoning": "ok", "better": "A"}), {"A": {"A": 0.6, "B": 0.4}}
    field = "supported" if "supported" in schema else "agrees"
    return json.dumps({"reasoning": "ok", field: "yes"}), {"yes": {"yes": 0.7, "no": 0.3}}


SAMPLE = Sample(
    "i1", "Basic is $7.99.", {"question": "Price?"}, reference="$7.99", contexts=["Basic $7.99"]
)


@pytest.mark.parametrize("logprobs", [True, False])
def test_judges_score_from_probabilities_or_fall_back(make_client, logprobs):
    with FakeOpenAIServer(reply=reply, logprobs=logprobs) as server:
        client = make_client([endpoint("judge", server)])
        ctx = GradeContext(client=client)
        faithful = FaithfulnessJudge(endpoint="judge").grade(SAMPLE, ctx)
        agrees = ReferenceAgreementJudge(endpoint="judge").grade(SAMPLE, ctx)
        rubric = RubricJudge(endpoint="judge").grade(SAMPLE, ctx)
        assert server.requests[-1].body["top_logprobs"] == 20
    path = "logprobs" if logprobs else "parsed"
    for grade in (faithful, agrees, rubric):
        assert grade.details["verdict_path"] == path
    if logprobs:
        assert faithful.score == pytest.approx(0.7) and faithful.passed
        assert agrees.details["p_yes"] == pytest.approx(0.7) and "P(yes) 0.70" in agrees.reason
        assert rubric.raw == pytest.approx(4.1) and rubric.score == pytest.approx(3.1 / 4)
    else:
        assert faithful.score == 1.0 and "[parsed verdict]" in faithful.reason
        assert rubric.raw == 4.0


def test_pairwise_compares_orders_by_probability(make_client):
    with FakeOpenAIServer(reply=reply) as server:
        client = make_client([endpoint("judge", server)])
        ctx = GradeContext(client=client)
        pair = Sample("i1", "one", {"question": "q"}, reference="r", other_output="two")
        # The scripted judge prefers position A by 0.6 to 0.4 in both orders: pure position bias.
        plain_judge = PairwiseJudge(endpoint="judge", tie_band=0.0)
        biased = plain_judge.grade(pair, ctx)
        assert biased.details["verdict_path"] == "logprobs"
        assert biased.details["forward_a_margin"] == pytest.approx(0.2)
        assert not biased.details["position_consistent"] and biased.details["outcome"] == "tie"
        # Measured and subtracted, the bias leaves no preference: a consistent tie.
        corrected_judge = PairwiseJudge(endpoint="judge", position_bias=0.2)
        corrected = corrected_judge.grade(pair, ctx)
        assert corrected.details["position_consistent"] and corrected.details["outcome"] == "tie"
        assert corrected.details["margin"] == pytest.approx(0.0)
        assert corrected_judge.fingerprint(ctx) != plain_judge.fingerprint(ctx)


def test_option_distribution_matches_prefixes_and_floors_missing_options():
    tokens = [
        {"token": '{"', "logprob": 0.0, "top_logprobs": []},
        {"token": 'verdict":', "logprob": 0.0, "top_logprobs": []},
        {
            "token": ' "y',
            "logprob": -0.1,
            "top_logprobs": [
                {"token": ' "y', "logprob": -0.1},
                {"token": ' "Yes', "logprob": -3.0},
                {"token": " maybe", "logprob": -4.0},
            ],
        },
        {"token": 'es"}', "logprob": 0.0, "top_logprobs": []},
    ]
    dist = option_distribution(tokens, "verdict", ("yes", "no"))
    assert dist is not None and dist.token == ' "y'
    # "no" is not listed: it gets at most the least likely listed probability
    assert 0.95 < dist.p("yes") < 1.0 and dist.p("no") > 0
    assert option_distribution(None, "verdict", ("yes", "no")) is None
    assert option_distribution(tokens, "other", ("yes", "no")) is None
