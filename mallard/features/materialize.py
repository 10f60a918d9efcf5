"""Load the offline store's latest values into the online store, and read them back.

Incremental: each view version keeps a watermark (the highest `_ingested_seq` already loaded, see
`mallard.features.online.materialize`), so a run reads only rows ingested since, rewritten
partitions and late corrections included; the online store's upsert keeps the newest value per key.
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


def _watermarks_path(settings: Settings, store: OnlineStore) -> str:
    return str(settings.online_store_path.parent / f"watermarks-{store.kind}.json")


def _load_watermarks(path: str) -> dict[str, int]:
    if not os.path.exists(path):
        return {}
    with open(path) as handle:
        marks = json.load(handle)
    # Anything but a sequence number (an older format) means: reload that view in full.
    return {label: mark for label, mark in marks.items() if isinstance(mark, int)}


def _save_watermarks(path: str, marks: dict[str, int]) -> None:
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
        loaded = materialize_view(
            store,
            view.name,
            version.table_path,
            list(view.join_keys),
            view.feature_names,
            since_seq=marks.get(version.label),
        )
        if loaded.watermark is not None and loaded.watermark != marks.get(version.label):
            marks[version.label] = loaded.watermark
            _save_watermarks(marks_path, marks)
        seconds = time.perf_counter() - started
        progress(
            f"{version.label}: {loaded.rows_read:,} new rows, {loaded.keys_applied:,} keys updated "
            f"in {seconds:.2f} s"
        )
        results.append(
            MaterializeStats(
                view.name,
                version.label,
                loaded.rows_read,
                loaded.keys_applied,
                marks.get(version.label),
                seconds,
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
    null and flagged stale.
    """
    by_view: dict[str, list[str]] = {}
    for ref in registry.resolve(list(references)):
        by_view.setdefault(ref.view.name, []).append(ref.feature.name)
    requests = [
        ReadRequest(name, features, registry.views[name].ttl, list(registry.views[name].join_keys))
        for name, features in by_view.items()
    ]
    return store.read(entity_keys, requests, now=now)
