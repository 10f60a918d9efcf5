"""Typed errors of the LLM layer: each says which endpoint (or budget, prompt, step) failed and why."""

from __future__ import annotations

from typing import Any


class LLMError(Exception):
    """Base class of every error the LLM layer raises."""


class EndpointConfigError(LLMError, ValueError):
    """An endpoint declaration is invalid; the message names the endpoint and the field."""

    def __init__(self, endpoint: str, field: str, problem: str):
        self.endpoint = endpoint
        self.field = field
        super().__init__(f"endpoint {endpoint!r}: field {field!r} {problem}")


class ModelFileError(LLMError):
    """A local model file could not be located, joined or verified."""


class ProviderError(LLMError):
    """A provider call failed. `retryable` errors are retried, then failed over."""

    retryable: bool = False
    kind: str = "provider"

    def __init__(self, endpoint: str, message: str, *, retry_after: float | None = None):
        self.endpoint = endpoint
        self.retry_after = retry_after
        super().__init__(f"endpoint {endpoint!r}: {message}")


class TransientError(ProviderError):
    """5xx, connection errors and unreadable responses: worth another try."""

    retryable = True
    kind = "server"


class RateLimitedError(TransientError):
    """HTTP 429; `retry_after` holds the server's Retry-After in seconds when it sent one."""

    kind = "rate_limited"


class CallTimeoutError(TransientError):
    """The call did not finish within the endpoint's timeout."""

    kind = "timeout"


class MalformedResponseError(TransientError):
    """The endpoint answered with something that is not a chat completion."""

    kind = "malformed"


class RequestRejectedError(ProviderError):
    """4xx other than 429 (bad request, auth, not found): retrying would not help."""

    kind = "rejected"


class CircuitOpenError(ProviderError):
    """The endpoint's circuit breaker is open; the call was not attempted."""

    kind = "circuit_open"


class AllEndpointsFailedError(LLMError):
    """The endpoint and every declared fallback failed; `errors` holds each endpoint's last error."""

    def __init__(self, endpoints: list[str], errors: list[BaseException]):
        self.endpoints = endpoints
        self.errors = errors
        detail = "; ".join(f"{type(e).__name__}: {e}" for e in errors)
        super().__init__(f"all endpoints failed ({', '.join(endpoints)}): {detail}")


class BudgetExceededError(LLMError):
    """A call was refused because its worst-case cost would cross a hard budget."""

    def __init__(
        self, scope: str, key: str, limit: float, spent: float, worst_case: float, detail: str
    ):
        self.scope = scope
        self.key = key
        self.limit = limit
        self.spent = spent
        self.worst_case = worst_case
        super().__init__(
            f"budget exceeded: {scope} budget {key!r} is ${limit:.6f}, ${spent:.6f} already spent or "
            f"reserved, and this call could cost up to ${worst_case:.6f} ({detail}); "
            "raise the budget or lower max_tokens"
        )


class StructuredOutputError(LLMError):
    """The reply did not parse or validate against the schema, even after one repair attempt."""

    def __init__(self, endpoint: str, raw: str, problems: list[str]):
        self.endpoint = endpoint
        self.raw = raw
        self.problems = problems
        super().__init__(
            f"endpoint {endpoint!r}: reply is not valid JSON for the schema after one repair "
            f"attempt: {'; '.join(problems)}; reply was {raw[:200]!r}"
        )


class PromptError(LLMError):
    """Prompt registry errors."""


class PromptNotFoundError(PromptError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class PromptRenderError(PromptError, ValueError):
    """A template was rendered with a missing or unexpected variable."""

    def __init__(self, prompt: str, version: int, missing: list[str], unexpected: list[str]):
        self.missing = missing
        self.unexpected = unexpected
        parts = []
        if missing:
            parts.append(f"missing variable(s) {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected variable(s) {', '.join(unexpected)}")
        super().__init__(f"prompt {prompt!r} v{version}: {' and '.join(parts)}")


class PromptStoreUnavailableError(PromptError):
    """The registry could not be read and no last-known-good copy exists."""


class ChainError(LLMError):
    """A chain declaration or step failed."""

    def __init__(self, message: str, *, step: str | None = None, cause: Any = None):
        self.step = step
        self.cause = cause
        super().__init__(message)
