"""Providers: one chat call to one endpoint, mapped onto the LLM layer's typed errors.

`openai-compatible` uses the official `openai` client (its own retries off: the client above
retries); `local` runs llama.cpp in-process. Heavy libraries are imported on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mallard.llm.endpoints import Endpoint
from mallard.llm.errors import (
    CallTimeoutError,
    EndpointConfigError,
    MalformedResponseError,
    ProviderError,
    RateLimitedError,
    RequestRejectedError,
    TransientError,
)
from mallard.llm.resilience import parse_retry_after


@dataclass
class ProviderResult:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = ""


def schema_instruction(schema: dict[str, Any]) -> str:
    return (
        "Reply with a single JSON value and nothing else. It must validate against this JSON schema: "
        + json.dumps(schema, separators=(",", ":"))
    )


def with_schema_instruction(
    messages: list[dict[str, Any]], schema: dict[str, Any] | None
) -> list[dict[str, Any]]:
    if schema is None:
        return messages
    leading = 0
    while leading < len(messages) and messages[leading].get("role") == "system":
        leading += 1
    instruction = {"role": "system", "content": schema_instruction(schema)}
    return [*messages[:leading], instruction, *messages[leading:]]


class OpenAICompatibleProvider:
    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        self._sync: Any = None
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def count_tokens(self, messages: list[dict[str, Any]]) -> int | None:
        return None  # no tokenizer for a remote model: the caller over-estimates instead

    def _kwargs(self) -> dict[str, Any]:
        return {
            "base_url": self.endpoint.base_url,
            "api_key": self.endpoint.api_key(),
            "max_retries": 0,
            "timeout": self.endpoint.timeout_s,
        }

    def sync_client(self) -> Any:
        if self._sync is None:
            with self._lock:
                if self._sync is None:
                    import openai

                    self._sync = openai.OpenAI(**self._kwargs())
        return self._sync

    def async_client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:  # httpx async connections belong to the loop that opened them
            import openai

            client = openai.AsyncOpenAI(**self._kwargs())
            self._async[loop] = client
        return client

    async def aclose(self) -> None:
        """Close the async HTTP client of the running loop (before the loop ends)."""
        client = self._async.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    def _request(
        self, messages: list[dict[str, Any]], params: dict[str, Any], schema: dict[str, Any] | None
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.endpoint.model,
            "messages": with_schema_instruction(messages, schema),
            **params,
        }
        if schema is not None:
            mode = self.endpoint.structured_output
            if mode == "json_schema":
                request["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "reply", "schema": schema},
                }
            elif mode == "json_object":
                request["response_format"] = {"type": "json_object", "schema": schema}
        return request

    def chat(
        self,
        messages: list[dict[str, Any]],
        params: dict[str, Any],
        schema: dict[str, Any] | None,
        timeout: float,
    ) -> ProviderResult:
        with self._typed_errors():
            client = self.sync_client()
            response = client.chat.completions.create(
                **self._request(messages, params, schema), timeout=timeout
            )
        return self._result(response)

    async def achat(
        self,
        messages: list[dict[str, Any]],
        params: dict[str, Any],
        schema: dict[str, Any] | None,
        timeout: float,
    ) -> ProviderResult:
        with self._typed_errors():
            client = self.async_client()
            response = await client.chat.completions.create(
                **self._request(messages, params, schema), timeout=timeout
            )
        return self._result(response)

    @contextlib.contextmanager
    def _typed_errors(self) -> Iterator[None]:
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - every failure is mapped to a typed error
            raise self._map_error(exc) from exc

    def _result(self, response: Any) -> ProviderResult:
        name = self.endpoint.name
        try:
            choice = response.choices[0]
            text = choice.message.content
            usage = response.usage
        except (AttributeError, IndexError, TypeError) as exc:
            raise MalformedResponseError(name, f"response has no choices/message: {exc}") from exc
        if text is None:
            raise MalformedResponseError(name, "response message has no content")
        return ProviderResult(
            text=text,
            model=getattr(response, "model", None) or self.endpoint.model,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            finish_reason=str(choice.finish_reason or ""),
        )

    def _map_error(self, exc: Exception) -> ProviderError:
        import openai

        name = self.endpoint.name
        if isinstance(exc, ProviderError):
            return exc
        if isinstance(exc, EndpointConfigError):
            return RequestRejectedError(name, str(exc))
        if isinstance(exc, openai.APITimeoutError):
            return CallTimeoutError(name, f"timed out after {self.endpoint.timeout_s:g} s")
        if isinstance(exc, openai.APIConnectionError):
            return TransientError(name, f"connection failed: {exc}")
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            retry_after = (
                parse_retry_after(exc.response.headers.get("retry-after"))
                if exc.response is not None
                else None
            )
            if status == 429:
                return RateLimitedError(name, "HTTP 429 rate limited", retry_after=retry_after)
            if status >= 500 or status in (408, 409):
                return TransientError(
                    name, f"HTTP {status}: {exc.message}", retry_after=retry_after
                )
            return RequestRejectedError(name, f"HTTP {status}: {exc.message}")
        if isinstance(
            exc, ValueError | openai.APIResponseValidationError
        ):  # JSONDecodeError is a ValueError
            return MalformedResponseError(name, f"unreadable response: {type(exc).__name__}: {exc}")
        return TransientError(name, f"{type(exc).__name__}: {exc}")


class _Deadline:
    """llama.cpp stopping criterion that ends generation once the timeout has passed."""

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.fired = False

    def __call__(self, input_ids: Any, logits: Any) -> bool:
        if time.monotonic() > self.deadline:
            self.fired = True
        return self.fired


def _create_chat_completion_until(model: Any, deadline: _Deadline, **kwargs: Any) -> Any:
    """`create_chat_completion` with a stopping criterion, which the chat API does not accept.

    The chat handler calls `model.create_completion`, which does: shadow it on the instance for
    the duration of this call (the caller holds the model's lock). A logits processor cannot stop
    generation (it runs in a ctypes callback that swallows exceptions, and forcing end-of-sequence
    under a JSON grammar aborts llama.cpp)."""
    from llama_cpp import StoppingCriteriaList

    original = model.create_completion

    def create_completion(*args: Any, **options: Any) -> Any:
        options["stopping_criteria"] = StoppingCriteriaList(
            [*(options.get("stopping_criteria") or []), deadline]
        )
        return original(*args, **options)

    model.create_completion = create_completion
    try:
        return model.create_chat_completion(**kwargs)
    finally:
        del model.create_completion


_LLAMAS: dict[tuple[str, int, int], Any] = {}
_LLAMA_LOCKS: dict[tuple[str, int, int], threading.Lock] = {}
_LOAD_LOCK = threading.Lock()


def load_llama(path: Path, n_ctx: int, threads: int) -> tuple[Any, threading.Lock]:
    """One llama.cpp model per (file, context, threads) per process, with the lock that serialises it."""
    key = (str(path), n_ctx, threads)
    with _LOAD_LOCK:
        if key not in _LLAMAS:
            import os

            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            from llama_cpp import Llama

            _LLAMAS[key] = Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                verbose=False,
                seed=0,
            )
            _LLAMA_LOCKS[key] = threading.Lock()
        return _LLAMAS[key], _LLAMA_LOCKS[key]


class LocalProvider:
    """llama.cpp in-process. Calls to one model are serialised (a llama context is not thread-safe)."""

    def __init__(self, endpoint: Endpoint, threads: int, models_dir: Path):
        self.endpoint = endpoint
        self.threads = threads
        self.models_dir = models_dir
        self._model: Any = None
        self._lock: threading.Lock | None = None

    def load(self) -> Any:
        if self._model is None:
            assert self.endpoint.gguf is not None
            path = self.endpoint.gguf.locate(self.models_dir)
            self._model, self._lock = load_llama(path, self.endpoint.context_length, self.threads)
        return self._model

    def count_tokens(self, messages: list[dict[str, Any]]) -> int | None:
        if self._model is None:
            return None
        text = "\n".join(str(m.get("content") or "") for m in messages)
        return len(self._model.tokenize(text.encode(), add_bos=True)) + 4 * len(messages)

    def chat(
        self,
        messages: list[dict[str, Any]],
        params: dict[str, Any],
        schema: dict[str, Any] | None,
        timeout: float,
    ) -> ProviderResult:
        name = self.endpoint.name
        started = time.monotonic()
        try:
            model = self.load()
        except Exception as exc:  # noqa: BLE001 - a missing model file is not worth retrying
            raise RequestRejectedError(name, f"cannot load the local model: {exc}") from exc
        deadline = _Deadline(started + timeout)
        kwargs: dict[str, Any] = {"messages": with_schema_instruction(messages, schema)}
        kwargs.update(
            {
                k: v
                for k, v in params.items()
                if k
                in (
                    "temperature",
                    "top_p",
                    "max_tokens",
                    "seed",
                    "stop",
                    "presence_penalty",
                    "frequency_penalty",
                )
            }
        )
        kwargs.setdefault("temperature", 0.0)
        if schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        assert self._lock is not None
        if not self._lock.acquire(timeout=max(0.0, started + timeout - time.monotonic())):
            raise CallTimeoutError(name, f"local model busy for more than {timeout:g} s")
        try:
            response = _create_chat_completion_until(model, deadline, **kwargs)
        except Exception as exc:  # noqa: BLE001
            raise RequestRejectedError(
                name, f"llama.cpp failed: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            self._lock.release()
        if deadline.fired:
            raise CallTimeoutError(name, f"local generation exceeded {timeout:g} s and was stopped")
        try:
            choice = response["choices"][0]
            usage = response.get("usage") or {}
            return ProviderResult(
                text=choice["message"]["content"] or "",
                model=self.endpoint.model,
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                completion_tokens=int(usage.get("completion_tokens", 0)),
                finish_reason=str(choice.get("finish_reason") or ""),
            )
        except (KeyError, IndexError, TypeError) as exc:
            raise MalformedResponseError(name, f"unexpected llama.cpp response: {exc}") from exc

    async def achat(
        self,
        messages: list[dict[str, Any]],
        params: dict[str, Any],
        schema: dict[str, Any] | None,
        timeout: float,
    ) -> ProviderResult:
        return await asyncio.to_thread(self.chat, messages, params, schema, timeout)
