"""Running chains: one item, or a batch with bounded concurrency where a failed item goes to the
dead-letter table and the batch continues. Every batch ends with a run summary (cost, tokens and
latency per step)."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mallard.llm.budget import CostEstimate
from mallard.llm.chains.dead_letters import dead_letter_row, write_dead_letters
from mallard.llm.chains.retrieval import EmbeddingRetriever
from mallard.llm.chains.spec import (
    Chain,
    Corpus,
    FunctionStep,
    Parallel,
    PromptStep,
    RetrieveStep,
    Step,
    resolve,
)
from mallard.llm.errors import (
    BudgetExceededError,
    ChainError,
    PromptError,
)

NOT_RETRIED = (BudgetExceededError, PromptError, ChainError)


@dataclass
class StepResult:
    step: str
    status: str = "ok"
    output: Any = None
    latency_ms: float = 0.0
    attempts: int = 0
    cost_usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache: str = ""
    endpoint: str = ""
    prompt_version: int = 0
    error: str = ""
    exception: BaseException | None = field(default=None, repr=False)


@dataclass
class ItemResult:
    index: int
    item_id: str
    inputs: dict[str, Any]
    status: str = "ok"
    output: Any = None
    steps: dict[str, StepResult] = field(default_factory=dict)
    failed_step: str = ""
    error: str = ""
    latency_ms: float = 0.0

    @property
    def cost_usd(self) -> float:
        return sum(s.cost_usd for s in self.steps.values())


@dataclass
class StepSummary:
    step: str
    ok: int
    failed: int
    latency_p50_ms: float
    latency_p95_ms: float
    latency_total_ms: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    cache_hits: int


@dataclass
class RunSummary:
    chain: str
    run_id: str
    items: int
    ok: int
    failed: int
    wall_s: float
    cost_usd: float
    prompt_tokens: int
    completion_tokens: int
    steps: list[StepSummary]
    dead_letters: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in self.__dict__.items() if k != "steps"},
            "steps": [s.__dict__ for s in self.steps],
        }

    def __str__(self) -> str:
        lines = [
            f"chain {self.chain} run {self.run_id}: {self.ok}/{self.items} ok, {self.failed} failed "
            f"({self.dead_letters} dead-lettered) in {self.wall_s:.1f} s; cost ${self.cost_usd:.6f}, "
            f"tokens {self.prompt_tokens:,} in / {self.completion_tokens:,} out",
            f"  {'step':16} {'ok':>4} {'fail':>4} {'p50 ms':>9} {'p95 ms':>9} {'tokens in/out':>15} {'cost $':>10} {'cached':>6}",
        ]
        for s in self.steps:
            lines.append(
                f"  {s.step:16} {s.ok:>4} {s.failed:>4} {s.latency_p50_ms:>9.1f} {s.latency_p95_ms:>9.1f} "
                f"{f'{s.prompt_tokens}/{s.completion_tokens}':>15} {s.cost_usd:>10.6f} {s.cache_hits:>6}"
            )
        return "\n".join(lines)


@dataclass
class BatchResult:
    chain: str
    run_id: str
    items: list[ItemResult]
    summary: RunSummary

    @property
    def failed(self) -> list[ItemResult]:
        return [i for i in self.items if i.status != "ok"]


@dataclass
class ChainCostEstimate:
    chain: str
    items: int
    steps: dict[str, CostEstimate]

    @property
    def worst_case_usd(self) -> float:
        return sum(e.worst_case_usd for e in self.steps.values())

    @property
    def prompt_cost_usd(self) -> float:
        return sum(e.prompt_cost_usd for e in self.steps.values())

    @property
    def fits_budget(self) -> bool:
        remaining = [
            e.remaining_budget_usd
            for e in self.steps.values()
            if e.remaining_budget_usd is not None
        ]
        return not remaining or self.worst_case_usd <= min(remaining) + 1e-12

    def __str__(self) -> str:
        return (
            f"chain {self.chain}: {self.items} items, at most ${self.worst_case_usd:.6f} "
            f"(prompts alone ~${self.prompt_cost_usd:.6f} with worst-case stand-ins for earlier outputs)"
            + "".join(f"\n  {name}: {est}" for name, est in self.steps.items())
        )


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


class ChainRunner:
    """Runs declared chains with an LLMClient, a PromptRegistry and retrievers over corpora."""

    def __init__(
        self,
        client: Any,
        registry: Any,
        *,
        corpora: Iterable[Corpus] = (),
        settings: Any = None,
        retrievers: Mapping[str, Any] | None = None,
        default_endpoint: str | None = None,
        dead_letter_path: Path | str | None = None,
        seed: int | None = None,
    ):
        self.client = client
        self.registry = registry
        self.settings = settings or client.settings
        cache_dir = Path(self.settings.home) / "llm" / "index"
        self.retrievers: dict[str, Any] = {
            c.name: EmbeddingRetriever(c, cache_dir=cache_dir) for c in corpora
        }
        self.retrievers.update(retrievers or {})
        self.default_endpoint = default_endpoint
        self.dead_letter_path = (
            Path(dead_letter_path)
            if dead_letter_path
            else Path(self.settings.lake_dir) / "llm_dead_letters"
        )
        self._rng = random.Random(seed)

    # One item ----------------------------------------------------------------------------------
    async def arun_item(
        self,
        chain: Chain,
        item: Mapping[str, Any],
        *,
        index: int = 0,
        run_id: str = "",
        user_id: str = "",
        labels: Mapping[str, str] | None = None,
        endpoints: Mapping[str, str] | None = None,
    ) -> ItemResult:
        """Run one item; never raises: a failure is recorded in the result (status "failed")."""
        started = time.perf_counter()
        item_id = str(item.get("id") or item.get("question_id") or index)
        inputs = {k: item[k] for k in chain.inputs if k in item}
        result = ItemResult(index=index, item_id=item_id, inputs=inputs)
        missing = [k for k in chain.inputs if k not in item]
        if missing:
            result.status, result.failed_step = "failed", "inputs"
            result.error = f"ChainError: item {item_id} lacks input(s) {missing}"
            return result
        scope: dict[str, Any] = {"inputs": inputs, "steps": {}}
        context = {
            "chain": chain,
            "run_id": run_id,
            "user_id": user_id,
            "item_id": item_id,
            "labels": labels or {},
            "endpoints": endpoints or {},
        }
        for entry in chain.steps:
            group = entry.steps if isinstance(entry, Parallel) else (entry,)
            outcomes = await asyncio.gather(
                *(self._run_step(step, scope, context) for step in group)
            )
            for step_result in outcomes:
                result.steps[step_result.step] = step_result
                if step_result.status == "ok":
                    scope["steps"][step_result.step] = {"output": step_result.output}
            failed = next((s for s in outcomes if s.status != "ok"), None)
            if failed is not None:
                result.status, result.failed_step, result.error = (
                    "failed",
                    failed.step,
                    failed.error,
                )
                break
            if isinstance(entry, Parallel):
                scope["steps"][entry.name] = {"output": {s.step: s.output for s in outcomes}}
        if result.status == "ok":
            try:
                result.output = resolve(chain.output_expression, scope, step="output")
            except ChainError as exc:
                result.status, result.failed_step, result.error = (
                    "failed",
                    "output",
                    f"ChainError: {exc}",
                )
        result.latency_ms = (time.perf_counter() - started) * 1000
        return result

    async def _run_step(
        self, step: Step, scope: dict[str, Any], context: dict[str, Any]
    ) -> StepResult:
        policy = step.policy
        result = StepResult(step=step.name)
        started = time.perf_counter()
        for attempt in range(1, policy.max_attempts + 1):
            result.attempts = attempt
            try:
                work = self._execute(step, scope, context, result)
                if policy.timeout_s is not None:
                    await asyncio.wait_for(work, policy.timeout_s)
                else:
                    await work
                result.status, result.error, result.exception = "ok", "", None
                break
            except Exception as exc:  # noqa: BLE001 - a step failure is data, not a crash
                if isinstance(exc, TimeoutError | asyncio.TimeoutError):
                    exc = ChainError(
                        f"step {step.name!r} timed out after {policy.timeout_s:g} s", step=step.name
                    )
                    retryable = True
                else:
                    retryable = not isinstance(exc, NOT_RETRIED)
                result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"
                result.exception = exc
                if not retryable or attempt == policy.max_attempts:
                    break
                ceiling = min(policy.max_backoff_s, policy.backoff_s * 2 ** (attempt - 1))
                await asyncio.sleep(self._rng.uniform(0, ceiling))
        result.latency_ms = (time.perf_counter() - started) * 1000
        return result

    async def _execute(
        self, step: Step, scope: dict[str, Any], context: dict[str, Any], result: StepResult
    ) -> None:
        if isinstance(step, RetrieveStep):
            retriever = self.retrievers.get(step.corpus)
            if retriever is None:
                raise ChainError(
                    f"step {step.name!r}: no corpus named {step.corpus!r}; known: {sorted(self.retrievers)}"
                )
            query = resolve(step.query, scope, step=step.name)
            result.output = await asyncio.to_thread(
                retriever.retrieve, str(query), step.k, step.max_chars
            )
        elif isinstance(step, PromptStep):
            await self._execute_prompt(step, scope, context, result)
        elif isinstance(step, FunctionStep):
            arguments = resolve(dict(step.arguments), scope, step=step.name)
            value = step.fn(**arguments)
            if asyncio.iscoroutine(value):
                value = await value
            result.output = value
        else:
            raise ChainError(f"unknown step type {type(step).__name__}")

    def _prompt_call(
        self, step: PromptStep, scope: dict[str, Any], context: dict[str, Any]
    ) -> tuple[Any, str, list[dict[str, str]], dict[str, Any]]:
        label = context["labels"].get(step.name, step.label)
        version = self.registry.get(step.prompt, label)
        variables = resolve(dict(step.variables), scope, step=step.name)
        messages = version.render(variables)
        endpoint = (
            context["endpoints"].get(step.name)
            or step.endpoint
            or version.endpoint
            or self.default_endpoint
        )
        if not endpoint:
            raise ChainError(
                f"step {step.name!r}: prompt {step.prompt!r} v{version.version} names no endpoint",
                step=step.name,
            )
        from mallard.llm.endpoints import ALLOWED_PARAMS

        params = {k: v for k, v in {**version.params, **step.params}.items() if k in ALLOWED_PARAMS}
        return version, endpoint, messages, params

    async def _execute_prompt(
        self, step: PromptStep, scope: dict[str, Any], context: dict[str, Any], result: StepResult
    ) -> None:
        version, endpoint, messages, params = self._prompt_call(step, scope, context)
        retrieved: dict[str, Any] = {}
        if step.retrieval:
            found = scope["steps"][step.retrieval]["output"]
            retrieved = {
                "retrieved_ids": list(found.get("ids", [])),
                "retrieved_text": found.get("context", ""),
            }
        trace_input = (
            str(resolve(step.trace_input, scope, step=step.name)) if step.trace_input else ""
        )
        reply = await self.client.acomplete(
            endpoint,
            messages,
            schema=dict(step.output_schema) if step.output_schema else None,
            timeout_s=step.policy.timeout_s,
            run_id=context["run_id"],
            user_id=context["user_id"],
            session_id=context["item_id"],
            prompt_name=version.name,
            prompt_version=version.version,
            trace_input=trace_input,
            attributes={"chain": context["chain"].name, "step": step.name, "label": version.label},
            **retrieved,
            **params,
        )
        result.output = reply.parsed if step.output_schema else reply.text
        result.cost_usd += reply.cost_usd
        result.prompt_tokens += reply.prompt_tokens
        result.completion_tokens += reply.completion_tokens
        result.cache, result.endpoint, result.prompt_version = (
            reply.cache,
            reply.endpoint,
            version.version,
        )

    # Batches ---------------------------------------------------------------------------------
    async def arun_batch(
        self,
        chain: Chain,
        items: Sequence[Mapping[str, Any]],
        *,
        concurrency: int = 4,
        run_id: str | None = None,
        user_id: str = "",
        labels: Mapping[str, str] | None = None,
        endpoints: Mapping[str, str] | None = None,
    ) -> BatchResult:
        run_id = run_id or self.client.run_id or f"{chain.name}-{uuid.uuid4().hex[:8]}"
        gate = asyncio.Semaphore(concurrency)
        started = time.perf_counter()

        async def one(index: int, item: Mapping[str, Any]) -> ItemResult:
            async with gate:
                return await self.arun_item(
                    chain,
                    item,
                    index=index,
                    run_id=run_id,
                    user_id=user_id,
                    labels=labels,
                    endpoints=endpoints,
                )

        results = list(await asyncio.gather(*(one(i, item) for i, item in enumerate(items))))
        wall = time.perf_counter() - started
        rows = []
        for item in results:
            if item.status == "ok":
                continue
            step = item.steps.get(item.failed_step)
            error = (step.exception if step else None) or ChainError(item.error)
            completed = {name: s.output for name, s in item.steps.items() if s.status == "ok"}
            rows.append(
                dead_letter_row(
                    chain=chain.name,
                    run_id=run_id,
                    item_index=item.index,
                    item_id=item.item_id,
                    failed_step=item.failed_step,
                    error=error,
                    attempts=step.attempts if step else 0,
                    inputs=item.inputs,
                    completed_steps=completed,
                )
            )
        written = await asyncio.to_thread(write_dead_letters, self.dead_letter_path, rows)
        await asyncio.to_thread(self.client.flush)
        return BatchResult(
            chain.name, run_id, results, self._summary(chain, run_id, results, wall, written)
        )

    def run_batch(
        self, chain: Chain, items: Sequence[Mapping[str, Any]], **kwargs: Any
    ) -> BatchResult:
        """Synchronous `arun_batch` (for asset bodies and the CLI), in its own event loop."""

        async def main() -> BatchResult:
            try:
                return await self.arun_batch(chain, items, **kwargs)
            finally:
                await self.client.aclose()

        return asyncio.run(main())

    def run(self, chain: Chain, item: Mapping[str, Any], **kwargs: Any) -> ItemResult:
        """Synchronous `arun_item`, in its own event loop."""

        async def main() -> ItemResult:
            try:
                return await self.arun_item(chain, item, **kwargs)
            finally:
                await self.client.aclose()

        return asyncio.run(main())

    @staticmethod
    def _summary(
        chain: Chain, run_id: str, results: list[ItemResult], wall: float, dead: int
    ) -> RunSummary:
        steps = []
        for step in chain.flat_steps():
            ran = [r.steps[step.name] for r in results if step.name in r.steps]
            latencies = [s.latency_ms for s in ran]
            steps.append(
                StepSummary(
                    step=step.name,
                    ok=sum(s.status == "ok" for s in ran),
                    failed=sum(s.status != "ok" for s in ran),
                    latency_p50_ms=round(statistics.median(latencies), 2) if latencies else 0.0,
                    latency_p95_ms=round(_percentile(latencies, 0.95), 2),
                    latency_total_ms=round(sum(latencies), 2),
                    prompt_tokens=sum(s.prompt_tokens for s in ran),
                    completion_tokens=sum(s.completion_tokens for s in ran),
                    cost_usd=sum(s.cost_usd for s in ran),
                    cache_hits=sum(s.cache in ("exact", "semantic") for s in ran),
                )
            )
        return RunSummary(
            chain=chain.name,
            run_id=run_id,
            items=len(results),
            ok=sum(r.status == "ok" for r in results),
            failed=sum(r.status != "ok" for r in results),
            wall_s=round(wall, 3),
            cost_usd=sum(s.cost_usd for s in steps),
            prompt_tokens=sum(s.prompt_tokens for s in steps),
            completion_tokens=sum(s.completion_tokens for s in steps),
            steps=steps,
            dead_letters=dead,
        )

    # Estimates -------------------------------------------------------------------------------
    def estimate_cost(
        self,
        chain: Chain,
        items: Sequence[Mapping[str, Any]],
        *,
        run_id: str = "",
        user_id: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> ChainCostEstimate:
        """Before a batch: render every prompt step with worst-case stand-ins for earlier outputs
        (k × max_chars of retrieved text, max_tokens × 4 characters of model output)."""
        per_step: dict[str, list[list[dict[str, str]]]] = {}
        endpoints: dict[str, str] = {}
        max_tokens: dict[str, int | None] = {}
        context = {"labels": labels or {}, "endpoints": {}}
        for item in items:
            scope: dict[str, Any] = {
                "inputs": {k: item.get(k, "") for k in chain.inputs},
                "steps": {},
            }
            for step in chain.flat_steps():
                if isinstance(step, RetrieveStep):
                    filler = "x" * (step.k * (step.max_chars + 80))
                    scope["steps"][step.name] = {
                        "output": {"docs": [], "ids": [], "context": filler}
                    }
                elif isinstance(step, PromptStep):
                    version, endpoint, messages, params = self._prompt_call(step, scope, context)
                    per_step.setdefault(step.name, []).append(messages)
                    endpoints[step.name] = endpoint
                    max_tokens[step.name] = params.get("max_tokens")
                    scope["steps"][step.name] = {
                        "output": "x" * 4 * int(params.get("max_tokens") or 512)
                    }
                else:
                    scope["steps"][step.name] = {"output": "x" * 800}
        steps = {
            name: self.client.estimate_cost(
                endpoints[name], batch, max_tokens=max_tokens[name], run_id=run_id, user_id=user_id
            )
            for name, batch in per_step.items()
        }
        return ChainCostEstimate(chain.name, len(items), steps)
