"""Comparison and the promotion gate on constructed score tables (no model): the regressed
prompt is refused because of the faithfulness interval, a good candidate replaces a regressed
live prompt, untrusted judges and too few items block a promotion."""

from __future__ import annotations

import math
import random

import pytest

from mallard.evals.calibration import Trust
from mallard.evals.compare import Comparison, compare_rows, decide
from mallard.evals.spec import Gate

GATE = Gate(graders=("faithfulness", "grounding"), tolerance=0.05, min_items=5)


def rows(version, scores, grader, errors=()):
    return [
        {
            "item_id": f"Q-{i:03d}",
            "grader": grader,
            "grader_kind": "judge",
            "score": float(v),
            "error": "down" if i in errors else "",
            "prompt_version": version,
        }
        for i, v in enumerate(scores)
    ]


def table(version, faithfulness, grounding):
    return rows(version, faithfulness, "faithfulness") + rows(version, grounding, "grounding")


def comparison(base, cand, baseline_version=1, candidate_version=2):
    graders = compare_rows(base, cand, confidence=GATE.confidence, resamples=GATE.resamples, seed=0)
    items = len({r["item_id"] for r in base} & {r["item_id"] for r in cand})
    return Comparison(
        "support_assistant",
        "support_assistant",
        baseline_version,
        candidate_version,
        "support_questions",
        0,
        "run-a",
        "run-b",
        items,
        GATE.confidence,
        graders,
    )


rng = random.Random(7)
GROUNDED = table(
    1, [1, 1, 1, 0, 1, 1, 1, 1, 0, 1], [0.9, 0.95, 0.85, 0.6, 0.92, 0.88, 0.97, 0.9, 0.7, 0.93]
)
REGRESSED = table(
    2, [0, 1, 0, 0, 0, 1, 0, 0, 0, 0], [0.5, 0.8, 0.45, 0.4, 0.55, 0.9, 0.5, 0.45, 0.4, 0.6]
)
TRUSTED = [
    Trust(
        "faithfulness",
        True,
        "judge 'faithfulness' is trusted: κ 0.62 ≥ 0.40 on 49 items",
        0.62,
        0.4,
        49,
    )
]


def test_compare_rows_paired_intervals_and_win_tie_loss():
    result = compare_rows(GROUNDED, REGRESSED)
    faith = result["faithfulness"]
    assert faith.items == 10 and faith.baseline_mean == 0.8 and faith.candidate_mean == 0.2
    assert faith.diff == pytest.approx(-0.6)
    assert faith.ci_high < 0 and faith.ci_low < faith.diff < faith.ci_high
    assert (faith.wins, faith.ties, faith.losses) == (0, 4, 6)
    errored = compare_rows(rows(1, [1] * 6, "g"), rows(2, [1] * 6, "g", errors={2, 4}))
    assert errored["g"].items == 4 and errored["g"].excluded == 2  # an errored grade drops its pair


def test_gate_refuses_the_regressed_prompt_because_of_faithfulness():
    decision = decide(
        comparison(GROUNDED, REGRESSED), GATE, TRUSTED, candidate_version=2, live_version=1
    )
    assert not decision.promote and decision.verdict == "refused"
    faith = next(r for r in decision.reasons if r.startswith("faithfulness"))
    assert (
        "v2 − v1 = -0.600" in faith
        and "may be worse than live by more than the tolerance 0.050" in faith
    )
    assert any(r.startswith("grounding") for r in decision.reasons)
    check = next(c for c in decision.checks if c["grader"] == "faithfulness")
    assert not check["ok"] and check["ci_high"] < -0.05


def test_gate_refuses_on_faithfulness_alone():
    candidate = table(
        2,
        [0, 1, 0, 0, 0, 1, 0, 0, 0, 0],
        [r["score"] for r in GROUNDED if r["grader"] == "grounding"],
    )
    decision = decide(
        comparison(GROUNDED, candidate), GATE, TRUSTED, candidate_version=2, live_version=1
    )
    assert not decision.promote
    assert [r.split(":")[0] for r in decision.reasons] == ["faithfulness"]


def test_gate_promotes_a_good_candidate_over_a_regressed_live_prompt():
    good = [dict(r, prompt_version=3) for r in GROUNDED]
    decision = decide(
        comparison(REGRESSED, good, 2, 3), GATE, TRUSTED, candidate_version=3, live_version=2
    )
    assert decision.promote, decision.reasons
    assert decision.reasons[0].startswith("not worse than live beyond tolerance")
    assert all(c["ok"] and c["ci_low"] > 0 for c in decision.checks)


def test_equal_versions_pass_within_tolerance_and_noise_beyond_it_does_not():
    same = decide(
        comparison(GROUNDED, [dict(r, prompt_version=2) for r in GROUNDED]),
        GATE,
        TRUSTED,
        candidate_version=2,
        live_version=1,
    )
    assert same.promote
    # A small, uncertain drop: the interval reaches below -tolerance, so the gate cannot show "not worse"
    worse = table(
        2,
        [1, 1, 1, 0, 1, 1, 1, 0, 0, 1],
        [r["score"] - 0.01 for r in GROUNDED if r["grader"] == "grounding"],
    )
    noisy = decide(comparison(GROUNDED, worse), GATE, TRUSTED, candidate_version=2, live_version=1)
    assert not noisy.promote and noisy.reasons[0].startswith("faithfulness")
    lenient = Gate(
        graders=GATE.graders, tolerance=0.05, tolerances={"faithfulness": 0.5}, min_items=5
    )
    assert decide(
        comparison(GROUNDED, worse), lenient, TRUSTED, candidate_version=2, live_version=1
    ).promote


def test_untrusted_judges_and_small_samples_cannot_gate():
    good = [dict(r, prompt_version=3) for r in GROUNDED]
    untrusted = [
        Trust(
            "faithfulness", False, "judge 'faithfulness' is untrusted: κ 0.05 < 0.40", 0.05, 0.4, 12
        )
    ]
    decision = decide(
        comparison(REGRESSED, good, 2, 3), GATE, untrusted, candidate_version=3, live_version=2
    )
    assert not decision.promote
    assert decision.reasons == [
        "judge 'faithfulness' is untrusted: κ 0.05 < 0.40 — it cannot gate a promotion"
    ]
    relaxed = Gate(graders=GATE.graders, require_trusted_judges=False)
    assert decide(
        comparison(REGRESSED, good, 2, 3), relaxed, untrusted, candidate_version=3, live_version=2
    ).promote
    few = [r for r in good if r["item_id"] < "Q-003"]
    small = decide(
        comparison(REGRESSED, few, 2, 3), GATE, TRUSTED, candidate_version=3, live_version=2
    )
    assert not small.promote and "only 3 paired items" in small.reasons[0]
    missing = decide(
        comparison(REGRESSED, [r for r in good if r["grader"] == "grounding"], 2, 3),
        GATE,
        TRUSTED,
        candidate_version=3,
        live_version=2,
    )
    assert "faithfulness: no paired scores for both versions" in missing.reasons
    already = decide(None, GATE, TRUSTED, candidate_version=2, live_version=2)
    assert not already.promote and already.reasons == ["v2 is already live"]
    first = decide(None, GATE, TRUSTED, candidate_version=1, live_version=None)
    assert first.promote and first.reasons[-1] == "no live version yet"


def test_gate_declaration_checks():
    from mallard.specs import DeclarationError

    with pytest.raises(DeclarationError):
        Gate(graders=())
    with pytest.raises(DeclarationError):
        Gate(graders=("a",), tolerance=1.5)
    with pytest.raises(DeclarationError):
        Gate(graders=("a",), tolerances={"a": math.nan})
    with pytest.raises(DeclarationError):
        Gate(graders=("a",), min_items=1)
