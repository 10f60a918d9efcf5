"""The small models behind composite judges: fitting, cross-validation, κ intervals and the
versioned JSON artifacts a judge loads.

A composite judge turns each sample into one or more *instances* (one per answer sentence for
faithfulness, one per answer otherwise), each a vector of signals. A model gives each instance
P(pass); an item's probability is the lowest of its instances' (an answer is faithful only if
every sentence is). Fitting is logistic regression on standardised signals (several signals) or
isotonic regression (one signal); with several instances per item it alternates between picking
each item's weakest instance under the current model and refitting (multiple-instance learning,
two rounds). The decision threshold is the one with the best κ on the data the model was
fitted on.

κ is only ever reported out of sample: `cross_validate` scores each item with a model fitted on
the other folds, and `kappa_interval` bootstraps those out-of-fold decisions.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mallard.evals.stats import accuracy, cohen_kappa

REGULARISATION = 1.0
"""Inverse L2 strength of the logistic regression (scikit-learn's C) on standardised signals."""

Instances = Sequence[Sequence[float]]
"""One item: its instance vectors (at least one)."""


@dataclass
class FittedModel:
    method: str
    features: list[str]
    threshold: float = 0.5
    mean: list[float] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)
    coef: list[float] = field(default_factory=list)
    intercept: float = 0.0
    iso_x: list[float] = field(default_factory=list)
    iso_y: list[float] = field(default_factory=list)

    def instance_probabilities(self, vectors: Sequence[Sequence[float]]) -> list[float]:
        import numpy as np

        x = np.asarray(vectors, dtype=float).reshape(len(vectors), len(self.features))
        if self.method == "isotonic":
            return [float(v) for v in np.interp(x[:, 0], self.iso_x, self.iso_y)]
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        logits = z @ np.asarray(self.coef) + self.intercept
        return [float(v) for v in 1.0 / (1.0 + np.exp(-np.clip(logits, -40, 40)))]

    def probability(self, instances: Instances) -> tuple[float, list[float]]:
        """(the item's probability, each instance's)."""
        each = self.instance_probabilities(instances)
        return min(each), each

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FittedModel:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def best_threshold(probabilities: Sequence[float], labels: Sequence[bool]) -> float:
    """The cut with the best κ (then accuracy, then nearest 0.5) on these predictions."""
    cuts = sorted(set(probabilities))
    candidates = [0.5] + [(a + b) / 2 for a, b in zip(cuts, cuts[1:], strict=False)]
    best, best_key = 0.5, (-math.inf, -math.inf, 0.0)
    for cut in candidates:
        decisions = [p >= cut for p in probabilities]
        kappa = cohen_kappa(decisions, list(labels))
        key = (
            -1.0 if math.isnan(kappa) else kappa,
            accuracy(decisions, list(labels)),
            -abs(cut - 0.5),
        )
        if key > best_key:
            best, best_key = cut, key
    return float(best)


def _fit_vectors(x: Any, y: Any, features: list[str], method: str) -> FittedModel:
    import numpy as np

    if method == "isotonic" or x.shape[1] == 1 and method == "auto":
        from sklearn.isotonic import IsotonicRegression

        # the direction from the signal's correlation with the labels (sklearn's "auto" warns
        # on every small fold); a constant signal or labels: increasing, it fits a constant
        column = x[:, 0]
        spread = column.std() > 1e-12 and y.std() > 0
        increasing = not spread or float(np.corrcoef(column, y)[0, 1]) >= 0
        iso = IsotonicRegression(out_of_bounds="clip", increasing=increasing, y_min=0.0, y_max=1.0)
        iso.fit(column, y.astype(float))
        return FittedModel(
            "isotonic",
            features,
            iso_x=[float(v) for v in iso.X_thresholds_],
            iso_y=[float(v) for v in iso.y_thresholds_],
        )
    from sklearn.linear_model import LogisticRegression

    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    if len(set(y.tolist())) < 2:
        prior = float(np.clip(y.mean(), 1e-3, 1 - 1e-3))
        return FittedModel(
            "logistic",
            features,
            mean=mean.tolist(),
            scale=scale.tolist(),
            coef=[0.0] * x.shape[1],
            intercept=math.log(prior / (1 - prior)),
        )
    model = LogisticRegression(C=REGULARISATION, class_weight="balanced", max_iter=2000)
    model.fit((x - mean) / scale, y)
    return FittedModel(
        "logistic",
        features,
        mean=mean.tolist(),
        scale=scale.tolist(),
        coef=[float(c) for c in model.coef_[0]],
        intercept=float(model.intercept_[0]),
    )


def fit(
    items: Sequence[Instances],
    labels: Sequence[bool],
    features: Sequence[str],
    *,
    method: str = "auto",
    rounds: int = 2,
) -> FittedModel:
    """Fit on items (each a list of instance vectors) and their pass/fail labels."""
    import numpy as np

    features = list(features)
    y = np.asarray(labels, dtype=int)
    # the weakest instance to start with: the lowest mean of its min-max scaled signals
    every = np.asarray([v for inst in items for v in inst], dtype=float).reshape(-1, len(features))
    low, span = every.min(axis=0), np.ptp(every, axis=0)
    span[span < 1e-9] = 1.0

    def heuristic(vector: Sequence[float]) -> float:
        return float(((np.asarray(vector) - low) / span).mean())

    chosen = [min(inst, key=heuristic) for inst in items]
    model = _fit_vectors(np.asarray(chosen, dtype=float), y, features, method)
    if any(len(inst) > 1 for inst in items):
        for _ in range(rounds):
            chosen = [inst[int(np.argmin(model.instance_probabilities(inst)))] for inst in items]
            model = _fit_vectors(np.asarray(chosen, dtype=float), y, features, model.method)
    fitted = [model.probability(inst)[0] for inst in items]
    model.threshold = best_threshold(fitted, labels)
    return model


Fitter = Callable[[Sequence[Instances], Sequence[bool]], Any]
"""Fits on items and labels; returns something with `probability(instances) -> (p, each)` and a
`threshold`."""


@dataclass
class CrossValidation:
    probabilities: list[float]
    decisions: list[bool]
    labels: list[bool]
    folds: list[int]
    kappa: float
    kappa_low: float
    kappa_high: float
    accuracy: float
    accuracy_low: float
    accuracy_high: float

    def summary(self) -> dict[str, Any]:
        return {
            "kappa": self.kappa,
            "kappa_low": self.kappa_low,
            "kappa_high": self.kappa_high,
            "accuracy": self.accuracy,
            "accuracy_low": self.accuracy_low,
            "accuracy_high": self.accuracy_high,
            "items": len(self.labels),
            "folds": max(self.folds) + 1 if self.folds else 0,
        }


def fold_assignment(labels: Sequence[bool], folds: int = 5, seed: int = 0) -> list[int]:
    """Stratified folds: each label's items shuffled (seeded) and dealt round-robin."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = [0] * len(labels)
    for value in (True, False):
        idx = [i for i, label in enumerate(labels) if bool(label) == value]
        rng.shuffle(idx)
        for position, i in enumerate(idx):
            out[i] = position % folds
    return out


def cross_validate(
    items: Sequence[Instances],
    labels: Sequence[bool],
    fitter: Fitter,
    *,
    folds: int = 5,
    seed: int = 0,
    resamples: int = 2000,
) -> CrossValidation:
    """Each item scored by a model fitted without it (its fold held out), at that model's own
    threshold; κ and accuracy of those decisions with percentile bootstrap intervals."""
    labels = [bool(v) for v in labels]
    folds = max(2, min(folds, min(sum(labels), len(labels) - sum(labels)) or 2))
    assignment = fold_assignment(labels, folds, seed)
    probabilities = [math.nan] * len(items)
    decisions = [False] * len(items)
    for fold in range(folds):
        train = [i for i, f in enumerate(assignment) if f != fold]
        test = [i for i, f in enumerate(assignment) if f == fold]
        model = fitter([items[i] for i in train], [labels[i] for i in train])
        for i in test:
            p = model.probability(items[i])[0]
            probabilities[i] = p
            decisions[i] = p >= model.threshold
    kappa, k_low, k_high = kappa_interval(decisions, labels, resamples=resamples, seed=seed)
    acc, a_low, a_high = accuracy_interval(decisions, labels, resamples=resamples, seed=seed)
    return CrossValidation(
        probabilities, decisions, labels, assignment, kappa, k_low, k_high, acc, a_low, a_high
    )


def _bootstrap(
    statistic: Callable[[Sequence[bool], Sequence[bool]], float],
    a: Sequence[bool],
    b: Sequence[bool],
    resamples: int,
    seed: int,
    confidence: float,
) -> tuple[float, float, float]:
    import numpy as np

    estimate = statistic(a, b)
    n = len(a)
    if n < 2:
        return estimate, math.nan, math.nan
    rng = np.random.default_rng(seed)
    x, y = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    values = []
    for _ in range(resamples):
        idx = rng.integers(0, n, size=n)
        value = statistic(x[idx].tolist(), y[idx].tolist())
        if not math.isnan(value):
            values.append(value)
    if not values:
        return estimate, math.nan, math.nan
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return estimate, float(low), float(high)


def kappa_interval(
    decisions: Sequence[bool],
    labels: Sequence[bool],
    *,
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Cohen's κ with a percentile bootstrap interval (items resampled)."""
    return _bootstrap(cohen_kappa, decisions, labels, resamples, seed, confidence)


def accuracy_interval(
    decisions: Sequence[bool],
    labels: Sequence[bool],
    *,
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    return _bootstrap(accuracy, decisions, labels, resamples, seed, confidence)


# Artifacts ------------------------------------------------------------------------------------
_VERSION = re.compile(r"^v(\d+)\.json$")


def fits_dir(settings: Any, judge: str) -> Path:
    return Path(settings.home) / "evals" / "judges" / judge


def fit_id(payload: Mapping[str, Any]) -> str:
    """A hash of what decides grades: the model and the configuration it was fitted for."""
    blob = json.dumps(
        {"model": payload["model"], "base": payload["base_fingerprint"]},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def save_fit(settings: Any, judge: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Write the next version of a judge's fit (JSON); returns the payload with its version."""
    directory = fits_dir(settings, judge)
    directory.mkdir(parents=True, exist_ok=True)
    existing = [int(m.group(1)) for p in directory.iterdir() if (m := _VERSION.match(p.name))]
    version = max(existing, default=0) + 1
    payload = {**payload, "judge": judge, "version": version}
    payload["fit_id"] = fit_id(payload)
    target = directory / f"v{version:04d}.json"
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str, ensure_ascii=False))
    tmp.replace(target)
    return payload


_FITS_CACHE: dict[str, tuple[tuple[tuple[str, int], ...], list[dict[str, Any]]]] = {}


def list_fits(settings: Any, judge: str) -> list[dict[str, Any]]:
    """Every stored fit of a judge, oldest first (re-read only when the files change)."""
    import os

    directory = fits_dir(settings, judge)
    if not directory.is_dir():
        return []
    entries = sorted(
        (e.name, e.stat().st_mtime_ns) for e in os.scandir(directory) if _VERSION.match(e.name)
    )
    signature = tuple(entries)
    cached = _FITS_CACHE.get(str(directory))
    if cached is not None and cached[0] == signature:
        return cached[1]
    out = [json.loads((directory / name).read_text()) for name, _ in entries]
    out.sort(key=lambda p: p["version"])
    _FITS_CACHE[str(directory)] = (signature, out)
    return out


def load_fit(
    settings: Any, judge: str, base_fingerprint: str, version: int | None = None
) -> dict[str, Any] | None:
    """The latest fit (or `version`) made for this configuration, or None."""
    fits = [f for f in list_fits(settings, judge) if f.get("base_fingerprint") == base_fingerprint]
    if version is not None:
        fits = [f for f in fits if f["version"] == version]
    return fits[-1] if fits else None
