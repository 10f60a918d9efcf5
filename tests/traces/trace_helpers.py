"""Helpers of the trace tests: the API server of tests/traces/trace_server_app.py (started with
tests/serving/serving_helpers, which the conftest puts on the path), keys, and polling."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from serving_helpers import Server, auth, free_port, server_env, start

HERE = Path(__file__).resolve().parent
OTLP = "/v1/otlp/v1/traces"
PROTOBUF = {"Content-Type": "application/x-protobuf"}
# Every trace test comes from one address with one key: no rate limit gets in the way.
TRACE_SERVER_SETTINGS = {
    "MALLARD_SERVE_MODELS": "",
    "MALLARD_RATE_LIMIT_ADDRESS_PER_S": "100000",
    "MALLARD_RATE_LIMIT_ADDRESS_BURST": "100000",
    "MALLARD_RATE_LIMIT_KEY_PER_S": "100000",
    "MALLARD_RATE_LIMIT_KEY_BURST": "100000",
}

__all__ = ["HERE", "OTLP", "PROTOBUF", "Server", "auth", "make_keys", "start_server", "wait_for"]


def start_server(home: Path, log: Path, *options: str) -> Server:
    """`trace_server_app.py` on a free port over `home`, once it answers /readyz (stopped if it
    never does)."""
    port = free_port()
    server = start(
        [sys.executable, str(HERE / "trace_server_app.py"), str(port), *options],
        server_env(home, **TRACE_SERVER_SETTINGS),
        port,
        log,
    )
    try:
        server.wait()
    except BaseException:
        server.stop()
        raise
    return server


def make_keys(home: Path) -> dict[str, str]:
    """An ingest-scoped developer key (what an application holds), a viewer and an admin."""
    from mallard.config import load_settings
    from mallard.serving.state import open_server_state

    settings = load_settings(home=home)
    settings.ensure_home()
    state = open_server_state(settings)
    try:
        return {
            "ingest": state.create_key("test-app", "developer", scope="ingest").key,
            "viewer": state.create_key("test-viewer", "viewer").key,
            "admin": state.create_key("test-admin", "admin").key,
        }
    finally:
        state.close()


def wait_for(check: Callable[[], Any], timeout: float = 20.0, every: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy (returned), or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout} s: {check}")
        time.sleep(every)
