"""The eval tables, each with one schema declared here (this module is their only writer):

- `judge_scores`: one row per (run, item, grader): the answer under test, who produced it, the
  grade, its reason, cost and latency.
- `judge_calibration`: one row per (calibration run, judge): agreement with human verdicts.
- `eval_gate_decisions`: one row per promotion decision (promoted or refused, and why).
- `human_labels`: one row per verdict a person gave (annotation queue, CLI or API), versioned.

All four are append-only Delta tables under `<lake>/`; one commit per run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

JUDGE_SCORES_COLUMNS: dict[str, str] = {
    "run_id": "eval run id",
    "timestamp": "UTC time the run wrote its rows",
    "eval_name": "declared offline eval",
    "dataset": "eval dataset name",
    "dataset_version": "Delta version of the dataset the items came from",
    "slice": "dataset slice, empty for the whole dataset",
    "chain": "chain that produced the answers",
    "prompt_name": "prompt under test",
    "prompt_version": "its version",
    "prompt_hash": "content hash of that version",
    "baseline_prompt_version": "for pairwise rows: the version the answer was compared with",
    "endpoint": "endpoint that answered",
    "model": "model that answered",
    "item_id": "dataset item",
    "category": "item category",
    "answer": "the answer under test",
    "answer_status": "ok, or failed when the chain failed (score 0)",
    "answer_cache": "miss or exact: whether the answer came from the LLM cache",
    "answer_cost_usd": "cost of producing the answer",
    "answer_latency_ms": "latency of producing the answer",
    "retrieved_ids": "ids of the retrieved articles",
    "grader": "grader name",
    "grader_kind": "deterministic, embedding, judge or custom",
    "grader_fingerprint": "hash of the grader's configuration, model and parameters",
    "judge_endpoint": "endpoint of an LLM judge, empty otherwise",
    "judge_model": "model of an LLM judge, empty otherwise",
    "score": "normalised score in [0, 1]",
    "raw_score": "score on the grader's own scale",
    "passed": "score >= threshold",
    "threshold": "the grader's threshold",
    "reason": "the grader's reason",
    "error": "why the grade could not be computed (excluded from comparisons), empty when fine",
    "cost_usd": "cost of grading",
    "latency_ms": "latency of grading",
    "cached": "grade came from the result cache",
    "cache_key": "content key of the grade (item, answer, contexts, grader)",
}

CALIBRATION_COLUMNS: dict[str, str] = {
    "run_id": "calibration run id",
    "timestamp": "UTC time of the calibration",
    "judge": "judge (or panel) name",
    "fingerprint": "hash of the judge's configuration, model and parameters",
    "endpoint": "judge endpoint",
    "model": "judge model",
    "dataset": "calibration dataset",
    "dataset_version": "its Delta version",
    "slice": "slice of the calibration dataset, empty for all",
    "items": "items judged (errors excluded)",
    "errors": "items the judge failed on",
    "accuracy": "share of items where the judge's pass/fail equals the human verdict",
    "kappa": "Cohen's kappa of judge vs human pass/fail",
    "spearman": "Spearman's rho of judge raw score vs human 1-5 score",
    "repeat": "calls per item",
    "flip_rate": "share of items whose pass/fail changed between repeats",
    "score_std": "mean per-item standard deviation of the normalised score across repeats",
    "min_kappa": "the judge's declared minimum kappa (NaN when none)",
    "trusted": "kappa >= min_kappa (true when no minimum is declared)",
    "cost_usd": "cost of the calibration calls",
    "kappa_low": "lower end of the 95% bootstrap interval of kappa",
    "kappa_high": "upper end of that interval",
    "kappa_method": "held-out (a judge that was not fitted on these labels) or cross-validated",
    "fit_version": "version of the composite judge's fitted model (0 for plain judges)",
}

LABEL_COLUMNS: dict[str, str] = {
    "label_id": "unique id",
    "timestamp": "UTC time the label was given",
    "judge": "the judge (task) the verdict is for",
    "dataset": "dataset of the item, or the eval whose answer was labelled",
    "item_id": "item (for an eval answer: item and answer hash)",
    "verdict": "pass or fail",
    "score": "optional 1-5 score",
    "reason": "why, in the annotator's words",
    "author": "who gave the label",
    "version": "1 for an item's first label for this judge, +1 for each later one",
    "source": "cli, api or import",
    "sample": "JSON of what was judged: question, answer, reference, context ids and texts",
}

DECISION_COLUMNS: dict[str, str] = {
    "decision_id": "unique id",
    "timestamp": "UTC time of the decision",
    "eval_name": "offline eval whose gate decided",
    "prompt_name": "prompt",
    "candidate_version": "candidate version",
    "live_version": "version the label pointed at when deciding",
    "label": "label that would move",
    "promoted": "whether the label moved",
    "reasons": "JSON list of reasons (why not, or why yes)",
    "comparison": "JSON of the per-grader comparison",
    "dataset_version": "dataset version both versions were compared on",
    "actor": "who ran the gate",
}


def judge_scores_schema() -> pa.Schema:
    import pyarrow as pa

    types = {
        "timestamp": pa.timestamp("us", tz="UTC"),
        "dataset_version": pa.int64(),
        "prompt_version": pa.int32(),
        "baseline_prompt_version": pa.int32(),
        "answer_cost_usd": pa.float64(),
        "answer_latency_ms": pa.float64(),
        "retrieved_ids": pa.list_(pa.string()),
        "score": pa.float64(),
        "raw_score": pa.float64(),
        "passed": pa.bool_(),
        "threshold": pa.float64(),
        "cost_usd": pa.float64(),
        "latency_ms": pa.float64(),
        "cached": pa.bool_(),
    }
    return pa.schema([(name, types.get(name, pa.string())) for name in JUDGE_SCORES_COLUMNS])


def calibration_schema() -> pa.Schema:
    import pyarrow as pa

    types = {
        "timestamp": pa.timestamp("us", tz="UTC"),
        "dataset_version": pa.int64(),
        "items": pa.int32(),
        "errors": pa.int32(),
        "accuracy": pa.float64(),
        "kappa": pa.float64(),
        "spearman": pa.float64(),
        "repeat": pa.int32(),
        "flip_rate": pa.float64(),
        "score_std": pa.float64(),
        "min_kappa": pa.float64(),
        "trusted": pa.bool_(),
        "cost_usd": pa.float64(),
        "kappa_low": pa.float64(),
        "kappa_high": pa.float64(),
        "fit_version": pa.int32(),
    }
    return pa.schema([(name, types.get(name, pa.string())) for name in CALIBRATION_COLUMNS])


def label_schema() -> pa.Schema:
    import pyarrow as pa

    types = {
        "timestamp": pa.timestamp("us", tz="UTC"),
        "score": pa.float64(),
        "version": pa.int32(),
    }
    return pa.schema([(name, types.get(name, pa.string())) for name in LABEL_COLUMNS])


def decision_schema() -> pa.Schema:
    import pyarrow as pa

    types = {
        "timestamp": pa.timestamp("us", tz="UTC"),
        "candidate_version": pa.int32(),
        "live_version": pa.int32(),
        "promoted": pa.bool_(),
        "dataset_version": pa.int64(),
    }
    return pa.schema([(name, types.get(name, pa.string())) for name in DECISION_COLUMNS])


TABLES = {
    "judge_scores": judge_scores_schema,
    "judge_calibration": calibration_schema,
    "eval_gate_decisions": decision_schema,
    "human_labels": label_schema,
}


def table_path(table: str, settings: Any = None) -> Path:
    if table not in TABLES:
        raise KeyError(f"not an eval table: {table!r}; tables: {sorted(TABLES)}")
    if settings is None:
        from mallard.config import get_settings

        settings = get_settings()
    return Path(settings.lake_dir) / table


def now() -> datetime:
    return datetime.now(UTC)


def append(table: str, rows: Sequence[Mapping[str, Any]], *, settings: Any = None) -> int:
    """Append rows (one commit). Missing columns are null; unknown columns are refused."""
    if not rows:
        return 0
    import pyarrow as pa
    from deltalake import write_deltalake

    schema = TABLES[table]()
    unknown = {k for row in rows for k in row} - set(schema.names)
    if unknown:
        raise ValueError(f"not {table} columns: {sorted(unknown)}")
    target = table_path(table, settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = pa.Table.from_pylist(
        [{name: row.get(name) for name in schema.names} for row in rows], schema=schema
    )
    # merge: a table written before a column was added takes the new column (null in old rows)
    write_deltalake(str(target), data, mode="append", schema_mode="merge")
    return len(rows)


def read(
    table: str, *, settings: Any = None, filters: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Rows of a table (all, or those whose columns equal `filters`' values; a list value means
    any of them); every column of the current schema, None where an older table has none."""
    from deltalake import DeltaTable

    target = table_path(table, settings)
    if not DeltaTable.is_deltatable(str(target)):
        return []
    dataset = DeltaTable(str(target)).to_pyarrow_dataset()
    expression = None
    if filters:
        import pyarrow.dataset as ds

        for column, value in filters.items():
            term = (
                ds.field(column).isin(list(value))
                if isinstance(value, list | tuple | set)
                else ds.field(column) == value
            )
            expression = term if expression is None else expression & term
    rows = dataset.to_table(filter=expression).to_pylist()
    # a table written before a column was added (and not appended to since) lacks it: None
    missing = [name for name in TABLES[table]().names if name not in dataset.schema.names]
    for row in rows if missing else ():
        row.update(dict.fromkeys(missing))
    return rows


def decision_row(**values: Any) -> dict[str, Any]:
    import uuid

    row = dict(values)
    row.setdefault("decision_id", uuid.uuid4().hex)
    row.setdefault("timestamp", now())
    for key in ("reasons", "comparison"):
        if not isinstance(row.get(key), str):
            row[key] = json.dumps(row.get(key), default=str, ensure_ascii=False)
    return row
