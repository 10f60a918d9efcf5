"""Calibration arithmetic (agreement, repeat variance) and judge trust by fingerprint."""

from __future__ import annotations

import math

import pytest

from mallard.evals.calibration import CalibrationReport, calibrate_judge, judge_trust, record
from mallard.evals.graders import FaithfulnessJudge, Grade, GradeContext, Panel
from mallard.evals.graders.base import Grader


class ScriptedJudge(Grader):
    """Passes the items in `passes`; items in `flaky` alternate between repeats."""

    kind = "judge"

    def __init__(self, passes, flaky=(), min_kappa=None):
        super().__init__("scripted", threshold=0.5)
        self.passes, self.flaky, self.min_kappa = set(passes), set(flaky), min_kappa
        self.calls = 0

    @property
    def judges(self):
        return [self]

    def grade(self, sample, ctx=None):
        self.calls += 1
        ok = sample.item_id in self.passes
        if sample.item_id in self.flaky and self.calls % 2:
            ok = not ok
        return Grade(
            score=1.0 if ok else 0.0,
            passed=ok,
            reason=f"answer {sample.output}",
            raw=5.0 if ok else 1.0,
        )

    def grade_repeated(self, sample, ctx, repeat):
        return [self.grade(sample, ctx) for _ in range(repeat)]


def items(verdicts, scores=None):
    return [
        {
            "item_id": f"C-{i}",
            "inputs": {"question": "q", "answer": f"a{i}"},
            "reference": "r",
            "expected_label": v,
            "expected_score": (scores or [5 if v == "pass" else 1] * len(verdicts))[i],
            "category": "all",
            "metadata": {},
        }
        for i, v in enumerate(verdicts)
    ]


def test_agreement_and_known_kappa():
    # 50 items: human pass 25 / fail 25; the judge passes 20 of the passes and 10 of the fails -> kappa 0.4
    verdicts = ["pass"] * 25 + ["fail"] * 25
    judge = ScriptedJudge([f"C-{i}" for i in list(range(20)) + list(range(25, 35))])
    report = calibrate_judge(judge, items(verdicts), GradeContext())
    assert (
        report.items == 50
        and report.accuracy == pytest.approx(0.7)
        and report.kappa == pytest.approx(0.4)
    )
    assert report.spearman == pytest.approx(
        250 / math.sqrt(25 * 25 * 30 * 20)
    )  # binary vs binary: phi
    assert report.repeat == 1 and report.flip_rate == 0.0 and report.trusted  # no minimum declared
    assert report.rows[0] == {
        "item_id": "C-0",
        "human": "pass",
        "judge": "pass",
        "human_score": 5,
        "judge_raw": 5.0,
        "reason": "answer a0",
    }


def test_repeat_measures_the_judges_own_variance():
    verdicts = ["pass", "pass", "fail", "fail"]
    judge = ScriptedJudge(["C-0", "C-1"], flaky=["C-1", "C-3"], min_kappa=0.5)
    report = calibrate_judge(judge, items(verdicts), GradeContext(), repeat=4)
    assert judge.calls == 16
    assert report.flip_rate == 0.5  # two of four items changed verdict between repeats
    assert report.score_std == pytest.approx((0 + 0.5 + 0 + 0.5) / 4)
    assert report.items == 4 and report.repeat == 4


def test_trust_follows_the_latest_calibration_of_the_same_fingerprint(settings):
    judge = FaithfulnessJudge(endpoint="smollm2-local", min_kappa=0.4)
    ctx = GradeContext()
    (trust,) = judge_trust(judge, ctx, settings=settings)
    assert not trust.trusted and "is not calibrated" in trust.reason

    def report(kappa, fingerprint=None):
        return CalibrationReport(
            judge="faithfulness",
            fingerprint=fingerprint or judge.fingerprint(ctx),
            endpoint="smollm2-local",
            model="m",
            items=49,
            errors=0,
            accuracy=0.8,
            kappa=kappa,
            spearman=0.5,
            repeat=1,
            flip_rate=0.0,
            score_std=0.0,
            min_kappa=0.4,
        )

    record(
        [report(0.2)],
        dataset="support_calibration",
        dataset_version=0,
        slice_name=None,
        settings=settings,
    )
    (trust,) = judge_trust(judge, ctx, settings=settings)
    assert (
        not trust.trusted and trust.kappa == pytest.approx(0.2) and "κ 0.20 < 0.40" in trust.reason
    )
    record(
        [report(0.7)],
        dataset="support_calibration",
        dataset_version=0,
        slice_name=None,
        settings=settings,
    )
    (trust,) = judge_trust(judge, ctx, settings=settings)
    assert trust.trusted and trust.kappa == pytest.approx(0.7)
    # A changed judge (another max_tokens) is another fingerprint: its calibration does not carry over
    changed = FaithfulnessJudge(endpoint="smollm2-local", min_kappa=0.4, max_tokens=64)
    assert not judge_trust(changed, ctx, settings=settings)[0].trusted
    # NaN kappa (a judge that always says yes on a one-sided slice) is never trusted
    record(
        [report(math.nan)],
        dataset="support_calibration",
        dataset_version=0,
        slice_name=None,
        settings=settings,
    )
    assert "κ undefined" in judge_trust(judge, ctx, settings=settings)[0].reason
    # Panels: their members' trust (and their own, when they declare a minimum)
    panel = Panel("panel", [judge, FaithfulnessJudge("other", endpoint="smollm2-local")])
    verdicts = [t.trusted for t in judge_trust(panel, ctx, settings=settings)]
    assert verdicts == [
        False,
        True,
    ]  # the first member's latest calibration is NaN; the other declares none
