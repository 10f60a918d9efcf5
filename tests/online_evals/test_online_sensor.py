"""The online-eval sensor over a real traces table on a real Dagster instance: its cursor on the
table's Delta version, own calls left out, the delay, batches of hours, and nothing graded twice
across ticks, restarts and overlapping runs."""

from __future__ import annotations

import datetime as dt
import json
import threading

import dagster as dg
from online_helpers import AT, append, call, execute

from assets.names import hour_key, online_eval_job
from assets.online_evals import ONLINE_EVAL_ASSETS, ONLINE_EVAL_JOBS, build_online_eval_asset
from catalog.graders import GRADERS
from catalog.online_evals import ONLINE_CATALOG, support_assistant_live
from mallard.config import load_settings
from mallard.evals import online_scores
from mallard.evals.online import OnlineEval, OnlineEvalCatalog
from sensors.online_evals import build_online_eval_sensor, online_eval_requests
from sensors.sources import RANGE_END, RANGE_START

SENSOR = build_online_eval_sensor(ONLINE_EVAL_JOBS)
SPEC = support_assistant_live


def tick(instance, resources, cursor):
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as ctx:
        return SENSOR.evaluate_tick(ctx)


def requested(result) -> list[str]:
    return [
        t
        for r in result.run_requests
        for t in r.run_config["ops"]["online_evals__" + SPEC.name]["config"]["trace_ids"]
    ]


def test_the_cursor_advances_and_a_second_tick_launches_nothing(online_home, online_resources):
    calls = [call(i * 5) for i in range(40)]  # 09:00 … 12:15: four hours
    version = append(online_home, calls)
    sampled = {c["trace_id"] for c in calls if SPEC.sampled(c["trace_id"])}
    assert 10 < len(sampled) < 30  # the catalog's rate, 0.5
    with dg.instance_for_test() as instance:
        first = tick(instance, online_resources, None)
        assert set(requested(first)) == sampled and len(requested(first)) == len(sampled)
        (request,) = first.run_requests  # 40 traces, batch_size 500: one run for the 4 hours
        assert request.job_name == online_eval_job(SPEC.name)
        assert (request.tags[RANGE_START], request.tags[RANGE_END]) == (
            hour_key(AT),
            hour_key(AT + dt.timedelta(hours=3)),
        )
        assert request.tags["mallard/traces"] == str(len(sampled))
        assert json.loads(first.cursor)[SPEC.name]["version"] == version

        second = tick(instance, online_resources, first.cursor)
        assert not second.run_requests
        assert "no new traces" in (second.skip_message or "")

        more = [call(200 + i) for i in range(20)]
        append(online_home, more)
        third = tick(instance, online_resources, second.cursor)
        assert set(requested(third)) == {c["trace_id"] for c in more if SPEC.sampled(c["trace_id"])}
        assert json.loads(third.cursor)[SPEC.name]["version"] == version + 1


def test_mallards_own_calls_are_never_requested(online_home, online_resources):
    own = [call(i, run_id="dagster-run-1") for i in range(30)]
    # a production-looking trace with one span from a grading run is Mallard's own too
    mixed = call(40, trace_id="ab" * 16, span_id="0000000000000002", parent_span_id="")
    child = call(40, trace_id="ab" * 16, span_kind="retrieval", run_id="run-2")
    append(online_home, [*own, mixed, child])
    with dg.instance_for_test() as instance:
        result = tick(instance, online_resources, None)
    assert not result.run_requests
    assert "own_calls 31" in result.skip_message


def test_the_delay_holds_traces_until_their_last_span_is_old_enough(online_home, online_resources):
    spec = OnlineEval(name="every_trace", graders=("grounding",), delay=dt.timedelta(minutes=10))
    catalog = OnlineEvalCatalog([spec], GRADERS)
    calls = [call(i) for i in range(30)]  # 09:00 … 09:29
    # a two-span trace whose second span starts late: the trace waits for it
    late = call(5, trace_id="cd" * 16, span_id="0000000000000002")
    late_child = call(25, trace_id="cd" * 16, span_id="0000000000000003", parent_span_id="")
    append(online_home, [*calls, late, late_child])

    def requests(cursor, minute):
        reqs, new_cursor, found = online_eval_requests(
            cursor, now=AT + dt.timedelta(minutes=minute), catalog=catalog, **online_resources
        )
        ids = [
            t
            for r in reqs
            for t in r.run_config["ops"]["online_evals__every_trace"]["config"]["trace_ids"]
        ]
        return ids, new_cursor, found[spec.name]

    ids, cursor, found = requests(None, 30)  # cutoff 09:20
    assert ids == [c["trace_id"] for c in calls[:21]]
    assert found["held_by_delay"] == 10  # 09:21 … 09:29 and the trace with a span at 09:25
    ids, cursor, found = requests(cursor, 34)  # cutoff 09:24: nothing new is in the table
    assert ids == [c["trace_id"] for c in calls[21:25]]
    ids, cursor, found = requests(cursor, 60)
    assert set(ids) == {c["trace_id"] for c in calls[25:]} | {"cd" * 16}
    ids, cursor, found = requests(cursor, 90)
    assert ids == [] and found["held_by_delay"] == 0


def test_batches_are_ranges_of_hours_bounded_in_traces(online_home, online_resources):
    spec = OnlineEval(name="small_batches", graders=("grounding",), batch_size=25)
    catalog = OnlineEvalCatalog([spec], GRADERS)
    append(online_home, [call(i * 6) for i in range(100)])  # 10 per hour over 10 hours
    reqs, _, _ = online_eval_requests(None, catalog=catalog, **online_resources)
    sizes = [int(r.tags["mallard/traces"]) for r in reqs]
    assert sizes == [20, 20, 20, 20, 20]  # two hours a run: a third would pass 25
    assert [r.tags[RANGE_START] for r in reqs][:2] == [
        hour_key(AT),
        hour_key(AT + dt.timedelta(hours=2)),
    ]
    assert len({r.run_key for r in reqs}) == 5


def test_nothing_is_graded_twice_across_restarts_and_overlapping_runs(
    online_home, online_resources
):
    calls = [call(i * 7) for i in range(24)]
    append(online_home, calls)
    settings = load_settings(home=online_home)
    (asset,) = ONLINE_EVAL_ASSETS
    with dg.instance_for_test() as instance:
        first = tick(instance, online_resources, None)
        (request,) = first.run_requests
        result = execute(request, asset, online_resources, instance)
        graded = len(requested(first))
        stored = online_scores.frame(settings, eval_name=SPEC.name)
        assert len(stored) == graded * len(SPEC.graders)
        assert set(stored["trace_id"]) == set(requested(first))
        hours = {e.partition for e in result.get_asset_materialization_events()}
        assert hour_key(AT) in hours and len(hours) == 3  # 09:00 … 11:41, a single run

        # A restart that lost the cursor finds every sampled trace graded already.
        restarted = tick(instance, online_resources, None)
        assert not restarted.run_requests
        assert f"already_graded {graded}" in restarted.skip_message

        # The same batch run again, and twice at once: no grade is stored again.
        again = execute(request, asset, online_resources, instance)
        meta = again.asset_materializations_for_node(asset.node_def.name)[-1].metadata
        assert meta["grades_stored"].value == 0
        rows = online_scores.frame(settings, eval_name=SPEC.name).to_dict("records")
        copies = [dict(r, run_id="overlap") for r in rows]
        outcomes: list[int] = []
        threads = [
            threading.Thread(
                target=lambda: outcomes.append(online_scores.append(copies, settings=settings))
            )
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert outcomes == [0, 0, 0]
        assert len(online_scores.frame(settings, eval_name=SPEC.name)) == len(stored)


def test_a_new_grader_version_grades_the_traces_again(online_home, online_resources):
    calls = [call(i) for i in range(8)]
    append(online_home, calls)
    settings = load_settings(home=online_home)
    from mallard.evals.graders import Grounding

    def run(threshold: float) -> int:
        grader = Grounding("grounding", threshold=threshold)
        spec = OnlineEval(name="versioned", graders=(grader,))
        catalog = OnlineEvalCatalog([spec])
        reqs, _, _ = online_eval_requests(None, catalog=catalog, **online_resources)
        with dg.DagsterInstance.ephemeral() as instance:
            for request in reqs:
                execute(request, build_online_eval_asset(spec, catalog), online_resources, instance)
        return len(reqs)

    assert run(0.7) == 1
    assert run(0.7) == 0  # the same version: nothing to do
    assert run(0.8) == 1  # a new threshold is a new grader version
    stored = online_scores.frame(settings, eval_name="versioned")
    assert len(stored) == 16 and stored["grader_fingerprint"].nunique() == 2
    assert ONLINE_CATALOG.get(SPEC.name) is SPEC


def test_a_trace_completed_in_a_later_version_is_read_with_all_its_spans(online_home) -> None:
    from mallard.evals.online import changed_traces, gradeable

    trace = "ef" * 16
    retrieval = call(
        0, trace_id=trace, span_id="00000000000000a1", span_kind="retrieval", output=""
    )
    first = append(online_home, [retrieval, *[call(100 + i) for i in range(5)]])
    generation = call(
        3,
        trace_id=trace,
        span_id="00000000000000a2",
        parent_span_id="",
        retrieved_text="",
        retrieved_ids=[],
    )
    second = append(online_home, [generation])
    spans = changed_traces(
        online_home / "lake" / "traces",
        version=second,
        since_version=first,
        through=AT + dt.timedelta(hours=3),
    )
    assert sorted(spans.column("span_id").to_pylist()) == ["00000000000000a1", "00000000000000a2"]
    (row,), _, _ = gradeable(spans, cutoff=None)
    assert row["retrieved_ids"] == ["HC-001"]  # the context came from the first version's span
