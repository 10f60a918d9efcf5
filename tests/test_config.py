"""Bad configuration fails at once, naming the setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import main
from mallard.config import ConfigError, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_paths_live_under_home(mallard_home: Path) -> None:
    settings = load_settings()
    assert settings.home == mallard_home.resolve()
    for path in (
        settings.dagster_home,
        settings.lake_dir,
        settings.sample_dir,
        settings.online_store_path,
    ):
        assert settings.home in path.parents
    assert settings.mlflow_tracking_uri.endswith(f"{settings.home}/mlflow/mlflow.db")


def test_ensure_home_installs_the_instance_yaml(mallard_home: Path) -> None:
    load_settings().ensure_home()
    assert (mallard_home / "dagster" / "dagster.yaml").read_text() == (
        ROOT / "dagster.yaml"
    ).read_text()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MALLARD_ENV", "staging"),
        ("MALLARD_SAMPLE_SCALE", "0"),
        ("MALLARD_SAMPLE_SCALE", "nan"),
        ("MALLARD_SAMPLE_SCALE", "inf"),
        ("MALLARD_SAMPLE_SCALE", "1e9"),
        ("MALLARD_LLM_THREADS", "100000"),
        ("MALLARD_LLM_BASE_URL", "llm:8000"),
        ("MALLARD_END_DATE", "30/06/2026"),
    ],
)
def test_bad_setting_is_named(
    mallard_home: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        load_settings()


def test_unwritable_home_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MALLARD_HOME", str(blocker / "home"))
    with pytest.raises(ConfigError, match="MALLARD_HOME"):
        load_settings().ensure_home()


def test_cli_reports_bad_settings(mallard_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLARD_SAMPLE_SCALE", "0")
    result = CliRunner().invoke(main, ["demo-data"])
    assert result.exit_code != 0
    assert "MALLARD_SAMPLE_SCALE" in result.output
    result = CliRunner().invoke(main, ["demo-data", "--end-date", "2026-02-30"])
    assert result.exit_code == 2 and "--end-date" in result.output


def test_code_location_refuses_unknown_env(mallard_home: Path) -> None:
    env = {**os.environ, "MALLARD_ENV": "qa"}
    proc = subprocess.run(
        [sys.executable, "-c", "import pipelines.definitions"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "MALLARD_ENV='qa'" in proc.stderr
