"""End to end: the demo on a reduced world, and what `make dev` then shows."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the demo once in a subprocess on a temporary MALLARD_HOME: a 1,000-customer world, and
    the LLM half on 6 items per step (the story's outcomes are asserted below)."""
    home = tmp_path_factory.mktemp("demo") / "home"
    env = {
        **os.environ,
        "MALLARD_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "MALLARD_END_DATE": "2026-06-30",
        "MALLARD_SAMPLE_SCALE": "0.05",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.demo", "--llm-items", "6"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "Mallard demo — done" in proc.stdout
    assert "run time" in proc.stdout
    (home.parent / "demo-stdout.txt").write_text(proc.stdout)
    return home


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
    import dagster as dg

    monkeypatch.setenv("MALLARD_HOME", str(demo_home))
    from pipelines.definitions import defs

    expected = set(defs.resolve_asset_graph().get_all_asset_keys())
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
            dg.AssetKey(["prompt_promotions", "support_assistant"])
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


def test_webserver_shows_sources_with_metadata(demo_home: Path) -> None:
    """What `make dev` serves: the sources group, each asset with its row count."""
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
        nodes = None
        while time.monotonic() < deadline:
            try:
                reply = httpx.post(
                    f"http://127.0.0.1:{port}/graphql", json={"query": ASSETS_QUERY}, timeout=10
                )
                data = reply.json().get("data") or {}
                nodes = data.get("assetNodes")
                if nodes:
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(1)
        assert nodes, "the webserver never served the sources group"
        by_name = {"/".join(n["assetKey"]["path"]): n for n in nodes}
        assert {"customers", "usage_events", "billing_events", "churn_labels"} <= set(by_name)
        entries = by_name["customers"]["assetMaterializations"][0]["metadataEntries"]
        row_count = next(e["intValue"] for e in entries if e["label"] == "dagster/row_count")
        assert row_count == 1000
    finally:
        server.terminate()
        server.wait(timeout=30)
