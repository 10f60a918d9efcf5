"""The API tests' world, keys and real uvicorn servers on 127.0.0.1 (started and stopped here)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving_helpers import HERE, SERVER_SETTINGS, Server, free_port, server_env, start  # noqa: E402
from world import World, build_world  # noqa: E402


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """The served world (sample world, features online, models registered, a live prompt)."""
    return build_world(tmp_path_factory.mktemp("served") / "home")


@pytest.fixture(scope="session")
def keys(world: World) -> dict[str, str]:
    """A key per role, an ingest-scoped developer key, and the fuzzer's admin key."""
    from mallard.config import load_settings
    from mallard.serving.state import open_server_state

    state = open_server_state(load_settings(home=world.home))
    try:
        made = {
            role: state.create_key(f"test-{role}", role, actor="tests").key
            for role in ("admin", "developer", "viewer")
        }
        made["ingest"] = state.create_key("test-app", "developer", scope="ingest").key
        made["fuzz"] = state.create_key(
            "schemathesis", "admin", rate_per_s=100_000, burst=100_000
        ).key
        return made
    finally:
        state.close()


@pytest.fixture(scope="session")
def server(world: World, keys: dict[str, str], tmp_path_factory) -> Iterator[Server]:
    """The API on uvicorn (one worker) over the world, until the session ends."""
    port = free_port()
    log = tmp_path_factory.mktemp("server-log") / "server.jsonl"
    running = start(
        [sys.executable, str(HERE / "server_app.py"), str(port)],
        server_env(world.home, **SERVER_SETTINGS),
        port,
        log,
    )
    try:
        running.wait()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def api(server: Server, keys: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client
