"""Feast 0.67's side of benchmarks/feature_store.py; runs in the Feast venv (numpy >= 2).

Builds a throw-away Feast repository over the benchmark's Delta tables (FileSource with
DeltaFormat, duckdb offline store), then either times `get_historical_features(...).to_df()` for
the entity table given and writes the result to parquet, or (`--online-reads N`) times
`materialize` into an empty sqlite online store and N single-key and N/5 100-key
`get_online_features(...).to_dict()` calls on random keys. Prints one JSON line with the figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

STARTED = time.perf_counter()

# The same measurement helpers as Mallard's side (benchmarks/feature_store.py: stdlib at import).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from feature_store import peak_rss_mb, percentiles  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repo", required=True)
    parser.add_argument("--views", required=True, help="JSON: [{name, path, features}]")
    parser.add_argument("--entity", help="entity parquet (point-in-time mode)")
    parser.add_argument("--out", help="result parquet (point-in-time mode)")
    parser.add_argument("--ttl-seconds", type=int, required=True)
    parser.add_argument("--online-reads", type=int, default=0, help="online mode: reads to time")
    parser.add_argument("--keys", type=int, default=100_000, help="online mode: keys 1..N")
    parser.add_argument("--start", help="online mode: ISO time before the first row")
    parser.add_argument("--end", help="online mode: ISO time after the last row")
    parser.add_argument("--seed", type=int, default=7)
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
                online=bool(args.online_reads),
            )
        )
        refs += [f"{view['name']}:{f}" for f in view["features"]]
    store = FeatureStore(repo_path=str(repo))
    store.apply(objects)
    if args.online_reads:
        return online(store, refs, args)
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


def online(store, refs: list[str], args) -> None:
    """Materialize into the empty sqlite online store, then time random-key reads."""
    started = time.perf_counter()
    store.materialize(datetime.fromisoformat(args.start), datetime.fromisoformat(args.end))
    load_seconds = time.perf_counter() - started
    rng = random.Random(args.seed)

    def read(n: int) -> None:
        rows = [{"customer_id": rng.randint(1, args.keys)} for _ in range(n)]
        store.get_online_features(features=refs, entity_rows=rows).to_dict()

    for _ in range(200):  # warm-up
        read(1)
    one, hundred = [], []
    for _ in range(args.online_reads):
        t0 = time.perf_counter()
        read(1)
        one.append(time.perf_counter() - t0)
    for _ in range(max(args.online_reads // 5, 100)):
        t0 = time.perf_counter()
        read(100)
        hundred.append(time.perf_counter() - t0)
    print(
        json.dumps(
            {
                "load_seconds": load_seconds,
                "one_key_ms": percentiles(one),
                "hundred_keys_ms": percentiles(hundred),
                "peak_rss_mb": peak_rss_mb(),
                "feast": __import__("feast").__version__,
            }
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
