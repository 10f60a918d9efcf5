"""Offline eval runs: the chain answers every item with one pinned prompt version, every grader
grades every answer, and the rows go to `judge_scores`.

Nothing is paid twice. The answer is the LLM layer's exact-cache hit when the rendered prompt,
model and parameters are unchanged (that cache is keyed by exactly those), and each grade is
kept in a result cache keyed by the item, the answer, the retrieved context and the grader's
fingerprint (its configuration, judge model and parameters). A rerun with nothing changed makes
no model call; change the prompt, the item, the model or a grader and only what depends on it is
recomputed.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mallard.evals import store
from mallard.evals.calibration import judge_trust
from mallard.evals.datasets import DatasetSnapshot, snapshot_for
from mallard.evals.graders.base import Grade, GradeContext, Grader, Sample
from mallard.evals.progress import Progress, no_progress
from mallard.evals.spec import EvalCatalog, OfflineEval


class PinnedRegistry:
    """The prompt registry seen by the chain runner, with some prompts pinned to one version
    whatever label a step asks for (the runner looks prompts up by label only)."""

    def __init__(self, registry: Any, pins: Mapping[str, int]):
        self.registry = registry
        self.pins = dict(pins)

    def get(self, name: str, label: str = "live", *, version: int | None = None) -> Any:
        if version is None and name in self.pins:
            return replace(
                self.registry.version(name, self.pins[name]), label=f"v{self.pins[name]}"
            )
        return self.registry.get(name, label, version=version)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.registry, attribute)


class GradeCache:
    """Grades by content key, in SQLite under MALLARD_HOME (the LLM layer's exact-cache store)."""

    def __init__(self, path: Path | str):
        from mallard.llm.cache import ExactCache

        self._store = ExactCache(path)

    @classmethod
    def default(cls, settings: Any) -> GradeCache:
        return cls(Path(settings.home) / "evals" / "grade_cache.sqlite")

    @staticmethod
    def key(fingerprint: str, sample: Sample) -> str:
        return hashlib.sha256(f"{fingerprint}:{sample.content_key()}".encode()).hexdigest()

    def get(self, key: str) -> Grade | None:
        found = self._store.get(key)
        return Grade.from_json(found) if found is not None else None

    def put(self, key: str, grader: Grader, grade: Grade) -> None:
        self._store.put(key, grader.name, grader.kind, grade.to_json())

    def clear(self) -> int:
        return self._store.clear()


def grade_samples(
    grader: Grader,
    samples: Sequence[Sample],
    ctx: GradeContext,
    cache: GradeCache | None,
    progress: Any = None,
) -> tuple[list[Grade], list[str]]:
    """Grades (cached ones marked `cached`, at no cost) and their cache keys."""
    fingerprint = grader.fingerprint(ctx)
    keys = [GradeCache.key(fingerprint, s) for s in samples]
    grades: list[Grade | None] = [None] * len(samples)
    todo = []
    for index, key in enumerate(keys):
        hit = cache.get(key) if cache is not None else None
        if hit is not None:
            hit.cached, hit.cost_usd, hit.latency_ms = True, 0.0, 0.0
            hit.prompt_tokens = hit.completion_tokens = 0
            grades[index] = hit
        else:
            todo.append(index)
    if progress is not None and len(todo) < len(samples):
        progress.update(len(samples) - len(todo))
    if todo:
        fresh = grader.grade_many(
            [samples[i] for i in todo], ctx, progress.update if progress is not None else None
        )
        for index, grade in zip(todo, fresh, strict=True):
            grades[index] = grade
            if cache is not None and not grade.error:
                cache.put(keys[index], grader, grade)
    return [g for g in grades if g is not None], keys


@dataclass
class Answer:
    item: dict[str, Any]
    output: str
    status: str
    error: str = ""
    cache: str = ""
    endpoint: str = ""
    model: str = ""
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    contexts: list[str] = field(default_factory=list)
    context_ids: list[str] = field(default_factory=list)

    def sample(self) -> Sample:
        return Sample.from_item(
            self.item, self.output, contexts=self.contexts, context_ids=self.context_ids
        )


@dataclass
class EvalRun:
    run_id: str
    eval_name: str
    prompt_name: str
    prompt_version: int
    dataset: str
    dataset_version: int
    slice: str
    rows: list[dict[str, Any]]
    wall_s: float = 0.0
    trust: list[Any] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, Any]:
        return summarize(self.rows)


def answer_items(
    ev: OfflineEval,
    chain: Any,
    items: Sequence[Mapping[str, Any]],
    version: int,
    *,
    client: Any,
    registry: Any,
    corpora: Sequence[Any] = (),
    retrievers: Mapping[str, Any] | None = None,
    run_id: str,
    progress: Progress = no_progress,
) -> list[Answer]:
    """Run the chain on every item with `ev.prompt` pinned to `version` (batches of
    `ev.concurrency`; a failed item is dead-lettered by the runner and scored 0 here)."""
    from mallard.llm.chains.runner import ChainRunner

    runner = ChainRunner(
        client,
        PinnedRegistry(registry, {ev.prompt: version}),
        corpora=corpora,
        retrievers=retrievers,
    )
    endpoint = registry.version(ev.prompt, version).endpoint or ""
    answers = []
    bar = progress(f"answer v{version}", len(items))
    try:
        for start in range(0, len(items), ev.concurrency):
            chunk = list(items[start : start + ev.concurrency])
            batch = runner.run_batch(
                chain,
                [{**item["inputs"], "id": item["item_id"]} for item in chunk],
                concurrency=ev.concurrency,
                run_id=run_id,
            )
            for item, result in zip(chunk, batch.items, strict=True):
                step = result.steps.get(ev.step)
                retrieved = result.steps.get(ev.retrieval_step) if ev.retrieval_step else None
                found = (
                    retrieved.output if retrieved is not None and retrieved.status == "ok" else {}
                )
                output = (
                    result.output
                    if isinstance(result.output, str)
                    else json.dumps(result.output, default=str)
                )
                ep = step.endpoint if step is not None and step.endpoint else endpoint
                answers.append(
                    Answer(
                        item=dict(item),
                        output=output if result.status == "ok" else "",
                        status=result.status,
                        error=result.error,
                        cache=step.cache if step is not None else "",
                        endpoint=ep,
                        model=client.endpoints[ep].model if ep in client.endpoints else "",
                        cost_usd=result.cost_usd,
                        latency_ms=result.latency_ms,
                        contexts=[found["context"]] if found.get("context") else [],
                        context_ids=list(found.get("ids") or []),
                    )
                )
            bar.update(len(chunk))
    finally:
        bar.close()
    return answers


def grade_answers(
    graders: Sequence[Grader],
    answers: Sequence[Answer],
    ctx: GradeContext,
    cache: GradeCache | None,
    progress: Progress = no_progress,
) -> dict[str, list[tuple[Grade, str]]]:
    """Per grader: (grade, cache key) for every answer; a failed chain item scores 0."""
    ok = [a for a in answers if a.status == "ok"]
    samples = [a.sample() for a in ok]
    out: dict[str, list[tuple[Grade, str]]] = {}
    for grader in graders:
        bar = progress(grader.name, len(samples))
        try:
            grades, keys = grade_samples(grader, samples, ctx, cache, bar)
        finally:
            bar.close()
        by_item = {a.item["item_id"]: (g, k) for a, g, k in zip(ok, grades, keys, strict=True)}
        out[grader.name] = [
            by_item.get(a.item["item_id"])
            or (
                Grade(
                    score=0.0, passed=False, reason=f"no answer: the chain failed ({a.error[:200]})"
                ),
                "",
            )
            for a in answers
        ]
    return out


def score_rows(
    *,
    run_id: str,
    ev: OfflineEval,
    prompt: Any,
    snapshot: DatasetSnapshot,
    slice_name: str,
    answers: Sequence[Answer],
    graded: Mapping[str, Sequence[tuple[Grade, str]]],
    graders: Sequence[Grader],
    ctx: GradeContext,
    baseline_version: int | None = None,
) -> list[dict[str, Any]]:
    timestamp = store.now()
    rows = []
    for grader in graders:
        identity = grader.identity(ctx) if grader.kind == "judge" else {}
        fingerprint = grader.fingerprint(ctx)
        for answer, (grade, key) in zip(answers, graded[grader.name], strict=True):
            item = answer.item
            rows.append(
                {
                    "run_id": run_id,
                    "timestamp": timestamp,
                    "eval_name": ev.name,
                    "dataset": snapshot.name,
                    "dataset_version": snapshot.version,
                    "slice": slice_name,
                    "chain": ev.chain,
                    "prompt_name": prompt.name,
                    "prompt_version": prompt.version,
                    "prompt_hash": prompt.content_hash[:16],
                    "baseline_prompt_version": baseline_version,
                    "endpoint": answer.endpoint,
                    "model": answer.model,
                    "item_id": item["item_id"],
                    "category": item["category"],
                    "answer": answer.output,
                    "answer_status": answer.status,
                    "answer_cache": answer.cache,
                    "answer_cost_usd": answer.cost_usd,
                    "answer_latency_ms": answer.latency_ms,
                    "retrieved_ids": answer.context_ids,
                    "grader": grader.name,
                    "grader_kind": grader.kind,
                    "grader_fingerprint": fingerprint[:16],
                    "judge_endpoint": str(identity.get("endpoint", "")),
                    "judge_model": str(identity.get("model", "")),
                    "score": grade.score,
                    "raw_score": grade.raw,
                    "passed": grade.passed,
                    "threshold": grader.threshold,
                    "reason": grade.reason[:2000],
                    "error": grade.error[:500],
                    "cost_usd": grade.cost_usd,
                    "latency_ms": grade.latency_ms,
                    "cached": grade.cached,
                    "cache_key": key,
                }
            )
    return rows


def select_items(
    catalog: EvalCatalog,
    ev: OfflineEval,
    snapshot: DatasetSnapshot,
    *,
    slice_name: str | None,
    limit: int | None = None,
    item_ids: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    chosen = catalog.slice(slice_name)
    items = (
        chosen.apply(snapshot.items) if chosen is not None else [dict(i) for i in snapshot.items]
    )
    if item_ids:
        wanted = set(item_ids)
        unknown = wanted - {i["item_id"] for i in snapshot.items}
        if unknown:
            raise LookupError(
                f"dataset {snapshot.name!r} v{snapshot.version} has no item(s) {sorted(unknown)}"
            )
        items = [i for i in snapshot.items if i["item_id"] in wanted]
    return items[:limit] if limit is not None else items


def run_offline_eval(
    catalog: EvalCatalog,
    eval_name: str,
    prompt_version: int,
    *,
    client: Any,
    registry: Any,
    settings: Any,
    corpora: Sequence[Any] = (),
    retrievers: Mapping[str, Any] | None = None,
    slice_name: str | None | bool = True,
    limit: int | None = None,
    item_ids: Sequence[str] | None = None,
    graders: Sequence[str] | None = None,
    dataset_version: int | None = None,
    import_latest: bool = False,
    run_id: str | None = None,
    cache: GradeCache | bool = True,
    progress: Progress = no_progress,
) -> EvalRun:
    """Answer and grade one prompt version on a dataset (slice) and append the rows to
    `judge_scores`. `slice_name=True` uses the eval's declared slice, None/False the whole dataset."""

    started = time.perf_counter()
    ev = catalog.eval(eval_name)
    chosen_slice = ev.slice if slice_name is True else (slice_name or None)
    snapshot = snapshot_for(
        catalog, ev.dataset, version=dataset_version, settings=settings, import_latest=import_latest
    )
    items = select_items(
        catalog, ev, snapshot, slice_name=chosen_slice, limit=limit, item_ids=item_ids
    )
    if not items:
        raise LookupError(
            f"eval {ev.name!r}: no items selected from {ev.dataset!r} v{snapshot.version}"
        )
    chosen = catalog.graders_of(ev, graders)
    prompt = registry.version(ev.prompt, prompt_version)
    run_id = run_id or f"{ev.name}-v{prompt_version}-{uuid.uuid4().hex[:8]}"
    ctx = GradeContext(client=client, run_id=run_id)
    grade_cache = GradeCache.default(settings) if cache is True else (cache or None)
    chain = catalog.chains[ev.chain]
    answers = answer_items(
        ev,
        chain,
        items,
        prompt_version,
        client=client,
        registry=registry,
        corpora=corpora,
        retrievers=retrievers,
        run_id=run_id,
        progress=progress,
    )
    graded = grade_answers(chosen, answers, ctx, grade_cache, progress)
    rows = score_rows(
        run_id=run_id,
        ev=ev,
        prompt=prompt,
        snapshot=snapshot,
        slice_name=chosen_slice or "",
        answers=answers,
        graded=graded,
        graders=chosen,
        ctx=ctx,
    )
    store.append("judge_scores", rows, settings=settings)
    client.flush()
    trust = [t for g in chosen for t in judge_trust(g, ctx, settings=settings)]
    return EvalRun(
        run_id,
        ev.name,
        ev.prompt,
        prompt_version,
        snapshot.name,
        snapshot.version,
        chosen_slice or "",
        rows,
        time.perf_counter() - started,
        trust,
    )


# Summaries ----------------------------------------------------------------------------------------
def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def summarize(rows: Sequence[Mapping[str, Any]], worst: int = 5) -> dict[str, Any]:
    """Per grader and per category × grader: mean score, pass rate, items, errors; cost (answers
    and grading), cache use, and the worst items (lowest mean score over graders)."""
    by_grader: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    by_cell: dict[tuple[str, str], list[float]] = defaultdict(list)
    by_item: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    answers: dict[str, Mapping[str, Any]] = {}
    for row in rows:
        by_grader[row["grader"]].append(row)
        if not row["error"]:
            by_cell[(row["category"], row["grader"])].append(row["score"])
            by_item[row["item_id"]].append(row)
        answers.setdefault(row["item_id"], row)
    graders = {}
    for name, group in sorted(by_grader.items()):
        scored = [r for r in group if not r["error"]]
        graders[name] = {
            "kind": group[0]["grader_kind"],
            "items": len(scored),
            "errors": len(group) - len(scored),
            "mean": _mean([r["score"] for r in scored]),
            "pass_rate": _mean([float(r["passed"]) for r in scored]),
            "cost_usd": sum(r["cost_usd"] or 0.0 for r in group),
            "cached": sum(bool(r["cached"]) for r in group),
        }
    categories = sorted({c for c, _ in by_cell})
    table = {c: {g: _mean(by_cell.get((c, g), [])) for g in graders} for c in categories}
    ranked = sorted(by_item.items(), key=lambda kv: _mean([r["score"] for r in kv[1]]))
    worst_items = []
    for item_id, group in ranked[:worst]:
        low = min(group, key=lambda r: r["score"])
        worst_items.append(
            {
                "item_id": item_id,
                "category": group[0]["category"],
                "mean_score": round(_mean([r["score"] for r in group]), 3),
                "worst_grader": low["grader"],
                "reason": low["reason"][:240],
                "answer": (group[0]["answer"] or "")[:240],
            }
        )
    answer_cost = sum(r["answer_cost_usd"] or 0.0 for r in answers.values())
    grading_cost = sum(r["cost_usd"] or 0.0 for r in rows)
    latencies = [r["answer_latency_ms"] for r in answers.values() if r["answer_status"] == "ok"]
    return {
        "items": len(answers),
        "failed_answers": sum(r["answer_status"] != "ok" for r in answers.values()),
        "answers_cached": sum(r["answer_cache"] in ("exact", "semantic") for r in answers.values()),
        "grades_cached": sum(bool(r["cached"]) for r in rows),
        "grades": len(rows),
        "answer_cost_usd": answer_cost,
        "grading_cost_usd": grading_cost,
        "cost_usd": answer_cost + grading_cost,
        "answer_latency_p50_ms": statistics.median(latencies) if latencies else 0.0,
        "graders": graders,
        "by_category": table,
        "worst_items": worst_items,
    }


def summary_markdown(summary: Mapping[str, Any]) -> str:
    graders = list(summary["graders"])
    lines = ["| category | " + " | ".join(graders) + " |", "|---" * (len(graders) + 1) + "|"]
    for category, cells in summary["by_category"].items():
        lines.append(f"| {category} | " + " | ".join(_fmt(cells[g]) for g in graders) + " |")
    lines.append(
        "| **all** | "
        + " | ".join(f"**{_fmt(summary['graders'][g]['mean'])}**" for g in graders)
        + " |"
    )
    lines.append(
        "| pass rate | "
        + " | ".join(_fmt(summary["graders"][g]["pass_rate"]) for g in graders)
        + " |"
    )
    return "\n".join(lines)


def worst_markdown(summary: Mapping[str, Any]) -> str:
    lines = ["| item | category | mean | worst grader | reason |", "|---|---|---|---|---|"]
    for w in summary["worst_items"]:
        reason = w["reason"].replace("|", "/").replace("\n", " ")[:160]
        lines.append(
            f"| {w['item_id']} | {w['category']} | {w['mean_score']:.2f} | {w['worst_grader']} | {reason} |"
        )
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return "–" if value != value else f"{value:.2f}"


def latest_run(
    eval_name: str,
    prompt_version: int,
    *,
    settings: Any = None,
    dataset_version: int | None = None,
    rows: Sequence[Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Rows of the latest (non-pairwise) run of one prompt version, optionally on one dataset version."""
    if rows is None:
        rows = store.read(
            "judge_scores",
            settings=settings,
            filters={"eval_name": eval_name, "prompt_version": prompt_version},
        )
    rows = [
        r
        for r in rows
        if r["prompt_version"] == prompt_version
        and r["baseline_prompt_version"] is None
        and (dataset_version is None or r["dataset_version"] == dataset_version)
    ]
    if not rows:
        return []
    latest = max(rows, key=lambda r: r["timestamp"])["run_id"]
    return [dict(r) for r in rows if r["run_id"] == latest]
