"""The online-eval sensor: new production traces → runs of the online eval jobs.

Its cursor holds, per online eval, the traces table's Delta version it last read and the time
`through` which traces were ready (their newest span at least the eval's delay old). A tick reads
only the traces that gained a span in a newer version, or that were held back by the delay,
leaves out Mallard's own traces (a `run_id` on any span: grading and replay runs never trigger
grading), and those the filter or the sample leave out or that are graded already
(`online_scores`), and requests one run per batch: consecutive hours holding at most the eval's
`batch_size` traces, as one single-run backfill of those hours, the batch's trace ids pinned in
the run's config. Traces whose grade failed are requested again (up to
`online_scores.MAX_ATTEMPTS`). Nothing new is a skip; the run key (eval, traces version, hours,
the batch's traces and attempt) keeps a restarted sensor from requesting a batch twice, and
`online_scores` stores a grade once even when two runs overlap.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

import dagster as dg

from assets.names import ONLINE_EVAL_SENSOR, hour_key, online_eval_job, online_eval_key
from assets.online_evals import PARTITIONS_START, _label_version
from catalog.online_evals import ONLINE_CATALOG
from mallard.evals.online import OnlineEvalCatalog
from resources import LakeResource, LLMResource, PromptRegistryResource, TraceStoreResource
from sensors.sources import IN_PROCESS, RANGE_END, RANGE_START


def _op_name(name: str) -> str:
    return "__".join(online_eval_key(name).path)


class _Declared:
    def __init__(self, endpoints: Any):
        self.endpoints = endpoints


def online_eval_requests(
    cursor: str | None,
    *,
    lake: LakeResource,
    traces: TraceStoreResource,
    prompts: PromptRegistryResource,
    llm: LLMResource,
    now: dt.datetime | None = None,
    catalog: OnlineEvalCatalog = ONLINE_CATALOG,
) -> tuple[list[dg.RunRequest], str, dict[str, dict[str, int]]]:
    """(the run requests, the new cursor, per eval what was found) for one tick."""
    from mallard.evals import online_scores
    from mallard.evals.graders.base import GradeContext
    from mallard.evals.online import batches, changed_traces, select

    now = now or dt.datetime.now(dt.UTC)
    state: dict[str, Any] = json.loads(cursor) if cursor else {}
    store = traces.store()
    settings = lake.settings()
    version = store.version()
    requests: list[dg.RunRequest] = []
    found: dict[str, dict[str, int]] = {}
    if version is None:
        return requests, json.dumps(state, sort_keys=True), found
    for spec in catalog.evals:
        mine = state.get(spec.name, {})
        since = mine.get("version")
        through = dt.datetime.fromisoformat(mine["through"]) if mine.get("through") else None
        cutoff = now - spec.delay
        # The declared endpoints give a judge the same fingerprint as in the run, no client built.
        ctx = GradeContext(client=_Declared(llm.endpoints()), settings=settings)
        fingerprints = [g.fingerprint(ctx) for g in catalog.graders(spec.name)]
        retry = online_scores.to_retry(settings, spec.name, fingerprints)
        spans = changed_traces(
            store.table_path, version=version, since_version=since, through=through, also=retry
        )
        ids = sorted(set(spans.column("trace_id").to_pylist()))
        complete, _ = (
            online_scores.graded(settings, spec.name, fingerprints, ids)
            if ids
            else (
                set(),
                set(),
            )
        )
        rows, pending = select(
            spec,
            spans,
            cutoff=cutoff,
            label_version=_label_version(spec, prompts),
            graded=complete,
            start=PARTITIONS_START,
        )
        for batch in batches(rows, spec.batch_size):
            first, last = hour_key(batch.first_hour), hour_key(batch.last_hour)
            attempt = 1 + max((retry.get(t, 0) for t in batch.trace_ids), default=0)
            digest = hashlib.sha256(f"{','.join(batch.trace_ids)}:{attempt}".encode()).hexdigest()[
                :12
            ]
            requests.append(
                dg.RunRequest(
                    run_key=f"{spec.name}:v{version}:{first}:{last}:{digest}",
                    job_name=online_eval_job(spec.name),
                    run_config={
                        **IN_PROCESS,
                        "ops": {
                            _op_name(spec.name): {
                                "config": {
                                    "traces_version": version,
                                    "cutoff": cutoff.isoformat(),
                                    "trace_ids": batch.trace_ids,
                                }
                            }
                        },
                    },
                    tags={
                        RANGE_START: first,
                        RANGE_END: last,
                        "mallard/online_eval": spec.name,
                        "mallard/traces_version": str(version),
                        "mallard/traces": str(len(batch.trace_ids)),
                        "mallard/first_trace_at": batch.first_trace_at.isoformat(),
                        "mallard/last_trace_at": batch.last_trace_at.isoformat(),
                        "mallard/attempt": str(attempt),
                    },
                )
            )
        newest = max(cutoff, through) if through is not None else cutoff
        state[spec.name] = {"version": version, "through": newest.isoformat()}
        found[spec.name] = pending.counts()
    return requests, json.dumps(state, sort_keys=True), found


def build_online_eval_sensor(jobs: list) -> dg.SensorDefinition:
    """The sensor that grades new production traces, targeting the online eval jobs."""

    @dg.sensor(
        name=ONLINE_EVAL_SENSOR,
        jobs=jobs,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def online_evals_sensor(
        context: dg.SensorEvaluationContext,
        lake: LakeResource,
        traces: TraceStoreResource,
        prompts: PromptRegistryResource,
        llm: LLMResource,
    ):
        """Requests online-eval runs over the production traces that arrived (or became ready)
        since the cursor, in bounded batches of hours; Mallard's own calls are never graded."""
        requests, cursor, found = online_eval_requests(
            context.cursor, lake=lake, traces=traces, prompts=prompts, llm=llm
        )
        if not requests:
            summary = "; ".join(
                f"{name}: "
                + (", ".join(f"{k} {v}" for k, v in counts.items() if v) or "nothing new")
                for name, counts in found.items()
            )
            return dg.SensorResult(
                skip_reason=f"no new traces to grade ({summary or 'no traces table yet'})",
                cursor=cursor,
            )
        context.log.info(f"online evals: {found}")
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return online_evals_sensor
