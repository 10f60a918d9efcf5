"""The LLM client: one call path for every provider, sync and async.

    client = LLMClient(Endpoints(ENDPOINTS))
    reply = client.complete("smollm2-local", "Say hi", user_id="u1")
    data = client.complete("judge", messages, schema={"type": "object", ...}).parsed
    replies = client.complete("judge", messages, repeat=5)        # skips caches, measures variance
    reply = await client.acomplete("smollm2-local", "Say hi")

Order of one call: exact cache → semantic cache (if enabled) → join an identical call in flight →
budget reservation (worst case over the endpoint and its fallbacks) → for each endpoint in
[endpoint, *fallbacks]: circuit breaker → rate limit → concurrency slot → provider call, retried on
429/5xx/timeouts with full-jitter backoff honouring Retry-After → structured-output validation with
one repair attempt → cache store → trace row and metrics.

That order is written once, as generators that yield the I/O they need (`_Chat`, `_Sleep`, `_Slot`,
`_Join`) and get its result or exception sent back; `complete` drives them with blocking calls,
`acomplete` with awaits, so both make the same decisions.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import threading
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mallard.llm.budget import BudgetLedger, Budgets, CostEstimate, Reservation, estimate_tokens
from mallard.llm.cache import ExactCache, SemanticCache, canonical_key
from mallard.llm.endpoints import ALLOWED_PARAMS, Endpoint, Endpoints
from mallard.llm.errors import (
    AllEndpointsFailedError,
    BudgetExceededError,
    CircuitOpenError,
    ProviderError,
    StructuredOutputError,
    TransientError,
)
from mallard.llm.metrics import LLMMetrics, default_metrics
from mallard.llm.providers import (
    LocalProvider,
    OpenAICompatibleProvider,
    ProviderResult,
    with_schema_instruction,
)
from mallard.llm.resilience import (
    BREAKER_STATE_VALUE,
    OPEN,
    CircuitBreaker,
    ConcurrencyLimiter,
    TokenBucket,
    backoff_delay,
)
from mallard.llm.structured import REPAIR_OVERHEAD_TOKENS, OutputSpec, repair_messages
from mallard.llm.tracing import TraceRecorder, new_trace_id, trace_row
from mallard.traces.store import trace_store

Messages = str | Sequence[dict[str, Any]]


@dataclass(frozen=True)
class Attempt:
    """One provider call: `attempt` counts from 1 per endpoint (and per repair), `outcome` is "ok"
    or the error's kind, `delay_s` the backoff slept before the next try (None: no retry)."""

    endpoint: str
    attempt: int
    outcome: str
    delay_s: float | None = None


@dataclass
class LLMResponse:
    """One answered call. Cache hits and de-duplicated calls cost nothing and use no tokens;
    `attempt_log` lists the provider calls behind it (empty for them)."""

    text: str
    endpoint: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    cache: str = "miss"
    parsed: Any = None
    attempts: int = 0
    trace_id: str = ""
    finish_reason: str = ""
    deduplicated: bool = False
    similarity: float | None = None
    endpoints_tried: list[str] = field(default_factory=list)
    attempt_log: list[Attempt] = field(default_factory=list)
    logprobs: list[dict[str, Any]] | None = None
    """With `complete(..., logprobs=k)` and an endpoint that returns them: per generated token
    {"token", "logprob", "top_logprobs": [{"token", "logprob"}, …k]}; None otherwise."""

    def cache_record(self) -> dict[str, Any]:
        record = {
            "text": self.text,
            "endpoint": self.endpoint,
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "finish_reason": self.finish_reason,
        }
        if self.logprobs is not None:
            record["logprobs"] = self.logprobs
        return record


@dataclass
class _Usage:
    """What one client call consumed across attempts, repairs and endpoints."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    attempts: int = 0
    endpoints: list[str] = field(default_factory=list)
    log: list[Attempt] = field(default_factory=list)

    def add(self, endpoint: Endpoint, result: ProviderResult) -> None:
        self.prompt_tokens += result.prompt_tokens
        self.completion_tokens += result.completion_tokens
        self.cost_usd += endpoint.price.cost(result.prompt_tokens, result.completion_tokens)


@dataclass
class _Request:
    endpoint: str
    messages: list[dict[str, Any]]
    params: dict[str, Any]
    spec: OutputSpec | None
    timeout_s: float | None
    key: str
    user_id: str = ""
    session_id: str = ""
    run_id: str = ""
    prompt_name: str = ""
    prompt_version: int = 0
    retrieved_ids: list[str] = field(default_factory=list)
    retrieved_text: str = ""
    trace_input: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    semantic: bool = False

    @property
    def schema(self) -> dict[str, Any] | None:
        return self.spec.schema if self.spec is not None else None

    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return str(message.get("content") or "")
        return ""


@dataclass(frozen=True)
class _Chat:
    """Effect: call `provider.chat(*args)` (or `achat`); the result or ProviderError comes back."""

    provider: Any
    args: tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any] | None, float]


@dataclass(frozen=True)
class _Sleep:
    seconds: float


@dataclass(frozen=True)
class _Slot:
    """Effect: wait for a concurrency slot (the policy releases it)."""

    limiter: ConcurrencyLimiter


@dataclass(frozen=True)
class _Join:
    """Effect: the response of an identical call in flight, or a leader handle for this call."""

    key: str


_Effect = _Chat | _Sleep | _Slot | _Join
_Policy = Generator[_Effect, Any, LLMResponse]


@dataclass
class _ThreadLeader:
    """The first of identical calls in flight; threads that joined it wait on `future`."""

    future: concurrent.futures.Future[LLMResponse]
    release: Callable[[], object]

    def succeed(self, response: LLMResponse) -> None:
        self.future.set_result(response)

    def fail(self, exc: BaseException) -> None:
        self.future.set_exception(exc)


@dataclass
class _LoopLeader:
    """The same for coroutines of one event loop."""

    future: asyncio.Future[LLMResponse]
    release: Callable[[], object]

    def succeed(self, response: LLMResponse) -> None:
        self.future.set_result(response)

    def fail(self, exc: BaseException) -> None:
        if self.future.done():
            return
        if isinstance(exc, asyncio.CancelledError):
            self.future.cancel()
        else:
            self.future.set_exception(exc)
            self.future.exception()  # mark retrieved: there may be no follower to read it


class _EndpointState:
    def __init__(self, endpoint: Endpoint, provider: Any, metrics: LLMMetrics):
        self.endpoint = endpoint
        self.provider = provider
        gauge = metrics.breaker_state.labels(endpoint.name)
        gauge.set(0)
        self.breaker = CircuitBreaker(
            endpoint.breaker, on_change=lambda state: gauge.set(BREAKER_STATE_VALUE[state])
        )
        self.limiter = ConcurrencyLimiter(endpoint.max_concurrency)
        rate = endpoint.rate_limit
        self.bucket = (
            TokenBucket(rate.requests_per_second, rate.burst) if rate is not None else None
        )


class LLMClient:
    """Resilient, cached, budgeted, traced calls to declared endpoints."""

    def __init__(
        self,
        endpoints: Endpoints | Iterable[Endpoint],
        *,
        settings: Any = None,
        exact_cache: ExactCache | bool = True,
        semantic_cache: SemanticCache | bool = True,
        semantic_threshold: float = 0.95,
        budgets: Budgets | None = None,
        budget_ledger: BudgetLedger | None = None,
        traces: TraceRecorder | bool = True,
        metrics: LLMMetrics | None = None,
        run_id: str = "",
        seed: int | None = None,
    ):
        if settings is None:
            from mallard.config import get_settings

            settings = get_settings()
        self.settings = settings
        self.endpoints = endpoints if isinstance(endpoints, Endpoints) else Endpoints(endpoints)
        llm_home = Path(settings.home) / "llm"
        self.exact_cache = (
            ExactCache(llm_home / "cache.sqlite")
            if exact_cache is True
            # An empty cache is falsy (it has a length): test the type, not the truth.
            else (exact_cache if isinstance(exact_cache, ExactCache) else None)
        )
        self._semantic: SemanticCache | None = None
        self._semantic_setting = semantic_cache
        self._semantic_threshold = semantic_threshold
        self.budgets = budgets or Budgets()
        if budget_ledger is None and self.budgets.any:
            budget_ledger = BudgetLedger(self.budgets, llm_home / "budget.sqlite")
        self.ledger = budget_ledger
        self.traces = (
            trace_store(settings).recorder()
            if traces is True
            else (traces if isinstance(traces, TraceRecorder) else None)
        )
        self._owns_traces = traces is True
        self.metrics = metrics or default_metrics()
        self.run_id = run_id
        self._rng = random.Random(seed)
        self._states: dict[str, _EndpointState] = {}
        self._states_lock = threading.Lock()
        self._inflight: dict[str, concurrent.futures.Future[LLMResponse]] = {}
        self._ainflight: dict[tuple[int, str], asyncio.Future[LLMResponse]] = {}
        self._inflight_lock = threading.Lock()
        self._background = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="mallard-llm-cache"
        )

    # Setup ------------------------------------------------------------------------------------
    @property
    def semantic_cache(self) -> SemanticCache | None:
        if self._semantic is None and self._semantic_setting:
            if isinstance(self._semantic_setting, SemanticCache):
                self._semantic = self._semantic_setting
            else:
                path = Path(self.settings.home) / "llm" / "semantic_cache.sqlite"
                self._semantic = SemanticCache(path, threshold=self._semantic_threshold)
        return self._semantic

    def state(self, name: str) -> _EndpointState:
        state = self._states.get(name)
        if state is None:
            with self._states_lock:
                state = self._states.get(name)
                if state is None:
                    endpoint = self.endpoints[name]
                    if endpoint.is_local:
                        provider: Any = LocalProvider(
                            endpoint, self.settings.llm_threads, Path(self.settings.models_dir)
                        )
                    else:
                        provider = OpenAICompatibleProvider(endpoint)
                    state = self._states[name] = _EndpointState(endpoint, provider, self.metrics)
        return state

    def breaker_state(self, name: str) -> str:
        return self.state(name).breaker.state

    def _chain(self, name: str) -> list[_EndpointState]:
        return [self.state(e.name) for e in self.endpoints.chain(name)]

    def _request(
        self,
        endpoint: str,
        messages: Messages,
        schema: Any,
        timeout_s: float | None,
        semantic_cache: bool | None,
        params: dict[str, Any],
        meta: dict[str, Any],
    ) -> _Request:
        ep = self.endpoints[endpoint]
        params = dict(params)
        logprobs = params.pop("logprobs", None)
        unknown = set(params) - ALLOWED_PARAMS
        if unknown:
            raise TypeError(
                f"unknown LLM parameter(s) {sorted(unknown)}; supported: {sorted(ALLOWED_PARAMS)}"
            )
        if isinstance(messages, str):
            msgs = [{"role": "user", "content": messages}]
        else:
            msgs = [dict(m) for m in messages]
        merged = {**ep.params, **{k: v for k, v in params.items() if v is not None}}
        if logprobs is not None:
            if isinstance(logprobs, bool) or not isinstance(logprobs, int) or logprobs < 0:
                raise TypeError(f"logprobs must be a number of alternatives >= 0, got {logprobs!r}")
            # part of the cache key: a cached reply without log-probabilities cannot answer
            merged.update({"logprobs": True, "top_logprobs": logprobs})
        spec = OutputSpec(schema) if schema is not None else None
        key = canonical_key(ep.name, ep.model, merged, spec.key if spec else None, msgs)
        semantic = ep.semantic_cache if semantic_cache is None else semantic_cache
        attributes = dict(meta.pop("attributes", None) or {})
        request = _Request(
            endpoint=ep.name,
            messages=msgs,
            params=merged,
            spec=spec,
            timeout_s=timeout_s,
            key=key,
            semantic=bool(semantic) and bool(self._semantic_setting),
            attributes=attributes,
            **meta,
        )
        if not request.run_id:
            request.run_id = self.run_id
        return request

    # Public API -------------------------------------------------------------------------------
    def complete(
        self,
        endpoint: str,
        messages: Messages,
        *,
        schema: Any = None,
        cache: bool = True,
        semantic_cache: bool | None = None,
        dedupe: bool = True,
        repeat: int | None = None,
        timeout_s: float | None = None,
        user_id: str = "",
        session_id: str = "",
        run_id: str = "",
        prompt_name: str = "",
        prompt_version: int = 0,
        retrieved_ids: Sequence[str] = (),
        retrieved_text: str = "",
        trace_input: str = "",
        attributes: dict[str, Any] | None = None,
        **params: Any,
    ) -> Any:
        """One call (an LLMResponse), or with `repeat=N` a list of N fresh calls that skip caches and
        de-duplication. `schema` (JSON schema dict or pydantic model) fills `.parsed` with a validated value."""
        policies = self._policies(
            endpoint,
            messages,
            schema,
            cache,
            semantic_cache,
            dedupe,
            repeat,
            timeout_s,
            params,
            user_id=user_id,
            session_id=session_id,
            run_id=run_id,
            prompt_name=prompt_name,
            prompt_version=prompt_version,
            retrieved_ids=list(retrieved_ids),
            retrieved_text=retrieved_text,
            trace_input=trace_input,
            attributes=attributes,
        )
        if repeat is None:
            return self._drive(policies[0])
        return [self._drive(policy) for policy in policies]

    async def acomplete(
        self,
        endpoint: str,
        messages: Messages,
        *,
        schema: Any = None,
        cache: bool = True,
        semantic_cache: bool | None = None,
        dedupe: bool = True,
        repeat: int | None = None,
        timeout_s: float | None = None,
        user_id: str = "",
        session_id: str = "",
        run_id: str = "",
        prompt_name: str = "",
        prompt_version: int = 0,
        retrieved_ids: Sequence[str] = (),
        retrieved_text: str = "",
        trace_input: str = "",
        attributes: dict[str, Any] | None = None,
        **params: Any,
    ) -> Any:
        """The async twin of `complete` (repeats run concurrently)."""
        policies = self._policies(
            endpoint,
            messages,
            schema,
            cache,
            semantic_cache,
            dedupe,
            repeat,
            timeout_s,
            params,
            user_id=user_id,
            session_id=session_id,
            run_id=run_id,
            prompt_name=prompt_name,
            prompt_version=prompt_version,
            retrieved_ids=list(retrieved_ids),
            retrieved_text=retrieved_text,
            trace_input=trace_input,
            attributes=attributes,
        )
        if repeat is None:
            return await self._adrive(policies[0])
        return list(await asyncio.gather(*(self._adrive(policy) for policy in policies)))

    def _policies(
        self,
        endpoint: str,
        messages: Messages,
        schema: Any,
        cache: bool,
        semantic_cache: bool | None,
        dedupe: bool,
        repeat: int | None,
        timeout_s: float | None,
        params: dict[str, Any],
        **meta: Any,
    ) -> list[_Policy]:
        request = self._request(endpoint, messages, schema, timeout_s, semantic_cache, params, meta)
        if repeat is None:
            return [self._policy(request, use_cache=cache, dedupe=dedupe)]
        if repeat < 1:
            raise ValueError(f"repeat must be >= 1, got {repeat}")
        return [
            self._policy(request, use_cache=False, dedupe=False, repeat_index=i)
            for i in range(repeat)
        ]

    def estimate_cost(
        self,
        endpoint: str,
        batch: Iterable[Messages],
        *,
        max_tokens: int | None = None,
        schema: Any = None,
        run_id: str = "",
        user_id: str = "",
    ) -> CostEstimate:
        """Before a batch starts: estimated prompt tokens and the cost range over the endpoint and its
        fallbacks (the most expensive one is assumed), against the budget that is left."""
        chain = self._chain(endpoint)
        calls = prompt_tokens = completion_tokens = 0
        low = high = 0.0
        for messages in batch:
            params = {"max_tokens": max_tokens} if max_tokens is not None else {}
            request = self._request(
                endpoint,
                messages,
                schema,
                None,
                False,
                params,
                {"run_id": run_id, "user_id": user_id},
            )
            worst = [self._worst_case(state, request) for state in chain]
            calls += 1
            prompt_tokens += worst[0][1]
            completion_tokens += worst[0][2]
            low += min(
                state.endpoint.price.cost(w[1], 0) for state, w in zip(chain, worst, strict=True)
            )
            high += max(w[0] for w in worst)
        remaining = self.ledger.remaining(run_id or self.run_id, user_id) if self.ledger else None
        return CostEstimate(endpoint, calls, prompt_tokens, completion_tokens, low, high, remaining)

    async def aclose(self) -> None:
        """Close the HTTP connections this event loop opened (call before the loop ends)."""
        for state in list(self._states.values()):
            closer = getattr(state.provider, "aclose", None)
            if closer is not None:
                await closer()

    def drain(self) -> None:
        """Wait until background work (semantic-cache vectors of earlier misses) is stored."""
        self._background.submit(lambda: None).result()

    def flush(self) -> int:
        """Write buffered trace rows now."""
        return self.traces.flush() if self.traces else 0

    def close(self) -> None:
        """Finish background work and write buffered traces (a recorder passed in stays open)."""
        self._background.shutdown(wait=True)
        if self.traces is not None:
            if self._owns_traces:
                self.traces.close()
            else:
                self.traces.flush()

    # Caches -----------------------------------------------------------------------------------
    def _semantic_scope(self, request: _Request) -> str:
        others = [m for m in request.messages if m is not self._last_user(request)]
        return canonical_key(
            request.endpoint, request.params, request.spec.key if request.spec else None, others
        )

    @staticmethod
    def _last_user(request: _Request) -> dict[str, Any] | None:
        return next((m for m in reversed(request.messages) if m.get("role") == "user"), None)

    def _cache_lookup(self, request: _Request) -> tuple[LLMResponse | None, Any]:
        """(hit, semantic vector computed on the way, for reuse when storing)."""
        if self.exact_cache is not None:
            record = self.exact_cache.get(request.key)
            self.metrics.cache.labels("exact", "hit" if record else "miss").inc()
            if record is not None:
                return self._from_cache(request, record, "exact", None), None
        vector = None
        semantic = self.semantic_cache if request.semantic else None
        if semantic is not None:
            scope = self._semantic_scope(request)
            if semantic.has_scope(scope):
                vector = semantic.embed(request.last_user_text())
                found = semantic.lookup(scope, request.last_user_text(), vector)
                self.metrics.cache.labels("semantic", "hit" if found else "miss").inc()
                if found is not None:
                    return self._from_cache(request, found[0], "semantic", found[1]), vector
            else:
                self.metrics.cache.labels("semantic", "miss").inc()
        return None, vector

    def _from_cache(
        self, request: _Request, record: dict[str, Any], kind: str, similarity: float | None
    ) -> LLMResponse | None:
        parsed = None
        if request.spec is not None:
            parsed, problems = request.spec.parse(record["text"])
            if problems:
                return None
        return LLMResponse(
            text=record["text"],
            endpoint=record.get("endpoint", request.endpoint),
            model=record.get("model", ""),
            cache=kind,
            parsed=parsed,
            finish_reason=record.get("finish_reason", ""),
            similarity=similarity,
            logprobs=record.get("logprobs"),
        )

    def _cache_store(self, request: _Request, response: LLMResponse, vector: Any) -> None:
        if self.exact_cache is not None:
            self.exact_cache.put(
                request.key, response.endpoint, response.model, response.cache_record()
            )
        semantic = self.semantic_cache if request.semantic else None
        if semantic is not None:
            scope, text = self._semantic_scope(request), request.last_user_text()
            if vector is not None:
                semantic.add(scope, text, response.cache_record(), vector)
            else:  # embedding costs ~3 ms: keep it off the caller's path
                self._background.submit(semantic.add, scope, text, response.cache_record())

    # Budgets ----------------------------------------------------------------------------------
    def _worst_case(self, state: _EndpointState, request: _Request) -> tuple[float, int, int]:
        endpoint = state.endpoint
        messages = with_schema_instruction(request.messages, request.schema)
        prompt = state.provider.count_tokens(messages) or estimate_tokens(messages)
        max_tokens = int(
            request.params.get("max_tokens") or max(1, endpoint.context_length - prompt)
        )
        usd = endpoint.price.cost(prompt, max_tokens)
        if request.spec is not None:  # one repair attempt may follow
            usd += endpoint.price.cost(prompt + max_tokens + REPAIR_OVERHEAD_TOKENS, max_tokens)
        return usd, prompt, max_tokens

    def _reserve(self, request: _Request, chain: list[_EndpointState]) -> Reservation:
        if self.ledger is None:
            return Reservation(None, [], 0.0)
        worst = [(self._worst_case(state, request), state.endpoint) for state in chain]
        (usd, prompt, max_tokens), endpoint = max(worst, key=lambda item: item[0][0])
        detail = (
            f"~{prompt:,} prompt tokens + {max_tokens:,} max_tokens at endpoint {endpoint.name!r} prices "
            f"${endpoint.price.input_per_million:g}/${endpoint.price.output_per_million:g} per million"
        )
        if request.spec is not None:
            detail += ", with one structured-output repair"
        try:
            return self.ledger.reserve(request.run_id, request.user_id, usd, detail)
        except BudgetExceededError as exc:
            self.metrics.budget_refusals.labels(exc.scope.split(" ")[0]).inc()
            raise

    # Drivers: the only code that differs between complete and acomplete ----------------------
    def _drive(self, policy: _Policy) -> LLMResponse:
        """Run a policy, doing the I/O it asks for with blocking calls."""
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                effect = policy.send(value) if error is None else policy.throw(error)
            except StopIteration as stop:
                return stop.value
            value = error = None
            try:
                if isinstance(effect, _Chat):
                    value = effect.provider.chat(*effect.args)
                elif isinstance(effect, _Sleep):
                    time.sleep(effect.seconds)
                elif isinstance(effect, _Slot):
                    effect.limiter.acquire()
                else:
                    value = self._join(effect.key)
            except BaseException as exc:  # thrown into the policy, whose finally blocks must run
                error = exc

    async def _adrive(self, policy: _Policy) -> LLMResponse:
        """Run a policy, awaiting the I/O it asks for."""
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                effect = policy.send(value) if error is None else policy.throw(error)
            except StopIteration as stop:
                return stop.value
            value = error = None
            try:
                if isinstance(effect, _Chat):
                    value = await effect.provider.achat(*effect.args)
                elif isinstance(effect, _Sleep):
                    await asyncio.sleep(effect.seconds)
                elif isinstance(effect, _Slot):
                    await effect.limiter.aacquire()
                else:
                    value = await self._ajoin(effect.key)
            except BaseException as exc:  # e.g. a cancellation: the policy releases what it holds
                error = exc

    def _join(self, key: str) -> LLMResponse | _ThreadLeader:
        with self._inflight_lock:
            leader = self._inflight.get(key)
            if leader is None:
                future = self._inflight[key] = concurrent.futures.Future()
                return _ThreadLeader(future, lambda: self._forget(key))
        return leader.result()

    def _forget(self, key: str) -> None:
        with self._inflight_lock:
            self._inflight.pop(key, None)

    async def _ajoin(self, key: str) -> LLMResponse | _LoopLeader:
        loop = asyncio.get_running_loop()
        slot = (id(loop), key)  # asyncio futures belong to one loop
        leader = self._ainflight.get(slot)
        if leader is None:
            future = self._ainflight[slot] = loop.create_future()
            return _LoopLeader(future, lambda: self._ainflight.pop(slot, None))
        return await asyncio.shield(leader)

    # The policy, written once -----------------------------------------------------------------
    def _policy(
        self, request: _Request, *, use_cache: bool, dedupe: bool, repeat_index: int | None = None
    ) -> _Policy:
        """One call: caches, joining an identical call in flight, `_call`, the trace row."""
        started = time.perf_counter()
        timestamp = datetime.now(UTC)
        usage = _Usage()
        leader: _ThreadLeader | _LoopLeader | None = None
        try:
            vector = None
            if use_cache:
                hit, vector = self._cache_lookup(request)
                if hit is not None:
                    return self._finish(request, hit, usage, started, timestamp, repeat_index)
            if dedupe:
                joined = yield _Join(request.key)
                if isinstance(joined, LLMResponse):
                    self.metrics.deduplicated.labels(request.endpoint).inc()
                    follower = replace(
                        joined,
                        cache="exact",
                        deduplicated=True,
                        prompt_tokens=0,
                        completion_tokens=0,
                        cost_usd=0.0,
                        attempts=0,
                        attempt_log=[],
                    )
                    return self._finish(request, follower, usage, started, timestamp, repeat_index)
                leader = joined
            try:
                response = yield from self._call(request, usage)
                if use_cache:
                    self._cache_store(request, response, vector)
            except BaseException as exc:
                if leader is not None:
                    leader.fail(exc)
                raise
            if leader is not None:
                leader.succeed(response)
            return self._finish(request, response, usage, started, timestamp, repeat_index)
        except Exception as exc:
            self._finish_error(request, exc, usage, started, timestamp, repeat_index)
            raise
        finally:
            if leader is not None:
                leader.release()

    def _call(self, request: _Request, usage: _Usage) -> Generator[_Effect, Any, LLMResponse]:
        chain = self._chain(request.endpoint)
        reservation = self._reserve(request, chain)
        try:
            result, state = yield from self._failover(request, chain, request.messages, usage)
            parsed = None
            if request.spec is not None:
                parsed, problems = request.spec.parse(result.text)
                if problems:
                    retry_messages = repair_messages(request.messages, result.text, problems)
                    result, state = yield from self._failover(
                        request, [state], retry_messages, usage
                    )
                    parsed, problems = request.spec.parse(result.text)
                    if problems:
                        raise StructuredOutputError(state.endpoint.name, result.text, problems)
            return self._response(result, state, usage, parsed)
        finally:
            reservation.settle(usage.cost_usd)

    def _failover(
        self,
        request: _Request,
        chain: list[_EndpointState],
        messages: list[dict[str, Any]],
        usage: _Usage,
    ) -> Generator[_Effect, Any, tuple[ProviderResult, _EndpointState]]:
        errors: list[BaseException] = []
        for index, state in enumerate(chain):
            if index:
                self.metrics.failovers.labels(
                    chain[index - 1].endpoint.name, state.endpoint.name
                ).inc()
            try:
                return (yield from self._attempts(request, state, messages, usage)), state
            except ProviderError as exc:
                errors.append(exc)
        raise AllEndpointsFailedError([s.endpoint.name for s in chain], errors)

    def _attempts(
        self,
        request: _Request,
        state: _EndpointState,
        messages: list[dict[str, Any]],
        usage: _Usage,
    ) -> Generator[_Effect, Any, ProviderResult]:
        endpoint = state.endpoint
        timeout = request.timeout_s or endpoint.timeout_s
        for attempt in range(endpoint.retry.max_retries + 1):
            self._admit(state)
            if state.bucket is not None:
                wait = state.bucket.reserve()
                if wait > 0:
                    yield _Sleep(wait)
            yield _Slot(state.limiter)
            usage.attempts += 1
            usage.endpoints.append(endpoint.name)
            try:
                result: ProviderResult = yield _Chat(
                    state.provider, (messages, request.params, request.schema, timeout)
                )
            except ProviderError as exc:
                usage.log.append(Attempt(endpoint.name, attempt + 1, exc.kind))
                error = self._failed(state, exc)
            else:
                state.breaker.record_success()
                usage.add(endpoint, result)
                usage.log.append(Attempt(endpoint.name, attempt + 1, "ok"))
                return result
            finally:
                state.limiter.release()
            delay = self._retry_delay(state, error, attempt)
            usage.log[-1] = replace(usage.log[-1], delay_s=delay)
            yield _Sleep(delay)
        raise AssertionError("unreachable")

    # Shared decisions -------------------------------------------------------------------------
    def _admit(self, state: _EndpointState) -> None:
        if not state.breaker.allow():
            self.metrics.errors.labels(state.endpoint.name, "circuit_open").inc()
            raise CircuitOpenError(
                state.endpoint.name,
                f"circuit breaker open (next probe after "
                f"{state.endpoint.breaker.reset_timeout_s:g} s); call not attempted",
            )

    def _failed(self, state: _EndpointState, exc: ProviderError) -> TransientError:
        self.metrics.errors.labels(state.endpoint.name, exc.kind).inc()
        if not exc.retryable:
            state.breaker.release_probe()
            raise exc
        state.breaker.record_failure()
        assert isinstance(exc, TransientError)
        return exc

    def _retry_delay(self, state: _EndpointState, error: TransientError, attempt: int) -> float:
        if attempt >= state.endpoint.retry.max_retries or state.breaker.state == OPEN:
            raise error
        self.metrics.retries.labels(state.endpoint.name).inc()
        return backoff_delay(state.endpoint.retry, attempt, error.retry_after, self._rng)

    def _response(
        self, result: ProviderResult, state: _EndpointState, usage: _Usage, parsed: Any
    ) -> LLMResponse:
        return LLMResponse(
            text=result.text,
            endpoint=state.endpoint.name,
            model=result.model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_usd=usage.cost_usd,
            parsed=parsed,
            attempts=usage.attempts,
            finish_reason=result.finish_reason,
            endpoints_tried=list(dict.fromkeys(usage.endpoints)),
            attempt_log=list(usage.log),
            logprobs=result.logprobs,
        )

    # Recording --------------------------------------------------------------------------------
    def _finish(
        self,
        request: _Request,
        response: LLMResponse,
        usage: _Usage,
        started: float,
        timestamp: datetime,
        repeat_index: int | None,
    ) -> LLMResponse:
        response.latency_ms = (time.perf_counter() - started) * 1000.0
        response.trace_id = new_trace_id()
        endpoint = response.endpoint
        m = self.metrics
        m.calls.labels(endpoint, "ok", response.cache).inc()
        m.latency.labels(endpoint, response.cache).observe(response.latency_ms / 1000.0)
        if response.prompt_tokens:
            m.tokens.labels(endpoint, "prompt").inc(response.prompt_tokens)
        if response.completion_tokens:
            m.tokens.labels(endpoint, "completion").inc(response.completion_tokens)
        if response.cost_usd:
            m.cost.labels(endpoint).inc(response.cost_usd)
        if self.traces is not None:
            attributes = dict(request.attributes)
            attributes["attempts"] = response.attempts
            if response.endpoints_tried and response.endpoints_tried != [endpoint]:
                attributes["endpoints_tried"] = response.endpoints_tried
            if response.deduplicated:
                attributes["deduplicated"] = True
            if response.similarity is not None:
                attributes["similarity"] = round(response.similarity, 4)
            if repeat_index is not None:
                attributes["repeat_index"] = repeat_index
            self.traces.record(
                self._row(
                    request,
                    timestamp,
                    response.trace_id,
                    endpoint=endpoint,
                    model=response.model,
                    output=response.text,
                    latency_ms=response.latency_ms,
                    prompt_tokens=response.prompt_tokens,
                    completion_tokens=response.completion_tokens,
                    cost_usd=response.cost_usd,
                    status="ok",
                    error="",
                    cache=response.cache,
                    attributes=attributes,
                )
            )
        return response

    def _finish_error(
        self,
        request: _Request,
        exc: Exception,
        usage: _Usage,
        started: float,
        timestamp: datetime,
        repeat_index: int | None,
    ) -> None:
        latency_ms = (time.perf_counter() - started) * 1000.0
        endpoint = usage.endpoints[-1] if usage.endpoints else request.endpoint
        m = self.metrics
        m.calls.labels(endpoint, "error", "miss").inc()
        m.latency.labels(endpoint, "miss").observe(latency_ms / 1000.0)
        if usage.prompt_tokens:
            m.tokens.labels(endpoint, "prompt").inc(usage.prompt_tokens)
        if usage.completion_tokens:
            m.tokens.labels(endpoint, "completion").inc(usage.completion_tokens)
        if usage.cost_usd:
            m.cost.labels(endpoint).inc(usage.cost_usd)
        if self.traces is not None:
            attributes = {
                **request.attributes,
                "attempts": usage.attempts,
                "endpoints_tried": list(dict.fromkeys(usage.endpoints)),
            }
            if repeat_index is not None:
                attributes["repeat_index"] = repeat_index
            self.traces.record(
                self._row(
                    request,
                    timestamp,
                    new_trace_id(),
                    endpoint=endpoint,
                    model=self.endpoints[endpoint].model,
                    output="",
                    latency_ms=latency_ms,
                    prompt_tokens=usage.prompt_tokens,
                    completion_tokens=usage.completion_tokens,
                    cost_usd=usage.cost_usd,
                    status="error",
                    error=f"{type(exc).__name__}: {exc}"[:2000],
                    cache="miss",
                    attributes=attributes,
                )
            )

    def _row(
        self, request: _Request, timestamp: datetime, trace_id: str, **values: Any
    ) -> dict[str, Any]:
        return trace_row(
            trace_id=trace_id,
            timestamp=timestamp,
            prompt_name=request.prompt_name,
            prompt_version=request.prompt_version,
            user_id=request.user_id,
            session_id=request.session_id,
            run_id=request.run_id,
            input=request.trace_input or request.last_user_text(),
            retrieved_ids=request.retrieved_ids,
            retrieved_text=request.retrieved_text,
            **values,
        )
