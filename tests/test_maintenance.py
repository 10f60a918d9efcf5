"""Lake maintenance: what a killed write leaves goes, versions within the retention stay readable.

The tables are written by their owners (the offline store, the eval store); the debris comes from
a real writer process killed with SIGKILL before its commit. Only file ages are simulated: the
table's files and the debris are dated 8 days back (os.utime), so that one run shows both sides
of a 7-day retention.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from click.testing import CliRunner
from deltalake import DeltaTable

from mallard.config import load_settings
from mallard.evals import store as eval_store
from mallard.features.offline.store import valid_projection, write_view_partition
from mallard.lake.maintenance import data_files, find_tables

DAY = dt.date(2026, 6, 1)
EIGHT_DAYS = 8 * 86_400

KILLED_WRITER = textwrap.dedent(
    """
    import pathlib, sys, time
    import numpy as np
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    path, marker = pathlib.Path(sys.argv[1]), sys.argv[2]
    rows = pa.concat_tables([DeltaTable(str(path)).to_pyarrow_table()] * 20_000)
    noise = pa.array(np.random.default_rng(7).random(rows.num_rows))  # incompressible
    rows = rows.set_column(rows.schema.get_field_index("minutes"), "minutes", noise)
    files = lambda: len(list(path.glob("_partition_date=*/*.parquet")))
    before = files()
    def batches():
        while True:
            yield from rows.to_batches()
            if files() >= before + 3:  # some files of this write are on disk: kill me now
                open(marker, "w").write("flushed")
                time.sleep(0.5)
    # Small files, so that some reach the disk long before the (never reached) commit.
    write_deltalake(str(path), pa.RecordBatchReader.from_batches(rows.schema, batches()),
                    mode="append", partition_by=["_partition_date"], target_file_size=64 * 1024)
    """
)


def _view_rows(values: list[float], day: dt.date = DAY) -> pa.Table:
    ts = dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)
    return pa.table(
        {
            "customer_id": pa.array(range(len(values)), pa.int64()),
            "event_timestamp": pa.array([ts] * len(values), pa.timestamp("us", tz="UTC")),
            "created_timestamp": pa.array([ts] * len(values), pa.timestamp("us", tz="UTC")),
            "minutes": pa.array(values, pa.float64()),
        }
    )


def _age(files) -> None:
    then = time.time() - EIGHT_DAYS
    for file in files:
        os.utime(file, (then, then))


def _kill_a_writer(table: Path, tmp_path: Path) -> None:
    marker = tmp_path / "writer.marker"
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(table), str(marker)], start_new_session=True
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert writer.poll() is None, "the writer ended before it was killed"
        assert time.monotonic() < deadline, "the writer never got going"
        time.sleep(0.05)
    os.killpg(writer.pid, signal.SIGKILL)
    writer.wait(timeout=30)


def _referenced(table: Path) -> set[Path]:
    """Every data file some version of the table reads."""
    last = DeltaTable(str(table)).version()
    return {
        Path(uri) for v in range(last + 1) for uri in DeltaTable(str(table), version=v).file_uris()
    }


def _materialize(retention_hours: int | None = None) -> dg.MaterializeResult:
    from assets.maintenance import lake_maintenance
    from resources import resources_for_env

    config = {} if retention_hours is None else {"retention_hours": retention_hours}
    result = dg.materialize(
        [lake_maintenance],
        resources={"lake": resources_for_env()["lake"]},
        run_config={"ops": {"lake_maintenance": {"config": config}}},
    )
    assert result.success
    return result.asset_materializations_for_node("lake_maintenance")[0]


def test_a_killed_writes_files_go_and_versions_within_retention_stay(
    mallard_home: Path, tmp_path: Path
) -> None:
    settings = load_settings().ensure_home()
    view = settings.lake_dir / "features" / "usage_probe"
    write_view_partition(view, _view_rows([1.0, 2.0, 3.0]), DAY, join_keys=["customer_id"])
    _age(data_files(view))  # the first version was written 8 days ago …
    write_view_partition(view, _view_rows([10.0, 20.0]), DAY, join_keys=["customer_id"])
    # … and replaced today: it must stay readable for the retention.
    first = DeltaTable(str(view), version=0).to_pyarrow_table()
    for _ in range(6):  # an append-only log of many small commits
        eval_store.append("judge_scores", [{"grader": "probe", "score": 1.0}], settings=settings)
    scores = settings.lake_dir / "judge_scores"

    _kill_a_writer(view, tmp_path)
    debris = set(data_files(view)) - _referenced(view)
    assert len(debris) >= 2, "the killed writer left no files"
    _age(debris)
    version, projection = DeltaTable(str(view)).version(), valid_projection(view)
    assert projection is not None

    result = _materialize()

    assert debris.isdisjoint(data_files(view))
    assert set(data_files(view)) == _referenced(view)
    assert DeltaTable(str(view), version=0).to_pyarrow_table() == first  # time travel
    assert DeltaTable(str(view)).to_pyarrow_table().column("minutes").to_pylist() == [10.0, 20.0]
    # Vacuum wrote no commit: the version, and with it the latest projection, still hold.
    assert DeltaTable(str(view)).version() == version
    assert valid_projection(view) == projection
    # The log was compacted; its rows are unchanged and its old files stay for the retention.
    assert len(DeltaTable(str(scores)).file_uris()) == 1
    assert len(eval_store.read("judge_scores", settings=settings)) == 6
    assert DeltaTable(str(scores), version=0).to_pyarrow_table().num_rows == 1
    metadata = result.metadata
    assert metadata["files_removed"].value == len(debris)
    assert metadata["retention_hours"].value == 7 * 24
    assert {
        t.relative_to(settings.lake_dir).as_posix() for t in find_tables(settings.lake_dir)
    } == {
        "features/usage_probe",
        "features/usage_probe.latest",
        "judge_scores",
    }


def test_retention_is_configurable_and_the_command_line_vacuums(mallard_home: Path) -> None:
    from cli.main import main

    settings = load_settings().ensure_home()
    view = settings.lake_dir / "features" / "usage_probe"
    write_view_partition(view, _view_rows([1.0, 2.0]), DAY, join_keys=["customer_id"])
    write_view_partition(view, _view_rows([3.0]), DAY, join_keys=["customer_id"])

    dry = CliRunner().invoke(main, ["ops", "vacuum", "--retention-hours", "0", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "features/usage_probe v1: 2 data files, 1 in the current version; would remove 1 (" in (
        dry.output
    )
    assert DeltaTable(str(view), version=0).to_pyarrow_table().num_rows == 2

    out = CliRunner().invoke(main, ["ops", "vacuum", "--retention-hours", "0"])
    assert out.exit_code == 0, out.output
    with pytest.raises(OSError):  # version 0 is past a zero retention: its files are gone
        DeltaTable(str(view), version=0).to_pyarrow_table()
    assert DeltaTable(str(view)).to_pyarrow_table().column("minutes").to_pylist() == [3.0]
    assert valid_projection(view) is not None


def test_maintenance_beside_a_writer_loses_no_rows(mallard_home: Path) -> None:
    """A log written to while it is compacted and vacuumed (retention 0): every row stays."""
    from catalog.maintenance import LAKE_MAINTENANCE
    from mallard.lake.maintenance import maintain_lake

    settings = load_settings().ensure_home()
    eval_store.append("judge_scores", [{"grader": "w", "score": 0.0}], settings=settings)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for i in range(40):
                eval_store.append(
                    "judge_scores", [{"grader": "w", "score": float(i)}], settings=settings
                )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    reports = []
    while writer.is_alive():
        reports.append(
            maintain_lake(settings.lake_dir, LAKE_MAINTENANCE, retention=dt.timedelta(0))
        )
    writer.join()
    assert not errors
    assert not [t.error for r in reports for t in r.tables if t.error]
    assert sum(t.compacted for r in reports for t in r.tables) > 0  # it did race the writer
    assert len(eval_store.read("judge_scores", settings=settings)) == 41
