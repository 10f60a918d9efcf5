"""The prediction log: every prediction a model made, in batch or through the API.

One Delta table (`lake/predictions`), partitioned by day, owned by this module. Batch scoring
replaces a (model, role, day) slice atomically; the serving API appends.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

from mallard.config import Settings

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

COLUMNS = (
    "entity_key",
    "timestamp",
    "day",
    "model_name",
    "model_version",
    "role",
    "features",
    "prediction",
    "score",
    "source",
    "run_id",
)


def prediction_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            ("entity_key", pa.string()),  # JSON of the join keys, e.g. {"customer_id": 7}
            ("timestamp", pa.timestamp("us", tz="UTC")),
            ("day", pa.date32()),
            ("model_name", pa.string()),
            ("model_version", pa.string()),
            ("role", pa.string()),  # champion | shadow | candidate
            ("features", pa.string()),  # JSON of the feature values used
            ("prediction", pa.float64()),  # class label or regression value
            ("score", pa.float64()),  # probability of the positive class; null for regression
            ("source", pa.string()),  # batch | api
            ("run_id", pa.string()),
        ]
    )


def predictions_path(settings: Settings) -> str:
    return str(settings.lake_dir / "predictions")


def to_log_table(
    keys: pd.DataFrame,
    features: pd.DataFrame,
    predictions,
    scores,
    *,
    timestamp: dt.datetime,
    model_name: str,
    model_version: str,
    role: str,
    source: str,
    run_id: str,
) -> pa.Table:
    """Arrow rows of the prediction log for one batch of predictions."""
    import numpy as np
    import pyarrow as pa

    n = len(keys)
    key_json = [json.dumps(row, default=str) for row in keys.to_dict("records")]
    feature_json = [json.dumps(row, default=str) for row in features.to_dict("records")]
    score_values = None if scores is None else np.asarray(scores, dtype=float)
    return pa.Table.from_pydict(
        {
            "entity_key": key_json,
            "timestamp": [timestamp] * n,
            "day": [timestamp.date()] * n,
            "model_name": [model_name] * n,
            "model_version": [str(model_version)] * n,
            "role": [role] * n,
            "features": feature_json,
            "prediction": np.asarray(predictions, dtype=float),
            "score": score_values if score_values is not None else pa.nulls(n, pa.float64()),
            "source": [source] * n,
            "run_id": [run_id] * n,
        },
        schema=prediction_schema(),
    )


def replace_batch(
    settings: Settings, table: pa.Table, model_name: str, role: str, day: dt.date
) -> None:
    """Write one model's batch predictions for a day, replacing that slice in one commit."""
    from deltalake import DeltaTable, write_deltalake

    path = predictions_path(settings)
    predicate = f"day = '{day.isoformat()}' AND model_name = '{model_name}' AND role = '{role}' AND source = 'batch'"
    if DeltaTable.is_deltatable(path):
        write_deltalake(path, table, mode="overwrite", predicate=predicate)
    else:
        write_deltalake(path, table, mode="append", partition_by=["day"])


def append(settings: Settings, table: pa.Table) -> None:
    """Append predictions (the serving API's path)."""
    from deltalake import write_deltalake

    write_deltalake(predictions_path(settings), table, mode="append", partition_by=["day"])


def read_predictions(
    settings: Settings,
    model_name: str | None = None,
    day: dt.date | None = None,
    role: str | None = None,
) -> pd.DataFrame:
    """Logged predictions, filtered on the partition and columns given."""
    from deltalake import DeltaTable

    path = predictions_path(settings)
    if not DeltaTable.is_deltatable(path):
        import pandas as pd

        return pd.DataFrame(columns=list(COLUMNS))
    filters: list[tuple[str, str, Any]] = []
    if day is not None:
        filters.append(("day", "=", day))
    if model_name is not None:
        filters.append(("model_name", "=", model_name))
    if role is not None:
        filters.append(("role", "=", role))
    return DeltaTable(path).to_pandas(filters=filters or None)


# The serving API's path: rows go through a durable write-behind buffer (mallard.lake.buffer),
# acknowledged once on local disk and appended in batches, never one commit per request.
def api_rows(
    keys: list[dict[str, Any]],
    features: list[dict[str, Any]],
    predictions: list[float],
    scores: list[float] | None,
    *,
    timestamp: dt.datetime,
    model_name: str,
    model_version: str,
    role: str,
    request_id: str,
) -> list[dict[str, Any]]:
    """Rows of the prediction log for one API request (`source` api, `run_id` the request id)."""
    day = timestamp.date()
    return [
        {
            "entity_key": json.dumps(key, default=str, sort_keys=True),
            "timestamp": timestamp,
            "day": day,
            "model_name": model_name,
            "model_version": str(model_version),
            "role": role,
            "features": json.dumps(row, default=str),
            "prediction": prediction,
            "score": None if scores is None else scores[i],
            "source": "api",
            "run_id": request_id,
        }
        for i, (key, row, prediction) in enumerate(zip(keys, features, predictions, strict=True))
    ]


def log_sink(settings: Settings) -> Any:
    """The prediction log as a write-behind buffer's sink (one append per flush)."""
    from mallard.lake.buffer import DeltaSink

    return DeltaSink(predictions_path(settings), prediction_schema, partition_by=["day"])
