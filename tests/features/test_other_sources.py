"""Feature views over a Postgres table (a real server) and an Iceberg table."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from catalog.features import customer
from mallard.config import load_settings
from mallard.features.compute import compute_partition, validate_view
from mallard.features.sources import Source, profile_source
from mallard.features.specs import Feature, FeatureView
from mallard.specs import DeclarationError

DAY = dt.date(2026, 6, 1)
ROWS = pd.DataFrame(
    {
        "customer_id": [1, 1, 2, 3],
        "event_timestamp": pd.to_datetime(
            ["2026-06-01 08:00", "2026-06-01 20:00", "2026-06-01 09:30", "2026-05-31 23:00"],
            utc=True,
        ),
        "amount": [5.0, 7.5, 2.0, 100.0],
    }
)
SQL = """
    SELECT customer_id, $partition_end AS event_timestamp, max(event_timestamp) AS created_timestamp,
           sum(amount) AS spend_1d, count(*) AS purchases_1d
    FROM purchases
    WHERE event_timestamp >= $partition_start AND event_timestamp < $partition_end
    GROUP BY customer_id
"""
FEATURES = [Feature("spend_1d", "float64"), Feature("purchases_1d", "int64")]


def _check(view: FeatureView, settings) -> None:
    types = validate_view(view, settings)
    assert types["spend_1d"] == "DOUBLE"
    table = compute_partition(view, settings, DAY).to_pandas().sort_values("customer_id")
    assert table["customer_id"].tolist() == [1, 2]
    assert table["spend_1d"].tolist() == [12.5, 2.0]
    assert table["purchases_1d"].tolist() == [2, 1]
    assert (table["event_timestamp"] == pd.Timestamp("2026-06-02", tz="UTC")).all()


def test_view_over_a_postgres_table(
    postgres_dsn: str, mallard_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg2

    with psycopg2.connect(postgres_dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE purchases (customer_id bigint, event_timestamp timestamptz, amount double precision)"
        )
        cur.executemany(
            "INSERT INTO purchases VALUES (%s, %s, %s)",
            [
                (int(r.customer_id), r.event_timestamp.to_pydatetime(), float(r.amount))
                for r in ROWS.itertuples()
            ],
        )
    monkeypatch.setenv("SHOP_DB", postgres_dsn)
    source = Source(
        name="purchases", kind="postgres", path="public.purchases", connection_env="SHOP_DB"
    )
    settings = load_settings()
    assert profile_source(source, settings).row_count == 4
    _check(
        FeatureView(
            name="spend", entities=[customer], sources=[source], sql=SQL, features=FEATURES
        ),
        settings,
    )

    query_source = Source(
        name="purchases",
        kind="postgres",
        query="SELECT * FROM purchases WHERE amount < 50",
        connection_env="SHOP_DB",
    )
    assert profile_source(query_source, settings).row_count == 3


def test_postgres_source_without_its_connection_is_named(
    mallard_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOT_SET_DB", raising=False)
    source = Source(
        name="purchases", kind="postgres", path="purchases", connection_env="NOT_SET_DB"
    )
    with pytest.raises(
        DeclarationError, match="Source 'purchases': environment variable NOT_SET_DB is not set"
    ):
        profile_source(source, load_settings())
    with pytest.raises(DeclarationError, match="connection_env is required"):
        Source(name="purchases", kind="postgres", path="purchases")


def test_view_over_an_iceberg_table(mallard_home: Path) -> None:
    from pyiceberg.catalog.sql import SqlCatalog

    warehouse = mallard_home / "iceberg"
    warehouse.mkdir(parents=True)
    catalog = SqlCatalog(
        "local", uri=f"sqlite:///{warehouse / 'catalog.db'}", warehouse=f"file://{warehouse}"
    )
    catalog.create_namespace("shop")
    data = pa.Table.from_pandas(ROWS, preserve_index=False).cast(
        pa.schema(
            [
                ("customer_id", pa.int64()),
                ("event_timestamp", pa.timestamp("us", tz="UTC")),
                ("amount", pa.float64()),
            ]
        )
    )
    table = catalog.create_table("shop.purchases", schema=data.schema)
    table.append(data)
    source = Source(
        name="purchases", kind="iceberg", path=table.metadata_location.removeprefix("file://")
    )
    settings = load_settings()
    assert profile_source(source, settings).row_count == 4
    _check(
        FeatureView(
            name="spend", entities=[customer], sources=[source], sql=SQL, features=FEATURES
        ),
        settings,
    )
