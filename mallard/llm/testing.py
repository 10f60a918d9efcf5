"""A small OpenAI-compatible HTTP server on 127.0.0.1 with injectable faults.

Speaks `POST /v1/chat/completions` and `GET /v1/models`; used by the tests (through the real
`openai` client) and by `benchmarks/llm_client.py`. Faults are queued and consumed one request at
a time:

    server = FakeOpenAIServer().start()
    server.push_faults("500", "429:2", "timeout", "malformed")   # the next four requests
    ...
    server.stop()
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class RecordedRequest:
    at: float
    body: dict[str, Any]
    fault: str | None


def _count_tokens(text: str) -> int:
    return max(1, len(text.split()))


_PIECE = re.compile(r"\w+|\s+|[^\w\s]")


def scripted_logprobs(
    text: str, alternatives: dict[str, dict[str, float]], top: int
) -> list[dict[str, Any]]:
    """OpenAI-shaped `logprobs.content` for `text` split into words, spaces and punctuation: a
    piece named in `alternatives` gets that distribution (token → probability) as its top
    alternatives, every other piece probability 1."""
    content = []
    for piece in _PIECE.findall(text):
        dist = alternatives.get(piece) or {piece: 1.0}
        ranked = sorted(dist.items(), key=lambda kv: -kv[1])[: max(top, 1)]
        content.append(
            {
                "token": piece,
                "logprob": math.log(dist.get(piece, 1e-9)),
                "bytes": list(piece.encode()),
                "top_logprobs": [
                    {"token": t, "logprob": math.log(p), "bytes": list(t.encode())}
                    for t, p in ranked
                    if p > 0
                ],
            }
        )
    return content


def default_reply(body: dict[str, Any]) -> str:
    """Deterministic reply: JSON that fits a requested schema's shape, or an echo of the last user message."""
    fmt = body.get("response_format") or {}
    if fmt.get("type") in ("json_schema", "json_object"):
        return json.dumps({"answer": "ok", "score": 3})
    last = next(
        (
            m.get("content", "")
            for m in reversed(body.get("messages", []))
            if m.get("role") == "user"
        ),
        "",
    )
    return f"echo: {last}"


class FakeOpenAIServer:
    """Threaded stdlib HTTP server; `requests` records what arrived, `max_in_flight` the peak concurrency."""

    def __init__(
        self,
        *,
        model: str = "fake-model",
        delay_s: float = 0.0,
        hang_s: float = 5.0,
        reply: Callable[[dict[str, Any]], Any] = default_reply,
        logprobs: bool = True,
    ):
        """`reply(body)` returns the reply text, or (text, alternatives) where alternatives maps a
        piece of the text to its token distribution (see `scripted_logprobs`): requests that ask
        for `logprobs` get them, unless `logprobs=False` (an endpoint that never returns them)."""
        self.logprobs = logprobs
        self.model = model
        self.delay_s = delay_s
        self.hang_s = hang_s
        self.reply = reply
        self.requests: list[RecordedRequest] = []
        self._faults: deque[str] = deque()
        self._lock = threading.Lock()
        self._in_flight = 0
        self.max_in_flight = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self.port = 0

    # Control ------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def push_faults(self, *faults: str) -> None:
        """Queue faults for the next requests: "500", "503", "429", "429:<retry-after seconds>",
        "timeout" (hang longer than a client timeout), "malformed" (200 with a broken body),
        "badjson" (200, a well-formed completion whose content is not JSON), "ok"."""
        with self._lock:
            self._faults.extend(faults)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self.requests.clear()
            self.max_in_flight = 0

    @property
    def completion_calls(self) -> int:
        return len(self.requests)

    def start(self) -> FakeOpenAIServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def setup(self) -> None:
                super().setup()
                # one write per response and no Nagle delay, or keep-alive calls stall ~40 ms
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with outer._lock:
                    outer._connections.add(self.request)

            def finish(self) -> None:
                with outer._lock:
                    outer._connections.discard(self.request)
                super().finish()

            def _send(
                self, status: int, payload: bytes, headers: dict[str, str] | None = None
            ) -> None:
                lines = [
                    f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
                    "Content-Type: application/json",
                    f"Content-Length: {len(payload)}",
                ]
                lines += [f"{key}: {value}" for key, value in (headers or {}).items()]
                self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    body = {
                        "object": "list",
                        "data": [
                            {
                                "id": outer.model,
                                "object": "model",
                                "created": 0,
                                "owned_by": "mallard",
                            }
                        ],
                    }
                    self._send(200, json.dumps(body).encode())
                else:
                    self._send(404, b'{"error": {"message": "not found"}}')

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, b'{"error": {"message": "not found"}}')
                    return
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    self._send(400, b'{"error": {"message": "invalid JSON body"}}')
                    return
                with outer._lock:
                    fault = outer._faults.popleft() if outer._faults else None
                    outer.requests.append(RecordedRequest(time.monotonic(), body, fault))
                    outer._in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer._in_flight)
                try:
                    self._answer(body, fault)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with outer._lock:
                        outer._in_flight -= 1

            def _answer(self, body: dict[str, Any], fault: str | None) -> None:
                if outer.delay_s:
                    time.sleep(outer.delay_s)
                if fault and fault.startswith("429"):
                    _, _, after = fault.partition(":")
                    headers = {"Retry-After": after} if after else {}
                    self._send(
                        429,
                        b'{"error": {"message": "rate limited", "type": "rate_limit"}}',
                        headers,
                    )
                    return
                if fault and fault.isdigit():
                    self._send(
                        int(fault), json.dumps({"error": {"message": f"injected {fault}"}}).encode()
                    )
                    return
                if fault == "timeout":
                    time.sleep(outer.hang_s)
                elif fault == "malformed":
                    self._send(200, b'{"id": "x", "choices": [ {"broken')
                    return
                reply = "this is not json" if fault == "badjson" else outer.reply(body)
                text, alternatives = reply if isinstance(reply, tuple) else (reply, {})
                choice: dict[str, Any] = {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": text},
                }
                if outer.logprobs and body.get("logprobs"):
                    choice["logprobs"] = {
                        "content": scripted_logprobs(
                            text, alternatives, int(body.get("top_logprobs") or 0)
                        )
                    }
                prompt_text = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
                payload = {
                    "id": f"chatcmpl-{len(outer.requests)}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model") or outer.model,
                    "choices": [choice],
                    "usage": {
                        "prompt_tokens": _count_tokens(prompt_text),
                        "completion_tokens": _count_tokens(text),
                        "total_tokens": _count_tokens(prompt_text) + _count_tokens(text),
                    },
                }
                self._send(200, json.dumps(payload).encode())

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: later calls get connection refused (a dead endpoint)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for conn in connections:  # keep-alive connections would otherwise go on answering
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def dead_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


class HashingEmbedder:
    """A fast, deterministic bag-of-words embedder with the MiniLM interface, for tests of the
    retrieval and cache mechanics where embedding quality is not the point."""

    model_id = "hashing-bow-384"
    dimensions = 384

    def embed(self, texts: list[str] | str, batch_size: int = 32) -> Any:
        import re
        import zlib

        import numpy as np

        if isinstance(texts, str):
            texts = [texts]
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                out[row, zlib.crc32(word.encode()) % self.dimensions] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.clip(norms, 1e-12, None)
