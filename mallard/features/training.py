"""Build training sets: label rows joined point-in-time with a feature service's features."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mallard.config import Settings
from mallard.features.specs import FeatureRegistry, TrainingSetSpec
from mallard.specs import DeclarationError

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class TrainingSetInfo:
    """What a stored training set holds and which feature versions made it."""

    name: str
    path: str
    delta_version: int
    rows: int
    feature_versions: dict[str, str]
    as_of: str
    features: list[str]
    labels: list[str]


def training_set_path(settings: Settings, name: str) -> str:
    return str(settings.lake_dir / "training_sets" / name)


def view_reads(registry: FeatureRegistry, settings: Settings, references: list[str]):
    """The engine's ViewRead for each view a reference list touches, at its current version."""
    from mallard.features.offline.engine import ViewRead
    from mallard.features.versions import register_version

    by_view: dict[str, list[str]] = {}
    views = {}
    for ref in registry.resolve(references):
        by_view.setdefault(ref.view.name, []).append(ref.feature.name)
        views[ref.view.name] = ref.view
    reads, versions = [], {}
    for name, features in by_view.items():
        version = register_version(settings, views[name])
        if not version.table_path.exists():
            raise DeclarationError(
                f"FeatureView {name!r}: {version.label} has no offline data yet; materialize the view first"
            )
        reads.append(
            ViewRead(
                name,
                str(version.table_path),
                list(views[name].join_keys),
                features,
                views[name].ttl,
                version.number,
            )
        )
        versions[name] = version.label
    return reads, versions


def build_training_set(
    spec: TrainingSetSpec, registry: FeatureRegistry, settings: Settings, as_of: dt.datetime
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Label rows known by `as_of`, with point-in-time features; and the feature versions used."""
    from mallard.features.offline.engine import get_historical_features
    from mallard.lake import connect

    con = connect(extensions=spec.label_source.extensions)
    con.execute("SET TimeZone = 'UTC'")
    relation = spec.label_source.relation_sql(settings)
    columns = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()}
    reads, versions = view_reads(registry, settings, [spec.service])
    keys = sorted({k for r in reads for k in r.join_keys})
    for column in [
        *keys,
        spec.timestamp_field,
        *spec.labels,
        *([spec.known_at_field] if spec.known_at_field else []),
    ]:
        if column not in columns:
            raise DeclarationError(
                f"TrainingSetSpec {spec.name!r}: label source {spec.label_source.name!r} has no column "
                f"{column!r} (columns: {', '.join(sorted(columns))})"
            )
    known = f"AND {spec.known_at_field} <= $as_of" if spec.known_at_field else ""
    thin = (
        f"AND (date_diff('day', DATE '2000-01-01', CAST({spec.timestamp_field} AS DATE)) % {spec.every_n_days}) = 0"
        if spec.every_n_days > 1
        else ""
    )
    entity = con.execute(
        f"SELECT {', '.join(keys)}, {spec.timestamp_field} AS event_timestamp, {', '.join(spec.labels)} "
        f"FROM {relation} WHERE {spec.timestamp_field} <= $as_of {known} {thin} "
        f"ORDER BY {spec.timestamp_field}, {', '.join(keys)}",
        {"as_of": as_of},
    ).fetch_df()
    con.close()
    frame = get_historical_features(entity, reads)
    return frame, versions


def write_training_set(
    spec: TrainingSetSpec,
    frame: pd.DataFrame,
    versions: dict[str, str],
    settings: Settings,
    as_of: dt.datetime,
) -> TrainingSetInfo:
    """Store a training set as a new version of its Delta table (older versions stay readable)."""
    import pyarrow as pa
    from deltalake import CommitProperties, DeltaTable, write_deltalake

    path = training_set_path(settings, spec.name)
    features = [
        c for c in frame.columns if c not in (*spec.labels, "event_timestamp", "customer_id")
    ]
    meta = {
        "feature_versions": json.dumps(versions),
        "as_of": as_of.isoformat(),
        "service": spec.service,
    }
    write_deltalake(
        path,
        pa.Table.from_pandas(frame, preserve_index=False),
        mode="overwrite",
        schema_mode="overwrite",
        commit_properties=CommitProperties(custom_metadata=meta),
    )
    version = DeltaTable(path).version()
    return TrainingSetInfo(
        spec.name,
        path,
        version,
        len(frame),
        versions,
        as_of.isoformat(),
        features,
        list(spec.labels),
    )


def read_training_set(
    settings: Settings, name: str, version: int | None = None
) -> tuple[pd.DataFrame, dict[str, str]]:
    """A stored training set (latest, or a pinned Delta version) and its feature versions."""
    from deltalake import DeltaTable

    table = DeltaTable(training_set_path(settings, name), version=version)
    history = {h["version"]: h for h in table.history()}
    entry = history.get(table.version(), {})
    return table.to_pandas(), json.loads(entry.get("feature_versions", "{}"))
