"""The shadow comparison's false-recommendation rate on identical versions, and its power on a
planted gain: `mallard.evals.shadow.compare` over simulated paired scores (the same generator as
tests/online_evals/test_online_shadow.py).

Prints, for each number of pairs, how often identical versions are promoted (bound: α/2 and
the binomial 3σ margin over the trials) or kept for a loss, and how often a planted gain of
`--effect` is promoted.

    uv run python benchmarks/shadow_null.py [--trials 400] [--pairs 60 200] [--effect 0.05]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def scores(n: int, seed: int, shift: float = 0.0) -> tuple[dict[str, float], dict[str, float]]:
    rng = random.Random(seed)
    live, shadow = {}, {}
    for i in range(n):
        base = rng.random()
        live[f"t{i}"] = min(1, max(0, base + rng.gauss(0, 0.1)))
        shadow[f"t{i}"] = min(1, max(0, base + shift + rng.gauss(0, 0.1)))
    return live, shadow


def main() -> None:
    from mallard.evals.shadow import compare

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--pairs", type=int, nargs="+", default=[60, 200])
    parser.add_argument("--effect", type=float, default=0.05)
    parser.add_argument("--alpha", type=float, default=0.05)
    args = parser.parse_args()
    p = args.alpha / 2
    bound = args.trials * p + 3 * math.sqrt(args.trials * p * (1 - p))
    print(f"{args.trials} trials each, alpha {args.alpha}: false promotions allowed ≤ {bound:.1f}")
    print(f"pairs | null: promoted | null: kept for a loss | gain +{args.effect:g}: promoted | s")
    for n in args.pairs:
        start = time.perf_counter()
        promoted = lost = found = 0
        for seed in range(args.trials):
            null = compare("g", *scores(n, 1000 + seed), resamples=500, seed=seed, alpha=args.alpha)
            promoted += null.recommendation == "promote"
            lost += null.significant_loss
            gain = compare(
                "g",
                *scores(n, 5000 + seed, args.effect),
                resamples=500,
                seed=seed,
                alpha=args.alpha,
            )
            found += gain.recommendation == "promote"
        took = time.perf_counter() - start
        print(
            f"{n} | {promoted} ({promoted / args.trials:.2%}) | {lost} ({lost / args.trials:.2%}) "
            f"| {found / args.trials:.0%} | {took:.1f}"
        )


if __name__ == "__main__":
    main()
