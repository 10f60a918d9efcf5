"""Online grading throughput: the online_evals sensor and its runs on the code location, against
the same graders called directly in a loop (the orchestration overhead).

Writes the sample world's 14 days of production traces (`--traces-per-day`, default 150) to a
traces table in a temporary MALLARD_HOME, then:

1. direct: the deployment's online eval's selection (`mallard.evals.online.select`) and each of
   its graders' `grade_many` over the sampled traces, in one loop;
2. orchestrated: one tick of the `online_evals` sensor and the runs it requests, created on a
   Dagster instance (SQLite, as `make dev`) and executed in process by `pipelines/launch.py`,
   as the demo runs them: selection, grading, the Delta merge into online_scores, and one
   materialization per hour.

Both start warm (MiniLM loaded). Prints traces/s for each and the ratio.

    uv run python benchmarks/online_evals.py [--traces-per-day 150]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
END = dt.date(2026, 6, 30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces-per-day", type=int, default=150)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="mallard-bench-online-")) / "home"
    (home / "dagster").mkdir(parents=True)
    (home / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    os.environ.update(
        MALLARD_HOME=str(home), DAGSTER_HOME=str(home / "dagster"), MALLARD_END_DATE=str(END)
    )

    import dagster as dg
    import pyarrow as pa
    from deltalake import write_deltalake

    from catalog.online_evals import ONLINE_CATALOG, ONLINE_EVALS
    from mallard.evals.graders.base import GradeContext
    from mallard.evals.online import changed_traces, sample_of, select
    from mallard.llm.embeddings import default_embedder
    from mallard.sample_world.generate import WorldSpec, _traces_frame
    from mallard.traces.schema import trace_schema
    from pipelines.launch import Launcher

    spec = WorldSpec(end_date=END, customers=100, traces_per_day=args.traces_per_day)
    frame = _traces_frame(spec)
    table = home / "lake" / "traces"
    write_deltalake(
        str(table), pa.Table.from_pandas(frame, schema=trace_schema(), preserve_index=False)
    )
    default_embedder().embed(["warm up"])
    (online,) = ONLINE_EVALS
    graders = ONLINE_CATALOG.graders(online.name)

    started = time.perf_counter()
    rows, _ = select(online, changed_traces(table, version=0), cutoff=None)
    samples = [sample_of(r) for r in rows]
    ctx = GradeContext()
    for grader in graders:
        grader.grade_many(samples, ctx)
    direct = time.perf_counter() - started

    started = time.perf_counter()
    with dg.DagsterInstance.get() as instance, Launcher(instance) as launcher:
        loaded = time.perf_counter()
        tick = launcher.tick("online_evals", None)
        runs = [launcher.run_request(tick, r) for r in tick.run_requests]
        hours = sum(len(r.materialized) for r in runs)
    orchestrated = time.perf_counter() - loaded
    assert all(r.success for r in runs)

    n = len(rows)
    print(f"{len(frame):,} production traces, {n:,} sampled and graded by {len(graders)} graders")
    print(f"direct loop:   {direct:6.1f} s  {n / direct:7.1f} traces/s")
    print(
        f"sensor + runs: {orchestrated:6.1f} s  {n / orchestrated:7.1f} traces/s "
        f"({len(runs)} runs, {hours} hourly partitions; code location loaded in "
        f"{loaded - started:.1f} s, not counted)"
    )
    print(f"ratio (orchestrated / direct): {orchestrated / direct:.2f}")
    print(f"overhead per hourly partition: {(orchestrated - direct) / max(hours, 1) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
