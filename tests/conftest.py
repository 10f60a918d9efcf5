"""Shared fixtures: a temporary MALLARD_HOME and a small, fixed sample world."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

TEST_END_DATE = dt.date(2026, 6, 30)
TEST_SCALE = 0.1  # 2,000 customers


@pytest.fixture
def mallard_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh MALLARD_HOME (and DAGSTER_HOME inside it) for one test."""
    home = tmp_path / "mallard-home"
    monkeypatch.setenv("MALLARD_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.setenv("MALLARD_END_DATE", TEST_END_DATE.isoformat())
    monkeypatch.setenv("MALLARD_SAMPLE_SCALE", str(TEST_SCALE))
    monkeypatch.delenv("MALLARD_ENV", raising=False)
    return home


@pytest.fixture(scope="session")
def sample_world(tmp_path_factory: pytest.TempPathFactory):
    """The sample world at test size, generated once per session: (spec, directory, summary)."""
    from mallard.sample_world.generate import WorldSpec, generate_world

    spec = WorldSpec(end_date=TEST_END_DATE, customers=round(20_000 * TEST_SCALE))
    target = tmp_path_factory.mktemp("world") / "sample"
    summary = generate_world(spec, target)
    return spec, target, summary
