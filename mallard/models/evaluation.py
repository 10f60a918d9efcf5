"""Judge the candidate against the champion on the same later held-out slice, then decide.

`evaluate_candidate` scores both versions on the candidate's held-out slice (label days after
all of its training rows), runs the paired tests and stores everything as
`evaluation/evaluation.json` on the candidate's run. `apply_promotion` reads that evaluation,
applies the declared rule and moves the `champion` alias only if the candidate wins, recording
the decision and its reason either way.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mallard.config import Settings
from mallard.models import gate, plots
from mallard.models.data import BASELINE_COLUMN, load_model_data, parse_days
from mallard.models.loading import (
    LoadedModel,
    decision_threshold,
    load_json_artifact,
    load_version,
)
from mallard.models.registry import (
    CANDIDATE,
    CHAMPION,
    Decision,
    RegistryError,
    client,
    record_decision,
    run_id_of,
    set_champion,
    version_for_alias,
)
from mallard.models.specs import ModelSpec
from mallard.models.training import quiet, reports_dir

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

EVALUATION_ARTIFACT = "evaluation/evaluation.json"


@dataclass
class EvaluationResult:
    """Both versions' held-out metrics, the paired tests and what the rule would decide."""

    model: str
    candidate_version: int
    champion_version: int | None
    metric: str
    metrics: dict[str, dict[str, float]]
    decision: gate.GateDecision
    holdout: dict[str, Any]
    run_id: str
    bootstrap: gate.BootstrapResult | None = None
    mcnemar: gate.McNemarResult | None = None
    warnings: list[str] = field(default_factory=list)
    plots: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    # What no model needs: the base rate and always-positive F1, or the naive forecast's error.
    reference: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "candidate_version": self.candidate_version,
            "champion_version": self.champion_version,
            "metric": self.metric,
            "metrics": self.metrics,
            "decision": {
                "promote": self.decision.promote,
                "reason": self.decision.reason,
            },
            "evidence": self.decision.evidence,
            "holdout": self.holdout,
            "reference": self.reference,
            "warnings": self.warnings,
            "evaluated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }


def _classification(
    model: LoadedModel, x: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Scores, decisions at the version's threshold (its own labels without one), threshold."""
    import numpy as np

    from mallard.models.training import _scores

    threshold = decision_threshold(model)
    with quiet():
        scores = _scores(model.pipeline, x)
        if threshold is None:
            labels = np.asarray(model.pipeline.predict(x)).astype(float)
        else:
            labels = (scores >= threshold).astype(float)
    return scores, labels, threshold


def _clustering(model: LoadedModel, x: pd.DataFrame, seed: int) -> dict[str, Any]:
    """Assignments, per-row silhouette and stability (ARI against a refit on the slice)."""
    import numpy as np
    from sklearn.base import clone
    from sklearn.metrics import adjusted_rand_score, silhouette_samples

    with quiet():
        transformed = model.preprocessor.transform(x)
        labels = np.asarray(model.estimator.predict(transformed))
        refit = clone(model.estimator.estimator)
        if "random_state" in refit.get_params():
            refit.set_params(random_state=seed + 1)
        refit_labels = np.asarray(refit.fit(transformed.to_numpy(dtype=float)).labels_)
    values = transformed.to_numpy(dtype=float)
    if len(set(labels.tolist())) > 1:
        silhouette = silhouette_samples(values, labels)
    else:
        silhouette = np.zeros(len(labels))
    return {
        "labels": labels,
        "silhouette": silhouette,
        "stability": float(adjusted_rand_score(labels, refit_labels)),
        "clusters": int(len(set(labels.tolist()) - {-1})),
    }


def evaluate_candidate(
    spec: ModelSpec,
    settings: Settings,
    features: list[str],
    feature_types: dict[str, str],
    *,
    log=None,
) -> EvaluationResult:
    """Evaluate the `candidate` version against the `champion` (if any) on the held-out slice."""
    import numpy as np

    log = log or (lambda message: None)
    started = time.perf_counter()
    c = client(settings)
    candidate_mv = version_for_alias(c, spec.name, CANDIDATE)
    if candidate_mv is None:
        raise RegistryError(
            f"model {spec.name!r} has no candidate yet; materialize {spec.name}_candidate first"
        )
    champion_mv = version_for_alias(c, spec.name, CHAMPION)
    candidate = load_version(settings, spec.name, int(candidate_mv.version))
    champion = load_version(settings, spec.name, int(champion_mv.version)) if champion_mv else None
    tags = candidate.tags
    data = load_model_data(
        spec,
        settings,
        candidate.features,
        feature_types,
        delta_version=int(tags["mallard.training_set_delta_version"]),
        train_range=parse_days(tags.get("mallard.train_days")),
        holdout_range=parse_days(tags.get("mallard.holdout_days")),
    )
    holdout = data.holdout
    warnings: list[str] = []
    if champion is not None:
        missing = [f for f in champion.features if f not in holdout.columns]
        if missing:
            extra = load_model_data(
                spec,
                settings,
                champion.features,
                feature_types,
                delta_version=data.delta_version,
                train_range=data.train_days,
                holdout_range=data.holdout_days,
            ).holdout
            holdout = holdout.join(extra[missing])
        champion_days = parse_days(champion.tags.get("mallard.train_days"))
        if champion_days and champion_days[1] >= data.holdout_days[0]:
            warnings.append(
                f"champion v{champion.version} trained on label days up to {champion_days[1]}, "
                f"inside this held-out slice (from {data.holdout_days[0]}): its score is optimistic"
            )
    log(
        f"{spec.name}: candidate v{candidate.version} vs "
        f"{'champion v' + str(champion.version) if champion else 'no champion'} on "
        f"{len(holdout):,} held-out rows ({data.holdout_days[0]} … {data.holdout_days[1]})"
    )
    rule = spec.promotion
    metrics: dict[str, dict[str, float]] = {}
    bootstrap = mcnemar_result = None
    stability = None
    out = reports_dir(settings, spec.name, candidate.run_id)
    figures: dict[str, Path] = {}
    versions = {"candidate": candidate, **({"champion": champion} if champion else {})}
    reference: dict[str, Any] = {}
    if spec.task == "classification":
        y = holdout[spec.label].to_numpy(dtype=float)
        predictions = {
            role: _classification(model, holdout[model.features])
            for role, model in versions.items()
        }
        for role, (scores, labels, threshold) in predictions.items():
            metrics[role] = {
                "auc": gate.metric_value("auc", y, scores),
                "pr_auc": gate.metric_value("pr_auc", y, scores),
                **{
                    m: gate.metric_value(m, y, labels)
                    for m in ("accuracy", "f1", "precision", "recall")
                },
                "flagged_share": float(labels.mean()),
            }
            if threshold is None:
                warnings.append(
                    f"{role} v{versions[role].version} has no stored decision threshold: its "
                    "decisions are the pipeline's own labels (0.5)"
                )
            else:
                metrics[role]["threshold"] = threshold
        base_rate = float(y.mean())
        reference = {
            "base_rate": base_rate,
            # Flagging everyone: recall 1, precision = the base rate.
            "always_positive_f1": 2 * base_rate / (1 + base_rate),
            "threshold_rule": spec.decision_threshold.describe() if spec.decision_threshold else "",
        }
        figures["holdout_roc"] = plots.confusion_and_roc(
            y,
            predictions["candidate"][0],
            predictions["candidate"][1],
            out / "holdout_confusion_roc.png",
            threshold=predictions["candidate"][2],
        )
        if champion is not None:
            (cs, cl, _), (hs, hl, _) = predictions["candidate"], predictions["champion"]
            mcnemar_result = gate.mcnemar(cl == y, hl == y, alpha=rule.significance)
            use = (cs, hs) if spec.metric == "auc" else (cl, hl)
            bootstrap = gate.paired_bootstrap(
                spec.metric,
                y,
                *use,
                n_bootstrap=rule.n_bootstrap,
                alpha=rule.significance,
                threshold=rule.min_improvement,
                seed=spec.seed,
            )
    elif spec.task == "regression":
        y = holdout[spec.label].to_numpy(dtype=float)
        predicted: dict[str, np.ndarray] = {}
        for role, model in versions.items():
            with quiet():
                predicted[role] = np.asarray(
                    model.pipeline.predict(holdout[model.features]), dtype=float
                )
            metrics[role] = {
                m: gate.metric_value(m, y, predicted[role]) for m in ("mae", "rmse", "mse", "r2")
            }
        if spec.baseline is not None and BASELINE_COLUMN in holdout:
            naive = holdout[BASELINE_COLUMN].to_numpy(dtype=float)
            naive_mae = gate.metric_value("mae", y, naive)
            reference = {"baseline": spec.baseline.label, "naive_mae": naive_mae}
            for role in versions:
                # How much lower the model's MAE is than the naive forecast's (0.15 = 15 %).
                metrics[role]["mae_vs_naive"] = (
                    1 - metrics[role]["mae"] / naive_mae if naive_mae > 0 else 0.0
                )
        figures["holdout_residuals"] = plots.residuals(
            y, predicted["candidate"], out / "holdout_residuals.png"
        )
        if champion is not None:
            bootstrap = gate.paired_bootstrap(
                spec.metric,
                y,
                predicted["candidate"],
                predicted["champion"],
                n_bootstrap=rule.n_bootstrap,
                alpha=rule.significance,
                threshold=rule.min_improvement,
                seed=spec.seed,
            )
    else:
        results = {
            role: _clustering(model, holdout[model.features], spec.seed)
            for role, model in versions.items()
        }
        for role, clustered in results.items():
            metrics[role] = {
                "silhouette": float(clustered["silhouette"].mean()),
                "stability": clustered["stability"],
                "clusters": float(clustered["clusters"]),
            }
        stability = results["candidate"]["stability"]
        if champion is not None:
            bootstrap = gate.paired_bootstrap(
                "silhouette",
                None,
                results["candidate"]["silhouette"],
                results["champion"]["silhouette"],
                n_bootstrap=rule.n_bootstrap,
                alpha=rule.significance,
                threshold=rule.min_improvement,
                seed=spec.seed,
            )
    names = ["candidate v" + str(candidate.version)] + (
        ["champion v" + str(champion.version)] if champion else []
    )
    figures["holdout_comparison"] = plots.holdout_comparison(
        names,
        [metrics[r][spec.metric] for r in versions],
        spec.metric,
        (bootstrap.ci_low, bootstrap.ci_high) if bootstrap else None,
        out / "holdout_comparison.png",
    )
    if champion is not None and champion.version == candidate.version:
        decision = gate.GateDecision(
            False, f"candidate v{candidate.version} is already the champion", {}
        )
    else:
        decision = gate.decide(
            metric=spec.metric,
            min_improvement=rule.min_improvement,
            significance=rule.significance,
            bootstrap=bootstrap,
            mcnemar_result=mcnemar_result,
            test=rule.test,
            champion_version=champion.version if champion else None,
            stability=stability,
            min_stability=rule.min_stability if spec.task == "clustering" else None,
        )
    result = EvaluationResult(
        model=spec.name,
        candidate_version=candidate.version,
        champion_version=champion.version if champion else None,
        metric=spec.metric,
        metrics=metrics,
        decision=decision,
        holdout={
            "rows": len(holdout),
            "first_day": data.holdout_days[0].isoformat(),
            "last_day": data.holdout_days[1].isoformat(),
            "training_set_delta_version": data.delta_version,
        },
        run_id=candidate.run_id,
        bootstrap=bootstrap,
        mcnemar=mcnemar_result,
        warnings=warnings,
        plots=figures,
        reference=reference,
    )
    for message in warnings:
        log(f"{spec.name}: warning: {message}")
    payload = result.as_dict()
    c.log_dict(candidate.run_id, payload, EVALUATION_ARTIFACT)
    for path in figures.values():
        c.log_artifact(candidate.run_id, str(path), "evaluation")
    for role, values in metrics.items():
        prefix = "holdout" if role == "candidate" else "champion_holdout"
        for name, value in values.items():
            c.log_metric(candidate.run_id, f"{prefix}_{name}", value)
    for name, value in reference.items():
        if isinstance(value, int | float):
            c.log_metric(candidate.run_id, f"reference_{name}", value)
    if bootstrap is not None:
        for name in ("improvement", "ci_low", "ci_high", "lower_bound", "p_value"):
            c.log_metric(candidate.run_id, f"gate_{name}", getattr(bootstrap, name))
    if mcnemar_result is not None:
        c.log_metric(candidate.run_id, "gate_mcnemar_p_two_sided", mcnemar_result.p_two_sided)
    c.set_model_version_tag(
        spec.name,
        str(candidate.version),
        "mallard.holdout_metric",
        f"{spec.metric}={metrics['candidate'][spec.metric]:.4f}",
    )
    c.set_model_version_tag(
        spec.name,
        str(candidate.version),
        "mallard.evaluated_against",
        str(champion.version) if champion else "none",
    )
    result.seconds = time.perf_counter() - started
    log(f"{spec.name}: {decision.reason}")
    return result


def apply_promotion(spec: ModelSpec, settings: Settings, *, log=None) -> Decision:
    """Apply the rule to the candidate's stored evaluation: promote, or keep the champion.

    The evaluation must be against the current champion; if the champion moved since (a
    rollback, another promotion), evaluate again first.
    """
    log = log or (lambda message: None)
    c = client(settings)
    candidate_mv = version_for_alias(c, spec.name, CANDIDATE)
    if candidate_mv is None:
        raise RegistryError(f"model {spec.name!r} has no candidate to promote")
    version = int(candidate_mv.version)
    evaluation = load_json_artifact(
        settings, run_id_of(candidate_mv, spec.name), EVALUATION_ARTIFACT
    )
    if evaluation is None:
        raise RegistryError(
            f"model {spec.name!r}: candidate v{version} has not been evaluated; "
            f"materialize {spec.name}_evaluation first"
        )
    champion_mv = version_for_alias(c, spec.name, CHAMPION)
    champion = int(champion_mv.version) if champion_mv else None
    if evaluation.get("champion_version") != champion:
        raise RegistryError(
            f"model {spec.name!r}: candidate v{version} was evaluated against champion "
            f"v{evaluation.get('champion_version')}, but the champion is now "
            f"{'v' + str(champion) if champion else 'unset'}; evaluate again"
        )
    promote = bool(evaluation["decision"]["promote"])
    reason = evaluation["decision"]["reason"]
    if champion == version:
        decision = Decision(spec.name, "keep", version, champion, champion, reason, "", "")
        log(f"{spec.name}: {reason}")
        return decision
    if promote:
        decision = set_champion(
            settings,
            c,
            spec.name,
            version,
            action="promote",
            reason=reason,
            evidence=evaluation,
            source_run_id=candidate_mv.run_id,
        )
    else:
        decision = record_decision(
            settings,
            c,
            model=spec.name,
            action="keep",
            version=version,
            champion_before=champion,
            champion_after=champion,
            reason=reason,
            evidence=evaluation,
            source_run_id=candidate_mv.run_id,
        )
    log(f"{spec.name}: {decision.action} — {reason}")
    return decision
