"""Failed grades are tried again by later ticks, up to a bound; an uncalibrated judge's scores
are stored and shown as untrusted."""

from __future__ import annotations

import dagster as dg
from online_helpers import append, call, execute

from assets.online_evals import build_online_eval_asset
from mallard.config import load_settings
from mallard.evals import online_scores
from mallard.evals.graders import FunctionGrader, Grader
from mallard.evals.online import OnlineEval, OnlineEvalCatalog
from sensors.online_evals import online_eval_requests

SEEN: dict[str, int] = {}


def flaky(sample):
    """Times out on a trace's first try (a judge endpoint that was briefly down)."""
    SEEN[sample.item_id] = SEEN.get(sample.item_id, 0) + 1
    if SEEN[sample.item_id] == 1:
        raise TimeoutError("judge endpoint timed out")
    return True


def broken(sample):
    """Never works."""
    raise RuntimeError("always broken")


def test_failed_grades_are_retried_until_they_succeed_or_run_out_of_attempts(
    online_home, online_resources
) -> None:
    SEEN.clear()
    append(online_home, [call(i) for i in range(4)])
    spec = OnlineEval(
        name="retried", graders=(FunctionGrader("flaky", flaky), FunctionGrader("broken", broken))
    )
    catalog = OnlineEvalCatalog([spec])
    asset = build_online_eval_asset(spec, catalog)
    settings = load_settings(home=online_home)
    cursor, attempts = None, []
    with dg.DagsterInstance.ephemeral() as instance:
        for _ in range(5):
            requests, cursor, _ = online_eval_requests(cursor, catalog=catalog, **online_resources)
            attempts.append([r.tags["mallard/attempt"] for r in requests])
            assert len({r.run_key for r in requests}) == len(requests)
            for request in requests:
                execute(request, asset, online_resources, instance)
    assert attempts == [["1"], ["2"], ["3"], [], []]  # then `broken` has used its 3 attempts
    assert {f"{i:032x}": 2 for i in range(4)} == SEEN  # flaky: failed once, then graded, once
    rows = online_scores.frame(settings, eval_name="retried")
    assert len(rows[rows["grader"] == "broken"]) == 4 * online_scores.MAX_ATTEMPTS
    now = online_scores.current(rows)
    assert len(now) == 8
    assert now[now["grader"] == "flaky"]["passed"].all()
    assert (now[now["grader"] == "broken"]["error"] != "").all()


class UncalibratedJudge(Grader):
    """A judge that declares a minimum κ and was never calibrated."""

    kind = "judge"
    min_kappa = 0.4

    @property
    def judges(self):
        return [self]

    def grade(self, sample, ctx=None):
        return self._grade(1.0, "looks fine")


def test_an_untrusted_judges_scores_are_stored_and_marked(online_home, online_resources) -> None:
    append(online_home, [call(i) for i in range(3)])
    spec = OnlineEval(name="judged", graders=(UncalibratedJudge("loose_judge"), "grounding"))
    from catalog.graders import GRADERS

    catalog = OnlineEvalCatalog([spec], GRADERS)
    (request,) = online_eval_requests(None, catalog=catalog, **online_resources)[0]
    with dg.DagsterInstance.ephemeral() as instance:
        result = execute(
            request, build_online_eval_asset(spec, catalog), online_resources, instance
        )
    rows = online_scores.frame(load_settings(home=online_home), eval_name="judged")
    judged = rows[rows["grader"] == "loose_judge"]
    assert len(judged) == 3 and judged["passed"].all()  # shown …
    assert not judged["trusted"].any()  # … but marked: it cannot decide anything
    assert "not calibrated" in judged["trust_reason"].iloc[0]
    assert rows[rows["grader"] == "grounding"]["trusted"].all()
    table = result.get_asset_materialization_events()[0].materialization.metadata["scores"].value
    assert "| loose_judge | 3 | 0 | 1.0 | 1.0 | 0.0 | False |" in table
