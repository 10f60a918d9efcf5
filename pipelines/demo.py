"""`make demo`: generate the sample world, run every asset end to end, print where to look.

The demo tells the retraining story on the persistent embedded instance (DAGSTER_HOME under
MALLARD_HOME), so `make dev` shows every run afterwards:

1. "Today" is day 59 of the sample world: sources are checked, features backfilled, the online
   store loaded, training sets built and every model trained, evaluated and promoted.
2. The days after it pass in chunks: each chunk backfills features, scores the days with the
   champion, reports drift, joins the labels that have arrived, and ticks the retraining sensor
   and the post-promotion guard. A sensor's run request runs at once, with its reason in tags.
3. The LLM side: prompt versions, the support-assistant chain, offline evals.

Every run is created on the instance with its code location origin (the `mallard` location) and
executed in this process with the in-process executor (pipelines/launch.py): it shows under its
job, on Overview and on the asset pages, and heavy libraries are imported once. Backfills are
single runs. At the end every sensor and schedule is left RUNNING with the cursors the story
reached (pipelines/schedules.py's LEFT_OFF names those left off, and why), so `make dev`'s daemon
carries on from the last simulated day.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from assets.names import (
    MAINTAIN_LAKE_JOB,
    monitor_job,
    offline_eval_job,
    outcomes_job,
    promotion_key,
    prompt_version_key,
)
from mallard.config import Settings, load_settings
from pipelines.demo_api import ApiCalls
from pipelines.demo_online import OnlineStory

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
FIRST_TODAY = 59  # the day the first models are trained on (the shift starts on day 60)
CHUNK_DAYS = 10


@dataclass
class DemoRun:
    """What the demo did: runs, materialized assets and the story's events."""

    settings: Settings
    runs: list[tuple[str, str, bool, float]] = field(default_factory=list)
    materialized: set[str] = field(default_factory=set)
    story: list[str] = field(default_factory=list)
    world: object | None = None
    llm: dict[str, object] = field(default_factory=dict)
    prompt_gate: dict[str, object] = field(default_factory=dict)
    seconds: float = 0.0
    debug_log: str = ""
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds per part of the demo (world, code location, each kind of run, ticks, …)."""
    launching: dict[str, float] = field(default_factory=dict)
    """What launching through the instance costs, in seconds (included in `phases`)."""
    automation: dict[str, str] = field(default_factory=dict)
    """Sensor and schedule name → the status the demo left it in."""
    api: ApiCalls | None = None
    """The demo's own calls to `mallard serve` (pipelines/demo_api.py)."""
    online: OnlineStory | None = None
    """The production traces it sent in and what grading them showed (pipelines/demo_online.py)."""

    def spent(self, phase: str, seconds: float) -> None:
        self.phases[phase] = self.phases.get(phase, 0.0) + seconds

    @property
    def success(self) -> bool:
        return (
            all(ok for _, _, ok, _ in self.runs)
            and (self.api is None or self.api.ok)
            and (self.online is None or self.online.ok)
        )


def _configure(end_date: dt.date | None, scale: float | None) -> Settings:
    overrides: dict[str, object] = {}
    if end_date is not None:
        overrides["end_date"] = end_date
    if scale is not None:
        overrides["sample_scale"] = scale
    settings = load_settings(**overrides).ensure_home()
    os.environ["MALLARD_HOME"] = str(settings.home)
    os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
    os.environ["MALLARD_END_DATE"] = settings.sample_end_date.isoformat()
    if scale is not None:
        os.environ["MALLARD_SAMPLE_SCALE"] = str(scale)
    return settings


def llm_run_config(items: int | None) -> dict[str, dict]:
    """Run config of the LLM half: the gate without its pairwise judge, and with `items`, every
    step bounded to that many items (None: the declared slices).

    The pairwise judge (both orders of every compared answer, grammar-constrained) takes 10–30 s
    a call with the local model on 2 cores, minutes for the gate's 12 items; the gate decides on
    the graders' paired bootstrap without it. `mallard evals promote` runs it."""
    from catalog.evals import EVALS

    gate = {
        "__".join(promotion_key(ev.name).path): {"config": {"pairwise": False}}
        for ev in EVALS
        if ev.gate
    }
    config: dict[str, dict] = {"promote_prompt": gate}
    if items is None:
        return config
    return {
        **config,
        "llm_prompts": {"support_assistant_demo": {"config": {"questions": min(items, 3)}}},
        "calibrate_judges": {"judge_calibration": {"config": {"limit": items}}},
        "offline_eval": {"offline_evals__support_assistant": {"config": {"limit": items}}},
    }


def run_demo(
    end_date: dt.date | None = None,
    scale: float | None = None,
    regenerate: bool = True,
    llm_items: int | None = None,
) -> DemoRun:
    """Generate the world (unless asked not to), then run the story; return what happened.

    `llm_items` bounds the LLM half (questions, calibration items, eval items per version)."""
    settings = _configure(end_date, scale)
    demo = DemoRun(settings)
    started = time.perf_counter()

    from mallard.sample_world.generate import WorldSpec, generate_world

    spec = WorldSpec(
        end_date=settings.sample_end_date, seed=settings.seed, customers=settings.sample_customers
    )
    if regenerate or not (settings.sample_dir / "world.json").exists():
        print(
            f"[demo] generating the sample world: {spec.customers:,} customers, {spec.days} days ending {spec.end_date}"
        )
        demo.world = generate_world(
            spec, settings.sample_dir, progress=lambda m: print(f"[demo]   … {m}")
        )

    demo.spent("sample world", time.perf_counter() - started)

    step = time.perf_counter()
    import dagster as dg

    from pipelines.launch import Launcher, write_debug_log

    def day(n: int) -> dt.date:
        return spec.start_date + dt.timedelta(days=n)

    log_path = settings.home / "logs" / "demo-dagster-debug.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("")
    demo.debug_log = str(log_path)
    # The story and Dagster's INFO lines on the console; every event, DEBUG included, is copied
    # from the instance's event log to the file after each run.
    console = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    print(f"[demo] Dagster's DEBUG log: {log_path}")

    with (
        _hosted_model_stand_in() as stand_in,
        dg.DagsterInstance.get() as instance,
        Launcher(instance) as launcher,
    ):
        demo.spent("loading the code location", time.perf_counter() - step)
        print(f"[demo] openai-gpt-4o-mini is simulated at {stand_in.base_url} (scripted)")
        bounded = llm_run_config(llm_items)

        def record(launched, label: str, phase: str) -> bool:
            demo.runs.append(
                (launched.job_name, launched.run_id, launched.success, launched.seconds)
            )
            demo.materialized.update(launched.materialized)
            demo.spent(phase, launched.seconds)
            logged = time.perf_counter()
            write_debug_log(instance, launched.run_id, log_path, launched.job_name)
            demo.spent("writing the DEBUG log", time.perf_counter() - logged)
            status = "ok    " if launched.success else "FAILED"
            print(f"[demo] {status} {label} in {launched.seconds:.1f} s  (run {launched.run_id})")
            return launched.success

        def run(
            job_name: str,
            first: int | None = None,
            last: int | None = None,
            tags: dict | None = None,
            phase: str | None = None,
        ) -> bool:
            tags = dict(tags or {})
            label = job_name
            if first is not None and last is not None:
                tags |= {RANGE_START: day(first).isoformat(), RANGE_END: day(last).isoformat()}
                label += f" days {first}–{last} ({day(first)} … {day(last)})"
            config = {**console, "ops": bounded.get(_step_kind(job_name), {})}
            launched = launcher.run(job_name, run_config=config, tags=tags)
            return record(launched, label, phase or _step_kind(job_name))

        def run_requested(tick, request) -> bool:
            launched = launcher.run_request(tick, request, extra_config=console)
            label = f"{request.job_name} (requested by {tick.sensor})"
            return record(launched, label, request.job_name)

        steps_ok = (
            run("ingest_sources")
            and run("build_features", 0, FIRST_TODAY, phase="build_features days 0–59")
            and run("load_online_store")
            and run("build_training_sets")
            and run("train_models")
        )
        story = _Story(demo, launcher, day, spec.days)
        if steps_ok:
            demo.story.append(
                f"day {FIRST_TODAY} ({day(FIRST_TODAY)}): models trained and promoted"
            )
            steps_ok = story.move_through_days(run, run_requested)
        if steps_ok:
            steps_ok = run("load_online_store") and run("llm_prompts")
        if steps_ok:
            for job, tags in demo_eval_runs(instance):
                if not run(job, tags=tags):
                    steps_ok = False
                    break
            demo.prompt_gate = _latest_metadata(instance, promotion_key("support_assistant"))
        demo.llm = _latest_metadata(instance, dg.AssetKey("support_assistant_demo"))
        if steps_ok:
            steps_ok = run(MAINTAIN_LAKE_JOB)
        if steps_ok:
            steps_ok = _serve_and_stream(demo, story, run, run_requested)
        if steps_ok:
            demo.automation = story.arm()
        demo.launching = {
            "code location loaded in process": launcher.load_seconds,
            "creating runs and reading their events back": launcher.seconds_outside_steps,
        }
    demo.seconds = time.perf_counter() - started
    return demo


@contextmanager
def _hosted_model_stand_in() -> Iterator[Any]:
    """The scripted OpenAI-compatible server standing in for `openai-gpt-4o-mini`, the hosted
    model of the sample world's production traffic (a simulation: no network here). Its URL is
    set before the code location loads, so the shadow run's replays reach it."""
    from unittest import mock

    from mallard.sample_world.assistant import scripted_assistant

    with scripted_assistant() as server:
        routed = {
            "MALLARD_LLM_ENDPOINT_URLS": json.dumps({"openai-gpt-4o-mini": server.base_url}),
            # The stand-in needs no key; a real one set in the shell is never sent to it.
            "OPENAI_API_KEY": "not-a-key-the-scripted-stand-in-needs-none",
        }
        with mock.patch.dict(os.environ, routed):  # restored, or removed, on the way out
            yield server


def _serve_and_stream(demo: DemoRun, story: _Story, run, run_requested) -> bool:
    """Start `mallard serve`, make the demo's own calls, send the production traces in day by
    day (pipelines/demo_online.py), stop the server."""
    from pipelines.demo_api import ApiCalls, DemoServer, calls_on
    from pipelines.demo_online import stream_production_traces

    def say(line: str) -> None:
        print(f"[demo] {line}")

    step = stopping = time.perf_counter()
    server = DemoServer(demo.settings, say)
    demo.api = ApiCalls(url=server.url)
    try:
        with server:
            calls_on(server, demo.api)
            demo.api.seconds = time.perf_counter() - step
            demo.spent("calling the API (start, 5 calls)", demo.api.seconds)
            demo.online = stream_production_traces(
                demo.settings,
                server,
                tick=story.tick,
                run_requested=run_requested,
                run=run,
                say=say,
            )
            demo.spent("sending traces in (POST, flush)", demo.online.sending_seconds)
            stopping = time.perf_counter()
    except Exception as exc:  # noqa: BLE001 - the demo reports it and goes on
        demo.api.error = str(exc)
    demo.spent("stopping the API", time.perf_counter() - stopping)
    if demo.online is not None:
        demo.story.extend(demo.online.story)
        if demo.online.error:
            demo.story.append(f"production traffic FAILED: {demo.online.error}")
    return demo.api.ok and demo.online is not None and demo.online.ok


def _step_kind(job_name: str) -> str:
    from catalog.evals import EVALS

    return "offline_eval" if job_name in {offline_eval_job(ev.name) for ev in EVALS} else job_name


def demo_eval_runs(instance) -> list[tuple[str, dict[str, str]]]:
    """After prompt_versions: add the prompt-version partitions (no sensor ticks in process) and
    return (job, run tags) in order: import the datasets, calibrate the judges, evaluate the live
    and the staging version of each gated eval's prompt, run the gate."""
    from catalog.evals import EVALS
    from resources import open_resources
    from sensors.llm_evals import add_prompt_version_partitions

    with open_resources() as resources:
        registry = resources.prompts.registry()
    add_prompt_version_partitions(instance, registry)
    runs: list[tuple[str, dict[str, str]]] = [
        ("import_eval_datasets", {}),
        ("calibrate_judges", {}),
    ]
    for ev in EVALS:
        labels = registry.labels(ev.prompt)
        wanted = [ev.gate.label, ev.gate.candidate_label] if ev.gate else ["live"]
        versions = list(dict.fromkeys(labels[label] for label in wanted if label in labels))
        runs += [
            (offline_eval_job(ev.name), {"dagster/partition": prompt_version_key(v)})
            for v in versions
        ]
    if any(ev.gate for ev in EVALS):
        runs.append(("promote_prompt", {}))
    return runs


def _latest_metadata(instance, key) -> dict[str, object]:
    """The metadata of an asset's latest materialization, as plain values."""
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return {}
    return {k: getattr(v, "value", v) for k, v in event.asset_materialization.metadata.items()}


class _Story:
    """The days after the first training, and what the demo hands on to the daemon: the sensors'
    cursors, their recorded ticks, and which sensors and schedules run."""

    TICKED = ("retrain_on_drift_or_decay", "post_promotion_guard")

    def __init__(self, demo: DemoRun, launcher, day, days: int):
        self.demo, self.launcher, self.day, self.days = demo, launcher, day, days
        self.cursors: dict[str, str | None] = dict.fromkeys(self.TICKED)
        self.last_ticks: dict[str, float] = {}
        self.handled: tuple[int, int] | None = None  # last day scored, last day with outcomes

    def tick(self, name: str):
        """Evaluate one sensor in process on the instance, as of the simulated day."""
        started = time.perf_counter()
        tick = self.launcher.tick(name, self.cursors.get(name))
        self.cursors[name] = tick.cursor
        self.last_ticks[name] = tick.timestamp
        self.demo.spent("sensor ticks", time.perf_counter() - started)
        return tick

    def move_through_days(self, run, run_requested) -> bool:
        """Chunks of days: features, monitoring, outcomes, then the retraining sensor and the
        post-promotion guard tick; a sensor's request runs at once, with its reason in tags."""
        from catalog.monitoring import MONITORED

        demo, day = self.demo, self.day
        outcomes_last = None
        for first in range(FIRST_TODAY + 1, self.days, CHUNK_DAYS):
            last = min(first + CHUNK_DAYS - 1, self.days - 1)
            if not run("build_features", first, last):
                return False
            for mon in MONITORED:
                if not run(monitor_job(mon.model), first, last):
                    return False
                known_first = max(FIRST_TODAY + 1, first - mon.label_delay_days)
                known_last = last - mon.label_delay_days
                if known_last >= known_first:
                    if not run(outcomes_job(mon.model), known_first, known_last):
                        return False
                    outcomes_last = known_last
            self.handled = (last, outcomes_last if outcomes_last is not None else FIRST_TODAY)
            # The sensors judge evidence as of the simulated day, not the wall clock.
            os.environ["MALLARD_TODAY"] = day(last).isoformat()
            for name in self.TICKED:
                tick = self.tick(name)
                message = tick.skip_message or ""
                if name == "post_promotion_guard" and "CI [" in message:
                    demo.story.append(f"day {last} ({day(last)}): guard — {message}")
                for request in tick.run_requests:
                    tags = dict(request.tags)
                    demo.story.append(
                        f"day {last} ({day(last)}): sensor requested {request.job_name} — "
                        f"{tags.get('mallard/reason')}"
                    )
                    if not run_requested(tick, request):
                        return False
                    demo.story.append(
                        f"day {last} ({day(last)}): {_decision(tags.get('mallard/retrain'))}"
                    )
        return True

    def arm(self) -> dict[str, str]:
        """Hand on to the daemon: the new-days sensor's cursor at the days handled, one recorded
        tick of every other sensor not ticked per chunk (each must request nothing: the demo
        left nothing for it), and every sensor and schedule RUNNING with its cursor except
        pipelines/schedules.py's LEFT_OFF."""
        from pipelines.schedules import LEFT_OFF
        from sensors.sources import NAME as NEW_DAYS
        from sensors.sources import handled_cursor

        if self.handled is not None:
            scored, joined = (self.day(n) for n in self.handled)
            self.cursors[NEW_DAYS] = handled_cursor(scored, scored, scored, joined)
        for name in self.launcher.standard_sensors():
            if name in self.TICKED or name in self.last_ticks:
                continue  # ticked as the story went: its cursor and last tick are kept
            tick = self.tick(name)
            if tick.run_requests:
                raise RuntimeError(
                    f"{name} still requests {[r.job_name for r in tick.run_requests]} after the "
                    "demo: its cursor does not cover what the demo ran"
                )
        return self.launcher.arm(self.cursors, LEFT_OFF, self.last_ticks)


def _decision(model: str | None) -> str:
    """The latest recorded champion decision of a model, as one line."""
    from resources import open_resources

    if not model:
        return "no decision"
    with open_resources() as resources:
        registered = resources.mlflow.client().get_registered_model(model)
    tag = registered.tags.get("mallard.last_decision")
    if not tag:
        return "no decision recorded"
    decision = json.loads(tag)
    return f"{model} {decision['action']} v{decision['version']}: {decision['reason']}"


def model_figures(settings: Settings) -> dict[str, dict]:
    """What the demo's models achieved, from their stored evaluations and monitoring results.

    Per model: the first champion's held-out metrics (before the shift) and, for a classifier, its
    daily AUC on post-shift outcomes and the promoted retrain's held-out metrics against it.
    """
    from catalog.models import MODELS
    from mallard.models.evaluation import EVALUATION_ARTIFACT
    from mallard.models.loading import load_json_artifact
    from mallard.models.registry import client, get_version, history, run_id_of
    from mallard.monitoring import results
    from mallard.sample_world.generate import WorldSpec

    c = client(settings)
    world = settings.sample_dir / "world.json"
    generated = json.loads(world.read_text())["spec"] if world.exists() else {}
    end = dt.date.fromisoformat(generated.get("end_date", settings.sample_end_date.isoformat()))
    days = int(generated.get("days", WorldSpec(end_date=end).days))  # more once days are added
    shift = WorldSpec(end_date=end, days=days).day_start(int(generated.get("shift_day", 60)))
    shift = shift.date()

    def evaluation(name: str, version: int) -> dict:
        run_id = run_id_of(get_version(c, name, version), name)
        return load_json_artifact(settings, run_id, EVALUATION_ARTIFACT) or {}

    figures: dict[str, dict] = {}
    for spec in MODELS:
        try:
            champions = history(c, spec.name)
        except Exception:  # no registered model: the demo failed before training it
            continue
        if not champions:
            continue
        first = evaluation(spec.name, champions[0])
        entry: dict = {
            "task": spec.task,
            "first": champions[0],
            "first_metrics": first.get("metrics", {}).get("candidate", {}),
            "first_holdout": first.get("holdout", {}),
            "reference": first.get("reference", {}),
        }
        if spec.task == "classification":
            daily = [
                r["value"]
                for r in results.read(settings, spec.name, "performance")
                if r["model_version"] == str(champions[0])
                and r["day"] >= shift
                and r["value"] is not None
            ]
            entry["post_shift_days"] = len(daily)
            entry["post_shift_auc"] = sum(daily) / len(daily) if daily else None
            if len(champions) > 1:
                promoted = evaluation(spec.name, champions[-1])
                entry.update(
                    promoted=champions[-1],
                    promoted_metrics=promoted.get("metrics", {}).get("candidate", {}),
                    promoted_against=promoted.get("metrics", {}).get("champion", {}),
                    promoted_over=promoted.get("champion_version"),
                    promoted_holdout=promoted.get("holdout", {}),
                    promoted_reference=promoted.get("reference", {}),
                )
        figures[spec.name] = entry
    return figures


def _figure_lines(figures: dict[str, dict], story: list[str]) -> list[str]:
    """The figures as the summary prints them."""
    lines = []
    for name, f in figures.items():
        m, held = f["first_metrics"], f["first_holdout"]
        days = f"label days {held.get('first_day')} … {held.get('last_day')}"
        if f["task"] == "classification" and m:
            ref = f["reference"]
            lines.append(
                f"{name}: v{f['first']} before the shift: held-out AUC {m['auc']:.3f}, "
                f"PR-AUC {m['pr_auc']:.3f} (base rate {ref.get('base_rate', 0):.3f}; {days})"
            )
            lines.append(
                f"  threshold {m.get('threshold', 0.5):.4f} ({ref.get('threshold_rule')}): "
                f"flags {m['flagged_share']:.1%}, recall {m['recall']:.3f}, precision "
                f"{m['precision']:.3f}, F1 {m['f1']:.3f} (always-churn F1 "
                f"{ref.get('always_positive_f1', 0):.3f})"
            )
            if f.get("post_shift_auc") is not None:
                lines.append(
                    f"  after the shift: v{f['first']}'s AUC on outcomes {f['post_shift_auc']:.3f} "
                    f"(mean of {f['post_shift_days']} days), {f['post_shift_auc'] - m['auc']:+.3f}"
                )
            if "promoted" in f:
                p, against, ph = f["promoted_metrics"], f["promoted_against"], f["promoted_holdout"]
                when = next(
                    (s.split(":")[0] for s in story if f"promote v{f['promoted']}" in s), ""
                )
                lines.append(
                    f"  promoted v{f['promoted']} ({when}): held-out AUC {p['auc']:.3f} vs "
                    f"champion v{f['promoted_over']} {against.get('auc', float('nan')):.3f}, PR-AUC "
                    f"{p['pr_auc']:.3f}; recall {p['recall']:.3f}, F1 {p['f1']:.3f} at its "
                    f"threshold (always-churn F1 "
                    f"{f['promoted_reference'].get('always_positive_f1', 0):.3f}; label days "
                    f"{ph.get('first_day')} … {ph.get('last_day')})"
                )
            else:
                lines.append("  no retrain was promoted")
        elif f["task"] == "regression" and "mae_vs_naive" in m:
            lines.append(
                f"{name}: v{f['first']} held-out MAE {m['mae']:.1f} vs naive "
                f"{f['reference']['naive_mae']:.1f} ({f['reference']['baseline']}): "
                f"{m['mae_vs_naive']:.1%} lower ({days})"
            )
        elif f["task"] == "clustering" and m:
            lines.append(
                f"{name}: v{f['first']} held-out assignment stability (adjusted Rand) "
                f"{m['stability']:.3f}, silhouette {m['silhouette']:.3f} ({days})"
            )
    return lines


def print_summary(demo: DemoRun) -> None:
    settings = demo.settings
    print()
    print("Mallard demo — done" if demo.success else "Mallard demo — FAILED")
    print(f"  runs            {len(demo.runs)} ({sum(1 for r in demo.runs if not r[2])} failed)")
    print(f"  assets built    {len(demo.materialized)}: {', '.join(sorted(demo.materialized))}")
    if demo.world is not None:
        rows = demo.world.rows  # type: ignore[attr-defined]
        print(
            f"  sample world    {settings.sample_dir} ({rows['customers']:,} customers, "
            f"{rows['usage_events']:,} usage events, {rows['traces']:,} traces)"
        )
    if demo.story:
        print("  the story:")
        for line in demo.story:
            print(f"    - {line}")
    if demo.runs:
        try:
            figures = model_figures(settings)
        except Exception as exc:  # the summary still prints if a model store is unreadable
            print(f"  models          (figures unavailable: {exc})")
        else:
            print("  models:")
            for line in _figure_lines(figures, demo.story):
                print(f"    {line}")
    if demo.llm:
        llm = demo.llm
        print(
            f"  support chain   {llm.get('ok')}/{llm.get('items')} questions answered, "
            f"{llm.get('prompt_tokens')} prompt + {llm.get('completion_tokens')} completion tokens, "
            f"cost ${float(llm.get('cost_usd') or 0):.4f}, answer latency p50 "
            f"{float(llm.get('answer_latency_p50_ms') or 0):.0f} ms"
        )
    if demo.prompt_gate:
        gate = demo.prompt_gate
        print(
            f"  prompt gate     {gate.get('verdict')}: candidate v{gate.get('candidate_version')}, "
            f"live {gate.get('live_before')} → {gate.get('live_after')}"
        )
        for reason in str(gate.get("reasons") or "").splitlines()[:4]:
            print(f"                  {reason}")
    if demo.automation:
        running = sorted(n for n, status in demo.automation.items() if status == "RUNNING")
        stopped = sorted(n for n, status in demo.automation.items() if status != "RUNNING")
        print(f"  automation      RUNNING: {', '.join(running)}")
        if stopped:
            print(f"                  left off (README, Automation): {', '.join(stopped)}")
    if demo.online is not None and demo.online.days:
        online = demo.online
        print(
            f"  production      {online.spans_sent:,} spans over {len(online.days)} trace days "
            f"sent to POST /v1/traces (ingest key), {online.runs} online-eval runs, "
            f"{len(online.alerts)} alerts (uv run mallard alerts list)"
        )
    if demo.api is not None:
        print(
            f"  API             {'answered' if demo.api.ok else 'FAILED'} on {demo.api.url} "
            f"in {demo.api.seconds:.1f} s, then stopped"
        )
        for line in demo.api.lines:
            print(f"                  {line}")
        if demo.api.error:
            print(f"                  {demo.api.error.splitlines()[0]}")
    print(f"  Dagster home    {settings.dagster_home}")
    print(f"  lake            {settings.lake_dir}")
    print(f"  reports         {settings.reports_dir}")
    if demo.debug_log:
        print(f"  Dagster DEBUG   {demo.debug_log}")
    print(
        "  next            make dev     → http://127.0.0.1:3000 (Assets: sources, features, training, monitoring)"
    )
    print("                  make mlflow  → http://127.0.0.1:5000 (runs and the champion alias)")
    print("                  uv run mallard alerts list · mallard models list · mallard evals show")
    print("                  make serve   → http://127.0.0.1:8000/docs (the REST API), then:")
    print(
        '                    export KEY=$(uv run mallard keys create --owner "$USER" --role admin)'
    )
    print(
        '                    curl -s -H "Authorization: Bearer $KEY" -H "Content-Type: '
        'application/json" http://127.0.0.1:8000/v1/models/churn_classifier/predict -d '
        '\'{"entities": [{"customer_id": 5}]}\''
    )
    print(f"  run time        {demo.seconds:.1f} s (after installation)")
    for line in timing_lines(demo):
        print(f"    {line}")


def timing_lines(demo: DemoRun) -> list[str]:
    """Where the run time went: seconds per part, largest first, and what launching through the
    instance cost."""
    lines = [
        f"{seconds:7.1f} s  {phase}"
        for phase, seconds in sorted(demo.phases.items(), key=lambda kv: -kv[1])
    ]
    other = demo.seconds - sum(demo.phases.values())
    lines.append(f"{other:7.1f} s  the rest (story bookkeeping, summaries)")
    if demo.launching:
        lines.append(
            "launching through the instance: "
            + "; ".join(f"{k} {v:.1f} s" for k, v in demo.launching.items())
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--end-date", type=dt.date.fromisoformat, default=None)
    parser.add_argument("--scale", type=float, default=None)
    parser.add_argument("--keep-data", action="store_true", help="reuse an existing sample world")
    parser.add_argument(
        "--llm-items",
        type=int,
        default=None,
        help="bound the LLM half: questions, calibration and eval items (default: the declared slices)",
    )
    args = parser.parse_args()
    demo = run_demo(
        args.end_date, args.scale, regenerate=not args.keep_data, llm_items=args.llm_items
    )
    print_summary(demo)
    raise SystemExit(0 if demo.success else 1)


if __name__ == "__main__":
    main()
