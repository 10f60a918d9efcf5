"""Outcomes: logged predictions joined with the labels that arrived later.

A prediction made for day d (entity timestamp d 00:00 UTC) is matched with the label row of the
same entity and timestamp once the label is known (its `known_at` ≤ the as-of time). One Delta
table (`lake/outcomes`), owned here, partitioned by day.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

from mallard.config import Settings

if TYPE_CHECKING:
    import pandas as pd

    from mallard.features.sources import Source


def outcomes_path(settings: Settings) -> str:
    return str(settings.lake_dir / "outcomes")


def join_outcomes(
    settings: Settings,
    predictions: pd.DataFrame,
    label_source: Source,
    label: str,
    key_columns: list[str],
    as_of: dt.datetime,
    timestamp_field: str = "label_timestamp",
    known_at_field: str = "known_at",
) -> pd.DataFrame:
    """Each prediction with its label, for the labels already known at `as_of`."""
    from mallard.lake import connect

    if predictions.empty:
        return predictions.assign(label=[])
    times = sorted({ts for ts in predictions["timestamp"]})
    con = connect(extensions=label_source.extensions)
    con.execute("SET TimeZone = 'UTC'")
    literal = ", ".join(f"TIMESTAMPTZ '{pd_ts.isoformat()}'" for pd_ts in times)
    labels = con.execute(
        f"SELECT {', '.join(key_columns)}, {timestamp_field} AS timestamp, {label} AS label "
        f"FROM {label_source.relation_sql(settings)} "
        f"WHERE {timestamp_field} IN ({literal}) AND {known_at_field} <= $as_of",
        {"as_of": as_of},
    ).fetch_df()
    con.close()
    labels["entity_key"] = [
        json.dumps(
            {
                k: (int(v) if hasattr(v, "__int__") and not isinstance(v, str) else v)
                for k, v in row.items()
            }
        )
        for row in labels[key_columns].to_dict("records")
    ]
    merged = predictions.merge(
        labels[["entity_key", "timestamp", "label"]], on=["entity_key", "timestamp"], how="inner"
    )
    return merged


def replace_outcomes(
    settings: Settings, frame: pd.DataFrame, model_name: str, day: dt.date
) -> None:
    """Store one model's outcomes for a day, replacing that slice in one commit."""
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    path = outcomes_path(settings)
    columns = [
        "entity_key",
        "timestamp",
        "day",
        "model_name",
        "model_version",
        "role",
        "prediction",
        "score",
        "label",
    ]
    table = pa.Table.from_pandas(frame[columns].astype({"label": "float64"}), preserve_index=False)
    if DeltaTable.is_deltatable(path):
        write_deltalake(
            path,
            table,
            mode="overwrite",
            predicate=f"day = '{day.isoformat()}' AND model_name = '{model_name}'",
        )
    else:
        write_deltalake(path, table, mode="append", partition_by=["day"])


def read_outcomes(
    settings: Settings,
    model_name: str,
    role: str | None = None,
    first_day: dt.date | None = None,
    last_day: dt.date | None = None,
) -> pd.DataFrame:
    """Stored outcomes of a model (optionally one role and a day range)."""
    import pandas as pd
    from deltalake import DeltaTable

    path = outcomes_path(settings)
    if not DeltaTable.is_deltatable(path):
        return pd.DataFrame(
            columns=["day", "model_version", "role", "prediction", "score", "label"]
        )
    filters: list[tuple[str, str, Any]] = [("model_name", "=", model_name)]
    if role:
        filters.append(("role", "=", role))
    if first_day:
        filters.append(("day", ">=", first_day))
    if last_day:
        filters.append(("day", "<=", last_day))
    return DeltaTable(path).to_pandas(filters=filters)
