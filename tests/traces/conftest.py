"""The trace tests' home, keys and real uvicorn servers (tests/traces/trace_server_app.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "serving")]  # serving_helpers: the server helpers

from trace_helpers import Server, make_keys, start_server  # noqa: E402


@pytest.fixture(scope="session")
def trace_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("traces") / "home"


@pytest.fixture(scope="session")
def trace_keys(trace_home: Path) -> dict[str, str]:
    return make_keys(trace_home)


@pytest.fixture(scope="session")
def trace_server(
    trace_home: Path, trace_keys: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The API (one worker) over the trace tests' home, flushing traces every 0.2 s."""
    server = start_server(trace_home, tmp_path_factory.mktemp("log") / "server.jsonl")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def trace_store(trace_home: Path):
    from mallard.config import load_settings
    from mallard.traces.store import trace_store

    return trace_store(load_settings(home=trace_home))
