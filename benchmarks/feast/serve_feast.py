"""Feast's side of benchmarks/serving.py's online-features comparison; runs in the Feast venv.

Builds a Feast repository over the feature-store benchmark's Delta tables (the same three views,
FileSource with DeltaFormat), materializes them into its SQLite online store and exits, printing
one JSON line; benchmarks/serving.py then runs Feast's Python feature server on it:
`feast -c REPO serve` (gunicorn with one uvicorn worker).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from datetime import datetime, timedelta
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repo", required=True)
    parser.add_argument("--views", required=True, help="JSON: [{name, path, features}]")
    parser.add_argument("--ttl-days", type=int, default=3650)
    parser.add_argument("--start", required=True, help="ISO time before the first row")
    parser.add_argument("--end", required=True, help="ISO time after the last row")
    args = parser.parse_args()

    import ibis
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
        "project: mallard_bench_serving\n"
        f"registry: {repo / 'registry.db'}\n"
        "provider: local\n"
        "offline_store:\n  type: duckdb\n"
        f"online_store:\n  type: sqlite\n  path: {repo / 'online.db'}\n"
        "entity_key_serialization_version: 3\n"
    )
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
    objects: list = [customer]
    for view in json.loads(args.views):
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
                ttl=timedelta(days=args.ttl_days),
                schema=[Field(name=f, dtype=Float64) for f in view["features"]],
                source=source,
                online=True,
            )
        )
    store = FeatureStore(repo_path=str(repo))
    store.apply(objects)
    started = time.perf_counter()
    store.materialize(datetime.fromisoformat(args.start), datetime.fromisoformat(args.end))
    print(
        json.dumps(
            {
                "materialize_seconds": time.perf_counter() - started,
                "feast": __import__("feast").__version__,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
