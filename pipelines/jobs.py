"""Jobs people launch by name; the demo runs them in order."""

from __future__ import annotations

import dagster as dg

ingest_sources = dg.define_asset_job(
    "ingest_sources",
    selection=dg.AssetSelection.groups("sources"),
    description="Check every raw source and record what it holds.",
)

build_features = dg.define_asset_job(
    "build_features",
    selection=dg.AssetSelection.groups("features") - dg.AssetSelection.assets("online_store"),
    description="Compute the feature views; launch a partition range to backfill in one run.",
)

load_online_store = dg.define_asset_job(
    "load_online_store",
    selection=dg.AssetSelection.assets("online_store"),
    description="Load the feature views' newest values into the online store.",
)

build_training_sets = dg.define_asset_job(
    "build_training_sets",
    selection=dg.AssetSelection.groups("training"),
    description="Join labels with point-in-time features into training sets (and, later, train).",
)

JOBS = [ingest_sources, build_features, load_online_store, build_training_sets]
