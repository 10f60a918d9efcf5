"""Helpers shared by the LLM tests (a module with a unique name, importable next to conftest)."""

from __future__ import annotations

from typing import Any

from mallard.llm.endpoints import BreakerPolicy, Endpoint, RetryPolicy
from mallard.llm.metrics import LLMMetrics
from mallard.llm.testing import FakeOpenAIServer

FAST_RETRY = RetryPolicy(max_retries=3, base_delay_s=0.01, max_delay_s=0.05, max_retry_after_s=2.0)


def remote(name: str, srv: FakeOpenAIServer | str, **overrides: Any) -> Endpoint:
    base_url = srv if isinstance(srv, str) else srv.base_url
    options: dict[str, Any] = {
        "provider": "openai-compatible",
        "model": "fake-model",
        "base_url": base_url,
        "timeout_s": 0.3,
        "retry": FAST_RETRY,
        "breaker": BreakerPolicy(failure_threshold=50, reset_timeout_s=0.2),
        "params": {"max_tokens": 50},
        "max_concurrency": 8,
    }
    options.update(overrides)
    return Endpoint(name=name, **options)


def metric_value(metrics: LLMMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def run_closing(client, make_coroutine):
    """asyncio.run a coroutine, closing the client's HTTP connections before the loop ends."""
    import asyncio

    async def main():
        try:
            return await make_coroutine()
        finally:
            await client.aclose()

    return asyncio.run(main())
