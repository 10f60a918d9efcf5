"""Prometheus metrics of the LLM client, in a CollectorRegistry of their own."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class LLMMetrics:
    """calls, errors, latency, tokens, cost, cache hits, retries, failovers, budget refusals, breaker state."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.calls = Counter(
            "mallard_llm_calls",
            "LLM calls answered, by endpoint, status and cache",
            ["endpoint", "status", "cache"],
            registry=r,
        )
        self.errors = Counter(
            "mallard_llm_errors",
            "Failed LLM attempts, by endpoint and error kind",
            ["endpoint", "kind"],
            registry=r,
        )
        self.latency = Histogram(
            "mallard_llm_latency_seconds",
            "Wall time of LLM calls",
            ["endpoint", "cache"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "mallard_llm_tokens",
            "Tokens used, by endpoint and kind (prompt, completion)",
            ["endpoint", "kind"],
            registry=r,
        )
        self.cost = Counter(
            "mallard_llm_cost_usd",
            "Cost in US dollars from declared prices",
            ["endpoint"],
            registry=r,
        )
        self.cache = Counter(
            "mallard_llm_cache_lookups",
            "Cache lookups, by cache kind and result",
            ["kind", "result"],
            registry=r,
        )
        self.retries = Counter("mallard_llm_retries", "Retried attempts", ["endpoint"], registry=r)
        self.failovers = Counter(
            "mallard_llm_failovers",
            "Calls passed on to a fallback endpoint",
            ["from_endpoint", "to_endpoint"],
            registry=r,
        )
        self.budget_refusals = Counter(
            "mallard_llm_budget_refusals", "Calls refused by a hard budget", ["scope"], registry=r
        )
        self.deduplicated = Counter(
            "mallard_llm_deduplicated",
            "Calls served by an identical call already in flight",
            ["endpoint"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "mallard_llm_breaker_state",
            "Circuit breaker state (0 closed, 1 half-open, 2 open)",
            ["endpoint"],
            registry=r,
        )

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric in this registry."""
        return generate_latest(self.registry)


_default: LLMMetrics | None = None
_default_lock = threading.Lock()


def default_metrics() -> LLMMetrics:
    """The process-wide metrics that `/metrics` serves; clients share it unless given their own."""
    global _default
    with _default_lock:
        if _default is None:
            _default = LLMMetrics()
        return _default
