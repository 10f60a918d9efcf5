"""Fixtures of the eval tests: a temporary MALLARD_HOME holding the sample world's help-centre
files (copied, not generated), and a prompt registry with the support-assistant prompts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mallard.config import load_settings

sys.path.insert(0, str(Path(__file__).resolve().parent))

from evals_helpers import seed_home  # noqa: E402


@pytest.fixture
def settings(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("MALLARD_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    seed_home(home)
    return load_settings(home=home, llm_threads=2)


@pytest.fixture
def make_client(settings):
    from prometheus_client import CollectorRegistry

    from mallard.llm.client import LLMClient
    from mallard.llm.metrics import LLMMetrics

    made = []

    def factory(endpoints, **kwargs):
        kwargs.setdefault("metrics", LLMMetrics(CollectorRegistry()))
        kwargs.setdefault("seed", 1)
        kwargs.setdefault("semantic_cache", False)
        client = LLMClient(endpoints, settings=settings, **kwargs)
        made.append(client)
        return client

    yield factory
    for client in made:
        client.close()
