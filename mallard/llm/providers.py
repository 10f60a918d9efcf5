"""Providers: one chat call to one endpoint, mapped onto the LLM layer's typed errors.

`openai-compatible` uses the official `openai` client (its own retries off: the client above
retries); `local` runs llama.cpp in-process. Heavy libraries are imported on first use.
"""

from __future__ import annotations

import asyncio
import atexit
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
    logprobs: list[dict[str, Any]] | None = None
    """Per generated token, when asked for (`logprobs`/`top_logprobs` params): {"token", "logprob",
    "top_logprobs": [{"token", "logprob"}, …]}, the OpenAI chat-completions shape."""


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("-inf")


def normalise_logprobs(content: Any) -> list[dict[str, Any]] | None:
    """The OpenAI `choice.logprobs.content` list (objects or dicts) as plain dicts, or None."""
    if not content:
        return None
    out = []
    for entry in content:
        get = entry.get if isinstance(entry, dict) else lambda k, e=entry: getattr(e, k, None)
        top = get("top_logprobs") or []
        out.append(
            {
                "token": str(get("token") or ""),
                "logprob": _as_float(get("logprob")),
                "top_logprobs": [
                    {
                        "token": str(
                            (t.get("token") if isinstance(t, dict) else getattr(t, "token", ""))
                            or ""
                        ),
                        "logprob": _as_float(
                            t.get("logprob") if isinstance(t, dict) else getattr(t, "logprob", None)
                        ),
                    }
                    for t in top
                ],
            }
        )
    return out


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
        logprobs = getattr(choice, "logprobs", None)
        return ProviderResult(
            text=text,
            model=getattr(response, "model", None) or self.endpoint.model,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            finish_reason=str(choice.finish_reason or ""),
            logprobs=normalise_logprobs(getattr(logprobs, "content", None)) if logprobs else None,
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


class _LogprobRecorder:
    """A llama.cpp logits processor that records, at each generated token, the log-probabilities
    of the model's raw distribution (before the JSON grammar and the sampler): the chosen token's
    and the `k` most likely ones. It leaves the logits unchanged, so generation is what it would
    be without it, and it needs no `logits_all` model (which would compute logits for every
    prompt token)."""

    def __init__(self, model: Any, k: int):
        self.model = model
        self.k = max(1, k)
        self.steps: list[dict[str, Any]] = []
        self._last: Any = None

    def _token(self, token_id: int) -> str:
        return self.model.detokenize([int(token_id)]).decode("utf-8", errors="ignore")

    def _close_previous(self, chosen: int) -> None:
        if self._last is not None and self.steps:
            logits, lse = self._last
            self.steps[-1]["token"] = self._token(chosen)
            self.steps[-1]["logprob"] = float(logits[int(chosen)] - lse)
        self._last = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import numpy as np

        if self.steps and self._last is not None and len(input_ids) > self.steps[-1]["_n"]:
            self._close_previous(int(input_ids[self.steps[-1]["_n"]]))
        logits = np.asarray(scores, dtype=np.float64).copy()
        peak = float(logits.max())
        lse = peak + float(np.log(np.exp(logits - peak).sum()))
        k = min(self.k, logits.size)
        top = np.argpartition(-logits, k - 1)[:k]
        top = top[np.argsort(-logits[top])]
        self.steps.append(
            {
                "_n": len(input_ids),
                "token": "",
                "logprob": float("-inf"),
                "top_logprobs": [
                    {"token": self._token(i), "logprob": float(logits[i] - lse)} for i in top
                ],
            }
        )
        self._last = (logits, lse)
        return scores

    def content(self, text: str) -> list[dict[str, Any]]:
        """The recorded steps aligned with the generated `text` (the last step's token is what is
        left of the text; a final end-of-sequence step adds no text and is dropped)."""
        if self._last is not None and self.steps:
            seen = "".join(step["token"] for step in self.steps[:-1])
            rest = text[len(seen) :] if text.startswith(seen) else ""
            ids = self.model.tokenize(rest.encode(), add_bos=False, special=False) if rest else []
            if len(ids) == 1:
                self._close_previous(ids[0])
            else:
                self.steps.pop()
                self._last = None
        return [{k: v for k, v in step.items() if k != "_n"} for step in self.steps]


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

            if not _LLAMAS:
                atexit.register(_close_llamas)

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


def _close_llamas() -> None:
    # Closed while llama_cpp's module globals still exist: left to the interpreter's final
    # collection, Llama.__del__ runs after they are cleared and prints a TypeError at exit.
    with _LOAD_LOCK:
        for model in _LLAMAS.values():
            model.close()
        _LLAMAS.clear()
        _LLAMA_LOCKS.clear()


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
        recorder = None
        if params.get("logprobs"):
            from llama_cpp import LogitsProcessorList

            recorder = _LogprobRecorder(model, int(params.get("top_logprobs") or 1))
            kwargs["logits_processor"] = LogitsProcessorList([recorder])
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
            text = choice["message"]["content"] or ""
            return ProviderResult(
                text=text,
                model=self.endpoint.model,
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                completion_tokens=int(usage.get("completion_tokens", 0)),
                finish_reason=str(choice.get("finish_reason") or ""),
                logprobs=recorder.content(text) if recorder is not None else None,
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
