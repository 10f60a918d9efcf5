"""Fixtures of the online-eval tests: a temporary MALLARD_HOME with its resources."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "serving")]  # serving_helpers: real servers

from online_helpers import resources_for  # noqa: E402


@pytest.fixture
def online_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("MALLARD_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    (home / "dagster").mkdir(parents=True)
    return home


@pytest.fixture
def online_resources(online_home: Path) -> dict:
    return resources_for(online_home)
