"""Mallard's Python SDK: prompts at run time from a Mallard server, with httpx as its only
dependency (no pandas, MLflow, PyCaret or Dagster; nothing else of `mallard` is imported).

    from mallard.sdk import MallardClient

    client = MallardClient("http://127.0.0.1:8000", api_key="mk_…", ttl_s=30,
                           cache_dir="~/.cache/my-app/prompts")
    prompt = client.get_prompt("support_assistant", label="live")
    messages = prompt.render(question="How do I cancel?", context="…")
    if prompt.fallback:
        log.warning(prompt.warning)   # the server failed: this is the last known good version

A prompt is cached for `ttl_s`; a stale entry is returned at once and refreshed in the
background (a conditional GET with the ETag: 304 while the label has not moved). When the
server fails (unreachable, a timeout, a 5xx or 429), the last known good version answers —
from memory, or from `cache_dir` in a new process — and the result says so (`fallback`,
`error`, `source="last_known_good"`).
"""

from mallard.sdk.prompts import (
    MallardClient,
    PromptError,
    PromptResult,
    PromptUnavailable,
    configure,
    get_prompt,
)

__all__ = [
    "MallardClient",
    "PromptError",
    "PromptResult",
    "PromptUnavailable",
    "configure",
    "get_prompt",
]
