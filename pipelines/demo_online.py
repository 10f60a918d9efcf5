"""The demo's production traffic: the sample world's assistant traces sent in day by day.

The support-assistant application (an ingest-scoped key) sends each trace day's calls to
`POST /v1/traces` on the demo's own server. After each day the `online_evals` sensor is ticked on
the instance and the runs it requests are executed (each one a single-run backfill of that day's
hours, its trace range in the tags), and the analytics job runs as the hourly schedule would, so
the alert rules are checked day by day: from trace day 10 the regressed prompt (version 2)
ignores its articles, the grounding pass rate drops, and the alert names that version. Then the
grounded prompt is labelled `shadow` and replayed on the newest graded traffic through the
scripted stand-in for the hosted model (mallard/sample_world/assistant.py, a simulation), and the
shadow comparison recommends, with its interval.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from mallard.config import Settings
from pipelines.demo_api import DemoServer

APP_OWNER = "support-assistant-app"
BATCH_ROWS = 100  # rows per POST: well under the server's body limit with three articles each
FLUSH_TIMEOUT_S = 60.0


@dataclass
class OnlineStory:
    """What the streamed traffic showed: per trace day, what came in and how it graded."""

    days: list[dict[str, Any]] = field(default_factory=list)
    spans_sent: int = 0
    runs: int = 0
    alerts: list[str] = field(default_factory=list)
    shadow: dict[str, Any] = field(default_factory=dict)
    story: list[str] = field(default_factory=list)
    seconds: float = 0.0
    sending_seconds: float = 0.0
    """Of `seconds`, sending the traces and waiting for the server to store them."""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def trace_days(settings: Settings) -> list[tuple[dt.date, list[dict[str, Any]]]]:
    """The sample world's production traces as JSON rows of `POST /v1/traces`, per UTC day."""
    import pandas as pd

    from mallard.traces.rows import TraceRowIn

    frame = pd.read_parquet(settings.sample_dir / "traces.parquet")
    columns = [c for c in frame.columns if c in TraceRowIn.model_fields]
    frame = frame[columns]
    out = []
    for day, group in frame.groupby(frame["timestamp"].dt.date, sort=True):
        rows = []
        for row in group.to_dict("records"):
            row["timestamp"] = row["timestamp"].isoformat()
            row["retrieved_ids"] = [str(i) for i in row["retrieved_ids"]]
            rows.append(row)
        out.append((day, rows))
    return out


def _send(api: httpx.Client, rows: list[dict[str, Any]]) -> int:
    """Send one day's rows in batches; the spans acknowledged (on disk when answered)."""
    acknowledged = 0
    for start in range(0, len(rows), BATCH_ROWS):
        reply = api.post("/v1/traces", json={"rows": rows[start : start + BATCH_ROWS]})
        if reply.status_code in (429, 503):  # backpressure: wait as told, send again
            time.sleep(float(reply.headers.get("retry-after", "1")))
            reply = api.post("/v1/traces", json={"rows": rows[start : start + BATCH_ROWS]})
        if reply.status_code != 200:
            raise RuntimeError(f"POST /v1/traces answered {reply.status_code}: {reply.text[:300]}")
        acknowledged += int(reply.json()["spans"])
    return acknowledged


def _wait_stored(store: Any, trace_ids: set[str]) -> None:
    """Until the traces table holds every trace of `trace_ids` (the server flushes its log to
    the table every couple of seconds; a trace stored by an earlier demo counts: a retry is
    stored once)."""
    deadline = time.monotonic() + FLUSH_TIMEOUT_S
    missing = len(trace_ids)
    while time.monotonic() < deadline:
        if store.exists():
            stored = set(store.arrow(columns=["trace_id"]).column("trace_id").to_pylist())
            missing = len(trace_ids - stored)
            if not missing:
                return
        time.sleep(0.25)
    raise RuntimeError(
        f"{missing} of {len(trace_ids)} acknowledged traces are not in the traces table after "
        f"{FLUSH_TIMEOUT_S:.0f} s: the server's trace buffer did not flush"
    )


def _day_grades(settings: Settings, eval_name: str, day: dt.date) -> dict[str, Any]:
    """Grounding on one trace day: graded traces, pass rate, and the prompt versions served."""
    from mallard.evals import online_scores

    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    scores = online_scores.current(
        online_scores.frame(
            settings, eval_name=eval_name, start=start, end=start + dt.timedelta(days=1)
        )
    )
    grounding = scores[(scores["grader"] == "grounding") & (scores["error"] == "")]
    return {
        "graded": int(scores["trace_id"].nunique()),
        "grounding": float(grounding["passed"].mean()) if len(grounding) else None,
        "versions": sorted(int(v) for v in grounding["prompt_version"].unique()),
    }


def stream_production_traces(
    settings: Settings,
    server: DemoServer,
    *,
    tick: Callable[[str], Any],
    run_requested: Callable[[Any, Any], bool],
    run: Callable[..., bool],
    say: Callable[[str], None],
) -> OnlineStory:
    """Send the traces day by day, grade them as the sensor asks, check the alert rules each
    day, then run the grounded prompt in shadow (never raises: a failure is in `error`)."""
    from assets.names import LLM_ANALYTICS_JOB, ONLINE_EVAL_SENSOR, shadow_job
    from catalog.online_evals import ONLINE_EVALS
    from mallard.traces.schema import normalize_trace_id
    from resources import open_resources

    started = time.perf_counter()
    story = OnlineStory()
    spec = next(e for e in ONLINE_EVALS if e.has_shadow)
    try:
        key = server.key(APP_OWNER, "developer", scope="ingest")
        days = trace_days(settings)
        alerted: set[int] = set()
        with (
            open_resources() as resources,
            httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60
            ) as api,
        ):
            store, sink = resources.traces.store(), resources.alerts.sink()
            seen_alerts = {a.alert_id for a in sink.list(limit=1000)}
            for number, (day, rows) in enumerate(days):
                sending = time.perf_counter()
                story.spans_sent += _send(api, rows)
                _wait_stored(store, {normalize_trace_id(r["trace_id"]) for r in rows})
                story.sending_seconds += time.perf_counter() - sending
                result = tick(ONLINE_EVAL_SENSOR)
                hours = []
                for request in result.run_requests:
                    tags = dict(request.tags)
                    hours.append(
                        f"{tags.get('dagster/asset_partition_range_start')} … "
                        f"{tags.get('dagster/asset_partition_range_end')} "
                        f"({tags.get('mallard/traces')} traces)"
                    )
                    if not run_requested(result, request):
                        raise RuntimeError(f"{request.job_name} failed on trace day {number}")
                    story.runs += 1
                if not run(LLM_ANALYTICS_JOB, phase="llm_analytics (alert rules, each day)"):
                    raise RuntimeError(f"{LLM_ANALYTICS_JOB} failed on trace day {number}")
                grades = {"day": day.isoformat(), "number": number, "calls": len(rows)}
                grades |= _day_grades(settings, spec.name, day)
                story.days.append(grades)
                rate = grades["grounding"]
                say(
                    f"trace day {number:2d} ({day}): {len(rows)} calls sent, "
                    f"{len(result.run_requests)} online-eval run(s), grounding pass rate "
                    + (f"{rate:.2f}" if rate is not None else "—")
                    + f" (prompt v{', v'.join(map(str, grades['versions'])) or '—'})"
                )
                if number == 0 and hours:
                    story.story.append(
                        f"trace day 0 ({day}): {len(rows)} production calls in through "
                        f"POST /v1/traces; the {ONLINE_EVAL_SENSOR} sensor requested "
                        f"{spec.name} over hours {'; '.join(hours)}"
                    )
                for alert in sink.list(limit=100):
                    if alert.alert_id in seen_alerts:
                        continue
                    seen_alerts.add(alert.alert_id)
                    line = f"trace day {number} ({day}): alert {alert.details.get('rule')} — {alert.reason}"
                    story.alerts.append(line)
                    rule = str(alert.details.get("rule"))
                    if rule.startswith("grounding") and number not in alerted:
                        alerted.add(number)
                        story.story.append(line)
            story.story.append(_trend_line(story.days))
            _label_shadow(resources.prompts.registry(), spec.prompt, spec.shadow_label)
        if not run(shadow_job(spec.name)):
            raise RuntimeError(f"{shadow_job(spec.name)} failed")
        story.shadow = _shadow_result(spec.name)
        story.story.append(_shadow_line(story.shadow))
    except Exception as exc:  # noqa: BLE001 - the demo reports it and goes on
        story.error = str(exc)
    story.seconds = time.perf_counter() - started
    return story


def _trend_line(days: list[dict[str, Any]]) -> str:
    def rate(d: dict[str, Any]) -> str:
        return f"{d['grounding']:.2f}" if d["grounding"] is not None else "—"

    return (
        "grounding pass rate per trace day: "
        + " ".join(f"{rate(d)}{'*' if 2 in d['versions'] else ''}" for d in days)
        + " (* the regressed prompt v2 served)"
    )


def _label_shadow(registry: Any, prompt: str, label: str) -> int:
    """Point `label` at the grounded version (the one labelled live: the gate kept it)."""
    grounded = registry.labels(prompt)["live"]
    registry.promote(
        prompt,
        grounded,
        label=label,
        reason="demo: replay the grounded prompt on the regressed production traffic",
        actor="demo",
    )
    return grounded


def _shadow_result(eval_name: str) -> dict[str, Any]:
    import dagster as dg

    from assets.online_evals import shadow_comparison_key

    with dg.DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(shadow_comparison_key(eval_name))
    if event is None or event.asset_materialization is None:
        return {}
    return {k: getattr(v, "value", v) for k, v in event.asset_materialization.metadata.items()}


def _shadow_line(shadow: dict[str, Any]) -> str:
    versions = ", ".join(f"v{v}" for v in shadow.get("live_versions") or [])
    return (
        f"shadow: support_assistant v{shadow.get('candidate_version')} replayed on "
        f"{shadow.get('replayed')} live traces of {versions or 'no version'} → "
        f"{shadow.get('recommendation')} ({shadow.get('reason')})"
    )
