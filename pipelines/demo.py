"""`make demo`: generate the sample world, materialize every asset, print where to look.

Runs on the persistent embedded instance (DAGSTER_HOME under MALLARD_HOME), so `make dev`
shows the runs afterwards.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time

from mallard.config import load_settings

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def run_demo(
    end_date: dt.date | None = None, scale: float | None = None, regenerate: bool = True
) -> dict:
    """Generate the world (unless asked not to) and run the `demo` job; return a summary."""
    overrides: dict[str, object] = {}
    if end_date is not None:
        overrides["end_date"] = end_date
    if scale is not None:
        overrides["sample_scale"] = scale
    settings = load_settings(**overrides).ensure_home()
    os.environ["MALLARD_HOME"] = str(settings.home)
    os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
    for key, value in (("MALLARD_END_DATE", settings.end_date), ("MALLARD_SAMPLE_SCALE", scale)):
        if value is not None:
            os.environ[key] = str(value)

    from mallard.sample_world.generate import WorldSpec, generate_world

    started = time.perf_counter()
    spec = WorldSpec(
        end_date=settings.sample_end_date,
        seed=settings.seed,
        customers=settings.sample_customers,
    )
    world = None
    if regenerate or not (settings.sample_dir / "world.json").exists():
        print(
            f"[demo] generating the sample world: {spec.customers:,} customers, {spec.days} days ending {spec.end_date}"
        )
        world = generate_world(
            spec, settings.sample_dir, progress=lambda m: print(f"[demo]   … {m}")
        )

    import dagster as dg

    from pipelines.definitions import defs

    print("[demo] materializing every asset on the embedded instance")
    runs: list[tuple[str, str, bool]] = []
    materialized: set[str] = set()
    first, last = settings.sample_start_date.isoformat(), settings.sample_end_date.isoformat()
    steps = [
        ("ingest_sources", {}),
        ("build_features", {RANGE_START: first, RANGE_END: last}),
        ("load_online_store", {}),
        ("build_training_sets", {}),
    ]
    with dg.DagsterInstance.get() as instance:
        for job_name, tags in steps:
            step_started = time.perf_counter()
            print(
                f"[demo] job {job_name} {'(partitions ' + first + ' … ' + last + ', one run)' if tags else ''}"
            )
            result = defs.resolve_job_def(job_name).execute_in_process(
                instance=instance, tags=tags, raise_on_error=False
            )
            runs.append((job_name, result.run_id, result.success))
            materialized.update(
                e.asset_key.to_user_string()
                for e in result.get_asset_materialization_events()
                if e.asset_key
            )
            print(
                f"[demo]   {'ok' if result.success else 'FAILED'} in {time.perf_counter() - step_started:.1f} s"
            )
            if not result.success:
                break
    elapsed = time.perf_counter() - started
    return {
        "success": all(ok for _, _, ok in runs) and len(runs) == len(steps),
        "runs": runs,
        "materialized": sorted(materialized),
        "world": world,
        "settings": settings,
        "seconds": elapsed,
    }


def _print_summary(summary: dict) -> None:
    settings = summary["settings"]
    print()
    print("Mallard demo — done" if summary["success"] else "Mallard demo — FAILED")
    for job_name, run_id, ok in summary["runs"]:
        print(f"  run {job_name:16} {run_id} {'ok' if ok else 'FAILED'}")
    print(f"  assets built    {len(summary['materialized'])}: {', '.join(summary['materialized'])}")
    if summary["world"] is not None:
        rows = summary["world"].rows
        print(
            f"  sample world    {settings.sample_dir} ({rows['customers']:,} customers, "
            f"{rows['usage_events']:,} usage events, {rows['traces']:,} traces)"
        )
    print(f"  Dagster home    {settings.dagster_home}")
    print(f"  lake            {settings.lake_dir}")
    print("  next            make dev   → open http://127.0.0.1:3000 (Assets → sources)")
    print(f"  run time        {summary['seconds']:.1f} s (after installation)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--end-date", type=dt.date.fromisoformat, default=None)
    parser.add_argument("--scale", type=float, default=None)
    parser.add_argument("--keep-data", action="store_true", help="reuse an existing sample world")
    args = parser.parse_args()
    summary = run_demo(args.end_date, args.scale, regenerate=not args.keep_data)
    _print_summary(summary)
    raise SystemExit(0 if summary["success"] else 1)


if __name__ == "__main__":
    main()
