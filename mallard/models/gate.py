"""The promotion gate: paired tests of a candidate against the champion on the same rows.

- `mcnemar`: exact McNemar test on the rows exactly one of the two models classifies right.
- `paired_bootstrap`: the rows are resampled with replacement B times; each replicate scores
  both models on the same resampled rows, so the spread of the difference reflects the slice's
  sampling noise with the pairing kept. Metrics: AUC, PR-AUC (average precision), accuracy,
  F1, precision, recall (from scores/labels), MAE, MSE, RMSE, R² (from predictions) and the mean of per-row values
  (silhouette samples for clustering).
- `decide`: the promotion rule — promote when the one-sided (1 − α) lower confidence bound of
  the improvement exceeds the declared minimum improvement (or there is no champion).

Only numpy; resampling is done as multinomial row weights, so one replicate of any metric is a
weighted sum and B replicates are a matrix product (AUC included, via tie groups of the scores).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

# Metric name → (kind of prediction it reads, higher is better).
METRICS: dict[str, tuple[str, bool]] = {
    "auc": ("score", True),
    "pr_auc": ("score", True),
    "accuracy": ("label", True),
    "f1": ("label", True),
    "precision": ("label", True),
    "recall": ("label", True),
    "mae": ("value", False),
    "mse": ("value", False),
    "rmse": ("value", False),
    "r2": ("value", True),
    "mean": ("value", True),
    "silhouette": ("value", True),
}


# ------------------------------------------------------------------------------------------------
# McNemar
# ------------------------------------------------------------------------------------------------


def _log_binom_pmf(k: np.ndarray, n: int) -> np.ndarray:
    lgamma = np.vectorize(math.lgamma)
    return lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1) - n * math.log(2)


def binomial_tail(k: int, n: int) -> float:
    """P(X ≥ k) for X ~ Binomial(n, 1/2), exact (log-space sums, fine for large n)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    logs = _log_binom_pmf(np.arange(k, n + 1, dtype=float), n)
    top = logs.max()
    return float(min(1.0, math.exp(top) * np.exp(logs - top).sum()))


@dataclass(frozen=True)
class McNemarResult:
    """Counts of the paired 2×2 table and the exact test of "both models err equally often"."""

    both_right: int
    candidate_only_right: int
    champion_only_right: int
    both_wrong: int
    p_two_sided: float
    p_candidate_better: float
    accuracy_difference: float
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def mcnemar(
    candidate_correct: np.ndarray | list[bool],
    champion_correct: np.ndarray | list[bool],
    alpha: float = 0.05,
) -> McNemarResult:
    """Exact McNemar test from per-row correctness of each model on the same rows.

    Under H0 the discordant rows split Binomial(b + c, 1/2). The interval is the Wald interval
    of the paired accuracy difference, (c − b)/n ± z·sqrt(b + c − (c − b)²/n)/n.
    """
    cand = np.asarray(candidate_correct, dtype=bool)
    champ = np.asarray(champion_correct, dtype=bool)
    if cand.shape != champ.shape or cand.ndim != 1:
        raise ValueError("candidate_correct and champion_correct must be 1-D and the same length")
    both = int((cand & champ).sum())
    cand_only = int((cand & ~champ).sum())
    champ_only = int((~cand & champ).sum())
    neither = int((~cand & ~champ).sum())
    return mcnemar_from_counts(both, cand_only, champ_only, neither, alpha)


def mcnemar_from_counts(
    both_right: int,
    candidate_only_right: int,
    champion_only_right: int,
    both_wrong: int,
    alpha: float = 0.05,
) -> McNemarResult:
    """Exact McNemar test from the 2×2 table of a paired comparison."""
    c, b = candidate_only_right, champion_only_right
    discordant = b + c
    n = both_right + b + c + both_wrong
    if discordant == 0:
        p_two, p_one = 1.0, 1.0
    else:
        p_one = binomial_tail(c, discordant)
        p_two = min(1.0, 2 * binomial_tail(max(b, c), discordant))
    diff = (c - b) / n if n else 0.0
    z = _normal_quantile(1 - alpha / 2)
    half = z * math.sqrt(max(discordant - (c - b) ** 2 / n, 0.0)) / n if n else 0.0
    return McNemarResult(both_right, c, b, both_wrong, p_two, p_one, diff, diff - half, diff + half)


def _normal_quantile(p: float) -> float:
    """Inverse standard normal CDF (Acklam's rational approximation, |error| < 1.2e-9)."""
    if not 0 < p < 1:
        raise ValueError("p must be in (0, 1)")
    a = (
        -3.969683028665376e01,
        2.209460984245205e02,
        -2.759285104469687e02,
        1.383577518672690e02,
        -3.066479806614716e01,
        2.506628277459239e00,
    )
    b = (
        -5.447609879822406e01,
        1.615858368580409e02,
        -1.556989798598866e02,
        6.680131188771972e01,
        -1.328068155288572e01,
    )
    c = (
        -7.784894002430293e-03,
        -3.223964580411365e-01,
        -2.400758277161838e00,
        -2.549732539343734e00,
        4.374664141464968e00,
        2.938163982698783e00,
    )
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    low = 0.02425
    if p < low:
        q = math.sqrt(-2 * math.log(p))
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / (
            (((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1
        )
    if p > 1 - low:
        return -_normal_quantile(1 - p)
    q = p - 0.5
    r = q * q
    return (
        (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5])
        * q
        / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    )


# ------------------------------------------------------------------------------------------------
# Weighted metrics: one row of `weights` is one bootstrap replicate (row counts).
# ------------------------------------------------------------------------------------------------


def _auc(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    order = np.argsort(score, kind="mergesort")
    s, yy, w = score[order], y[order], weights[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    pos = w * yy
    neg = w - pos
    if len(starts) < len(s):  # tied scores form one group each
        pos = np.add.reduceat(pos, starts, axis=1)
        neg = np.add.reduceat(neg, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    total_pos, total_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + 0.5 * neg)).sum(axis=1) / (total_pos * total_neg)


def _average_precision(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Area under the precision-recall curve as average precision (scikit-learn's definition):
    Σ over score thresholds, highest first, of precision × the recall gained there."""
    order = np.argsort(-score, kind="mergesort")
    s, yy, w = score[order], y[order], weights[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    pos = w * yy
    flagged = w
    if len(starts) < len(s):
        pos = np.add.reduceat(pos, starts, axis=1)
        flagged = np.add.reduceat(flagged, starts, axis=1)
    tp, n_flagged = np.cumsum(pos, axis=1), np.cumsum(flagged, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(n_flagged > 0, tp / n_flagged, 0.0)
        return (precision * pos).sum(axis=1) / pos.sum(axis=1)


def _confusion(y: np.ndarray, label: np.ndarray, weights: np.ndarray):
    tp = weights @ ((label == 1) & (y == 1)).astype(float)
    fp = weights @ ((label == 1) & (y == 0)).astype(float)
    fn = weights @ ((label == 0) & (y == 1)).astype(float)
    return tp, fp, fn


def weighted_metric(
    metric: str, y: np.ndarray, prediction: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """`metric` of `prediction` against `y` for each row of `weights` (B × n) at once."""
    y = np.asarray(y, dtype=float)
    pred = np.asarray(prediction, dtype=float)
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric == "auc":
            return _auc(y, pred, weights)
        if metric == "pr_auc":
            return _average_precision(y, pred, weights)
        if metric == "accuracy":
            return weights @ (pred == y).astype(float) / total
        if metric in ("f1", "precision", "recall"):
            tp, fp, fn = _confusion(y, pred, weights)
            if metric == "precision":
                return tp / (tp + fp)
            if metric == "recall":
                return tp / (tp + fn)
            return 2 * tp / (2 * tp + fp + fn)
        err = pred - y
        if metric == "mae":
            return weights @ np.abs(err) / total
        if metric == "mse":
            return weights @ err**2 / total
        if metric == "rmse":
            return np.sqrt(weights @ err**2 / total)
        if metric == "r2":
            sse = weights @ err**2
            mean = weights @ y / total
            sst = weights @ y**2 - total * mean**2
            return 1 - sse / sst
        if metric in ("mean", "silhouette"):
            return weights @ pred / total
    raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")


def metric_value(metric: str, y: np.ndarray, prediction: np.ndarray) -> float:
    """`metric` on all rows (each counted once)."""
    n = len(np.asarray(prediction))
    return float(weighted_metric(metric, y, prediction, np.ones((1, n)))[0])


# ------------------------------------------------------------------------------------------------
# Paired bootstrap
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BootstrapResult:
    """The paired bootstrap of (candidate − champion), oriented so positive = candidate better.

    `ci_low`/`ci_high` is the two-sided (1 − α) percentile interval of the improvement;
    `lower_bound` the one-sided (1 − α) lower bound; `p_value` the bootstrap p-value of
    H0: improvement ≤ `threshold` ((1 + #{replicates ≤ threshold}) / (B + 1)).
    """

    metric: str
    candidate: float
    champion: float
    improvement: float
    ci_low: float
    ci_high: float
    lower_bound: float
    p_value: float
    threshold: float
    alpha: float
    n_rows: int
    n_bootstrap: int
    higher_is_better: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def bootstrap_weights(n: int, n_bootstrap: int, seed: int | np.random.Generator) -> np.ndarray:
    """B × n row counts of B resamples with replacement (each row sums to n)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_bootstrap, n))
    draws += np.arange(n_bootstrap)[:, None] * n
    return (
        np.bincount(draws.ravel(), minlength=n_bootstrap * n)
        .reshape(n_bootstrap, n)
        .astype(np.float64)
    )


def paired_bootstrap(
    metric: str,
    y: np.ndarray | None,
    candidate: np.ndarray,
    champion: np.ndarray,
    *,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    threshold: float = 0.0,
    seed: int = 0,
    chunk: int = 200,
) -> BootstrapResult:
    """Paired bootstrap of the improvement in `metric` of `candidate` over `champion`.

    `candidate`/`champion` are scores (AUC), labels (accuracy, F1, …), predicted values
    (regression metrics) or per-row values (mean, silhouette; then `y` is ignored).
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    cand = np.asarray(candidate, dtype=float)
    champ = np.asarray(champion, dtype=float)
    n = len(cand)
    if len(champ) != n or (y is not None and len(y) != n):
        raise ValueError("y, candidate and champion must have the same length")
    if n < 2:
        raise ValueError("the paired bootstrap needs at least 2 rows")
    target = np.zeros(n) if y is None else np.asarray(y, dtype=float)
    higher = METRICS[metric][1]
    sign = 1.0 if higher else -1.0
    cand_value = metric_value(metric, target, cand)
    champ_value = metric_value(metric, target, champ)
    improvement = sign * (cand_value - champ_value)
    rng = np.random.default_rng(seed)
    diffs = []
    for start in range(0, n_bootstrap, chunk):
        size = min(chunk, n_bootstrap - start)
        weights = bootstrap_weights(n, size, rng)
        diffs.append(
            sign
            * (
                weighted_metric(metric, target, cand, weights)
                - weighted_metric(metric, target, champ, weights)
            )
        )
    d = np.concatenate(diffs)
    d = d[np.isfinite(d)]  # a replicate without both classes has no AUC
    if len(d) < n_bootstrap // 2:
        raise ValueError(
            f"only {len(d)} of {n_bootstrap} bootstrap replicates had a defined {metric}; "
            "the held-out slice is too small or has a single class"
        )
    p_value = (1 + int((d <= threshold).sum())) / (len(d) + 1)
    return BootstrapResult(
        metric=metric,
        candidate=cand_value,
        champion=champ_value,
        improvement=improvement,
        ci_low=float(np.quantile(d, alpha / 2)),
        ci_high=float(np.quantile(d, 1 - alpha / 2)),
        lower_bound=float(np.quantile(d, alpha)),
        p_value=float(p_value),
        threshold=threshold,
        alpha=alpha,
        n_rows=n,
        n_bootstrap=len(d),
        higher_is_better=higher,
    )


# ------------------------------------------------------------------------------------------------
# The rule
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateDecision:
    """Whether to promote, why, and the evidence behind it (JSON-friendly)."""

    promote: bool
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return "promote" if self.promote else "keep"


def _fmt(value: float) -> str:
    return f"{value:+.4f}"


def decide(
    *,
    metric: str,
    min_improvement: float,
    significance: float,
    bootstrap: BootstrapResult | None = None,
    mcnemar_result: McNemarResult | None = None,
    test: str = "paired_bootstrap",
    champion_version: str | int | None = None,
    stability: float | None = None,
    min_stability: float | None = None,
) -> GateDecision:
    """Apply the promotion rule to the paired evidence (see `PromotionRule`)."""
    evidence: dict[str, Any] = {"metric": metric, "test": test}
    if bootstrap is not None:
        evidence["bootstrap"] = bootstrap.as_dict()
    if mcnemar_result is not None:
        evidence["mcnemar"] = mcnemar_result.as_dict()
    if stability is not None:
        evidence["stability"] = stability
    if champion_version is None:
        note = f" (assignment stability {stability:.3f})" if stability is not None else ""
        return GateDecision(
            True, f"no champion yet: the first candidate becomes champion{note}", evidence
        )
    if stability is not None and min_stability is not None and stability < min_stability:
        return GateDecision(
            False,
            f"kept champion v{champion_version}: the candidate's assignment stability (adjusted "
            f"Rand {stability:.3f}) is below the required {min_stability:.3f}",
            evidence,
        )
    if test == "mcnemar":
        if mcnemar_result is None:
            raise ValueError("the McNemar rule needs a McNemarResult")
        m = mcnemar_result
        ok = m.p_candidate_better < significance and m.accuracy_difference >= min_improvement
        verdict = (
            f"accuracy {_fmt(m.accuracy_difference)} over champion v{champion_version} "
            f"(rows only the candidate gets right: {m.candidate_only_right}, only the champion: "
            f"{m.champion_only_right}); exact McNemar one-sided p={m.p_candidate_better:.4g}"
        )
        if ok:
            return GateDecision(True, f"promoted: {verdict} < {significance}", evidence)
        return GateDecision(
            False,
            f"kept champion v{champion_version}: {verdict}; needs p < {significance} and an "
            f"improvement ≥ {min_improvement}",
            evidence,
        )
    if bootstrap is None:
        raise ValueError("the bootstrap rule needs a BootstrapResult")
    b = bootstrap
    level = round(100 * (1 - b.alpha))
    verdict = (
        f"{metric} {b.candidate:.4f} vs champion v{champion_version} {b.champion:.4f} "
        f"(improvement {_fmt(b.improvement)}, {level}% CI [{_fmt(b.ci_low)}, {_fmt(b.ci_high)}], "
        f"one-sided {level}% lower bound {_fmt(b.lower_bound)}, p={b.p_value:.4g} for "
        f"improvement ≤ {min_improvement:g}; {b.n_rows} held-out rows)"
    )
    if b.p_value < significance and b.improvement > min_improvement:
        return GateDecision(True, f"promoted: {verdict}", evidence)
    return GateDecision(
        False,
        f"kept champion v{champion_version}: {verdict} — not better by more than "
        f"{min_improvement:g} at significance {significance}",
        evidence,
    )


def binomial_upper_count(n: int, p: float, confidence: float = 0.99) -> int:
    """Smallest k with P(Binomial(n, p) ≤ k) ≥ confidence: more promotions than this in n
    null trials would reject "the gate promotes at most at rate p"."""
    cumulative = 0.0
    for k in range(n + 1):
        cumulative += math.comb(n, k) * p**k * (1 - p) ** (n - k)
        if cumulative >= confidence:
            return k
    return n


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper–Pearson) interval of a binomial proportion, by bisection on the tails."""

    def tail_ge(p: float) -> float:  # P(X ≥ k)
        return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))

    def tail_le(p: float) -> float:  # P(X ≤ k)
        return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(0, k + 1))

    a = (1 - confidence) / 2

    def solve(fn, target: float, increasing: bool) -> float:
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if (fn(mid) < target) == increasing:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    lower = 0.0 if k == 0 else solve(tail_ge, a, increasing=True)
    upper = 1.0 if k == n else solve(tail_le, a, increasing=False)
    return lower, upper
