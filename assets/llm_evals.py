"""Offline evals as assets (group `llm_evals`): one asset per declared eval dataset, the judges'
calibration against human verdicts, one offline eval per declared eval partitioned by prompt
version, and the promotion gate. Declarations live in catalog/evals.py and catalog/graders.py.

Prompt versions become partitions (`v1`, `v2`, …) through the `prompt_version_partitions` sensor,
or `add_prompt_version_partitions(instance, registry)` (sensors/llm_evals.py) for drivers that
run jobs in process.
"""

from typing import Any

import dagster as dg

from assets.names import (
    dataset_key,
    offline_eval_key,
    partition_version,
    promotion_key,
    prompt_version_partitions,
)
from catalog.evals import CATALOG, DATASETS, EVALS
from catalog.llm import OWNER
from mallard.evals.spec import OfflineEval
from resources import LakeResource, LLMResource, MLflowResource, PromptRegistryResource

GROUP = "llm_evals"

PROMPT_VERSION_PARTITIONS = {
    ev.name: dg.DynamicPartitionsDefinition(name=prompt_version_partitions(ev.name)) for ev in EVALS
}


class _LogProgress:
    """Progress of a long step in the run's log (the CLI draws tqdm bars instead)."""

    def __init__(self, log, description: str, total: int):
        self.log, self.description, self.total, self.done = log, description, total, 0
        self._next = 0

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.done >= self._next or self.done == self.total:
            self.log.info(f"{self.description}: {self.done}/{self.total}")
            self._next = self.done + max(1, self.total // 5)

    def close(self) -> None:
        pass


def _progress(context):
    return lambda description, total: _LogProgress(context.log, description, total)


def _table(rows: list[dict], columns: list[str]) -> dg.TableMetadataValue:
    return dg.TableMetadataValue(
        records=[dg.TableRecord({c: _cell(row.get(c)) for c in columns}) for row in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(c) for c in columns]),
    )


def _cell(value):
    if isinstance(value, float):
        return None if value != value else round(value, 4)
    if isinstance(value, bool | int | str) or value is None:
        return value
    return str(value)


def _trust_check(trust: list, asset_key: dg.AssetKey) -> dg.AssetCheckResult:
    untrusted = [t for t in trust if not t.trusted]
    return dg.AssetCheckResult(
        check_name="judges_trusted",
        asset_key=asset_key,
        passed=not untrusted,
        severity=dg.AssetCheckSeverity.WARN,
        description="; ".join(t.reason for t in untrusted) or "every judge meets its minimum κ",
        metadata={
            "judges": _table(
                [
                    {
                        "judge": t.judge,
                        "trusted": t.trusted,
                        "kappa": t.kappa,
                        "min_kappa": t.min_kappa,
                        "items": t.items,
                        "reason": t.reason,
                    }
                    for t in trust
                ],
                ["judge", "trusted", "kappa", "min_kappa", "items", "reason"],
            )
        },
    )


# Datasets ------------------------------------------------------------------------------------------
def build_dataset_asset(name: str) -> dg.AssetsDefinition:
    spec = CATALOG.dataset(name)

    @dg.asset(
        key=dataset_key(name),
        group_name=GROUP,
        owners=[OWNER],
        description=spec.description
        + "\n\nImported into a versioned Delta table: a changed file is a new version.",
        kinds={"delta"},
        tags={"mallard/owner": spec.owner or "global"},
        metadata={
            "source": str(spec.source),
            "owner": spec.owner or "global",
            "inputs": ", ".join(spec.input_fields),
        },
    )
    def _dataset(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        from mallard.evals.datasets import import_dataset, table_path

        settings = lake.settings()
        result = import_dataset(spec, settings=settings)
        context.log.info(
            f"{name}: {'new version' if result.created else 'unchanged at version'} {result.version} "
            f"({result.items} items)"
        )
        return dg.MaterializeResult(
            metadata={
                "version": result.version,
                "new_version": result.created,
                "items": result.items,
                "by_category": _table(
                    [{"category": c, "items": n} for c, n in result.by_category.items()],
                    ["category", "items"],
                ),
                "content_hash": result.content_hash[:16],
                "table": dg.MetadataValue.path(str(table_path(name, settings))),
            },
            data_version=dg.DataVersion(result.content_hash[:16]),
        )

    return _dataset


# Calibration ---------------------------------------------------------------------------------------
class CalibrationConfig(dg.Config):
    judges: list[str] = []
    """Judges to calibrate; empty: the ones declared in catalog/evals.py."""
    all_items: bool = False
    """Use every calibration item instead of the declared slice."""
    limit: int | None = None
    repeat: int | None = None
    """Calls per item (>1 measures the judge's own variance; the caches are skipped)."""


def build_calibration_asset() -> dg.AssetsDefinition:
    cal = CATALOG.calibration
    assert cal is not None

    @dg.asset(
        name="judge_calibration",
        group_name=GROUP,
        owners=[OWNER],
        deps=[dataset_key(cal.dataset)],
        kinds={"llama.cpp", "delta"},
        pool="local_llm",
        check_specs=[
            dg.AssetCheckSpec(
                "judges_trusted",
                asset="judge_calibration",
                description="Every calibrated judge reaches its declared minimum Cohen's κ.",
            )
        ],
    )
    def judge_calibration(
        context: dg.AssetExecutionContext,
        lake: LakeResource,
        llm: LLMResource,
        config: CalibrationConfig,
    ):
        """Runs each judge on the human-labelled calibration slice and measures agreement with the
        human verdicts: accuracy and Cohen's κ of pass/fail with a bootstrap interval, Spearman's
        ρ against the 1–5 human scores, and with repeat > 1 the judge's own variance. A composite
        judge is refitted on its latest labels instead (`mallard evals align`), its κ
        cross-validated. A judge whose κ interval's lower end is below its declared minimum is
        untrusted: evals relying on it are flagged and cannot gate a promotion."""
        from catalog.evals import CORPORA
        from mallard.evals.calibration import CalibrationReport, run_calibration

        settings = lake.settings()
        with llm.client(run_id=context.run.run_id, semantic_cache=False) as client:
            reports, info = run_calibration(
                CATALOG,
                client=client,
                settings=settings,
                corpora=CORPORA,
                judges=config.judges or None,
                slice_name=None if config.all_items else True,
                limit=config.limit,
                repeat=config.repeat,
                progress=_progress(context),
            )
        rows = [r.to_row() for r in reports]
        yield dg.MaterializeResult(
            metadata={
                "judges": _table(rows, list(CalibrationReport.SUMMARY_COLUMNS)),
                "dataset_version": info["dataset_version"],
                "slice": info["slice"] or "(all)",
                "items": info["items"],
                "run_id": info["run_id"],
            }
        )
        yield _trust_check([r.trust() for r in reports], dg.AssetKey("judge_calibration"))

    return judge_calibration


# Offline evals -------------------------------------------------------------------------------------
class OfflineEvalConfig(dg.Config):
    slice: str | None = None
    """Dataset slice; empty: the eval's declared slice (the demo's ~10 items)."""
    all_items: bool = False
    """Run the whole dataset instead of a slice."""
    limit: int | None = None
    graders: list[str] = []
    """Only these graders (empty: all the eval declares)."""
    dataset_version: int | None = None
    """Pin a dataset version (default: the latest)."""


def build_offline_eval_asset(ev: OfflineEval) -> dg.AssetsDefinition:
    key = offline_eval_key(ev.name)

    @dg.asset(
        key=key,
        group_name=GROUP,
        owners=[OWNER],
        partitions_def=PROMPT_VERSION_PARTITIONS[ev.name],
        deps=[
            "prompt_versions",
            dataset_key(ev.dataset),
            "judge_calibration",
            "helpcentre_articles",
        ],
        kinds={"llama.cpp", "delta"},
        pool="local_llm",
        description=(ev.description or f"Offline eval {ev.name}.")
        + f"\n\nOne partition per version of prompt `{ev.prompt}`: chain `{ev.chain}` answers "
        f"dataset `{ev.dataset}` with that version and every answer is graded by "
        f"{', '.join(ev.grader_names)}; rows go to the `judge_scores` table.",
        metadata={"graders": ", ".join(ev.grader_names), "dataset": ev.dataset},
        check_specs=[
            dg.AssetCheckSpec(
                "judges_trusted",
                asset=key,
                description="Every judge this eval relies on reaches its minimum κ.",
            ),
            dg.AssetCheckSpec(
                "answers_ok",
                asset=key,
                description="The chain answered every item (a failed item scores 0).",
            ),
        ],
    )
    def _offline_eval(
        context: dg.AssetExecutionContext,
        lake: LakeResource,
        llm: LLMResource,
        prompts: PromptRegistryResource,
        mlflow: MLflowResource,
        config: OfflineEvalConfig,
    ):
        from catalog.evals import CORPORA
        from mallard.evals.runs import run_offline_eval, summary_markdown, worst_markdown

        settings = lake.settings()
        version = partition_version(context.partition_key)
        with llm.client(run_id=context.run.run_id, semantic_cache=False) as client:
            run = run_offline_eval(
                CATALOG,
                ev.name,
                version,
                client=client,
                registry=prompts.registry(),
                settings=settings,
                corpora=CORPORA,
                slice_name=None if config.all_items else (config.slice or True),
                limit=config.limit,
                graders=config.graders or None,
                dataset_version=config.dataset_version,
                progress=_progress(context),
            )
        summary = run.summary
        metadata = {
            "run_id": run.run_id,
            "prompt_version": version,
            "dataset_version": run.dataset_version,
            "slice": run.slice or "(all)",
            "items": summary["items"],
            "failed_answers": summary["failed_answers"],
            "scores": dg.MetadataValue.md(summary_markdown(summary)),
            "worst_items": dg.MetadataValue.md(worst_markdown(summary)),
            "cost_usd": dg.MetadataValue.float(float(summary["cost_usd"])),
            "answer_cost_usd": dg.MetadataValue.float(float(summary["answer_cost_usd"])),
            "grading_cost_usd": dg.MetadataValue.float(float(summary["grading_cost_usd"])),
            "answers_cached": summary["answers_cached"],
            "grades_cached": f"{summary['grades_cached']}/{summary['grades']}",
            "answer_latency_p50_ms": dg.MetadataValue.float(
                float(summary["answer_latency_p50_ms"])
            ),
            "wall_s": dg.MetadataValue.float(round(run.wall_s, 2)),
        }
        for name, stats in summary["graders"].items():
            metadata[f"mean/{name}"] = dg.MetadataValue.float(_cell(stats["mean"]) or 0.0)
        metadata.update(_log_to_mlflow(context, mlflow, prompts, run))
        yield dg.MaterializeResult(metadata=metadata)
        yield _trust_check(run.trust, key)
        yield dg.AssetCheckResult(
            check_name="answers_ok",
            asset_key=key,
            passed=summary["failed_answers"] == 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"failed_answers": summary["failed_answers"]},
        )

    return _offline_eval


def _log_to_mlflow(context, mlflow: MLflowResource, prompts: PromptRegistryResource, run) -> dict:
    """The eval run as an MLflow evaluation run (MLflow's Evaluations view), with a link to it
    here; Mallard's judge_scores stay the record, so a failure to log is a warning."""
    from assets.common import mlflow_run_url
    from mallard.evals.datasets import load_dataset
    from mallard.evals.mlflow_log import log_offline_eval

    settings = mlflow.settings()
    try:
        snapshot = load_dataset(run.dataset, run.dataset_version, settings=settings)
        logged = log_offline_eval(settings, run, items=snapshot.items, registry=prompts.registry())
    except Exception as exc:  # noqa: BLE001 - MLflow holds a copy; Mallard has the record
        context.log.warning(f"the eval run was not logged to MLflow: {exc}")
        return {"mlflow_evaluation": "not logged (see the run's log)"}
    url = mlflow_run_url(settings, logged.run_id, logged.experiment_id, genai=True)
    if context.run is not None:
        key = "mallard/mlflow_run." + ".".join(context.asset_key.path)
        context.instance.add_run_tags(context.run.run_id, {key: url})
    return {"mlflow_evaluation": dg.MetadataValue.url(url)}


# Promotion gate -------------------------------------------------------------------------------------
class PromotionConfig(dg.Config):
    candidate_version: int | None = None
    """The version to promote; empty: the one the gate's candidate label (staging) points at."""
    pairwise: bool = True
    """Also run the pairwise judge on the compared answers (win/tie/loss in the metadata)."""
    dry_run: bool = False
    """Decide and record, but never move the label."""


def build_promotion_asset(ev: OfflineEval) -> dg.AssetsDefinition:
    assert ev.gate is not None
    gate = ev.gate

    @dg.asset(
        key=promotion_key(ev.name),
        group_name=GROUP,
        owners=[OWNER],
        deps=[offline_eval_key(ev.name)],
        kinds={"sqlite"},
        pool="local_llm",
        description=(
            f"The promotion gate of prompt `{ev.prompt}`: moves `{gate.label}` to the candidate only if, "
            f"on {', '.join(gate.graders)}, the {gate.confidence:.0%} paired bootstrap interval of "
            f"(candidate − {gate.label}) stays above −{gate.tolerance:g} and the judges are trusted; "
            "otherwise records why not."
        ),
    )
    def _promotion(
        context: dg.AssetExecutionContext,
        lake: LakeResource,
        llm: LLMResource,
        prompts: PromptRegistryResource,
        mlflow: MLflowResource,
        config: PromotionConfig,
    ) -> dg.MaterializeResult:
        from mallard.evals.compare import promote_prompt
        from mallard.evals.shadow import promotion_rule, shadow_evidence

        settings = lake.settings()
        registry = prompts.registry()
        before = registry.labels(ev.prompt).get(gate.label)
        # The combined rule (docs/ONLINE_EVALS.md): a trusted significant loss in shadow blocks.
        candidate = config.candidate_version or registry.labels(ev.prompt).get(gate.candidate_label)
        shadow = shadow_evidence(settings, ev.prompt, candidate)
        online = promotion_rule(True, [], shadow)
        with llm.client(run_id=context.run.run_id, semantic_cache=False) as client:
            decision = promote_prompt(
                CATALOG,
                ev.name,
                client=client,
                registry=registry,
                settings=settings,
                candidate_version=config.candidate_version,
                actor=f"dagster-run:{context.run.run_id}",
                dry_run=config.dry_run or not online.promote,
                pairwise=config.pairwise,
                progress=None,
            )
        context.log.info(str(decision))
        mirrored = _mirror_prompts(context, mlflow, registry, [ev.prompt])
        metadata: dict[str, Any] = {
            "verdict": decision.verdict if online.promote else "refused: a loss in shadow",
            "candidate_version": decision.candidate_version,
            f"{gate.label}_before": before if before is not None else "none",
            f"{gate.label}_after": registry.labels(ev.prompt).get(gate.label, "none"),
            "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons)),
            "gate_rule": dg.MetadataValue.md(
                "\n".join(f"- {r}" for r in promotion_rule(decision.promote, [], shadow).reasons)
            ),
        }
        metadata.update(mirrored)
        comparison = decision.comparison
        if comparison is not None:
            metadata["comparison"] = dg.MetadataValue.md(comparison.markdown())
            metadata["dataset_version"] = comparison.dataset_version
            if comparison.pairwise is not None:
                p = comparison.pairwise
                metadata["pairwise"] = (
                    f"{p.wins} wins / {p.ties} ties / {p.losses} losses "
                    f"({p.position_disagreements} position-swap disagreements)"
                )
        return dg.MaterializeResult(metadata=metadata)

    return _promotion


def _mirror_prompts(context, mlflow: MLflowResource, registry, names: list[str]) -> dict:
    """Mallard's labels as aliases in MLflow's prompt registry (a warning if MLflow fails)."""
    from assets.common import mlflow_ui
    from mallard.llm.prompts.mlflow_mirror import mirror_prompts, prompt_url

    settings = mlflow.settings()
    try:
        mirrored = mirror_prompts(registry, settings, names)
    except Exception as exc:  # noqa: BLE001 - MLflow holds a copy; Mallard has the labels
        context.log.warning(f"prompts not mirrored into MLflow's prompt registry: {exc}")
        return {}
    return {
        f"mlflow_prompt/{m.name}": dg.MetadataValue.url(prompt_url(mlflow_ui(settings), m.name))
        for m in mirrored
    } | {f"mlflow_aliases/{m.name}": dg.MetadataValue.json(m.aliases) for m in mirrored}


EVAL_ASSETS = [
    *[build_dataset_asset(d.name) for d in DATASETS],
    build_calibration_asset(),
    *[build_offline_eval_asset(ev) for ev in EVALS],
    *[build_promotion_asset(ev) for ev in EVALS if ev.gate],
]
