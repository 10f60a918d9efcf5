"""Decision quality of the promotion gate on the sample world.

Null trials: candidate and champion are the same small random forest trained on the same rows
with different seeds; every promotion is a false one, and the count must stay within the
binomial upper bound (99 %) for the declared significance level. Shift trials: a champion
trained before the day-60 shift against a candidate trained after it, both judged after it; the
promotion rate is the gate's power. Prints the false-promotion rate over the significance level
(≤ 1 is calibrated) and the power.

    python benchmarks/promotion_gate.py                       # 6,000 customers, 200 + 20 trials
    python benchmarks/promotion_gate.py --customers 20000     # the demo's size
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=6_000)
    parser.add_argument("--end-date", type=dt.date.fromisoformat, default=dt.date(2026, 6, 30))
    parser.add_argument("--null-trials", type=int, default=200)
    parser.add_argument("--shift-trials", type=int, default=20)
    parser.add_argument("--trees", type=int, default=20)
    parser.add_argument("--bootstrap", type=int, default=500)
    parser.add_argument("--models", default="churn_classifier,minutes_forecast")
    parser.add_argument("--json", type=Path, default=None, help="Write the figures here too.")
    args = parser.parse_args()

    from catalog.features import REGISTRY, churn_training_set
    from catalog.models import MODELS
    from mallard.models.decision_quality import build_sample_training_set, null_and_shift

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mallard-gate-bench-") as tmp:
        frame, shift_day = build_sample_training_set(
            Path(tmp), args.customers, args.end_date, REGISTRY, churn_training_set
        )
    print(
        f"sample world: {args.customers:,} customers ending {args.end_date}, shift {shift_day}, "
        f"{len(frame):,} training-set rows ({time.perf_counter() - started:.0f} s)"
    )
    results = []
    for name in args.models.split(","):
        spec = MODELS.get(name)
        features = MODELS.features(name)
        categorical = [f for f in features if MODELS.feature_types[f] == "string"]
        null, shift = null_and_shift(
            spec,
            frame,
            features,
            categorical,
            shift_day=shift_day,
            null_trials=args.null_trials,
            shift_trials=args.shift_trials,
            trees=args.trees,
            n_bootstrap=args.bootstrap,
        )
        results += [null, shift]
        low, high = null.rate_ci
        print(
            f"{name} ({spec.metric}, promote if improvement > {spec.promotion.min_improvement:g} "
            f"at α={spec.promotion.significance}):\n"
            f"  null : {null.promoted}/{null.trials} promoted = {null.rate:.1%} "
            f"(95% CI {low:.1%}–{high:.1%}); binomial 99% bound {null.upper_bound_count} "
            f"→ {'within' if null.within_bound else 'EXCEEDS'}; mean improvement "
            f"{null.mean_improvement:+.4f}; {null.holdout_rows:,} held-out rows; {null.seconds:.0f} s\n"
            f"  shift: {shift.promoted}/{shift.trials} promoted = {shift.rate:.0%} power; mean "
            f"improvement {shift.mean_improvement:+.4f}; {shift.seconds:.0f} s\n"
            f"  ratio false-promotion rate / α = {null.rate / null.significance:.2f}"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"customers": args.customers, "results": [r.as_dict() for r in results]},
                indent=1,
                default=str,
            )
        )
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
