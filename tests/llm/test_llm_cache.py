"""Exact and semantic caches: hits, misses, bypass, persistence and repeat=N."""

from __future__ import annotations

from pathlib import Path

import pytest
from llm_helpers import metric_value, remote

from mallard.llm.cache import SemanticCache


def test_exact_cache_hit_and_miss(server, make_client, metrics):
    client = make_client([remote("api", server)], semantic_cache=False)
    first = client.complete("api", "what is pondstream?")
    second = client.complete("api", "what is pondstream?")
    assert (first.cache, second.cache) == ("miss", "exact")
    assert second.text == first.text and server.completion_calls == 1
    assert second.cost_usd == 0 and second.prompt_tokens == 0
    # any change of parameters, messages or schema is a different key
    client.complete("api", "what is pondstream?", temperature=0.7)
    client.complete(
        "api",
        [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "what is pondstream?"},
        ],
    )
    assert server.completion_calls == 3
    assert metric_value(metrics, "mallard_llm_cache_lookups_total", kind="exact", result="hit") == 1


def test_exact_cache_persists_across_clients(server, make_client):
    make_client([remote("api", server)]).complete("api", "remember me")
    again = make_client([remote("api", server)]).complete("api", "remember me")
    assert again.cache == "exact" and server.completion_calls == 1


def test_exact_cache_is_bypassable(server, make_client):
    client = make_client([remote("api", server)])
    client.complete("api", "q")
    assert client.complete("api", "q", cache=False).cache == "miss"
    assert server.completion_calls == 2


def test_exact_cache_is_per_endpoint(server, make_client):
    client = make_client([remote("a", server), remote("b", server)])
    client.complete("a", "q")
    assert client.complete("b", "q").cache == "miss"


def test_cached_structured_reply_is_parsed(server, make_client):
    schema = {"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"]}
    client = make_client([remote("api", server)])
    client.complete("api", "rate", schema=schema)
    hit = client.complete("api", "rate", schema=schema)
    assert hit.cache == "exact" and hit.parsed == {"answer": "ok", "score": 3}


def test_failed_calls_are_not_cached(server, make_client):
    from mallard.llm.endpoints import RetryPolicy
    from mallard.llm.errors import AllEndpointsFailedError

    client = make_client([remote("api", server, retry=RetryPolicy(max_retries=0))])
    server.push_faults("500")
    with pytest.raises(AllEndpointsFailedError):
        client.complete("api", "q")
    assert client.complete("api", "q").cache == "miss"


@pytest.fixture(scope="module")
def embedder():
    from mallard.llm.embeddings import MiniLMEmbedder

    return MiniLMEmbedder(threads=1)


def test_embeddings_are_normalised_and_meaningful(embedder):
    vectors = embedder.embed(
        [
            "How do I cancel my subscription?",
            "how can I cancel my subscription",
            "What's the capital of France?",
        ]
    )
    assert vectors.shape == (3, 384)
    norms = (vectors**2).sum(axis=1)
    assert norms == pytest.approx([1.0, 1.0, 1.0], abs=1e-4)
    assert vectors[0] @ vectors[1] > 0.9 > 0.3 > vectors[0] @ vectors[2]


def test_semantic_cache_hits_paraphrase_within_threshold(
    server, make_client, settings, embedder, metrics
):
    semantic = SemanticCache(settings.home / "llm" / "semantic.sqlite", embedder, threshold=0.9)
    client = make_client([remote("api", server, semantic_cache=True)], semantic_cache=semantic)
    first = client.complete("api", "How do I cancel my subscription?")
    client.drain()  # the miss stored its vector in the background
    near = client.complete("api", "how can I cancel my subscription")
    far = client.complete("api", "Which devices can I stream Pondstream on?")
    assert first.cache == "miss" and near.cache == "semantic" and far.cache == "miss"
    assert near.text == first.text and near.similarity >= 0.9
    assert server.completion_calls == 2
    assert (
        metric_value(metrics, "mallard_llm_cache_lookups_total", kind="semantic", result="hit") == 1
    )


def test_semantic_cache_scope_includes_system_prompt(server, make_client, settings, embedder):
    semantic = SemanticCache(settings.home / "llm" / "semantic.sqlite", embedder, threshold=0.9)
    client = make_client(
        [remote("api", server, semantic_cache=True)], semantic_cache=semantic, exact_cache=False
    )

    def ask(system):
        return client.complete(
            "api",
            [
                {"role": "system", "content": system},
                {"role": "user", "content": "How do I cancel?"},
            ],
        )

    ask("You are helpful.")
    client.drain()
    assert ask("You are helpful.").cache == "semantic"
    assert ask("You answer in French.").cache == "miss"


def test_semantic_cache_is_opt_in_and_bypassable(server, make_client, settings, embedder):
    semantic = SemanticCache(settings.home / "llm" / "semantic.sqlite", embedder, threshold=0.9)
    client = make_client(
        [remote("api", server), remote("sem", server, semantic_cache=True)],
        semantic_cache=semantic,
        exact_cache=False,
    )
    client.complete("api", "How do I cancel my subscription?", semantic_cache=True)
    client.drain()
    assert (
        client.complete("api", "how can I cancel my subscription").cache == "miss"
    )  # endpoint did not opt in
    assert (
        client.complete("api", "how can I cancel my subscription", semantic_cache=True).cache
        == "semantic"
    )
    client.complete("sem", "How do I reset my password?")
    client.drain()
    assert client.complete("sem", "how do I reset my password", cache=False).cache == "miss"
    assert (
        client.complete("sem", "how do I reset my password", semantic_cache=False).cache == "miss"
    )


def test_semantic_cache_persists(settings, embedder):
    path = settings.home / "llm" / "semantic.sqlite"
    SemanticCache(path, embedder, threshold=0.9).add(
        "scope", "How do I cancel my plan?", {"text": "Settings → Plan."}
    )
    found = SemanticCache(path, embedder, threshold=0.9).lookup("scope", "how do i cancel my plan")
    assert found is not None and found[0]["text"] == "Settings → Plan."
    assert (
        SemanticCache(path, embedder, threshold=0.9).lookup(
            "other-scope", "how do i cancel my plan"
        )
        is None
    )


def test_repeat_skips_both_caches(server, make_client, settings, embedder):
    semantic = SemanticCache(settings.home / "llm" / "semantic.sqlite", embedder, threshold=0.9)
    client = make_client([remote("api", server, semantic_cache=True)], semantic_cache=semantic)
    client.complete("api", "How do I cancel my subscription?")
    client.drain()
    replies = client.complete("api", "How do I cancel my subscription?", repeat=4)
    assert len(replies) == 4 and {r.cache for r in replies} == {"miss"}
    assert server.completion_calls == 5


def test_threshold_is_validated(settings):
    with pytest.raises(ValueError, match="threshold"):
        SemanticCache(settings.home / "x.sqlite", threshold=1.5)


def test_an_empty_exact_cache_given_to_the_client_is_used(tmp_path: Path) -> None:
    from catalog.llm import ENDPOINTS
    from mallard.config import load_settings
    from mallard.llm.cache import ExactCache
    from mallard.llm.client import LLMClient

    cache = ExactCache(tmp_path / "empty.sqlite")
    assert len(cache) == 0
    client = LLMClient(
        ENDPOINTS, settings=load_settings(home=tmp_path), exact_cache=cache, traces=False
    )
    try:
        assert client.exact_cache is cache
    finally:
        client.close()
