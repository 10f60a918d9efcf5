"""LLM assets: prompt versions registered from `catalog/prompts`, and the support-assistant demo."""

import hashlib
import json
from pathlib import Path

import dagster as dg

from catalog.llm import OWNER
from resources import LLMResource, MLflowResource, PromptRegistryResource

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "catalog" / "prompts"


class SupportAssistantDemoConfig(dg.Config):
    questions: int = 3
    """How many sample questions (from the help-centre question set) to answer."""


def _prompt_files_fingerprint() -> str:
    """Hash of every prompt file: the asset's code version, so a changed file shows as unsynced."""
    digest = hashlib.sha256()
    for path in sorted(PROMPTS_DIR.rglob("*.toml")):
        digest.update(str(path.relative_to(PROMPTS_DIR)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@dg.asset(
    group_name="llm",
    owners=[OWNER],
    kinds={"sqlite"},
    code_version=_prompt_files_fingerprint(),
    automation_condition=(
        dg.AutomationCondition.missing() | dg.AutomationCondition.code_version_changed()
    )
    & ~dg.AutomationCondition.in_progress(),
)
def prompt_versions(
    context: dg.AssetExecutionContext, prompts: PromptRegistryResource, mlflow: MLflowResource
) -> dg.MaterializeResult:
    """Registers the prompt files in `catalog/prompts` in the prompt registry: changed content becomes a
    new immutable version; a label a file declares is set only if the prompt lacks it (labels move
    later only through `mallard prompts promote/rollback`). Every version and label is mirrored into
    MLflow's prompt registry (labels as aliases). Metadata: every version and its labels."""
    from assets.common import mlflow_ui
    from mallard.llm.prompts import sync_prompt_files
    from mallard.llm.prompts.mlflow_mirror import mirror_prompts, prompt_url

    registry = prompts.registry()
    registry.on_label_move = None  # mirrored once, below, with every version
    synced = sync_prompt_files(registry, PROMPTS_DIR, actor=f"dagster-run:{context.run.run_id}")
    for row in synced:
        if row["created"]:
            context.log.info(
                f"registered {row['name']} v{row['version']} from {Path(row['file']).name}"
            )
        if row["labels_set"]:
            context.log.info(
                f"{row['name']}: set {', '.join(row['labels_set'])} → v{row['version']}"
            )
    versions = registry.versions_table()
    table = dg.TableMetadataValue(
        records=[
            dg.TableRecord({k: str(v) for k, v in row.items() if k != "description"})
            for row in versions
        ],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn(k)
                for k in (
                    "name",
                    "version",
                    "content_hash",
                    "labels",
                    "endpoint",
                    "created_at",
                    "created_by",
                )
            ]
        ),
    )
    labels = {name: registry.labels(name) for name in registry.names()}
    settings = mlflow.settings()
    mirrored: dict = {}
    try:
        for m in mirror_prompts(registry, settings):
            mirrored[f"mlflow_prompt/{m.name}"] = dg.MetadataValue.url(
                prompt_url(mlflow_ui(settings), m.name)
            )
            if m.registered:
                context.log.info(
                    f"{m.name}: mirrored v{m.registered} into MLflow; aliases {m.aliases}"
                )
    except Exception as exc:  # noqa: BLE001 - MLflow holds a copy; Mallard has the versions
        context.log.warning(f"prompts not mirrored into MLflow's prompt registry: {exc}")
    return dg.MaterializeResult(
        metadata={
            "versions": table,
            "labels": dg.MetadataValue.json(labels),
            "new_versions": sum(r["created"] for r in synced),
            "registry": dg.MetadataValue.path(str(registry.path)),
            **mirrored,
        },
        data_version=dg.DataVersion(
            hashlib.sha256(
                json.dumps(labels, sort_keys=True).encode()
                + json.dumps(
                    [(r["name"], r["version"], r["content_hash"]) for r in versions]
                ).encode()
            ).hexdigest()[:16]
        ),
    )


@dg.asset(
    group_name="llm",
    owners=[OWNER],
    deps=[prompt_versions, "helpcentre_articles"],
    kinds={"llama.cpp"},
    pool="local_llm",
)
def support_assistant_demo(
    context: dg.AssetExecutionContext,
    llm: LLMResource,
    prompts: PromptRegistryResource,
    config: SupportAssistantDemoConfig,
) -> dg.MaterializeResult:
    """Runs the support-assistant chain (help-centre retrieval → the live `support_assistant` prompt)
    on a few sample questions with the local SmolLM2 endpoint, in the `local_llm` pool so two local
    generations never share the 2 cores. Every call is a trace; failed items go to the dead-letter
    table. Metadata: cost, tokens and latency per step, and the answers."""
    from catalog.chains import CHAINS, CORPORA, HELPCENTRE
    from catalog.llm import DEMO_ENDPOINT
    from mallard.llm.chains.runner import ChainRunner

    questions_path = Path(HELPCENTRE.path).with_name("questions.jsonl")
    questions = [
        json.loads(line) for line in questions_path.read_text().splitlines() if line.strip()
    ]
    items = [
        {"question": q["question"], "id": q["question_id"]} for q in questions[: config.questions]
    ]

    chain = CHAINS["support_assistant"]
    with llm.client(run_id=context.run.run_id) as client:
        runner = ChainRunner(
            client, prompts.registry(), corpora=CORPORA, default_endpoint=DEMO_ENDPOINT
        )
        context.log.info(str(runner.estimate_cost(chain, items)))
        batch = runner.run_batch(chain, items, concurrency=1, run_id=context.run.run_id)
    summary = batch.summary
    context.log.info("\n" + str(summary))

    answers = dg.TableMetadataValue(
        records=[
            dg.TableRecord(
                {
                    "id": item.item_id,
                    "question": item.inputs.get("question", ""),
                    "articles": ",".join(item.steps["retrieve"].output["ids"])
                    if item.steps.get("retrieve") and item.steps["retrieve"].output
                    else "",
                    "answer": (item.output or item.error or "")[:500],
                    "status": item.status,
                    "latency_ms": round(item.latency_ms, 1),
                }
            )
            for item in batch.items
        ],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn(c)
                for c in ("id", "question", "articles", "answer", "status", "latency_ms")
            ]
        ),
    )
    steps = dg.TableMetadataValue(
        records=[
            dg.TableRecord({k: v for k, v in step.__dict__.items()}) for step in summary.steps
        ],
        schema=dg.TableSchema(columns=[dg.TableColumn(k) for k in summary.steps[0].__dict__]),
    )
    answer_step = next(s for s in summary.steps if s.step == "answer")
    return dg.MaterializeResult(
        metadata={
            "items": summary.items,
            "ok": summary.ok,
            "failed": summary.failed,
            "cost_usd": dg.MetadataValue.float(float(summary.cost_usd)),
            "prompt_tokens": summary.prompt_tokens,
            "completion_tokens": summary.completion_tokens,
            "answer_latency_p50_ms": dg.MetadataValue.float(float(answer_step.latency_p50_ms)),
            "answer_latency_p95_ms": dg.MetadataValue.float(float(answer_step.latency_p95_ms)),
            "wall_s": dg.MetadataValue.float(float(summary.wall_s)),
            "steps": steps,
            "answers": answers,
            "dead_letters": summary.dead_letters,
        }
    )


LLM_ASSETS = [prompt_versions, support_assistant_demo]
