"""Drift report speed and agreement: Mallard's sampled report vs a plain Evidently report.

1. Speed: 1M rows × 30 features (reference and current), Mallard's `drift_report` (5,000-row
   samples, distance measures) against Evidently's DataDriftPreset on the full data with its
   default methods. Prints both times, peak memory of each (child process) and the ratio.
2. Agreement: on the sample world, a reference of pre-shift days against an unshifted day and a
   shifted day; both reports must flag the same features.

    uv run python benchmarks/drift.py [--rows 1000000] [--features 30]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _synthetic(rows: int, features: int, seed: int):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    numeric = {f"f{i:02d}": rng.normal(0, 1, rows) for i in range(features - 5)}
    categorical = {f"c{i}": rng.choice(["a", "b", "c", "d"], rows) for i in range(5)}
    reference = pd.DataFrame({**numeric, **categorical})
    current = reference.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    for i in range(0, features - 5, 5):  # shift every fifth numeric feature
        current[f"f{i:02d}"] = current[f"f{i:02d}"] + 0.5
    current["c0"] = rng.choice(["a", "b", "c", "d"], rows, p=[0.55, 0.15, 0.15, 0.15])
    return reference, current


def _run_child(mode: str, rows: int, features: int) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            mode,
            "--rows",
            str(rows),
            "--features",
            str(features),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _child(mode: str, rows: int, features: int) -> None:
    import evidently  # noqa: F401  (import time is not what is measured)

    from mallard.monitoring.drift import DriftConfig, drift_report

    reference, current = _synthetic(rows, features, seed=1)
    numerical = [c for c in reference.columns if c.startswith("f")]
    categorical = [c for c in reference.columns if c.startswith("c")]
    started = time.perf_counter()
    if mode == "mallard":
        result = list(
            drift_report(reference, current, numerical, categorical, DriftConfig()).drifted
        )
    else:  # plain Evidently: full data, its default method choice
        result = _plain(reference, current, numerical, categorical)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mib": peak, "drifted": sorted(result)}))


def _plain(reference, current, numerical, categorical) -> list[str]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset, DataSummaryPreset

    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    snapshot = Report([DataDriftPreset(), DataSummaryPreset()], include_tests=True).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    drifted = []
    for test in snapshot.dict()["tests"]:
        params = test.get("metric_config", {}).get("params", {})
        if (
            params.get("type") == "evidently:metric_v2:ValueDrift"
            and str(getattr(test["status"], "value", "")) == "FAIL"
        ):
            drifted.append(params["column"])
    return drifted


def _agreement() -> list[tuple[str, list[str], list[str]]]:
    from mallard.monitoring.drift import drift_report
    from mallard.sample_world.generate import WorldSpec, generate_world
    from mallard.sample_world.shift import FEATURES, trailing_features

    spec = WorldSpec(end_date=dt.date(2026, 6, 30))
    with tempfile.TemporaryDirectory() as tmp:
        generate_world(spec, Path(tmp) / "sample")
        data = trailing_features(Path(tmp) / "sample")
    reference = data[(data["day"] >= 30) & (data["day"] < 45)]
    rows = []
    for label, day in (("unshifted day 50", 50), ("shifted day 80", 80)):
        current = data[data["day"] == day]
        sampled = drift_report(reference, current, FEATURES, [], summary=False)
        plain = _plain(reference, current, FEATURES, [])
        rows.append((label, sorted(sampled.drifted), sorted(plain)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--child", choices=["mallard", "plain"])
    parser.add_argument("--agreement-only", action="store_true", help="skip the 1M-row timing")
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.rows, args.features)
        return
    if args.agreement_only:
        _print_agreement()
        return
    print(f"drift report, {args.rows:,} rows × {args.features} features, reference and current")
    mallard = _run_child("mallard", args.rows, args.features)
    plain = _run_child("plain", args.rows, args.features)
    print(
        f"  mallard (5,000-row samples)   {mallard['seconds']:8.2f} s   peak {mallard['peak_mib']:7.0f} MiB   drifted {len(mallard['drifted'])}"
    )
    print(
        f"  plain Evidently (full data)   {plain['seconds']:8.2f} s   peak {plain['peak_mib']:7.0f} MiB   drifted {len(plain['drifted'])}"
    )
    print(f"  speed-up {plain['seconds'] / mallard['seconds']:.1f}x (goal ≥ 5x)")
    print(
        f"  same features flagged on the synthetic shift: {mallard['drifted'] == plain['drifted']}"
    )
    _print_agreement()


def _print_agreement() -> None:
    print("sample world (20,000 customers): reference days 30–44")
    for label, sampled, full in _agreement():
        verdict = "same" if sampled == full else "DIFFERENT"
        print(f"  {label:18} mallard {sampled}  plain {full}  → {verdict}")


if __name__ == "__main__":
    main()
