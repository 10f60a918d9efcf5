"""The `online_scores` table (this module is its only writer): one row per (online eval, trace,
grader version), the grade a reference-free grader gave a production trace.

Append-only and idempotent: a row whose key (eval_name, trace_id, grader, grader_fingerprint)
is stored already is not written again (a Delta merge inserting only new keys, retried on a
concurrent commit), so ticks, restarts and overlapping runs never store a trace's grade twice.
A grader whose configuration, model or fit changes has a new fingerprint: its new version grades
the traces again, next to the old version's rows.

A grade that failed (a judge's endpoint timed out, a custom grader raised) is stored with its
error and tried again by later runs, up to `MAX_ATTEMPTS` in all; each attempt is a row of its
own, and the first successful one is the key's grade (`current`). A grade that cannot succeed
(`FINAL_ERRORS`: the trace has no question or no retrieved context) is not tried again.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from mallard.evals.graders.base import Grade, Grader

TABLE = "online_scores"
KEY = ("eval_name", "trace_id", "grader", "grader_fingerprint")
MAX_ATTEMPTS = 3
FINAL_ERRORS = ("missing_input", "missing_target")

ONLINE_SCORES_COLUMNS: dict[str, str] = {
    "eval_name": "declared online eval (catalog/online_evals.py)",
    "trace_id": "the graded trace",
    "span_id": "its generation span",
    "trace_timestamp": "UTC time the generation started",
    "hour": "the UTC hour of trace_timestamp: the online eval asset's partition",
    "prompt_name": "prompt the trace used, empty when none",
    "prompt_version": "its version, 0 when none",
    "endpoint": "endpoint that answered",
    "model": "model that answered",
    "user_id": "end user of the trace",
    "trace_status": "ok or error",
    "trace_latency_ms": "the generation's latency",
    "trace_cost_usd": "cost of the trace's LLM calls",
    "grader": "grader name",
    "grader_kind": "deterministic, embedding, judge or custom",
    "grader_fingerprint": "hash of the grader's configuration, model and parameters (its version)",
    "judge_endpoint": "endpoint of an LLM judge, empty otherwise",
    "judge_model": "model of an LLM judge, empty otherwise",
    "trusted": "false for a judge whose measured κ is below its minimum: shown, never decides",
    "trust_reason": "why a judge is (un)trusted, empty for rule graders",
    "score": "normalised score in [0, 1]",
    "raw_score": "score on the grader's own scale",
    "passed": "score >= threshold",
    "threshold": "the grader's threshold",
    "reason": "the grader's reason",
    "error": "why the grade could not be computed (left out of pass rates), empty when fine",
    "cost_usd": "cost of grading",
    "latency_ms": "latency of grading",
    "run_id": "Dagster run that graded",
    "traces_version": "Delta version of the traces table the run read",
    "graded_at": "UTC time the run wrote the row",
}


def online_scores_schema() -> pa.Schema:
    """The Arrow schema of `online_scores`."""
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")
    types = {
        "trace_timestamp": ts,
        "hour": ts,
        "graded_at": ts,
        "prompt_version": pa.int32(),
        "trace_latency_ms": pa.float64(),
        "trace_cost_usd": pa.float64(),
        "trusted": pa.bool_(),
        "score": pa.float64(),
        "raw_score": pa.float64(),
        "passed": pa.bool_(),
        "threshold": pa.float64(),
        "cost_usd": pa.float64(),
        "latency_ms": pa.float64(),
        "traces_version": pa.int64(),
    }
    return pa.schema([(name, types.get(name, pa.string())) for name in ONLINE_SCORES_COLUMNS])


def table_path(settings: Any) -> Path:
    """`<lake>/online_scores`."""
    return Path(settings.lake_dir) / TABLE


def score_row(
    *,
    eval_name: str,
    row: Mapping[str, Any],
    grader: Grader,
    fingerprint: str,
    grade: Grade,
    run_id: str,
    traces_version: int | None,
    trusted: bool,
    trust_reason: str,
    judge_endpoint: str,
    judge_model: str,
    graded_at: dt.datetime,
) -> dict[str, Any]:
    """One row of the table: a trace's gradeable row and the grade one grader gave it."""
    from mallard.evals.online import hour_of

    return {
        "eval_name": eval_name,
        "trace_id": str(row["trace_id"]),
        "span_id": str(row.get("span_id") or ""),
        "trace_timestamp": row["timestamp"],
        "hour": hour_of(row["timestamp"]),
        "prompt_name": row.get("prompt_name") or "",
        "prompt_version": int(row.get("prompt_version") or 0),
        "endpoint": row.get("endpoint") or "",
        "model": row.get("model") or "",
        "user_id": row.get("user_id") or "",
        "trace_status": row.get("status") or "",
        "trace_latency_ms": float(row.get("latency_ms") or 0.0),
        "trace_cost_usd": float(row.get("cost_usd") or 0.0),
        "grader": grader.name,
        "grader_kind": grader.kind,
        "grader_fingerprint": fingerprint,
        "judge_endpoint": judge_endpoint,
        "judge_model": judge_model,
        "trusted": trusted,
        "trust_reason": trust_reason,
        "score": grade.score,
        "raw_score": grade.raw,
        "passed": grade.passed and not grade.error,
        "threshold": grader.threshold,
        "reason": grade.reason,
        "error": grade.error,
        "cost_usd": grade.cost_usd,
        "latency_ms": grade.latency_ms,
        "run_id": run_id,
        "traces_version": traces_version,
        "graded_at": graded_at,
    }


def exists(settings: Any) -> bool:
    return (table_path(settings) / "_delta_log").exists()


def append(rows: Sequence[Mapping[str, Any]], *, settings: Any, attempts: int = 8) -> int:
    """Store the rows whose key is not stored yet, in one commit; the number stored."""
    import pyarrow as pa
    from deltalake import DeltaTable
    from deltalake.exceptions import CommitFailedError, DeltaError

    unique: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        unique.setdefault(tuple(row[k] for k in KEY), dict(row))
    if not unique:
        return 0
    schema = online_scores_schema()
    data = pa.Table.from_pylist(
        [{name: row.get(name) for name in schema.names} for row in unique.values()], schema=schema
    )
    target = table_path(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not exists(settings):
        try:
            # Empty first, then merged into: two runs creating it at once still store a key once.
            DeltaTable.create(str(target), schema=schema, mode="ignore")
        except DeltaError:
            if not exists(settings):
                raise
    # A stored success makes a row a duplicate; a stored failure does not (a retry's row).
    predicate = " AND ".join(f"t.{k} = s.{k}" for k in KEY) + " AND t.error = ''"
    for attempt in range(attempts):
        try:
            metrics = (
                DeltaTable(str(target))
                .merge(data, predicate, source_alias="s", target_alias="t")
                .when_not_matched_insert_all()
                .execute()
            )
            return int(metrics.get("num_target_rows_inserted", 0))
        except CommitFailedError:
            # A concurrent run committed first: merge again against what it wrote.
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    return 0


def frame(
    settings: Any,
    *,
    eval_name: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    trace_ids: Sequence[str] = (),
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Rows of the table (of one eval, of traces whose hour is in [start, end), of some traces)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

    schema = online_scores_schema()
    if not exists(settings):
        return schema.empty_table().to_pandas()
    expression = None
    if start is not None:
        expression = ds.field("hour") >= _ts(start)
    if end is not None:
        upper = ds.field("hour") < _ts(end)
        expression = upper if expression is None else expression & upper
    dataset = DeltaTable(str(table_path(settings))).to_pyarrow_dataset()
    wanted = None if columns is None else sorted({*columns, "eval_name"})
    table = dataset.to_table(columns=wanted, filter=expression)
    # String filters in memory: merges write string_view columns, which pyarrow's dataset
    # filters (and their statistics pruning) cannot compare with a string.
    if eval_name is not None:
        table = table.filter(pc.equal(table.column("eval_name").cast(pa.string()), eval_name))
    if trace_ids:
        from mallard.evals.online import of_traces

        table = of_traces(table, trace_ids)
    if columns is not None:
        table = table.select(list(columns))
    return table.to_pandas()


def graded(
    settings: Any, eval_name: str, fingerprints: Sequence[str], trace_ids: Sequence[str] = ()
) -> tuple[set[str], set[tuple[str, str]]]:
    """(trace ids done for every one of `fingerprints`, the (trace_id, fingerprint) pairs done)
    for one eval: a pair is done once graded, or failed for good (a final error, or
    `MAX_ATTEMPTS` failures)."""
    found = frame(
        settings,
        eval_name=eval_name,
        trace_ids=trace_ids,
        columns=["trace_id", "grader_fingerprint", "error"],
    )
    wanted = set(fingerprints)
    failures: dict[tuple[str, str], int] = {}
    pairs: set[tuple[str, str]] = set()
    for trace_id, fingerprint, error in zip(
        found["trace_id"], found["grader_fingerprint"], found["error"], strict=True
    ):
        if fingerprint not in wanted:
            continue
        key = (trace_id, fingerprint)
        if not error or error in FINAL_ERRORS:
            pairs.add(key)
        else:
            failures[key] = failures.get(key, 0) + 1
            if failures[key] >= MAX_ATTEMPTS:
                pairs.add(key)
    per_trace: dict[str, set[str]] = {}
    for trace_id, fingerprint in pairs:
        per_trace.setdefault(trace_id, set()).add(fingerprint)
    complete = {t for t, fps in per_trace.items() if fps >= wanted}
    return complete, pairs


def to_retry(settings: Any, eval_name: str, fingerprints: Sequence[str]) -> dict[str, int]:
    """Trace ids with a failed grade of one of `fingerprints` still to try again, each with the
    number of failed attempts so far (its most failed grader's)."""
    found = frame(
        settings, eval_name=eval_name, columns=["trace_id", "grader_fingerprint", "error"]
    )
    failed = found[found["error"] != ""].to_dict("records")
    if not failed:
        return {}
    _, done = graded(settings, eval_name, fingerprints, sorted({r["trace_id"] for r in failed}))
    attempts: dict[tuple[str, str], int] = {}
    for r in failed:
        key = (r["trace_id"], r["grader_fingerprint"])
        if key[1] in fingerprints and key not in done:
            attempts[key] = attempts.get(key, 0) + 1
    out: dict[str, int] = {}
    for (trace_id, _), n in attempts.items():
        out[trace_id] = max(out.get(trace_id, 0), n)
    return out


def current(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per key: its successful grade, else its latest failure."""
    if scores.empty:
        return scores
    ordered = scores.assign(_ok=scores["error"] == "").sort_values(
        ["_ok", "graded_at"], kind="stable"
    )
    return ordered.drop_duplicates(list(KEY), keep="last").drop(columns="_ok").sort_index()


def _ts(moment: dt.datetime) -> Any:
    import pyarrow as pa

    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return pa.scalar(moment.astimezone(dt.UTC), type=pa.timestamp("us", tz="UTC"))
