"""Bad sources fail with the view, the source, the file and what to do — really truncated,
zeroed and deleted files, a mistyped CSV, nulls in required columns, a column of the wrong type."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from click.testing import CliRunner

from catalog.features import support_30d, usage_7d
from catalog.sources import customers, support_tickets
from mallard.config import load_settings
from mallard.features.compute import compute_partition, open_sources
from mallard.features.sources import SourceReadError, profile_source
from mallard.lake import connect

DAY = dt.date(2026, 6, 28)


@pytest.fixture
def home(mallard_home: Path, sample_world) -> Path:
    _, world, _ = sample_world
    shutil.copytree(world, mallard_home / "sample")
    return mallard_home


def _compute(view, day: dt.date = DAY):
    settings = load_settings()
    con = connect(settings=settings)
    try:
        return compute_partition(view, settings, day, open_sources(view, settings, con))
    finally:
        con.close()


def _assert_named(message: str, view: str | None, source: str, file: Path) -> None:
    if view:
        assert f"FeatureView {view!r}" in message
    assert f"source {source!r}" in message
    assert str(file) in message
    assert "restore or regenerate" in message


def test_truncated_parquet_is_named_and_validate_lists_every_view(home: Path) -> None:
    from cli.main import main

    path = home / "sample" / "usage_events.parquet"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceReadError) as error:
        _compute(usage_7d)
    _assert_named(str(error.value), "usage_7d", "usage_events", path)
    result = CliRunner().invoke(main, ["features", "validate"])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert any(line.startswith("FAILED") and "'usage_events'" in line for line in lines)
    assert "ok      billing_30d" in lines and "ok      support_30d" in lines
    assert lines[-1] == "1 of 3 views failed: usage_7d"


def test_a_zeroed_page_is_named(home: Path) -> None:
    path = home / "sample" / "usage_events.parquet"
    data = bytearray(path.read_bytes())
    middle = len(data) // 3
    data[middle : middle + 64 * 1024] = bytes(64 * 1024)
    path.write_bytes(bytes(data))
    with pytest.raises(SourceReadError) as error:
        _compute(usage_7d)
    _assert_named(str(error.value), "usage_7d", "usage_events", path)


def test_a_deleted_file_is_named(home: Path) -> None:
    path = home / "sample" / "support_tickets.parquet"
    path.unlink()
    with pytest.raises(SourceReadError) as error:
        _compute(support_30d)
    _assert_named(str(error.value), "support_30d", "support_tickets", path)


def test_a_string_in_a_typed_csv_column_names_the_line(home: Path) -> None:
    path = home / "sample" / "customers.csv"
    lines = path.read_text().splitlines()
    fields = lines[3].split(",")
    fields[-1] = "forty"
    lines[3] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SourceReadError) as error:
        profile_source(customers, load_settings())
    message = str(error.value)
    _assert_named(message, None, "customers", path)
    assert "forty" in message and "INTEGER" in message


def test_nulls_in_required_columns_fail_the_source_check(home: Path) -> None:
    from assets.sources import SOURCE_ASSETS
    from resources import resources_for_env

    path = home / "sample" / "customers.csv"
    lines = path.read_text().splitlines()
    first, second = lines[1].split(","), lines[2].split(",")
    first[0], second[1] = "", ""
    lines[1], lines[2] = ",".join(first), ",".join(second)
    path.write_text("\n".join(lines) + "\n")
    asset = next(a for a in SOURCE_ASSETS if a.key.to_user_string() == "customers")
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [asset], instance=instance, resources=resources_for_env(), raise_on_error=False
        )
    assert not result.success  # a blocking check: nothing downstream runs on it
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "required_not_null" and not check.passed
    assert check.metadata["null_rows"].value == {"customer_id": 1, "signup_date": 1}
    schema = result.get_asset_materialization_events()[0].materialization.metadata
    types = {c.name: c.type for c in schema["dagster/column_schema"].value.columns}
    assert types["age"] == "INTEGER"  # declared, not inferred as VARCHAR


def test_a_column_of_the_wrong_type_is_caught_before_the_view_runs(home: Path) -> None:
    path = home / "sample" / "support_tickets.parquet"
    frame = pd.read_parquet(path)
    frame["resolution_hours"] = frame["resolution_hours"].astype(str)
    frame.to_parquet(path, index=False)
    with pytest.raises(SourceReadError, match="'resolution_hours' is VARCHAR, declared DOUBLE"):
        _compute(support_30d)
    with pytest.raises(SourceReadError, match="'resolution_hours' is VARCHAR, declared DOUBLE"):
        profile_source(support_tickets, load_settings())
