"""Screenshots of the pages a person looks for after `make demo` (docs/img/).

    make dev & make mlflow &    # then:
    .venv/bin/python scripts/ui_screenshots.py --home .mallard --prefix after

Opens, in headless Chromium (Debian's `chromium` and `chromium-driver`), a model's asset page
and its plots, a day's drift partition and its Evidently report, the Dagster run that trained
the champion and its MLflow run, the registered model and MLflow's prompt registry, and saves
`<prefix>-<page>.png` in `--out`. `--dagster` and `--mlflow` point at running UIs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from ui_browser import Browser  # noqa: E402

SCROLL_TO = """
const wanted = arguments[0];
const cells = [...document.querySelectorAll('td, div, span, h1, h2, h3, h4, p')]
  .filter(e => e.childElementCount === 0 && e.textContent.trim() === wanted);
if (!cells.length) return false;
cells[0].scrollIntoView({block: 'start'});
return true;
"""
CLICK_TEXT = """
const wanted = arguments[0];
const el = [...document.querySelectorAll('a, button, span, div')]
  .filter(e => e.childElementCount === 0 && e.textContent.trim() === wanted)[arguments[1] || 0];
if (!el) return false;
el.click();
return true;
"""


def _open(browser: Browser, url: str, text: str, timeout: float = 60) -> None:
    browser.get(url)
    browser.wait_for(
        "return !!document.body && document.body.innerText.includes(arguments[0])",
        text,
        timeout=timeout,
        what=f"{text!r} on {url}",
    )
    time.sleep(2)  # images and late layout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--dagster", default="http://127.0.0.1:3000")
    parser.add_argument("--mlflow", default="http://127.0.0.1:5000")
    parser.add_argument("--model", default="churn_classifier")
    parser.add_argument("--day", default="2026-06-20")
    parser.add_argument("--view", default="", help="MLflow's workflowType for its pages")
    args = parser.parse_args()
    from mallard.config import load_settings
    from mallard.models.registry import CHAMPION, client, version_for_alias

    home = args.home.resolve()
    c = client(load_settings(home=home))
    champion = version_for_alias(c, args.model, CHAMPION)
    assert champion is not None and champion.run_id, f"{args.model} has no champion"
    run = c.get_run(champion.run_id)
    dagster_run = run.data.tags.get("mallard.dagster_run_id", "")
    view = f"?workflowType={args.view}" if args.view else ""
    out, prefix, dagster = args.out, args.prefix, args.dagster.rstrip("/")

    with Browser(1400, 1000) as browser:

        def shot(name: str) -> None:
            print(browser.screenshot(out / f"{prefix}-{name}.png"))

        browser.get(f"{dagster}/server_info")
        browser.run("localStorage.setItem('communityNux', '1')")
        _open(browser, f"{dagster}/assets/{args.model}_candidate", "leaderboard")
        browser.run(SCROLL_TO, "leaderboard")
        time.sleep(1)
        shot("model-asset")
        if browser.run(CLICK_TEXT, "[Show Markdown]"):
            time.sleep(2)
            shot("model-plots")
            browser.run("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape'}))")
        else:
            browser.run(SCROLL_TO, "plots")
            time.sleep(1)
            shot("model-plots")
        _open(
            browser,
            f"{dagster}/assets/{args.model}_drift?view=partitions&partition={args.day}",
            "drift_share",
        )
        browser.run(SCROLL_TO, "drift_share")
        time.sleep(1)
        shot("drift-partition")
        report = home / "reports" / "drift" / args.model / f"{args.day}.html"
        report_url = browser.run(
            "const a = [...document.querySelectorAll('a')].find(a => a.href.includes('/reports/'));"
            "return a ? a.href : null;"
        )
        _open(browser, report_url or report.as_uri(), "Dataset Drift", timeout=90)
        shot("drift-report")
        if dagster_run:
            _open(browser, f"{dagster}/runs/{dagster_run}", dagster_run[:8])
            time.sleep(3)
            shot("dagster-run")
        mlflow = args.mlflow.rstrip("/")
        _open(
            browser,
            f"{mlflow}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}{view}",
            "Overview",
            timeout=90,
        )
        time.sleep(3)
        shot("mlflow-run")
        _open(browser, f"{mlflow}/#/models/{args.model}{view}", args.model, timeout=90)
        time.sleep(3)
        shot("mlflow-model")
        browser.get(f"{mlflow}/#/experiments{view}")
        time.sleep(6)
        shot("mlflow-home")


if __name__ == "__main__":
    main()
