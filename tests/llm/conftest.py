"""Fixtures of the LLM tests: a temporary MALLARD_HOME, fake OpenAI-compatible servers on
127.0.0.1 (started and stopped per test), and clients with fast retry settings."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from mallard.config import load_settings
from mallard.llm.metrics import LLMMetrics
from mallard.llm.testing import FakeOpenAIServer


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("MALLARD_HOME", str(tmp_path / "home"))
    return load_settings(home=tmp_path / "home", llm_threads=2)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(hang_s=1.0) as srv:
        yield srv


@pytest.fixture
def backup_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(model="backup-model", hang_s=1.0) as srv:
        yield srv


@pytest.fixture
def metrics() -> LLMMetrics:
    return LLMMetrics(CollectorRegistry())


@pytest.fixture
def make_client(settings, metrics):
    from mallard.llm.client import LLMClient

    made = []

    def factory(endpoints, **kwargs: Any) -> LLMClient:
        kwargs.setdefault("metrics", metrics)
        kwargs.setdefault("seed", 1)
        client = LLMClient(endpoints, settings=settings, **kwargs)
        made.append(client)
        return client

    yield factory
    for client in made:
        client.close()


@pytest.fixture(scope="session")
def helpcentre_retriever(tmp_path_factory):
    """The help-centre corpus embedded with MiniLM once per session (~30k tokens: slow tests only)."""
    from catalog.chains import HELPCENTRE
    from mallard.llm.chains.retrieval import EmbeddingRetriever

    return EmbeddingRetriever(HELPCENTRE, cache_dir=tmp_path_factory.mktemp("index"))


@pytest.fixture
def hashed_helpcentre(tmp_path):
    """The help-centre corpus with a bag-of-words embedder: fast retrieval mechanics."""
    from catalog.chains import HELPCENTRE
    from mallard.llm.chains.retrieval import EmbeddingRetriever
    from mallard.llm.testing import HashingEmbedder

    return EmbeddingRetriever(HELPCENTRE, embedder=HashingEmbedder(), cache_dir=tmp_path / "index")
