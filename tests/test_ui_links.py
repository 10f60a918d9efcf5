"""What the UIs show, without the demo: legible plots, a narrow leaderboard, reports served
read-only at /reports, Evidently reports stating Mallard's threshold, and MLflow's prompt
aliases following Mallard's labels through every move. (tests/test_demo.py opens the pages.)"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _contrast(rgb: tuple[float, ...], text: str) -> float:
    def luminance(c: tuple[float, ...]) -> float:
        lin = [x / 12.92 if x <= 0.04045 else ((x + 0.055) / 1.055) ** 2.4 for x in c[:3]]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    a, b = luminance(rgb), 1.0 if text == "white" else 0.0
    return (max(a, b) + 0.05) / (min(a, b) + 0.05)


@pytest.mark.parametrize("cmap", ["Blues", "RdBu_r"])
def test_cell_text_is_legible_on_every_colour(cmap: str) -> None:
    """The count on a confusion-matrix cell (and a segment profile's value) is black or white,
    whichever contrasts more with the cell: at least 4.5, WCAG's ratio for text, on Blues."""
    import matplotlib

    from mallard.models.plots import text_colour

    colours = matplotlib.colormaps[cmap]
    for step in range(101):
        rgb = colours(step / 100)
        chosen = text_colour(rgb)
        other = "black" if chosen == "white" else "white"
        assert _contrast(rgb, chosen) >= _contrast(rgb, other) - 1e-9, (step, chosen)
        assert _contrast(rgb, chosen) >= 4.5, (cmap, step, chosen)


def test_confusion_matrix_counts_change_colour_on_dark_cells(tmp_path: Path) -> None:
    import numpy as np

    from mallard.models import plots

    captured: list = []
    save = plots._save

    def keep(fig, path):
        captured.append({t.get_text(): t.get_color() for t in fig.axes[0].texts})
        return save(fig, path)

    y = np.array([0] * 900 + [1] * 100)
    score = np.r_[np.linspace(0, 0.4, 900), np.linspace(0.3, 1, 100)]
    plots._save = keep
    try:
        plots.confusion_and_roc(y, score, (score >= 0.5).astype(int), tmp_path / "cm.png", 0.5)
    finally:
        plots._save = save
    colours = captured[0]
    assert colours["900"] == "white"  # the darkest cell
    assert {"black", "white"} == set(colours.values())


def test_leaderboard_fits_the_asset_page() -> None:
    import pandas as pd

    from assets.models import leaderboard_table

    board = pd.DataFrame(
        {
            "id": ["lightgbm", "lr"],
            "Model": ["Light Gradient Boosting Machine", "Logistic Regression"],
            "family": ["boosting", "linear"],
            "Accuracy": [0.92114, 0.925],
            "AUC": [0.83171, 0.84384],
            "Recall": [0.2857, 0.2262],
            "Prec.": [0.481, 0.5915],
            "F1": [0.3528, 0.3218],
            "Kappa": [0.3171, 0.2922],
            "MCC": [0.3303, 0.332],
            "TT (Sec)": [0.09, 0.43],
        }
    )
    table = leaderboard_table(board, "AUC")
    header = table.splitlines()[0]
    assert header == "| estimator | AUC | Accuracy | Recall | Prec. | F1 | s |"
    assert "| lightgbm | 0.832 | 0.921 | 0.286 | 0.481 | 0.353 | 0.1 |" in table
    assert max(len(line) for line in table.splitlines()) < 60


def _app(home: Path):
    from mallard.config import load_settings
    from mallard.serving import ServingClients, create_app
    from mallard.serving.state import open_server_state

    settings = load_settings(home=home)
    settings.ensure_home()
    state = open_server_state(settings, "sqlite", "")
    return create_app(ServingClients(state=state), settings, warm_up=False), settings, state


def test_reports_are_served_read_only_and_public(tmp_path: Path) -> None:
    """MALLARD_HOME/reports at /reports, no key needed: files and a folder's index.html; no
    listing, nothing outside the folder, no writes."""
    from fastapi.testclient import TestClient

    app, settings, state = _app(tmp_path / "home")
    report = settings.reports_dir / "drift" / "churn_classifier" / "2026-06-20.html"
    report.parent.mkdir(parents=True)
    report.write_text("<html><body>drift</body></html>")
    page = settings.reports_dir / "models" / "m" / "run" / "index.html"
    page.parent.mkdir(parents=True)
    page.write_text("<html><body>plots</body></html>")
    (settings.home / "secret.txt").write_text("not for the web")
    try:
        with TestClient(app) as http:
            reply = http.get("/reports/drift/churn_classifier/2026-06-20.html")
            assert reply.status_code == 200 and "drift" in reply.text
            assert reply.headers["content-type"].startswith("text/html")
            assert http.get("/reports/models/m/run/").text == "<html><body>plots</body></html>"
            assert http.get("/reports/").status_code == 404  # no listing
            assert http.get("/reports/drift/").status_code == 404
            for escape in ("/reports/../secret.txt", "/reports/%2e%2e/secret.txt"):
                assert http.get(escape).status_code == 404, escape
            assert http.put("/reports/drift/x.html", content=b"x").status_code == 405
            assert http.delete("/reports/drift/churn_classifier/2026-06-20.html").status_code == 405
        assert report.read_text() == "<html><body>drift</body></html>"
    finally:
        state.close()


def test_drift_report_states_mallards_threshold(tmp_path: Path) -> None:
    """Evidently's verdict uses the retrain policy's drift share, and the page says so."""
    import numpy as np
    import pandas as pd

    from catalog.monitoring import churn_monitoring
    from mallard.monitoring.drift import drift_report

    share = churn_monitoring.policy.drift_share
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({f"x{i}": rng.normal(size=1500) for i in range(4)})
    current = reference.copy()
    current["x0"] = current["x0"] + 2  # one of four features drifts: 0.25
    html = tmp_path / "report.html"
    result = drift_report(
        reference,
        current,
        list(reference.columns),
        [],
        html_path=html,
        summary=False,
        drift_share=share,
        header=f"Mallard requests a retrain at a drift share of {share:g}",
    )
    assert result.share_drifted == pytest.approx(0.25)
    text = html.read_text()
    assert f"Dataset drift detection threshold is {share:g}" in text
    assert "Dataset Drift is detected" in text  # 0.25 reaches Mallard's 0.25 (Evidently's: 0.5)
    assert f"Mallard requests a retrain at a drift share of {share:g}" in text


def test_prompt_aliases_follow_mallards_labels(tmp_path: Path) -> None:
    """Every version mirrored into MLflow's prompt registry under the same number, every label an
    alias on the same version, after a sync, a promotion and a rollback."""
    from mallard.config import load_settings
    from mallard.llm.prompts import PromptRegistry, sync_prompt_files
    from mallard.llm.prompts.mlflow_mirror import VERSION_TAG, mirror_prompts
    from mallard.models.registry import client

    settings = load_settings(home=tmp_path / "home")
    settings.ensure_home()
    registry = PromptRegistry.default(settings)
    sync_prompt_files(registry, ROOT / "catalog" / "prompts")
    assert not (settings.mlflow_dir / "mlflow.db").exists()  # a label move creates no store
    (mirrored,) = mirror_prompts(registry, settings)
    assert mirrored.versions == {1: 1, 2: 2}
    c = client(settings)

    def aliases() -> dict[str, int]:
        return {
            label: int(c.get_prompt_version_by_alias("support_assistant", label).version)
            for label in registry.labels("support_assistant")
        }

    assert aliases() == registry.labels("support_assistant") == {"live": 1, "staging": 2}
    registry.promote("support_assistant", 2, reason="test: promote", actor="tests")
    assert aliases() == registry.labels("support_assistant") == {"live": 2, "staging": 2}
    registry.rollback("support_assistant", reason="test: roll back", actor="tests")
    assert aliases() == registry.labels("support_assistant") == {"live": 1, "staging": 2}
    version = c.get_prompt_version("support_assistant", 1)
    assert version.tags[VERSION_TAG] == "1"
    assert "{{context}}" in version.template[1]["content"]
    assert version.commit_message == registry.version("support_assistant", 1).template.description
