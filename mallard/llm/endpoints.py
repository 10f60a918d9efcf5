"""LLM endpoint declarations: small typed objects a deployment writes in `catalog/llm.py`.

    Endpoint(
        name="smollm2-local",
        provider="local",
        model="SmolLM2-135M-Instruct",
        gguf=SMOLLM2_135M,
        params={"temperature": 0.0, "max_tokens": 256},
    )

Each declaration is checked when it is created; an error names the endpoint and the field.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, Literal

from mallard.llm.errors import EndpointConfigError
from mallard.llm.models import MultipartGGUF, PackagedGGUF

Provider = Literal["local", "openai-compatible"]
PROVIDERS = ("local", "openai-compatible")
STRUCTURED_MODES = ("json_schema", "json_object", "prompt")
ALLOWED_PARAMS = frozenset(
    {"temperature", "top_p", "max_tokens", "seed", "stop", "presence_penalty", "frequency_penalty"}
)
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def _check_number(
    endpoint: str,
    name: str,
    value: Any,
    *,
    minimum: float,
    strict: bool = False,
    integer: bool = False,
) -> None:
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise EndpointConfigError(endpoint, name, f"must be {kind}, got {value!r}")
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise EndpointConfigError(endpoint, name, f"must be {bound}, got {value!r}")


def _validate_section(endpoint: str, prefix: str, obj: Any) -> None:
    for spec in fields(obj):
        value = getattr(obj, spec.name)
        meta = spec.metadata
        if "minimum" in meta:
            _check_number(
                endpoint,
                f"{prefix}.{spec.name}",
                value,
                minimum=meta["minimum"],
                strict=meta.get("strict", False),
                integer=meta.get("integer", False),
            )


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input_per_million: float = field(default=0.0, metadata={"minimum": 0.0})
    output_per_million: float = field(default=0.0, metadata={"minimum": 0.0})

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.input_per_million + completion_tokens * self.output_per_million
        ) / 1e6


@dataclass(frozen=True)
class RetryPolicy:
    """Retries on 429/5xx/timeouts: sleep uniform(0, min(max_delay, base * 2**attempt)) (full jitter),
    but at least the server's Retry-After when it sends one (capped by max_retry_after_s)."""

    max_retries: int = field(default=3, metadata={"minimum": 0, "integer": True})
    base_delay_s: float = field(default=0.5, metadata={"minimum": 0.0})
    max_delay_s: float = field(default=20.0, metadata={"minimum": 0.0})
    max_retry_after_s: float = field(default=60.0, metadata={"minimum": 0.0})


@dataclass(frozen=True)
class BreakerPolicy:
    """Open after `failure_threshold` consecutive failures; after `reset_timeout_s` let one probe through."""

    failure_threshold: int = field(default=5, metadata={"minimum": 1, "integer": True})
    reset_timeout_s: float = field(default=30.0, metadata={"minimum": 0.0})


@dataclass(frozen=True)
class RateLimit:
    """Token bucket: `requests_per_second` sustained, up to `burst` at once."""

    requests_per_second: float = field(default=10.0, metadata={"minimum": 0.0, "strict": True})
    burst: int = field(default=1, metadata={"minimum": 1, "integer": True})


@dataclass(frozen=True)
class Endpoint:
    """One model behind one provider, with its prices, limits and fallbacks."""

    name: str
    provider: Provider
    model: str
    base_url: str | None = None
    api_key_env: str | None = None
    gguf: PackagedGGUF | MultipartGGUF | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    context_length: int = 4096
    price: Price = field(default_factory=Price)
    max_concurrency: int = 4
    rate_limit: RateLimit | None = None
    timeout_s: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    fallbacks: tuple[str, ...] = ()
    structured_output: Literal["json_schema", "json_object", "prompt"] = "json_schema"
    semantic_cache: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not _NAME.match(name):
            raise EndpointConfigError(
                str(name), "name", "must be lower-case letters, digits, '.', '_' or '-'"
            )
        if self.provider not in PROVIDERS:
            raise EndpointConfigError(
                name, "provider", f"must be one of {PROVIDERS}, got {self.provider!r}"
            )
        if not isinstance(self.model, str) or not self.model:
            raise EndpointConfigError(name, "model", "must be a non-empty model id")
        if self.provider == "openai-compatible":
            if not self.base_url or not str(self.base_url).startswith(("http://", "https://")):
                raise EndpointConfigError(
                    name,
                    "base_url",
                    f"must be an http(s) URL for an openai-compatible endpoint, got {self.base_url!r}",
                )
            if self.gguf is not None:
                raise EndpointConfigError(name, "gguf", "is only for provider 'local'")
        else:
            if not isinstance(self.gguf, PackagedGGUF | MultipartGGUF):
                raise EndpointConfigError(
                    name,
                    "gguf",
                    "is required for provider 'local' (a PackagedGGUF or MultipartGGUF)",
                )
            if self.base_url:
                raise EndpointConfigError(
                    name, "base_url", "is only for provider 'openai-compatible'"
                )
        if self.api_key_env is not None and not re.match(
            r"^[A-Za-z_][A-Za-z0-9_]*$", self.api_key_env
        ):
            raise EndpointConfigError(
                name,
                "api_key_env",
                f"must be an environment variable name, got {self.api_key_env!r}",
            )
        if not isinstance(self.params, Mapping):
            raise EndpointConfigError(name, "params", "must be a mapping")
        unknown = sorted(set(self.params) - ALLOWED_PARAMS)
        if unknown:
            raise EndpointConfigError(
                name,
                f"params.{unknown[0]}",
                f"is not a supported parameter (supported: {', '.join(sorted(ALLOWED_PARAMS))})",
            )
        for key, minimum in (
            ("temperature", 0.0),
            ("top_p", 0.0),
            ("presence_penalty", -2.0),
            ("frequency_penalty", -2.0),
        ):
            if key in self.params:
                _check_number(name, f"params.{key}", self.params[key], minimum=minimum)
        if "max_tokens" in self.params:
            _check_number(
                name, "params.max_tokens", self.params["max_tokens"], minimum=1, integer=True
            )
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        _check_number(name, "context_length", self.context_length, minimum=1, integer=True)
        if self.params.get("max_tokens", 0) >= self.context_length:
            raise EndpointConfigError(
                name, "params.max_tokens", f"must be < context_length ({self.context_length})"
            )
        _check_number(name, "max_concurrency", self.max_concurrency, minimum=1, integer=True)
        _check_number(name, "timeout_s", self.timeout_s, minimum=0.0, strict=True)
        for section, cls in (("price", Price), ("retry", RetryPolicy), ("breaker", BreakerPolicy)):
            value = getattr(self, section)
            if not isinstance(value, cls):
                raise EndpointConfigError(
                    name, section, f"must be a {cls.__name__}, got {type(value).__name__}"
                )
            _validate_section(name, section, value)
        if self.rate_limit is not None:
            if not isinstance(self.rate_limit, RateLimit):
                raise EndpointConfigError(name, "rate_limit", "must be a RateLimit or None")
            _validate_section(name, "rate_limit", self.rate_limit)
        if isinstance(self.fallbacks, str):
            raise EndpointConfigError(
                name, "fallbacks", "must be a list of endpoint names, not one string"
            )
        fallbacks = tuple(self.fallbacks)
        if name in fallbacks:
            raise EndpointConfigError(name, "fallbacks", "must not contain the endpoint itself")
        if len(set(fallbacks)) != len(fallbacks):
            raise EndpointConfigError(
                name, "fallbacks", f"lists an endpoint twice: {list(fallbacks)}"
            )
        object.__setattr__(self, "fallbacks", fallbacks)
        if self.structured_output not in STRUCTURED_MODES:
            raise EndpointConfigError(
                name, "structured_output", f"must be one of {STRUCTURED_MODES}"
            )

    @property
    def is_local(self) -> bool:
        return self.provider == "local"

    def api_key(self) -> str:
        """The API key from `api_key_env` (a placeholder for servers that need none)."""
        if not self.api_key_env:
            return "not-needed"
        value = os.environ.get(self.api_key_env)
        if not value:
            raise EndpointConfigError(
                self.name, "api_key_env", f"names ${self.api_key_env}, which is not set"
            )
        return value

    @property
    def licence(self) -> str:
        return self.gguf.licence if self.gguf is not None else ""


class Endpoints(Mapping[str, Endpoint]):
    """A validated set of endpoints: names unique, every fallback declared."""

    def __init__(self, endpoints: Iterable[Endpoint]):
        self._by_name: dict[str, Endpoint] = {}
        for endpoint in endpoints:
            if not isinstance(endpoint, Endpoint):
                raise TypeError(f"expected an Endpoint, got {endpoint!r}")
            if endpoint.name in self._by_name:
                raise EndpointConfigError(endpoint.name, "name", "is declared twice")
            self._by_name[endpoint.name] = endpoint
        for endpoint in self._by_name.values():
            for fallback in endpoint.fallbacks:
                if fallback not in self._by_name:
                    raise EndpointConfigError(
                        endpoint.name, "fallbacks", f"names {fallback!r}, which is not declared"
                    )

    def __getitem__(self, name: str) -> Endpoint:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(
                f"no endpoint named {name!r}; declared: {', '.join(self._by_name)}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def chain(self, name: str) -> list[Endpoint]:
        """The endpoint followed by its declared fallbacks, in order."""
        first = self[name]
        return [first, *(self[f] for f in first.fallbacks)]

    def routed(self, urls: Mapping[str, str]) -> Endpoints:
        """These endpoints with the named ones reached at another URL (a gateway, a proxy, a
        stand-in); names, models, prices, keys, limits and fallbacks stay as declared."""
        unknown = sorted(set(urls) - set(self._by_name))
        if unknown:
            raise KeyError(
                f"MALLARD_LLM_ENDPOINT_URLS names {', '.join(map(repr, unknown))}, which is not "
                f"declared; declared: {', '.join(self._by_name)}"
            )
        return Endpoints(
            [
                replace(e, base_url=urls[e.name], provider="openai-compatible", gguf=None)
                if e.name in urls
                else e
                for e in self._by_name.values()
            ]
        )

    def served_at(self, base_url: str, api_key_env: str | None = None) -> Endpoints:
        """These endpoints with every local model served by one OpenAI-compatible server instead.

        In production no model runs inside a Dagster step or an API worker: a llama.cpp server,
        vLLM or Ollama at `base_url` serves each local endpoint's model under its model id, and
        names, prices, limits and fallbacks stay as declared.
        """
        served = []
        for endpoint in self._by_name.values():
            if endpoint.is_local:
                endpoint = replace(
                    endpoint,
                    provider="openai-compatible",
                    base_url=base_url,
                    api_key_env=api_key_env,
                    gguf=None,
                    description=f"{endpoint.description} (served at {base_url})".strip(),
                )
            served.append(endpoint)
        return Endpoints(served)
