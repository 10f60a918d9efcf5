"""Canary analysis: per model that declares a challenger (`ModelSpec.canary`), the challenger's
live outcomes against the champion's, and the decision: promote, roll back or wait.

The API splits entities between the two by a sticky hash of their key; this asset joins each
variant's API predictions with the labels known so far, compares the two groups with an unpaired
test on the deciding metric (mallard.models.canary) and writes the decision where the promotion
gate writes its own (MLflow tags, the decision run) and to the alert sink.
"""

import dagster as dg

from assets.names import canary_asset, model_asset
from catalog.features import REGISTRY, TRAINING_SETS
from catalog.models import MODELS
from mallard.features.sources import Source
from mallard.models.specs import ModelSpec
from resources import AlertSinkResource, MLflowResource

SCORE_METRICS = ("auc", "pr_auc")  # read the positive-class score; the others the prediction


def build_canary_asset(
    spec: ModelSpec, label_source: Source, key_columns: list[str]
) -> dg.AssetsDefinition:
    """The canary analysis of one model (its labels come from `label_source`)."""
    rule = spec.canary
    if rule is None:
        raise ValueError(f"model {spec.name!r} declares no canary")
    name = spec.name

    @dg.asset(
        name=canary_asset(name),
        group_name="monitoring",
        owners=[spec.owner] if "@" in spec.owner else None,
        deps=[model_asset(name, "champion"), label_source.name],
        kinds={"mlflow"},
        tags={"model": name},
        description=f"{name}'s challenger ({rule.challenger!r}, {rule.share:.0%} of entities) "
        f"against the champion on live outcomes: an unpaired test of {spec.metric}, its "
        f"{1 - rule.significance:.0%} confidence interval, the outcomes still needed for power "
        f"{rule.power:.0%} at an effect of {rule.min_effect:g}, and the decision (promote, roll "
        "back or wait), recorded as the promotion gate records its own and alerted.",
    )
    def canary_analysis(
        context: dg.AssetExecutionContext, mlflow: MLflowResource, alerts: AlertSinkResource
    ) -> dg.MaterializeResult:
        import datetime as dt

        from mallard.models.canary import (
            CANARY_TAG,
            CHALLENGER_ROLE,
            ENDED,
            canary_outcomes,
            compare_variants,
            decide_canary,
            record_canary,
        )
        from mallard.models.registry import client, get_version, version_for_alias

        settings = mlflow.settings()
        c = client(settings)
        champion = version_for_alias(c, name, "champion")
        alias = rule.challenger if isinstance(rule.challenger, str) else None
        challenger = (
            version_for_alias(c, name, alias) if alias else get_version(c, name, rule.challenger)
        )
        idle = None
        if champion is None:
            idle = "no champion yet"
        elif challenger is None:
            idle = f"no {alias!r} version: no canary is running"
        elif challenger.version == champion.version:
            idle = f"the challenger v{challenger.version} is the champion"
        elif (challenger.tags or {}).get(CANARY_TAG) in ENDED:
            idle = f"the canary of v{challenger.version} ended ({challenger.tags[CANARY_TAG]})"
        if idle is not None or champion is None or challenger is None:
            context.log.info(f"{name}: {idle}")
            return dg.MaterializeResult(metadata={"decision": "none", "reason": str(idle)})
        champion_version, challenger_version = int(champion.version), int(challenger.version)
        assert spec.label is not None  # a canary is declared for supervised models only
        frame = canary_outcomes(
            settings,
            name,
            champion_version=champion_version,
            challenger_version=challenger_version,
            share=rule.share,
            label_source=label_source,
            label=spec.label,
            key_columns=key_columns,
            as_of=dt.datetime.now(dt.UTC),
        )
        column = "score" if spec.metric in SCORE_METRICS else "prediction"
        groups = {
            variant: frame[frame["variant"] == variant] if len(frame) else frame
            for variant in ("champion", CHALLENGER_ROLE)
        }
        counts = {variant: len(rows) for variant, rows in groups.items()}
        comparison = None
        if min(counts.values()) >= min(rule.min_outcomes, 2):
            comparison = compare_variants(
                spec.metric,
                groups["champion"]["label"],
                groups["champion"][column],
                groups[CHALLENGER_ROLE]["label"],
                groups[CHALLENGER_ROLE][column],
                share=rule.share,
                min_effect=rule.min_effect,
                significance=rule.significance,
                power=rule.power,
                n_bootstrap=rule.n_bootstrap,
                seed=spec.seed,
            )
        decision = decide_canary(
            comparison,
            rule,
            champion_version=champion_version,
            challenger_version=challenger_version,
            n_champion=counts["champion"],
            n_challenger=counts[CHALLENGER_ROLE],
        )
        recorded = record_canary(
            settings,
            name,
            decision,
            champion_version=champion_version,
            challenger_version=challenger_version,
            challenger_alias=alias,
            sink=alerts.sink(),
        )
        context.log.info(f"{name}: {decision.reason}")
        metadata: dict = {
            "decision": decision.action,
            "reason": decision.reason,
            "champion_version": champion_version,
            "challenger_version": challenger_version,
            "champion_outcomes": counts["champion"],
            "challenger_outcomes": counts[CHALLENGER_ROLE],
            "decision_run_id": recorded.run_id,
        }
        if comparison is not None:
            level = f"{1 - comparison.significance:.0%}"
            metadata.update(
                {
                    "test": comparison.test,
                    f"champion_{spec.metric}": comparison.champion,
                    f"challenger_{spec.metric}": comparison.challenger,
                    "difference": comparison.difference,
                    "difference_ci": f"[{comparison.ci_low:+.4f}, {comparison.ci_high:+.4f}] "
                    f"({level})",
                    "p_value": comparison.p_value,
                    "outcomes_required": comparison.required_total,
                    "outcomes_still_needed": comparison.still_needed,
                    "comparison": dg.MetadataValue.json(comparison.as_dict()),
                }
            )
        return dg.MaterializeResult(metadata=metadata)

    return canary_analysis


def _key_columns(spec: ModelSpec) -> list[str]:
    keys: dict[str, str] = {}
    for ref in REGISTRY.resolve([spec.feature_service]):
        keys.update(ref.view.join_keys)
    return list(keys)


CANARY_ASSETS = [
    build_canary_asset(
        spec,
        next(t for t in TRAINING_SETS if t.name == spec.training_set).label_source,
        _key_columns(spec),
    )
    for spec in MODELS
    if spec.canary is not None
]
