"""A real training set for the model tests, built once per session.

The sample world here has 6,000 customers (the shared fixture's 2,000 leave the held-out slice
too small for the gate to see the day-60 shift). Feature views are computed only for the days
the weekly label rows read (the day before each label day), which is all a training set needs:
about 17 partitions per view instead of 120.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from sample_dates import TEST_END_DATE

MODEL_TEST_CUSTOMERS = 6_000


@dataclasses.dataclass(frozen=True)
class ModelLake:
    home: Path
    start_date: dt.date
    end_date: dt.date
    shift_date: dt.date
    rows: int


@pytest.fixture(scope="session")
def model_lake(tmp_path_factory: pytest.TempPathFactory) -> ModelLake:
    from catalog.features import REGISTRY, churn_training_set
    from mallard.models.decision_quality import build_sample_training_set

    home = tmp_path_factory.mktemp("model-lake")
    frame, shift = build_sample_training_set(
        home, MODEL_TEST_CUSTOMERS, TEST_END_DATE, REGISTRY, churn_training_set
    )
    start = TEST_END_DATE - dt.timedelta(days=119)
    return ModelLake(home, start, TEST_END_DATE, shift, len(frame))


@pytest.fixture
def model_home(model_lake: ModelLake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Settings for a fresh MALLARD_HOME (own MLflow store) reading the session's lake."""
    from mallard.config import load_settings

    home = tmp_path / "home"
    home.mkdir()
    (home / "lake").symlink_to(model_lake.home / "lake")
    (home / "sample").symlink_to(model_lake.home / "sample")
    monkeypatch.setenv("MALLARD_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.setenv("MALLARD_END_DATE", model_lake.end_date.isoformat())
    monkeypatch.delenv("MALLARD_ENV", raising=False)
    return load_settings()
