"""Prompts over `GET /v1/prompts/{name}`: a TTL cache, background refresh, last-known-good."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
USER_AGENT = "mallard-sdk/1"


class PromptError(Exception):
    """The server answered, and refused: no such prompt, label or version, or a bad key."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class PromptUnavailable(PromptError):
    """The server failed and there is no last known good version of this prompt to fall back to."""


@dataclass(frozen=True)
class PromptResult:
    """A prompt version, and where it came from.

    `source`: `server` (fetched now), `cache` (fresh within the TTL, or stale and being
    refreshed: `stale`), or `last_known_good` (the server failed: `fallback` is true and `error`
    says what failed).
    """

    name: str
    version: int
    label: str | None
    content_hash: str
    content: dict[str, Any]
    variables: tuple[str, ...]
    etag: str | None
    fetched_at: float  # time.time() of the last answer from the server
    source: str
    stale: bool = False
    fallback: bool = False
    error: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def messages(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.content.get("messages", [])]

    @property
    def warning(self) -> str | None:
        """What to log when this is a fallback (None otherwise)."""
        if not self.fallback:
            return None
        age = max(0.0, time.time() - self.fetched_at)
        return (
            f"prompt {self.name}@{self.label or f'v{self.version}'}: the server failed "
            f"({self.error}); serving the last known good version v{self.version}, fetched "
            f"{age:.0f} s ago"
        )

    def render(
        self, variables: Mapping[str, Any] | None = None, **values: Any
    ) -> list[dict[str, str]]:
        """The chat messages with every declared variable substituted (all of them, no others)."""
        given = {**(variables or {}), **values}
        missing = sorted(set(self.variables) - set(given))
        unexpected = sorted(set(given) - set(self.variables))
        if missing or unexpected:
            raise PromptError(
                f"prompt {self.name} v{self.version}: missing variables {missing}, unexpected "
                f"{unexpected}"
            )
        text = {
            k: v if isinstance(v, str) else json.dumps(v, default=str) for k, v in given.items()
        }
        return [
            {
                "role": m["role"],
                "content": PLACEHOLDER.sub(lambda g: text[g.group(1)], m["content"]),
            }
            for m in self.messages
        ]


@dataclass
class _Entry:
    result: PromptResult
    checked: float  # time.monotonic() of the last answer from the server (200 or 304)
    error: str | None = None  # the last refresh's failure, until one succeeds
    refreshing: bool = False


def _failure(exc: Exception | httpx.Response) -> str:
    if isinstance(exc, httpx.Response):
        return f"HTTP {exc.status_code} from {exc.request.url}"
    return f"{type(exc).__name__}: {exc}"


class MallardClient:
    """Prompts from a Mallard server (`base_url`), cached for `ttl_s` seconds.

    `cache_dir` keeps each prompt's last known good version on disk, so that a process started
    while the server is down still has one. `timeout_s` bounds each request.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        ttl_s: float = 30.0,
        timeout_s: float = 2.0,
        cache_dir: str | os.PathLike[str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if ttl_s < 0:
            raise ValueError("ttl_s must be ≥ 0")
        headers = {"User-Agent": USER_AGENT}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.base_url = base_url.rstrip("/")
        self.ttl_s = ttl_s
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout_s, transport=transport
        )
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._threads = 0
        self.stats = {"fetched": 0, "not_modified": 0, "failed": 0, "fallbacks": 0}

    # -- the public surface -----------------------------------------------------------------------
    def get_prompt(
        self, name: str, label: str | None = None, *, version: int | None = None
    ) -> PromptResult:
        """The version `label` points at (default `live`), or a given `version`.

        Fresh within the TTL: from memory. Stale: from memory at once, refreshed in the
        background. Unknown here: fetched now; if the server fails, the last known good version
        from `cache_dir` answers, flagged as a fallback, and without one PromptUnavailable.
        """
        key = _key(name, label, version)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                age = time.monotonic() - entry.checked
                if age < self.ttl_s:
                    return self._answer(entry, "cache")
                if not entry.refreshing:
                    entry.refreshing = True
                    self._threads += 1
                    threading.Thread(
                        target=self._refresh_in_background,
                        args=(key, name, label, version),
                        name=f"mallard-sdk-refresh-{name}",
                        daemon=True,
                    ).start()
                return self._answer(entry, "cache", stale=True)
        return self.refresh(name, label, version=version)

    def refresh(
        self, name: str, label: str | None = None, *, version: int | None = None
    ) -> PromptResult:
        """Ask the server now (conditionally, when a version is known); on a server failure the
        last known good version answers, flagged."""
        key = _key(name, label, version)
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            entry = self._from_disk(key)
        try:
            fresh = self._fetch(name, label, version, entry.result if entry else None)
        except PromptError:
            raise
        except (httpx.HTTPError, _ServerFailure) as exc:
            error = str(exc) if isinstance(exc, _ServerFailure) else _failure(exc)
            with self._lock:
                self.stats["failed"] += 1
                if entry is None:
                    raise PromptUnavailable(
                        f"prompt {name}@{key[1]}: the server at {self.base_url} failed ({error}) "
                        "and there is no last known good version"
                        + ("" if self.cache_dir else " (no cache_dir is set)")
                    ) from None
                entry.error = error
                self._entries.setdefault(key, entry)
                return self._answer(entry, "last_known_good")
        with self._lock:
            current = self._entries.get(key)
            if current is None:
                current = _Entry(fresh, time.monotonic())
                self._entries[key] = current
            else:
                current.result, current.checked, current.error = fresh, time.monotonic(), None
        self._to_disk(key, fresh)
        return self._answer(current, "server")

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Wait until no background refresh is running (True), or `timeout_s` passed."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._threads:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self) -> None:
        self.wait_idle(self._http.timeout.read or 5.0)
        self._http.close()

    def __enter__(self) -> MallardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inside -----------------------------------------------------------------------------------
    def _answer(self, entry: _Entry, source: str, stale: bool = False) -> PromptResult:
        if entry.error is not None:
            self.stats["fallbacks"] += 1
            return replace(
                entry.result,
                source="last_known_good",
                stale=stale,
                fallback=True,
                error=entry.error,
            )
        return replace(entry.result, source=source, stale=stale, fallback=False, error=None)

    def _refresh_in_background(
        self, key: tuple[str, str], name: str, label: str | None, version: int | None
    ) -> None:
        try:
            self.refresh(name, label, version=version)
        except PromptError as exc:  # the server refused (404, 401): keep serving what we had
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    entry.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a background refresh never raises
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    entry.error = _failure(exc)
        finally:
            with self._idle:
                entry = self._entries.get(key)
                if entry is not None:
                    entry.refreshing = False
                self._threads -= 1
                self._idle.notify_all()

    def _fetch(
        self, name: str, label: str | None, version: int | None, known: PromptResult | None
    ) -> PromptResult:
        params: dict[str, Any] = {}
        if version is not None:
            params["version"] = version
        elif label is not None:
            params["label"] = label
        headers = {"If-None-Match": known.etag} if known is not None and known.etag else {}
        response = self._http.get(
            f"/v1/prompts/{quote(name, safe='')}", params=params, headers=headers
        )
        if response.status_code == 304 and known is not None:
            with self._lock:
                self.stats["not_modified"] += 1
            return replace(known, fetched_at=time.time())
        if response.status_code >= 500 or response.status_code == 429:
            raise _ServerFailure(_failure(response))
        if response.status_code != 200:
            try:
                error = response.json()["error"]
                message, code = str(error["message"]), str(error["code"])
            except (ValueError, KeyError, TypeError):
                message, code = response.text[:200], None
            raise PromptError(
                f"prompt {name}: HTTP {response.status_code}: {message}", response.status_code, code
            )
        data = response.json()
        with self._lock:
            self.stats["fetched"] += 1
        return _result(data, response.headers.get("etag"), time.time())

    def _path(self, key: tuple[str, str]) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{quote(key[0], safe='')}@{quote(key[1], safe='')}.json"

    def _to_disk(self, key: tuple[str, str], result: PromptResult) -> None:
        path = self._path(key)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(
                json.dumps(
                    {"prompt": result.raw, "etag": result.etag, "fetched_at": result.fetched_at}
                )
            )
            os.replace(tmp, path)
        except OSError:
            pass  # the disk copy is an aid: failing to write it must not fail the call

    def _from_disk(self, key: tuple[str, str]) -> _Entry | None:
        path = self._path(key)
        if path is None:
            return None
        try:
            data = json.loads(path.read_text())
            result = _result(data["prompt"], data.get("etag"), float(data.get("fetched_at", 0)))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return _Entry(result, checked=float("-inf"))


class _ServerFailure(Exception):
    """The server answered, but failed (5xx, 429): the last known good version answers."""


def _key(name: str, label: str | None, version: int | None) -> tuple[str, str]:
    if version is not None and label is not None:
        raise ValueError("give label or version, not both")
    return (name, f"v{version}" if version is not None else (label or "live"))


def _result(data: Mapping[str, Any], etag: str | None, fetched_at: float) -> PromptResult:
    return PromptResult(
        name=str(data["name"]),
        version=int(data["version"]),
        label=data.get("label"),
        content_hash=str(data.get("content_hash", "")),
        content=dict(data.get("content") or {}),
        variables=tuple(data.get("variables") or (data.get("content") or {}).get("variables", ())),
        etag=etag,
        fetched_at=fetched_at,
        source="server",
        raw=dict(data),
    )


# -- a process-wide default client ------------------------------------------------------------------
_default: MallardClient | None = None


def configure(base_url: str, api_key: str | None = None, **options: Any) -> MallardClient:
    """Set the client `get_prompt` uses (options as MallardClient's)."""
    global _default
    if _default is not None:
        _default.close()
    _default = MallardClient(base_url, api_key, **options)
    return _default


def get_prompt(name: str, label: str | None = None, *, version: int | None = None) -> PromptResult:
    """`get_prompt` of the client set by `configure`."""
    if _default is None:
        raise RuntimeError("call mallard.sdk.configure(base_url, api_key) first")
    return _default.get_prompt(name, label, version=version)
