"""Feast 0.67's side of benchmarks/feature_store.py; runs in the Feast venv (numpy >= 2).

Builds a throw-away Feast repository over the benchmark's Delta tables (FileSource with
DeltaFormat, duckdb offline store), then times `get_historical_features(...).to_df()` for the
entity table given and writes the result to parquet. Prints one JSON line with the figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import sys
import time
from datetime import timedelta
from pathlib import Path

STARTED = time.perf_counter()


def peak_rss_mb() -> float:
    """Peak RSS since exec (VmHWM); ru_maxrss would include the parent's at fork."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repo", required=True)
    parser.add_argument("--views", required=True, help="JSON: [{name, path, features}]")
    parser.add_argument("--entity", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--ttl-seconds", type=int, required=True)
    args = parser.parse_args()

    import ibis
    import pandas as pd
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.data_format import DeltaFormat
    from feast.types import Float64

    # Feast reads Delta through DuckDB's delta extension: load it from the wheel, never download.
    spec = importlib.util.find_spec("duckdb_ext")
    extensions = Path(next(iter(spec.submodule_search_locations))) / "extensions"
    ibis.set_backend(
        ibis.duckdb.connect(
            extension_directory=str(extensions),
            autoinstall_known_extensions=False,
            autoload_known_extensions=False,
        )
    )

    repo = Path(args.repo)
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        "project: mallard_bench\n"
        f"registry: {repo / 'registry.db'}\n"
        "provider: local\n"
        "offline_store:\n  type: duckdb\n"
        f"online_store:\n  type: sqlite\n  path: {repo / 'online.db'}\n"
        "entity_key_serialization_version: 3\n"
    )
    views = json.loads(args.views)
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
    objects: list = [customer]
    refs = []
    for view in views:
        source = FileSource(
            name=f"{view['name']}_source",
            path=view["path"],
            file_format=DeltaFormat(),
            timestamp_field="event_timestamp",
            created_timestamp_column="created_timestamp",
        )
        objects.append(
            FeatureView(
                name=view["name"],
                entities=[customer],
                ttl=timedelta(seconds=args.ttl_seconds),
                schema=[Field(name=f, dtype=Float64) for f in view["features"]],
                source=source,
                online=False,
            )
        )
        refs += [f"{view['name']}:{f}" for f in view["features"]]
    store = FeatureStore(repo_path=str(repo))
    store.apply(objects)
    entity = pd.read_parquet(args.entity)
    ready = time.perf_counter()
    frame = store.get_historical_features(entity_df=entity, features=refs).to_df()
    seconds = time.perf_counter() - ready
    columns = ["customer_id", "event_timestamp", *[f for v in views for f in v["features"]]]
    frame[columns].to_parquet(args.out, index=False)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "process_seconds": time.perf_counter() - STARTED,
                "peak_rss_mb": peak_rss_mb(),
                "rows": len(frame),
                "feast": __import__("feast").__version__,
            }
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
