"""The LLM layer: declared endpoints, a resilient client (local llama.cpp or OpenAI-compatible),
caches, budgets, traces and metrics, the prompt registry and prompt chains.

Importing this package is cheap; the client and its dependencies load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mallard.llm.endpoints import BreakerPolicy, Endpoint, Endpoints, Price, RateLimit, RetryPolicy
from mallard.llm.models import (
    QWEN25_CODER_05B,
    QWEN25_CODER_15B,
    SMOLLM2_135M,
    MultipartGGUF,
    PackagedGGUF,
)

if TYPE_CHECKING:
    from mallard.llm.budget import Budgets
    from mallard.llm.client import LLMClient, LLMResponse

__all__ = [
    "BreakerPolicy",
    "Budgets",
    "Endpoint",
    "Endpoints",
    "LLMClient",
    "LLMResponse",
    "MultipartGGUF",
    "PackagedGGUF",
    "Price",
    "QWEN25_CODER_05B",
    "QWEN25_CODER_15B",
    "RateLimit",
    "RetryPolicy",
    "SMOLLM2_135M",
]

_LAZY = {
    "LLMClient": "mallard.llm.client",
    "LLMResponse": "mallard.llm.client",
    "Budgets": "mallard.llm.budget",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mallard.llm' has no attribute {name!r}")
