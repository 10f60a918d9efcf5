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

MODEL_TEST_CUSTOMERS = 6_000
TEST_END_DATE = dt.date(2026, 6, 30)  # as tests/conftest.py
SHIFT_DAY = 60


@dataclasses.dataclass(frozen=True)
class ModelLake:
    home: Path
    start_date: dt.date
    end_date: dt.date
    shift_date: dt.date
    rows: int


def label_days(start: dt.date, end: dt.date, every: int) -> list[dt.date]:
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    return [d for d in days if (d - dt.date(2000, 1, 1)).days % every == 0]


@pytest.fixture(scope="session")
def model_lake(tmp_path_factory: pytest.TempPathFactory) -> ModelLake:
    from catalog.features import REGISTRY, churn_training_set
    from mallard.config import load_settings
    from mallard.features.compute import compute_partition
    from mallard.features.offline.store import write_view_partition
    from mallard.features.training import build_training_set, write_training_set
    from mallard.features.versions import register_version
    from mallard.sample_world.generate import WorldSpec, generate_world

    home = tmp_path_factory.mktemp("model-lake")
    spec = WorldSpec(end_date=TEST_END_DATE, customers=MODEL_TEST_CUSTOMERS)
    generate_world(spec, home / "sample")
    settings = load_settings(home=home)
    for view in REGISTRY.views.values():
        version = register_version(settings, view)
        for day in label_days(spec.start_date, spec.end_date, churn_training_set.every_n_days):
            partition = day - dt.timedelta(days=1)
            if partition < spec.start_date:
                continue
            write_view_partition(
                version.table_path,
                compute_partition(view, settings, partition),
                partition,
                join_keys=list(view.join_keys),
            )
    as_of = dt.datetime.combine(spec.end_date + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    frame, versions = build_training_set(churn_training_set, REGISTRY, settings, as_of)
    write_training_set(churn_training_set, frame, versions, settings, as_of)
    return ModelLake(
        home,
        spec.start_date,
        spec.end_date,
        spec.start_date + dt.timedelta(days=SHIFT_DAY),
        len(frame),
    )


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
