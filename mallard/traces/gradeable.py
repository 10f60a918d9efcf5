"""The rule that makes a trace's spans the one row the graders see.

A trace (the spans sharing a `trace_id`) gives at most one gradeable row, a row of the traces
schema that stands for the whole trace (`parent_span_id` empty):

1. Mallard's own traces are left out: a trace any of whose spans has a `run_id` was made by a
   Dagster run or a chain run (an eval, a judge, a shadow replay), so grading never feeds on
   itself. `include_own=True` keeps them (for reports).
2. The generation is the trace's `llm` span that ended last (its output is the answer); a trace
   without one gives no row. The row is the generation's: its span id, name, time, latency,
   endpoint, provider, model, cache, status, error and attributes.
3. Input and output are what the user saw: the root span's `input` / `output` when the root is
   a `chain` span other than the generation and has them (an application's request span);
   otherwise the generation's.
4. The retrieved context is that of the trace's `retrieval` spans that started before the
   generation ended, in start order: their ids in order (each once) and their texts joined by a
   blank line. With no such span, the generation's own (a call that carried its context).
5. `user_id`, `session_id`, `prompt_name`, `prompt_version`: the generation's, else the root's,
   else the first span's that has one. Tokens and cost: summed over the trace's `llm` spans.
6. A trace whose root span failed while the generation did not is an error, with the root's error.

A one-span trace (a call recorded as one row: the sample world, Mallard's own calls) is its own
gradeable row. A span that appears twice (the same `span_id`) counts once.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any


def _end(span: dict[str, Any]) -> dt.datetime:
    """When a span ended: its start plus its latency (a start near the calendar's end, or a
    latency that is not a finite number, ends where it started)."""
    latency = float(span.get("latency_ms") or 0.0)
    if not math.isfinite(latency):
        return span["timestamp"]
    try:
        return span["timestamp"] + dt.timedelta(milliseconds=latency)
    except OverflowError:
        return span["timestamp"]


def _root(spans: list[dict[str, Any]]) -> dict[str, Any]:
    ids = {s["span_id"] for s in spans}
    roots = [s for s in spans if not s.get("parent_span_id") or s["parent_span_id"] not in ids]
    return min(roots or spans, key=lambda s: s["timestamp"])


def _first(spans: list[dict[str, Any]], column: str, empty: Any) -> Any:
    for span in spans:
        if span.get(column) not in (None, empty):
            return span[column]
    return empty


def gradeable_row(
    spans: list[dict[str, Any]], *, include_own: bool = False
) -> dict[str, Any] | None:
    """The gradeable row of one trace's spans, or None (Mallard's own, or no LLM span)."""
    if not spans:
        return None
    once: dict[Any, dict[str, Any]] = {}
    for span in spans:  # a span stored twice (two workers flushing one retry) counts once
        once.setdefault(span["span_id"], span)
    spans = list(once.values())
    if not include_own and any(s.get("run_id") for s in spans):
        return None
    ordered = sorted(spans, key=lambda s: s["timestamp"])
    calls = [s for s in ordered if s.get("span_kind") == "llm"]
    if not calls:
        return None
    generation = max(
        enumerate(calls), key=lambda item: (_end(item[1]), item[1]["timestamp"], item[0])
    )[1]
    root = _root(ordered)
    row = dict(generation)
    row["parent_span_id"] = ""
    application = root is not generation and root.get("span_kind") == "chain"
    for column in ("input", "output"):
        if application and root.get(column):
            row[column] = root[column]
    ended = _end(generation)
    retrievals = [
        s
        for s in ordered
        if s.get("span_kind") == "retrieval"
        and s["timestamp"] <= ended
        and (list(s.get("retrieved_ids") or ()) or s.get("retrieved_text"))
    ]
    if retrievals:
        ids: list[str] = []
        for span in retrievals:
            ids += [i for i in span.get("retrieved_ids") or () if i not in ids]
        row["retrieved_ids"] = ids
        row["retrieved_text"] = "\n\n".join(
            s["retrieved_text"] for s in retrievals if s.get("retrieved_text")
        )
    else:
        row["retrieved_ids"] = list(generation.get("retrieved_ids") or ())
    lookup = [generation, root, *ordered]
    for column, empty in (
        ("user_id", ""),
        ("session_id", ""),
        ("prompt_name", ""),
        ("prompt_version", 0),
    ):
        row[column] = _first(lookup, column, empty)
    row["prompt_tokens"] = sum(int(s.get("prompt_tokens") or 0) for s in calls)
    row["completion_tokens"] = sum(int(s.get("completion_tokens") or 0) for s in calls)
    row["cost_usd"] = sum(float(s.get("cost_usd") or 0.0) for s in calls)
    if row.get("status") != "error" and root.get("status") == "error" and root is not generation:
        row["status"], row["error"] = "error", root.get("error") or "error"
    return row


def gradeable_rows(
    spans: Iterable[dict[str, Any]], *, include_own: bool = False
) -> list[dict[str, Any]]:
    """The gradeable row of every trace in `spans` (rows of the traces table), by start time."""
    traces: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in spans:
        traces[span["trace_id"]].append(span)
    rows = [
        row
        for trace in traces.values()
        if (row := gradeable_row(trace, include_own=include_own)) is not None
    ]
    return sorted(rows, key=lambda r: (r["timestamp"], r["trace_id"]))


def gradeable_frame(frame: Any, *, include_own: bool = False) -> Any:
    """`gradeable_rows` over a pandas DataFrame of the traces table; a DataFrame back."""
    import pandas as pd

    from mallard.traces.schema import trace_schema

    records = frame.to_dict("records")
    for record in records:
        if isinstance(record.get("timestamp"), pd.Timestamp):
            record["timestamp"] = record["timestamp"].to_pydatetime()
        ids = record.get("retrieved_ids")
        record["retrieved_ids"] = [] if ids is None else list(ids)
    rows = gradeable_rows(records, include_own=include_own)
    return pd.DataFrame(rows, columns=trace_schema().names)
