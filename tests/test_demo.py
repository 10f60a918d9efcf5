"""End to end: the demo on a reduced world, and what `make dev` then shows."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from demo_run import DEMO_END

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo_home(demo_run) -> Path:
    """The demo, run once in a subprocess on a temporary MALLARD_HOME (a 1,000-customer world, the
    LLM half on 6 items per step), started in the background when these tests were collected
    (tests/demo_run.py); its stdout and stderr sit beside the home."""
    return demo_run.wait()


def test_demo_tells_the_retraining_story(demo_home: Path) -> None:
    """Drift after the shift makes the sensor request a retrain; the decision and alert are kept."""
    from mallard.config import load_settings
    from mallard.monitoring.alerts import list_alerts

    story = (demo_home.parent / "demo-stdout.txt").read_text().split("the story:")[1]
    assert "sensor requested retrain_churn_classifier — " in story
    assert "churn_classifier promote v" in story and "churn_classifier keep v" in story
    alerts = list_alerts(load_settings(home=demo_home), subject="churn_classifier")
    assert alerts and {a.kind for a in alerts} <= {"drift", "performance", "rollback"}
    assert all(a.reason for a in alerts)


def test_demo_models_are_worth_shipping(demo_home: Path) -> None:
    """The figures the demo prints: a churn model that sees churn before the shift, decays after
    it and is replaced by a retrain on post-shift rows; decisions at a threshold chosen for the
    retention team's budget; a regression that beats the naive forecast; stable segments."""
    import datetime as dt

    from mallard.config import load_settings
    from mallard.models.data import parse_days
    from mallard.models.registry import client, get_version
    from pipelines.demo import _figure_lines, model_figures

    stdout = (demo_home.parent / "demo-stdout.txt").read_text()
    story = stdout.split("the story:")[1].split("  models:")[0]
    settings = load_settings(home=demo_home)
    figures = model_figures(settings)
    churn = figures["churn_classifier"]
    before, reference = churn["first_metrics"], churn["reference"]
    assert before["auc"] >= 0.75, churn
    assert before["pr_auc"] > 2 * reference["base_rate"], churn
    # The threshold serves the declared contact budget: it flags about 10 %, finds churners,
    # and beats flagging everyone.
    assert before["recall"] > 0 and 0.03 < before["flagged_share"] < 0.2, churn
    assert before["f1"] > reference["always_positive_f1"], churn
    assert churn["post_shift_days"] >= 20
    assert churn["post_shift_auc"] <= before["auc"] - 0.08, churn
    # The promoted retrain learnt from rows after the shift and recovers.
    assert "promoted" in churn, story
    assert f"churn_classifier promote v{churn['promoted']}" in story
    after = churn["promoted_metrics"]
    assert after["auc"] >= 0.70 and after["pr_auc"] > churn["promoted_reference"]["base_rate"]
    assert after["recall"] > 0 and after["f1"] > churn["promoted_reference"]["always_positive_f1"]
    promoted = get_version(client(settings), "churn_classifier", churn["promoted"])
    trained = parse_days(promoted.tags["mallard.train_days"])
    assert trained is not None and trained[0] >= settings.sample_start_date + dt.timedelta(60)
    minutes = figures["minutes_forecast"]["first_metrics"]
    assert minutes["mae_vs_naive"] >= 0.15, figures["minutes_forecast"]
    assert figures["customer_segments"]["first_metrics"]["stability"] >= 0.7
    # Every figure above is printed.
    printed = stdout.split("  models:")[1]
    for line in _figure_lines(figures, [line.strip()[2:] for line in story.splitlines()]):
        assert line in printed, line


def test_demo_materializes_every_asset(demo_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every asset of the definitions has a materialization after the demo, the online evals'
    among them (the demo sends production traffic in)."""
    import dagster as dg

    monkeypatch.setenv("MALLARD_HOME", str(demo_home))
    from pipelines.definitions import defs

    graph = defs.resolve_asset_graph()
    expected = graph.get_all_asset_keys()
    assert len(expected) >= 40
    with dg.DagsterInstance.from_config(str(demo_home / "dagster")) as instance:
        for key in expected:
            event = instance.get_latest_materialization_event(key)
            assert event is not None, f"{key.to_user_string()} was not materialized"
        usage = instance.get_latest_materialization_event(dg.AssetKey("usage_events"))
        metadata = usage.asset_materialization.metadata
        assert metadata["dagster/row_count"].value > 10_000
        assert "minutes_watched" in {
            c.name for c in metadata["dagster/column_schema"].schema.columns
        }
        # A performance drop is measured from the champion's own held-out AUC: it must be found.
        performance = instance.get_latest_materialization_event(
            dg.AssetKey("churn_classifier_performance")
        ).asset_materialization.metadata
        assert 0.5 < performance["baseline_auc"].value < 1.0
        # The evaluations show the figures the models are judged by.
        for model, keys in (
            ("churn_classifier", {"candidate_pr_auc", "at_threshold", "always_positive_f1"}),
            ("minutes_forecast", {"naive_baseline", "naive_mae", "mae_vs_naive"}),
            ("customer_segments", {"holdout_stability"}),
        ):
            evaluation = instance.get_latest_materialization_event(
                dg.AssetKey(f"{model}_evaluation")
            ).asset_materialization.metadata
            assert keys <= set(evaluation), model
        # The prompt gate refused the regressed version and said why.
        gate = instance.get_latest_materialization_event(
            dg.AssetKey(["prompt_promotions", "support_assistant_gate"])
        ).asset_materialization.metadata
        assert gate["verdict"].value == "refused"  # v2 is the regressed prompt
        # Refused on the evidence (non-inferiority on grounding not shown), not for too few items.
        assert "grounding: v2 − v1 = " in gate["reasons"].value
        assert "may be worse than live" in gate["reasons"].value
        assert "needs at least" not in gate["reasons"].value


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


ASSETS_QUERY = """
query {
  assetNodes(group: {groupName: "sources", repositoryName: "__repository__", repositoryLocationName: "mallard"}) {
    assetKey { path }
    assetMaterializations(limit: 1) { metadataEntries { label ... on IntMetadataEntry { intValue } } }
  }
}
"""


@pytest.fixture(scope="module")
def dagster_ui(demo_home: Path):
    """The Dagster webserver over the demo's instance (what `make dev` serves): its base URL."""
    port = _free_port()
    env = {**os.environ, "MALLARD_HOME": str(demo_home), "DAGSTER_HOME": str(demo_home / "dagster")}
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("dagster-webserver")),
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                reply = httpx.post(
                    f"http://127.0.0.1:{port}/graphql", json={"query": ASSETS_QUERY}, timeout=10
                )
                if (reply.json().get("data") or {}).get("assetNodes"):
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_webserver_shows_sources_with_metadata(dagster_ui: str) -> None:
    """What `make dev` serves: the sources group, each asset with its row count."""
    nodes = None
    try:
        reply = httpx.post(f"{dagster_ui}/graphql", json={"query": ASSETS_QUERY}, timeout=30)
        nodes = (reply.json().get("data") or {}).get("assetNodes")
    except (httpx.HTTPError, ValueError):
        pass
    assert nodes, "the webserver never served the sources group"
    by_name = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    assert {"customers", "usage_events", "billing_events", "churn_labels"} <= set(by_name)
    entries = by_name["customers"]["assetMaterializations"][0]["metadataEntries"]
    row_count = next(e["intValue"] for e in entries if e["label"] == "dagster/row_count")
    assert row_count == 1000


def _latest_metadata(demo_home: Path, key: str, partition: str | None = None) -> dict:
    import dagster as dg

    with dg.DagsterInstance.from_config(str(demo_home / "dagster")) as instance:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=dg.AssetKey(key), asset_partitions=[partition] if partition else None
            ),
            limit=1,
        ).records
        assert records, (key, partition)
        event = records[0].event_log_entry
        materialization = event.asset_materialization
        assert materialization is not None
        metadata = {k: v.value for k, v in materialization.metadata.items()}
        return {**metadata, "__run_id": event.run_id}


def _mlflow_run_id(url: str) -> str:
    """The run id in an MLflow UI link (`…/#/experiments/<e>/runs/<run>?workflowType=…`)."""
    return url.split("/runs/", 1)[1].split("?", 1)[0]


def test_mlflow_runs_and_dagster_runs_link_both_ways(demo_home: Path) -> None:
    """From an asset to its MLflow run and back to the Dagster run that made it; every MLflow run
    Mallard made in a Dagster run says which; a candidate run is named for what it is, has its
    training slice as a dataset input and a description, and no tag value is an escape."""
    import dagster as dg

    from mallard.config import load_settings
    from mallard.models.registry import (
        DAGSTER_RUN_TAG,
        DAGSTER_RUN_URL_TAG,
        EXPERIMENT_KIND_TAG,
        client,
        experiment_name,
    )

    settings = load_settings(home=demo_home)
    c = client(settings)
    with dg.DagsterInstance.from_config(str(demo_home / "dagster")) as instance:
        for model in ("churn_classifier", "minutes_forecast", "customer_segments"):
            for kind in ("candidate", "evaluation", "champion"):
                metadata = _latest_metadata(demo_home, f"{model}_{kind}")
                url = metadata.get("mlflow_run") or metadata.get("decision_run")
                if url is None:  # a champion kept as it was makes no decision run
                    continue
                assert url.startswith("http://127.0.0.1:5000/#/experiments/"), url
                assert url.endswith("?workflowType=machine_learning")
                run = c.get_run(_mlflow_run_id(url))
                tags = run.data.tags
                dagster_run_id = tags[DAGSTER_RUN_TAG]
                assert tags[DAGSTER_RUN_URL_TAG] == f"http://127.0.0.1:3000/runs/{dagster_run_id}"
                dagster_run = instance.get_run_by_id(dagster_run_id)
                assert dagster_run is not None, f"{model}_{kind}: no Dagster run {dagster_run_id}"
                if kind != "evaluation":  # the evaluation logs into the candidate's run
                    assert dagster_run_id == metadata["__run_id"]
                back = dagster_run.tags.get(f"mallard/mlflow_run.{model}_{kind}")
                assert back is not None and _mlflow_run_id(back) == run.info.run_id, (model, kind)
            experiment = c.get_experiment_by_name(experiment_name(model))
            assert experiment.tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
            candidates = c.search_runs(
                [experiment.experiment_id], "tags.`mallard.kind` = 'candidate'"
            )
            names = [r.info.run_name for r in candidates]
            assert len(set(names)) == len(names) and all(n.startswith(f"{model} v") for n in names)
            for run in candidates:
                contexts = {
                    next(t.value for t in d.tags if t.key == "mlflow.data.context")
                    for d in run.inputs.dataset_inputs
                }
                assert "training" in contexts, run.info.run_name
            for version in c.search_model_versions(f"name='{model}'"):
                assert version.description and "Trained on" in version.description
                assert "\\u" not in str(version.tags)
            registered = c.get_registered_model(model)
            assert all("\\u" not in value for value in registered.tags.values()), model
    raw = c.get_registered_model("churn_classifier").tags["mallard.last_decision"]
    decision = json.loads(raw)
    assert decision["action"] != "promote" or "≤" in raw  # "improvement ≤ …", not "\\u2264"


def test_mlflow_prompt_aliases_and_evaluations_match_mallard(demo_home: Path) -> None:
    """MLflow's prompt registry mirrors Mallard's: every version under the same number, every
    label an alias on the same version. Each offline eval partition is an MLflow evaluation
    run (GenAI experiment) whose per-grader means are Mallard's, with a trace per item."""
    from mallard.config import load_settings
    from mallard.evals.mlflow_log import EVAL_RUN_TAG, experiment_name
    from mallard.evals.runs import latest_run, summarize
    from mallard.llm.prompts import PromptRegistry
    from mallard.llm.prompts.mlflow_mirror import VERSION_TAG
    from mallard.models.registry import EXPERIMENT_KIND_TAG, client

    settings = load_settings(home=demo_home)
    c = client(settings)
    registry = PromptRegistry(settings.lake_dir / "prompt_registry.sqlite")
    assert registry.names()
    for name in registry.names():
        for version in registry.versions(name):
            mirrored = c.get_prompt_version(name, version.version)
            assert mirrored.tags[VERSION_TAG] == str(version.version)
            assert mirrored.tags["mallard.content_hash"] == version.content_hash
        aliases = {
            label: int(c.get_prompt_version_by_alias(name, label).version)
            for label in registry.labels(name)
        }
        assert aliases == registry.labels(name), name
        assert "live" in aliases
    experiment = c.get_experiment_by_name(experiment_name("support_assistant"))
    assert experiment.tags[EXPERIMENT_KIND_TAG] == "genai_development"
    runs = c.search_runs([experiment.experiment_id], "tags.`mallard.kind` = 'offline_eval'")
    assert {r.data.tags["mallard.prompt_version"] for r in runs} >= {"1", "2"}
    for version in (1, 2):
        run = next(
            r
            for r in sorted(runs, key=lambda r: r.info.start_time, reverse=True)
            if r.data.tags["mallard.prompt_version"] == str(version)
        )
        rows = latest_run("support_assistant", version, settings=settings)
        assert run.data.tags[EVAL_RUN_TAG] == rows[0]["run_id"]
        for grader, stats in summarize(rows)["graders"].items():
            assert run.data.metrics[f"{grader}/mean"] == pytest.approx(stats["mean"]), grader
        assert run.data.tags["mlflow.linkedPrompts"]  # the prompt version it evaluated
        traces = c.search_traces(locations=[experiment.experiment_id], run_id=run.info.run_id)
        assert len(traces) == summarize(rows)["items"]
        assert {a.name for a in traces[0].info.assessments} >= set(summarize(rows)["graders"])


@pytest.fixture(scope="module")
def reports_server(demo_home: Path):
    """The API server's app (`mallard serve`'s) on the port the demo's URLs name, in a thread:
    it serves MALLARD_HOME/reports at /reports."""
    import threading
    from urllib.parse import urlparse

    import uvicorn

    from mallard.config import load_settings
    from mallard.serving import ServingClients, create_app
    from mallard.serving.state import open_server_state

    url = _latest_metadata(demo_home, "churn_classifier_candidate")["plots_page"]
    port = urlparse(url).port
    settings = load_settings(home=demo_home)
    state = open_server_state(settings, "sqlite", "")
    app = create_app(ServingClients(state=state), settings, warm_up=False)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, f"the reports server did not start on port {port}"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)
    state.close()


IMAGES_SHOWN = """
return [...document.querySelectorAll('img')]
  .filter(img => img.src.includes(arguments[0]) && img.complete && img.naturalWidth > 0)
  .map(img => img.src);
"""
LINK_TO = """
const a = [...document.querySelectorAll('a')].find(a => a.href.includes(arguments[0]));
return a ? a.href : null;
"""


def test_browser_finds_the_plots_and_each_days_drift_report(
    demo_home: Path, dagster_ui: str, reports_server: str
) -> None:
    """In headless Chromium (Debian's chromium and chromium-driver): a model's asset page shows
    its plots as images and links its plots page; a drift partition links that day's Evidently
    report, which answers 200 and states Mallard's threshold."""
    from ui_browser import Browser, find_binaries

    from catalog.monitoring import churn_monitoring

    if find_binaries() is None:
        pytest.skip(
            "Debian's chromium and chromium-driver are not installed: `make services` "
            "(scripts/install-services.sh) installs them, as `make test` does"
        )
    started = time.monotonic()
    day = "2026-06-20"
    drift = _latest_metadata(demo_home, "churn_classifier_drift", partition=day)
    with Browser() as browser:
        browser.get(f"{dagster_ui}/server_info")
        browser.run("localStorage.setItem('communityNux', '1')")  # no newsletter dialog
        browser.get(f"{dagster_ui}/assets/churn_classifier_candidate")
        shown = browser.wait_for(
            IMAGES_SHOWN, "/reports/models/churn_classifier/", what="the candidate's plots"
        )
        assert any("confusion_matrix_roc.png" in src for src in shown), shown
        plots_page = browser.wait_for(LINK_TO, "/index.html", what="the plots page link")
        browser.get(plots_page)
        pictures = browser.wait_for(IMAGES_SHOWN, "/reports/models/", what="the plots page")
        assert len(pictures) >= 3, pictures  # comparison, confusion/ROC, hold-out comparison
        browser.get(f"{dagster_ui}/assets/churn_classifier_drift?view=partitions&partition={day}")
        report = browser.wait_for(LINK_TO, f"/reports/drift/churn_classifier/{day}.html")
        assert report == drift["report"]
    reply = httpx.get(report, timeout=30)
    assert reply.status_code == 200
    threshold = churn_monitoring.policy.drift_share
    assert f"drift detection threshold is {threshold:g}" in reply.text
    assert reply.text.count("mallard-header") == 1
    assert time.monotonic() - started < 60


def _home_env(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    monkeypatch.setenv("MALLARD_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.setenv("MALLARD_SAMPLE_SCALE", "0.05")
    monkeypatch.setenv("MALLARD_END_DATE", DEMO_END)
    monkeypatch.delenv("MALLARD_TODAY", raising=False)


def test_every_demo_run_is_on_the_instance_with_its_code_location(demo_home: Path) -> None:
    """Each run has the `mallard` location's origin, so the UI lists it under its job (and on
    Overview and the asset pages); the runs a sensor requested carry its name and tick; the
    console shows INFO, the DEBUG file every event."""
    import re

    import dagster as dg

    from pipelines.launch import LOCATION_NAME, REPOSITORY_NAME

    stdout = (demo_home.parent / "demo-stdout.txt").read_text()
    printed = int(re.search(r"runs\s+(\d+) \(0 failed\)", stdout).group(1))
    with dg.DagsterInstance.from_config(str(demo_home / "dagster")) as instance:
        runs = instance.get_runs()
        assert len(runs) == printed
        for run in runs:
            origin = run.remote_job_origin
            assert origin is not None, run.job_name
            assert origin.location_name == LOCATION_NAME
            assert origin.repository_origin.repository_name == REPOSITORY_NAME
            assert run.job_code_origin is not None
            assert run.status == dg.DagsterRunStatus.SUCCESS
        by_job: dict[str, int] = {}
        for run in runs:
            by_job[run.job_name] = by_job.get(run.job_name, 0) + 1
        for job, count in by_job.items():
            assert instance.get_runs_count(dg.RunsFilter(job_name=job)) == count, job
        assert by_job["monitor_churn_classifier"] == 6 and by_job["maintain_lake"] == 1
        requested = [r for r in runs if "dagster/sensor_name" in r.tags]
        by_sensor = {"retrain_on_drift_or_decay": [], "online_evals": []}
        for run in requested:
            by_sensor[run.tags["dagster/sensor_name"]].append(run)
            assert {"dagster/tick", "dagster/run_key"} <= set(run.tags)
        assert by_sensor["retrain_on_drift_or_decay"], "the retraining sensor requested no run"
        for run in by_sensor["retrain_on_drift_or_decay"]:
            assert run.job_name == "retrain_churn_classifier" and "mallard/reason" in run.tags
        # one online-eval run per trace day, each a single-run backfill of that day's hours
        assert len(by_sensor["online_evals"]) == 14
        for run in by_sensor["online_evals"]:
            assert run.job_name == "online_eval_support_assistant_live"
            start = run.tags["dagster/asset_partition_range_start"]
            end = run.tags["dagster/asset_partition_range_end"]
            assert start[:10] == end[:10] and start <= end, (start, end)
    debug = (demo_home / "logs" / "demo-dagster-debug.log").read_text()
    assert " DEBUG " in debug and "STEP_START" in debug
    assert all(run.run_id[:8] in debug for run in runs)
    console = (demo_home.parent / "demo-stderr.txt").read_text()
    assert " - INFO - " in console and " - DEBUG - " not in console


def test_demo_leaves_automation_running_with_its_cursors(demo_home: Path, monkeypatch) -> None:
    """Every sensor and schedule RUNNING except those the README lists as off (with why), each
    sensor's cursor where the demo left it and its ticks recorded for the UI."""
    import json

    import dagster as dg
    from dagster._core.scheduler.instigation import InstigatorStatus

    _home_env(monkeypatch, demo_home)
    from pipelines.definitions import defs
    from pipelines.launch import Launcher
    from pipelines.schedules import LEFT_OFF

    readme = (ROOT / "README.md").read_text()
    automation = readme.split("## Automation")[1].split("\n## ")[0]
    assert LEFT_OFF
    for name, reason in LEFT_OFF.items():
        assert f"`{name}`" in automation, name
        assert " ".join(reason.split()) in " ".join(automation.split()), name

    repository = defs.get_repository_def()
    names = [s.name for s in repository.sensor_defs] + [s.name for s in repository.schedule_defs]
    with (
        dg.DagsterInstance.from_config(str(demo_home / "dagster")) as instance,
        Launcher(instance) as launcher,
    ):
        states = {s.instigator_name: s for s in instance.all_instigator_state()}
        for name in names:
            expected = InstigatorStatus.STOPPED if name in LEFT_OFF else InstigatorStatus.RUNNING
            assert states[name].status == expected, name
        retrain = json.loads(states["retrain_on_drift_or_decay"].instigator_data.cursor)
        assert retrain["churn_classifier"]["drift_day"] == "2026-06-30"
        new_days = json.loads(states["new_source_days"].instigator_data.cursor)
        assert new_days["features"] == new_days["online"] == "2026-06-30"
        assert new_days["outcomes"] == {"churn_classifier": "2026-06-16"}
        for name, ticks in (("retrain_on_drift_or_decay", 6), ("new_source_days", 1)):
            sensor = launcher.repository.get_sensor(name)
            recorded = instance.get_ticks(sensor.get_remote_origin_id(), sensor.selector_id)
            assert len(recorded) == ticks, name
        assert any(t.run_ids for t in recorded) is False  # new_source_days requested nothing


@pytest.mark.parametrize("today", ["2026-06-30", None])
def test_a_tick_right_after_the_demo_requests_nothing(
    demo_home: Path, monkeypatch: pytest.MonkeyPatch, today: str | None
) -> None:
    """Each sensor, evaluated from the cursor the demo left it, requests no run, on the demo's
    last simulated day and on today's date (months later: the evidence is stale by then); nor
    does the automation-condition sensor."""
    import dagster as dg

    _home_env(monkeypatch, demo_home)
    if today:
        monkeypatch.setenv("MALLARD_TODAY", today)
    from pipelines.definitions import defs
    from resources import resources_for_env

    # The resources for the demo's home (the definitions' own name the home of the process that
    # first imported them, another test's when the whole suite runs).
    resources = resources_for_env()
    with dg.DagsterInstance.from_config(str(demo_home / "dagster")) as instance:
        states = {s.instigator_name: s for s in instance.all_instigator_state()}
        for sensor in defs.get_repository_def().sensor_defs:
            if isinstance(sensor, dg.AutomationConditionSensorDefinition):
                continue  # evaluated below
            with dg.build_sensor_context(
                instance=instance,
                cursor=states[sensor.name].instigator_data.cursor,
                definitions=defs,
                resources=resources,
            ) as context:
                result = sensor.evaluate_tick(context)
            assert not result.run_requests, (sensor.name, result.run_requests)
            assert not result.dynamic_partitions_requests, sensor.name
        automation = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert automation.total_requested == 0


# Run in a process of its own over the copied home: the definitions (their resources name a home,
# their daily partitions start on the world's first day) are built when first imported.
STORY_GOES_ON = r"""
import json, os, sys

import dagster as dg

from pipelines.launch import Launcher

START, END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def ranges(tick):
    return sorted([r.job_name, r.tags.get(START, ""), r.tags.get(END, "")] for r in tick.run_requests)


out = {}
with dg.DagsterInstance.get() as instance, Launcher(instance) as launcher:
    states = {s.instigator_name: s for s in instance.all_instigator_state()}
    cursor = states["new_source_days"].instigator_data.cursor
    for step in ("first", "second", "third"):
        tick = launcher.tick("new_source_days", cursor)
        cursor = tick.cursor
        out[step] = ranges(tick)
        out[step + "_skip"] = tick.skip_message or ""
        out[step + "_ok"] = [launcher.run_request(tick, r).success for r in tick.run_requests]
    drift = instance.get_latest_materialization_event(dg.AssetKey("churn_classifier_drift"))
    out["drift_partition"] = drift.asset_materialization.partition
    retrain = states["retrain_on_drift_or_decay"].instigator_data.cursor
    for name, today in (("stale", sys.argv[1]), ("fresh", "2026-07-01")):
        os.environ["MALLARD_TODAY"] = today
        tick = launcher.tick("retrain_on_drift_or_decay", retrain)
        out[name] = [len(tick.run_requests), tick.skip_message or ""]
print(json.dumps(out))
"""


def test_the_story_keeps_going_when_a_day_is_added(
    demo_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mallard demo-data --add-days 1` after the demo: the next ticks request the new day's
    features, then its online store load, scoring and drift, and the outcomes whose labels have
    now arrived; the retraining sensor judges the new day's drift while it is fresh, and not
    once it is older than the declared limit."""
    import datetime as dt
    import shutil

    from catalog.monitoring import churn_monitoring

    home = tmp_path / "home"
    shutil.copytree(demo_home, home, symlinks=True)
    _home_env(monkeypatch, home)
    added = subprocess.run(
        [sys.executable, "-m", "cli.main", "demo-data", "--add-days", "1"],
        cwd=ROOT,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert added.returncode == 0, added.stdout + added.stderr
    assert "2026-03-03 … 2026-07-01 (121 days)" in added.stdout
    stale_from = dt.date(2026, 7, 1) + dt.timedelta(
        days=churn_monitoring.policy.max_evidence_age_days + 1
    )
    story = subprocess.run(
        [sys.executable, "-c", STORY_GOES_ON, stale_from.isoformat()],
        cwd=ROOT,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert story.returncode == 0, story.stdout[-3000:] + story.stderr[-3000:]
    out = json.loads(story.stdout.strip().splitlines()[-1])
    assert out["first"] == [
        ["build_features", "2026-07-01", "2026-07-01"],
        ["collect_outcomes_churn_classifier", "2026-06-17", "2026-06-17"],
    ]
    assert out["second"] == [
        ["load_online_store", "", ""],
        ["monitor_churn_classifier", "2026-07-01", "2026-07-01"],
    ]
    assert out["first_ok"] == out["second_ok"] == [True, True]
    assert out["third"] == [] and "2026-07-01 is handled" in out["third_skip"]
    assert out["drift_partition"] == "2026-07-01"
    requested, skipped = out["stale"]
    assert requested == 0
    assert "stale evidence: the newest result is from 2026-07-01" in skipped
    requested, skipped = out["fresh"]
    assert "stale" not in skipped and "no new monitoring results" not in skipped


def test_demo_calls_its_own_api(demo_home: Path) -> None:
    """The demo starts `mallard serve`, calls it for a customer, stops it: its prediction is in
    the log the drift assets read, and it prints the lines that call the API by hand."""
    from mallard.config import load_settings
    from mallard.monitoring.predictions import read_predictions

    stdout = (demo_home.parent / "demo-stdout.txt").read_text()
    assert "  API             answered on http://127.0.0.1:" in stdout
    assert "predict    churn_classifier v" in stdout
    assert "make serve" in stdout and "/v1/models/churn_classifier/predict" in stdout
    logged = read_predictions(load_settings(home=demo_home), model_name="churn_classifier")
    api = logged[logged["source"] == "api"]
    assert list(api["entity_key"]) == ['{"customer_id": 5}']


def test_demo_streams_production_traces_and_the_online_loop_acts(demo_home: Path) -> None:
    """The sample world's 14 trace days go in through POST /v1/traces with an ingest key; each
    day is graded as the sensor asks; from trace day 10 the regressed prompt v2's grounding drops
    and an alert names that version; the grounded prompt, replayed in shadow on the regressed
    traffic, is recommended for promotion."""
    import re

    import dagster as dg

    from assets.online_evals import shadow_comparison_key
    from mallard.config import load_settings
    from mallard.evals import online_scores
    from mallard.monitoring.alerts import list_alerts

    stdout = (demo_home.parent / "demo-stdout.txt").read_text()
    spans = int(
        re.search(r"production\s+([\d,]+) spans over 14 trace days", stdout)[1].replace(",", "")
    )
    story = stdout.split("the story:")[1].split("  models:")[0]
    rates = re.search(r"grounding pass rate per trace day: ([^(]+)\(", story)[1].split()
    before = [float(r) for r in rates[:10]]
    after = [float(r.rstrip("*")) for r in rates[10:]]
    assert len(after) == 4 and all(r.endswith("*") for r in rates[10:])
    assert min(before) > 0.7 and max(after) < 0.4, rates
    assert re.search(
        r"trace day 10 \([\d-]+\): alert grounding\w* — .*version(\(s\))? \[?2\b", story
    ), story
    assert "replayed on 120 live traces of v2 → promote (grounding: shadow better" in story

    settings = load_settings(home=demo_home)
    scores = online_scores.current(
        online_scores.frame(settings, eval_name="support_assistant_live")
    )
    graded = scores[scores["grader"] == "grounding"]
    assert 0.4 * spans < graded["trace_id"].nunique() < 0.6 * spans  # sampling_rate 0.5
    by_version = graded.groupby("prompt_version")["passed"].mean()
    assert by_version[1] - by_version[2] > 0.4, by_version
    alerts = [a for a in list_alerts(settings, limit=1000) if "grounding" in a.reason]
    assert alerts and all(re.search(r"version(\(s\))? \[?2\b", a.reason) for a in alerts)

    with dg.DagsterInstance.from_config(str(demo_home / "dagster")) as instance:
        event = instance.get_latest_materialization_event(
            shadow_comparison_key("support_assistant_live")
        )
    meta = event.asset_materialization.metadata
    assert meta["recommendation"].value == "promote"
    assert meta["live_versions"].value == [2] and meta["replay_errors"].value == 0
