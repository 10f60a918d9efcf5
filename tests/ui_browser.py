"""Headless Chromium for UI tests and screenshots: Debian's `chromium`, driven by its
`chromium-driver` over the W3C WebDriver protocol (plain HTTP, so no client library is needed).

Never a browser downloaded by a tool: both binaries come from Debian's packages
(scripts/install-services.sh installs them).
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
ELEMENT = "element-6066-11e4-a52e-4f735466cecb"  # the W3C key of an element reference


def find_binaries() -> tuple[str, str] | None:
    """(chromium, chromedriver) from Debian's packages, or None when they are not installed."""
    chromium = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Browser:
    """One Chromium session with a fresh profile; `close()` ends it and its driver."""

    def __init__(self, width: int = 1400, height: int = 1000) -> None:
        found = find_binaries()
        if found is None:
            raise RuntimeError(
                "chromium and chromium-driver are not installed: "
                "apt-get install -y chromium chromium-driver (scripts/install-services.sh)"
            )
        chromium, driver = found
        self.profile = tempfile.mkdtemp(prefix="mallard-chromium-")
        port = _free_port()
        self.driver = subprocess.Popen(
            [driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.base = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(timeout=60)
        deadline = time.monotonic() + 20
        while True:
            try:
                if self.http.get(f"{self.base}/status").json()["value"]["ready"]:
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline or self.driver.poll() is not None:
                self.close()
                raise RuntimeError("chromedriver did not start")
            time.sleep(0.1)
        options = {
            "binary": chromium,
            "args": [
                *CHROMIUM_ARGS,
                f"--user-data-dir={self.profile}",
                f"--window-size={width},{height}",
            ],
        }
        try:
            reply = self._call(
                "POST",
                "/session",
                {
                    "capabilities": {
                        "alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}
                    }
                },
            )
        except Exception:
            self.close()
            raise
        self.session = f"/session/{reply['sessionId']}"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        reply = self.http.request(method, self.base + path, json=body)
        value = reply.json().get("value")
        if reply.status_code >= 400:
            raise RuntimeError(f"WebDriver {method} {path}: {value}")
        return value

    def get(self, url: str) -> None:
        self._call("POST", f"{self.session}/url", {"url": url})

    @property
    def url(self) -> str:
        return self._call("GET", f"{self.session}/url")

    def run(self, script: str, *args: Any) -> Any:
        """Run a JavaScript function body in the page (`arguments[i]` are `args`)."""
        return self._call(
            "POST", f"{self.session}/execute/sync", {"script": script, "args": list(args)}
        )

    def wait_for(self, script: str, *args: Any, timeout: float = 30.0, what: str = "") -> Any:
        """Poll `script` until it returns something truthy; that value is returned."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.run(script, *args)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:g} s waiting for {what or script}")
            time.sleep(0.25)

    def screenshot(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self._call("GET", f"{self.session}/screenshot")))
        return path

    def close(self) -> None:
        session = getattr(self, "session", None)
        if session is not None:
            with contextlib.suppress(httpx.HTTPError, RuntimeError):
                self._call("DELETE", session)
            self.session = None
        self.http.close()
        if self.driver.poll() is None:
            self.driver.terminate()
            try:
                self.driver.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.driver.kill()
                self.driver.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
