"""The demo's calls to its own API: `mallard serve` started on a free port of 127.0.0.1, a few
requests with a key made for them, the server stopped, the key revoked.

What it shows is what a user then does by hand (the README's "Call the API"): the online
features, a prediction and an explanation for one customer of the sample world, and the live
prompt. Its predictions reach the prediction log (source `api`) when the server stops, which
flushes the log's buffer; every call is in `/metrics`, and the key's creation and revocation in
the audit log.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from mallard.config import Settings

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 180.0


@dataclass
class ApiCalls:
    """What the demo's calls answered (`status` per call, and the figures it prints)."""

    url: str
    seconds: float = 0.0
    status: dict[str, int] = field(default_factory=dict)
    request_ids: dict[str, str] = field(default_factory=dict)  # X-Request-ID of each call
    lines: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(code == 200 for code in self.status.values())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise RuntimeError(f"mallard serve exited ({process.returncode}):\n{tail}")
        try:
            response = httpx.get(f"{url}/readyz", timeout=5)
            if response.status_code == 200:
                return
            last = response.text
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise RuntimeError(f"{url}/readyz not ready after {READY_TIMEOUT_S:.0f} s: {last}")


class DemoServer:
    """`mallard serve` over the demo's home on a free port of 127.0.0.1, with an admin key for
    the demo's calls; on exit the server is stopped (SIGTERM: its buffers flush) and every key
    made for it revoked. `key(...)` makes another (e.g. the ingest key of an application)."""

    def __init__(self, settings: Settings, say: Callable[[str], None]):
        self.settings, self.say = settings, say
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._prefixes: list[str] = []
        self._process: subprocess.Popen | None = None
        self.admin_key = ""

    def key(self, owner: str, role: str, scope: str = "all") -> str:
        """A new key for `owner`, revoked when the server stops (audited, actor `demo`)."""
        from mallard.serving.state import open_server_state

        s = self.settings
        state = open_server_state(s, s.serve_state_kind, s.redis_url)
        try:
            created = state.create_key(owner, role, scope=scope, actor="demo")
        finally:
            state.close()
        self._prefixes.append(created.record.prefix)
        return created.key

    def __enter__(self) -> DemoServer:
        self.admin_key = self.key("mallard-demo", "admin")
        log = self.settings.home / "logs" / "demo-api-server.jsonl"
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "MALLARD_HOME": str(self.settings.home),
            "MALLARD_SERVE_PORT": str(self.port),
            "MALLARD_SERVE_WORKERS": "1",
            "MALLARD_SERVE_MODELS": "churn_classifier",  # the one it calls: a quicker start
        }
        with log.open("w") as handle:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "cli.main", "serve"],
                cwd=ROOT,
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.say(f"starting the API on {self.url} (mallard serve, 1 worker) …")
        try:
            _wait_ready(self._process, self.url, log)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        from mallard.serving.state import open_server_state

        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)  # a clean stop flushes the buffers
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        s = self.settings
        state = open_server_state(s, s.serve_state_kind, s.redis_url)
        try:
            for prefix in self._prefixes:
                state.revoke_key(prefix, actor="demo")
        finally:
            state.close()
        self._prefixes.clear()


def calls_on(server: DemoServer, calls: ApiCalls, customer_id: int = 5) -> None:
    """The demo's five calls on a running server, for one customer (raises on a broken
    connection; a refused call is in `calls.status`)."""
    customer = {"customer_id": customer_id}
    headers = {"Authorization": f"Bearer {server.admin_key}"}
    with httpx.Client(base_url=calls.url, headers=headers, timeout=60) as api:
        features = api.post(
            "/v1/features/online", json={"entities": [customer], "service": "churn_features"}
        )
        calls.status["features"] = features.status_code
        if features.status_code == 200:
            row = features.json()["rows"][0]
            status = ", ".join(f"{view} {state}" for view, state in row["status"].items())
            calls.lines.append(
                f"features   customer {customer['customer_id']}: {len(row['values'])} values of churn_features ({status})"
            )
        predict = api.post("/v1/models/churn_classifier/predict", json={"entities": [customer]})
        calls.status["predict"] = predict.status_code
        calls.request_ids["predict"] = predict.headers.get("x-request-id", "")
        if predict.status_code == 200:
            body = predict.json()
            row = body["predictions"][0]
            score = row.get("score", row.get("prediction"))
            calls.lines.append(
                f"predict    churn_classifier v{body.get('version')}: customer {customer['customer_id']} → "
                f"{row.get('prediction')} (score {score})"
            )
        explain = api.post(
            "/v1/models/churn_classifier/explain", json={"entities": [customer], "top_k": 3}
        )
        calls.status["explain"] = explain.status_code
        if explain.status_code == 200:
            top = explain.json()["explanations"][0].get("top_features", [])
            names = ", ".join(str(t.get("feature", t)) for t in top)
            calls.lines.append(f"explain    top features: {names}")
        prompt = api.get("/v1/prompts/support_assistant", params={"label": "live"})
        calls.status["prompt"] = prompt.status_code
        if prompt.status_code == 200:
            calls.lines.append(
                f"prompt     support_assistant live = v{prompt.json().get('version')} "
                f"(ETag {prompt.headers.get('etag')})"
            )
        metrics = api.get("/metrics")
        calls.status["metrics"] = metrics.status_code
        if metrics.status_code == 200:
            counted = [
                line
                for line in metrics.text.splitlines()
                if line.startswith("mallard_predictions_total{")
            ]
            calls.lines.append(f"metrics    {len(counted)} mallard_predictions_total series")
