"""Code-location load time: a fresh process until `Definitions.validate_loadable(defs)` returns.

Prints the median of N runs for Mallard's code location and, as the raw baseline measured in
the same run, for a process that only imports dagster; the ratio is the price of Mallard's own
definitions. Goal: ≤ 4 s on a 2-core machine.

    uv run python benchmarks/load_time.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOAD = "import dagster as dg\nfrom pipelines.definitions import defs\ndg.Definitions.validate_loadable(defs)"
BASELINE = "import dagster"


def _time(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    _time(LOAD)  # warm the OS file cache once; every measured run is still a fresh process
    mallard = [_time(LOAD) for _ in range(args.runs)]
    baseline = [_time(BASELINE) for _ in range(args.runs)]
    med_m, med_b = statistics.median(mallard), statistics.median(baseline)
    print(f"runs: {args.runs}")
    print(
        f"mallard code location  median {med_m:.2f} s  (min {min(mallard):.2f}, max {max(mallard):.2f})"
    )
    print(
        f"import dagster alone   median {med_b:.2f} s  (min {min(baseline):.2f}, max {max(baseline):.2f})"
    )
    print(f"ratio mallard / bare dagster import: {med_m / med_b:.2f}x")
    print(f"goal ≤ 4.00 s: {'met' if med_m <= 4.0 else 'MISSED'}")


if __name__ == "__main__":
    main()
