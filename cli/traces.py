"""`mallard traces list|show|migrate`: the traces table, by trace and by span."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import click

from cli.common import deployment


def _store() -> Any:
    with deployment() as resources:
        return resources.traces.store()


def _short(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _when(value: Any) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}"


@click.group("traces")
def traces() -> None:
    """Traces and their spans: what applications sent (OTLP, JSON) and Mallard's own calls."""


@traces.command("list")
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--model", default=None, help="Only traces with a call to this model.")
@click.option(
    "--source",
    type=click.Choice(["production", "own", "all"]),
    default="all",
    show_default=True,
    help="production: sent by applications; own: Mallard's calls (a run_id).",
)
@click.option("--since-hours", type=float, default=None, help="Only traces of the last N hours.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
def list_traces(
    limit: int, model: str | None, source: str, since_hours: float | None, as_json: bool
) -> None:
    """The latest traces, newest last: start, trace id, spans, kinds, model, status, latency and
    the input (of the gradeable row when the trace has one)."""
    from mallard.traces.gradeable import gradeable_row

    store = _store()
    since = None
    if since_hours is not None:
        since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=since_hours)
    frame = store.frame(since=since)
    if frame.empty:
        click.echo(
            "No traces yet: send spans to /v1/otlp/v1/traces or /v1/traces (docs/TRACES.md); "
            "they appear within a few seconds."
        )
        return
    own = frame.groupby("trace_id")["run_id"].transform(lambda r: (r != "").any())
    if source == "production":
        frame = frame[~own]
    elif source == "own":
        frame = frame[own]
    if model is not None:
        wanted = set(frame.loc[frame["model"] == model, "trace_id"])
        frame = frame[frame["trace_id"].isin(wanted)]
    started = frame.groupby("trace_id")["timestamp"].min().sort_values()
    chosen = list(started.index[-limit:]) if limit > 0 else list(started.index)
    groups = {tid: g for tid, g in frame[frame["trace_id"].isin(chosen)].groupby("trace_id")}
    for trace_id in chosen:
        spans = groups[trace_id].to_dict("records")
        for span in spans:
            span["timestamp"] = span["timestamp"].to_pydatetime()
            span["retrieved_ids"] = list(
                span["retrieved_ids"] if span["retrieved_ids"] is not None else ()
            )
        row = gradeable_row(spans, include_own=True) or min(spans, key=lambda s: s["timestamp"])
        ends = [s["timestamp"] + dt.timedelta(milliseconds=s["latency_ms"]) for s in spans]
        start = min(s["timestamp"] for s in spans)
        summary = {
            "trace_id": trace_id,
            "start": start.isoformat(),
            "spans": len(spans),
            "kinds": sorted({s["span_kind"] for s in spans}),
            "model": row.get("model", ""),
            "status": "error" if any(s["status"] == "error" for s in spans) else "ok",
            "duration_ms": round((max(ends) - start).total_seconds() * 1000, 1),
            "own": any(s["run_id"] for s in spans),
            "input": row.get("input", ""),
            "output": row.get("output", ""),
        }
        if as_json:
            click.echo(json.dumps(summary, default=str))
            continue
        click.echo(
            f"{_when(start)}  {trace_id[:32]:32} {len(spans):>3} span(s) "
            f"{','.join(summary['kinds']):18} {summary['model'] or '-':24} {summary['status']:5} "
            f"{summary['duration_ms']:>9.1f} ms{'  own' if summary['own'] else ''}  "
            f"{_short(summary['input'], 60)}"
        )


@traces.command("show")
@click.argument("trace_id")
@click.option("--json", "as_json", is_flag=True, help="The spans and the gradeable row as JSON.")
def show_trace(trace_id: str, as_json: bool) -> None:
    """One trace: its spans as a tree (kind, name, time, latency, model, tokens, status, input,
    output, retrieved ids, attributes) and the row the graders see."""
    from mallard.traces.gradeable import gradeable_row

    store = _store()
    spans = store.spans(trace_id)
    if not spans:
        raise click.ClickException(f"no trace {trace_id} in {store.table_path}")
    row = gradeable_row(spans, include_own=True)
    if as_json:
        click.echo(json.dumps({"spans": spans, "gradeable": row}, default=str, indent=1))
        return
    children: dict[str, list[dict[str, Any]]] = {}
    ids = {s["span_id"] for s in spans}
    roots = []
    for span in spans:
        parent = span["parent_span_id"]
        if parent and parent in ids:
            children.setdefault(parent, []).append(span)
        else:
            roots.append(span)
    first = spans[0]
    click.echo(
        f"trace {first['trace_id']}: {len(spans)} span(s)"
        + (f", Mallard's own (run {first['run_id']})" if any(s["run_id"] for s in spans) else "")
    )

    def show(span: dict[str, Any], depth: int) -> None:
        pad = "  " * depth
        line = (
            f"{pad}- [{span['span_kind']}] {span['span_name'] or '(unnamed)'}  {span['span_id']}  "
            f"{_when(span['timestamp'])}  {span['latency_ms']:.1f} ms  {span['status']}"
        )
        if span["model"]:
            line += (
                f"  {span['provider'] + '/' if span['provider'] else ''}{span['model']} "
                f"{span['prompt_tokens']}+{span['completion_tokens']} tokens"
            )
        if span["cost_usd"]:
            line += f"  ${span['cost_usd']:.6f}"
        click.echo(line)
        for label, value in (
            (
                "prompt",
                f"{span['prompt_name']} v{span['prompt_version']}" if span["prompt_name"] else "",
            ),
            ("user", span["user_id"]),
            ("session", span["session_id"]),
            ("input", _short(span["input"], 100)),
            ("output", _short(span["output"], 100)),
            ("retrieved", ", ".join(span["retrieved_ids"] or [])),
            ("error", span["error"]),
            ("attributes", _short(span["attributes"], 100) if span["attributes"] != "{}" else ""),
        ):
            if value:
                click.echo(f"{pad}    {label}: {value}")
        for child in children.get(span["span_id"], []):
            show(child, depth + 1)

    for root in roots:
        show(root, 0)
    if row is None:
        click.echo("gradeable: none (no LLM span)")
    else:
        click.echo(
            f"gradeable: input {_short(row['input'], 80)!r} → output {_short(row['output'], 80)!r}; "
            f"context {', '.join(row['retrieved_ids']) or '(none)'}"
        )


@traces.command("migrate")
def migrate_traces() -> None:
    """Rewrite a traces table of calls (before spans) in the span schema, every row kept."""
    store = _store()
    migration = store.migrate()
    if migration is None:
        click.echo(f"{store.table_path} is current (or empty): nothing to do")
        return
    click.echo(
        f"migrated {store.table_path}: {migration.rows_before} rows read at version "
        f"{migration.read_version}, {migration.rows_after} rows at version "
        f"{migration.written_version} (added {', '.join(migration.added_columns)})"
    )
