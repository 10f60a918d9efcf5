"""Load the offline store's latest values into the online store, and read them back.

Incremental: each view version keeps a mark (the offline table version loaded and the highest
`_ingested_seq` seen, see `mallard.features.online.materialize`), so a run applies only what
changed since: new rows are upserted, and the keys of rows a rewrite removed are recomputed or
deleted. A view without a mark (first load, a new view version, an online view that is gone, a
mark from before versions were kept) is replaced in full, atomically.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mallard.config import Settings
from mallard.features.online import OnlineResult, OnlineStore, ReadRequest
from mallard.features.online.materialize import materialize_view
from mallard.features.specs import FeatureRegistry


@dataclass(frozen=True)
class MaterializeStats:
    view: str
    version: str
    rows_read: int
    keys_applied: int
    watermark: int | None
    seconds: float
    keys_deleted: int = 0
    full: bool = False  # the online view was replaced in full


def _watermarks_path(settings: Settings, store: OnlineStore) -> str:
    return str(settings.online_store_path.parent / f"watermarks-{store.kind}.json")


# {"seq": the highest _ingested_seq loaded, "version": the offline version, "table": its Delta id}
Mark = dict[str, Any]


def _load_watermarks(path: str) -> dict[str, Mark]:
    if not os.path.exists(path):
        return {}
    with open(path) as handle:
        marks = json.load(handle)
    # Anything else (an older format: a bare sequence number) means: reload that view in full.
    return {
        label: mark
        for label, mark in marks.items()
        if isinstance(mark, dict)
        and isinstance(mark.get("version"), int)
        and isinstance(mark.get("seq"), int | None)
        and isinstance(mark.get("table"), str)
    }


def _save_watermarks(path: str, marks: dict[str, Mark]) -> None:
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=folder, delete=False, suffix=".tmp") as handle:
        json.dump(marks, handle, indent=1)
    os.replace(handle.name, path)


def materialize_online(
    registry: FeatureRegistry,
    settings: Settings,
    store: OnlineStore,
    views: Sequence[str] | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> list[MaterializeStats]:
    """Bring the online store up to date with each view's current version."""
    import time

    from mallard.features.versions import register_version

    marks_path = _watermarks_path(settings, store)
    marks = _load_watermarks(marks_path)
    results = []
    for view in registry.views.values():
        if views and view.name not in views:
            continue
        started = time.perf_counter()
        version = register_version(settings, view)
        if not version.table_path.exists():
            progress(f"{version.label}: no offline data yet, skipped")
            continue
        if store.schema(view.name) is None:
            marks.pop(version.label, None)  # the online table is gone: reload everything
        mark = marks.get(version.label) or {}
        loaded = materialize_view(
            store,
            view.name,
            version.table_path,
            list(view.join_keys),
            view.feature_names,
            since_seq=mark.get("seq"),
            since_version=mark.get("version"),
            since_table=mark.get("table"),
        )
        new_mark: Mark = {
            "seq": loaded.watermark,
            "version": loaded.version,
            "table": loaded.table_id,
        }
        # The online view holds this version now: another version's mark (the view's declaration
        # changed back and forth) no longer describes it, and must not make a later load of that
        # version incremental.
        others = [label for label in marks if label.startswith(f"{view.name}@")]
        if loaded.version is not None and (new_mark != mark or others != [version.label]):
            for label in others:
                marks.pop(label)
            marks[version.label] = new_mark
            _save_watermarks(marks_path, marks)
        seconds = time.perf_counter() - started
        what = "full load" if loaded.full else "incremental"
        progress(
            f"{version.label}: {what}, {loaded.rows_read:,} rows read, {loaded.keys_applied:,} keys "
            f"updated, {loaded.keys_deleted:,} removed in {seconds:.2f} s"
        )
        results.append(
            MaterializeStats(
                view.name,
                version.label,
                loaded.rows_read,
                loaded.keys_applied,
                loaded.watermark,
                seconds,
                loaded.keys_deleted,
                loaded.full,
            )
        )
    return results


def get_online_features(
    store: OnlineStore,
    registry: FeatureRegistry,
    entity_keys: Any,
    references: Sequence[str],
    now: dt.datetime | None = None,
) -> OnlineResult:
    """Typed online values for entity keys: a service name or `view:feature` references.

    Every requested view is read in one call; a value older than its view's ttl comes back
    null and flagged stale; a view the store does not hold yet comes back null and flagged
    `missing_view` (`result.missing_views` lists them).
    """
    by_view: dict[str, list[str]] = {}
    for ref in registry.resolve(list(references)):
        by_view.setdefault(ref.view.name, []).append(ref.feature.name)
    requests = [
        ReadRequest(name, features, registry.views[name].ttl, list(registry.views[name].join_keys))
        for name, features in by_view.items()
    ]
    return store.read(entity_keys, requests, now=now)
