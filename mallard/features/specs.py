"""Feature-store declarations: `Entity`, `Feature`, `FeatureView`, `FeatureService`.

A user writes these in `catalog/`; structural mistakes raise `DeclarationError` naming the
object and the field as soon as the catalog is imported (that is, when the code location loads).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mallard.features.sources import Source
from mallard.specs import DeclarationError, check_identifier

FeatureType = Literal["int64", "float64", "string", "bool", "timestamp"]
FEATURE_TYPES: tuple[str, ...] = ("int64", "float64", "string", "bool", "timestamp")
# DuckDB result types accepted for each declared feature type.
DUCKDB_TYPES: dict[str, tuple[str, ...]] = {
    "int64": ("BIGINT", "INTEGER", "SMALLINT", "TINYINT", "HUGEINT", "UBIGINT", "UINTEGER"),
    "float64": ("DOUBLE", "FLOAT", "DECIMAL", "BIGINT", "INTEGER", "HUGEINT"),
    "string": ("VARCHAR",),
    "bool": ("BOOLEAN",),
    "timestamp": ("TIMESTAMP WITH TIME ZONE", "TIMESTAMP"),
}
RESERVED_COLUMNS = ("event_timestamp", "created_timestamp", "_ingested_seq", "_partition_date")


@dataclass(frozen=True)
class Entity:
    """What features describe, identified by its join keys (name → type)."""

    name: str
    join_keys: dict[str, FeatureType]
    description: str = ""

    def __post_init__(self) -> None:
        check_identifier("Entity", self.name)
        if not self.join_keys:
            raise DeclarationError(f"Entity {self.name!r}: join_keys must name at least one key")
        for key, type_ in self.join_keys.items():
            check_identifier("Entity", key, "join_keys", self.name)
            if type_ not in ("int64", "string"):
                raise DeclarationError(
                    f"Entity {self.name!r}: join key {key!r} has type {type_!r}; use int64 or string"
                )


@dataclass(frozen=True)
class Expectation:
    """A check on a feature's values; failing rows block the materialization."""

    not_null: bool = False
    min: float | None = None
    max: float | None = None
    allowed: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class Feature:
    """One feature column: its name, type and optional expectation."""

    name: str
    type: FeatureType
    description: str = ""
    expect: Expectation | None = None


@functools.cache
def _parser() -> Any:
    from mallard.lake import connect

    return connect()


def sql_table_names(sql: str) -> tuple[set[str], set[str], str]:
    """(tables, CTE names, parse error) of a view's SQL, from DuckDB's parse tree (not bound)."""
    import json

    sql = sql.replace("$partition_start", "TIMESTAMPTZ '2000-01-01'").replace(
        "$partition_end", "TIMESTAMPTZ '2000-01-02'"
    )
    con = _parser().cursor()
    try:
        tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])  # type: ignore[index]
    finally:
        con.close()
    if tree.get("error"):
        return set(), set(), str(tree.get("error_message", "unknown parse error"))
    tables: set[str] = set()
    ctes: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "BASE_TABLE" and node.get("table_name"):
                tables.add(node["table_name"])
            for entry in (node.get("cte_map") or {}).get("map", []):
                ctes.add(entry["key"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(tree)
    return tables, ctes, ""


@dataclass(frozen=True)
class FeatureView:
    """Features of one entity computed by SQL over sources, one daily partition at a time.

    `sql` reads the sources by name and may use `$partition_start` and `$partition_end`
    (UTC timestamps bounding the partition's day). It returns the join keys, `event_timestamp`,
    `created_timestamp` and the declared features.
    """

    name: str
    entities: Sequence[Entity]
    sources: Sequence[Source]
    sql: str
    features: Sequence[Feature]
    ttl: dt.timedelta | None = None
    owner: str = ""
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    freshness: dt.timedelta = dt.timedelta(days=1)

    def __post_init__(self) -> None:
        check_identifier("FeatureView", self.name)
        if not self.entities:
            raise DeclarationError(
                f"FeatureView {self.name!r}: entities must name at least one Entity"
            )
        for entity in self.entities:
            if not isinstance(entity, Entity):
                raise DeclarationError(
                    f"FeatureView {self.name!r}: entities holds {entity!r}, which is not an Entity"
                )
        if not self.sources or isinstance(self.sources, str | Source):
            raise DeclarationError(
                f"FeatureView {self.name!r}: sources must be a list of at least one Source"
            )
        for source in self.sources:
            if not isinstance(source, Source):
                raise DeclarationError(
                    f"FeatureView {self.name!r}: sources holds {source!r}, which is not a Source "
                    "(declare it with Source(...) in catalog/sources.py and pass the object)"
                )
        if not self.features:
            raise DeclarationError(
                f"FeatureView {self.name!r}: features must declare at least one Feature"
            )
        for feature in self.features:
            if not isinstance(feature, Feature):
                raise DeclarationError(
                    f"FeatureView {self.name!r}: features holds {feature!r}, which is not a Feature"
                )
        self._check_sql_tables()
        seen: set[str] = set()
        for feature in self.features:
            check_identifier("FeatureView", feature.name, "features", self.name)
            if feature.name in seen:
                raise DeclarationError(
                    f"FeatureView {self.name!r}: feature {feature.name!r} is declared twice"
                )
            if feature.name in self.join_keys or feature.name in RESERVED_COLUMNS:
                raise DeclarationError(
                    f"FeatureView {self.name!r}: feature {feature.name!r} collides with a key or "
                    f"reserved column ({', '.join(RESERVED_COLUMNS)})"
                )
            if feature.type not in FEATURE_TYPES:
                raise DeclarationError(
                    f"FeatureView {self.name!r}: feature {feature.name!r} has type {feature.type!r}; "
                    f"choose one of {', '.join(FEATURE_TYPES)}"
                )
            seen.add(feature.name)
        if self.ttl is not None and self.ttl < dt.timedelta(0):
            raise DeclarationError(
                f"FeatureView {self.name!r}: ttl must be ≥ 0 or None (unbounded)"
            )

    def _check_sql_tables(self) -> None:
        """Every table the SQL reads must be one of the view's sources (CTE names aside)."""
        tables, ctes, error = sql_table_names(self.sql)
        if error:
            raise DeclarationError(f"FeatureView {self.name!r}: sql does not parse: {error}")
        known = {source.name for source in self.sources}
        unknown = sorted(tables - known - ctes)
        if unknown:
            raise DeclarationError(
                f"FeatureView {self.name!r}: sql reads {', '.join(map(repr, unknown))}, which "
                f"{'is' if len(unknown) == 1 else 'are'} not among its sources "
                f"({', '.join(sorted(known))}); add the Source to sources= or fix the sql"
            )

    @property
    def join_keys(self) -> dict[str, str]:
        keys: dict[str, str] = {}
        for entity in self.entities:
            keys.update(entity.join_keys)
        return keys

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def version_hash(self) -> str:
        """Content hash of everything that determines the view's rows."""
        definition = {
            "sql": " ".join(self.sql.split()),
            "keys": self.join_keys,
            "features": [(f.name, f.type) for f in self.features],
            "sources": [(s.name, s.kind, s.path, s.query) for s in self.sources],
        }
        return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class FeatureService:
    """A named set of features a model consumes: `"view:feature"` or `"view:*"` references."""

    name: str
    features: Sequence[str]
    description: str = ""


@dataclass(frozen=True)
class FeatureRef:
    """A resolved reference to one feature of one view."""

    view: FeatureView
    feature: Feature


class FeatureRegistry:
    """The catalog's feature views and services, checked together."""

    def __init__(self, views: Iterable[FeatureView], services: Iterable[FeatureService] = ()):
        self.views: dict[str, FeatureView] = {}
        for view in views:
            if view.name in self.views:
                raise DeclarationError(f"FeatureView {view.name!r}: the name is declared twice")
            self.views[view.name] = view
        self.services: dict[str, FeatureService] = {}
        for service in services:
            check_identifier("FeatureService", service.name)
            if service.name in self.services:
                raise DeclarationError(
                    f"FeatureService {service.name!r}: the name is declared twice"
                )
            self.resolve(service.features, owner=f"FeatureService {service.name!r}")
            self.services[service.name] = service

    def resolve(self, references: Sequence[str], owner: str = "request") -> list[FeatureRef]:
        """Turn `view:feature` / `view:*` / a service name into features, or fail naming the bad one."""
        if len(references) == 1 and references[0] in getattr(self, "services", {}):
            references = list(self.services[references[0]].features)
        resolved: list[FeatureRef] = []
        names: dict[str, str] = {}
        for ref in references:
            view_name, sep, feature_name = ref.partition(":")
            if not sep:
                raise DeclarationError(
                    f"{owner}: feature reference {ref!r} must look like 'view:feature' or 'view:*'"
                )
            view = self.views.get(view_name)
            if view is None:
                raise DeclarationError(
                    f"{owner}: feature reference {ref!r} names unknown view {view_name!r} "
                    f"(views: {', '.join(sorted(self.views))})"
                )
            chosen = (
                list(view.features)
                if feature_name == "*"
                else [f for f in view.features if f.name == feature_name]
            )
            if not chosen:
                raise DeclarationError(
                    f"{owner}: feature reference {ref!r}: view {view_name!r} has no feature {feature_name!r} "
                    f"(features: {', '.join(view.feature_names)})"
                )
            for feature in chosen:
                if feature.name in names and names[feature.name] != view.name:
                    raise DeclarationError(
                        f"{owner}: feature {feature.name!r} is requested from both {names[feature.name]!r} "
                        f"and {view.name!r}; request one of them"
                    )
                names[feature.name] = view.name
                resolved.append(FeatureRef(view, feature))
        return resolved


@dataclass(frozen=True)
class TrainingSetSpec:
    """Labelled rows for training: a label source joined point-in-time with a feature service.

    Each label row is an entity row (its join keys and `timestamp_field`); only labels already
    known at the build time (`known_at_field` ≤ as-of) are used, and `every_n_days` thins the
    daily label rows to one day in n.
    """

    name: str
    service: str
    label_source: Source
    labels: Sequence[str]
    timestamp_field: str = "label_timestamp"
    known_at_field: str | None = "known_at"
    every_n_days: int = 1
    description: str = ""

    def __post_init__(self) -> None:
        check_identifier("TrainingSetSpec", self.name)
        if not self.labels:
            raise DeclarationError(
                f"TrainingSetSpec {self.name!r}: labels must name at least one column"
            )
        if self.every_n_days < 1:
            raise DeclarationError(f"TrainingSetSpec {self.name!r}: every_n_days must be ≥ 1")
