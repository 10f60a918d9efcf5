"""The local backend: SmolLM2-135M in-process with llama.cpp (loads in under a second)."""

from __future__ import annotations

import asyncio

import pytest
from llm_helpers import run_closing

from mallard.llm import SMOLLM2_135M, Endpoint, RetryPolicy
from mallard.llm.errors import AllEndpointsFailedError, CallTimeoutError, ModelFileError
from mallard.llm.models import MultipartGGUF
from mallard.llm.providers import load_llama

TINY = Endpoint(
    name="tiny",
    provider="local",
    model="SmolLM2-135M-Instruct",
    gguf=SMOLLM2_135M,
    context_length=1024,
    params={"temperature": 0.0, "max_tokens": 24},
    max_concurrency=1,
    retry=RetryPolicy(max_retries=0),
)


@pytest.fixture
def client(make_client):
    return make_client([TINY], exact_cache=False)


def test_real_completion(client, settings):
    reply = client.complete("tiny", "What is the capital of France? Answer in one sentence.")
    assert "Paris" in reply.text
    assert reply.prompt_tokens > 10 and 0 < reply.completion_tokens <= 24
    assert reply.cost_usd == 0.0  # local models are free, but their tokens are counted
    model, _ = load_llama(SMOLLM2_135M.locate(), 1024, settings.llm_threads)
    assert (model.n_threads, model.n_threads_batch) == (settings.llm_threads, settings.llm_threads)


def test_schema_constrained_json(client):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
    }
    reply = client.complete(
        "tiny",
        "Give the capital of France as JSON with keys city and country.",
        schema=schema,
        max_tokens=40,
    )
    assert set(reply.parsed) == {"city", "country"}
    assert isinstance(reply.parsed["city"], str)
    assert reply.attempts == 1  # the grammar made the first reply valid


def test_async_local_call(client):
    async def run():
        return await asyncio.gather(
            client.acomplete("tiny", "Say hello."), client.acomplete("tiny", "Say goodbye.")
        )

    first, second = run_closing(client, run)
    assert first.text and second.text


def test_local_timeout_stops_generation(client):
    with pytest.raises(AllEndpointsFailedError) as info:
        client.complete(
            "tiny", "Write a very long story about a duck.", max_tokens=400, timeout_s=0.2
        )
    assert isinstance(info.value.errors[0], CallTimeoutError)
    assert client.complete("tiny", "Say hello.").text  # the model is usable afterwards


def test_missing_multipart_model_fails_over_to_smollm2(make_client, settings):
    absent = MultipartGGUF(
        parts=("mallard-no-such-part1", "mallard-no-such-part2"),
        filename="absent.gguf",
        size=10,
        sha256="0" * 64,
    )
    big = Endpoint(name="big", provider="local", model="absent", gguf=absent, fallbacks=["tiny"])
    client = make_client([big, TINY], exact_cache=False)
    reply = client.complete("big", "Say hello.")
    assert reply.endpoint == "tiny" and reply.endpoints_tried == ["big", "tiny"]
    with pytest.raises(ModelFileError, match="2 of 2 part packages are not installed"):
        absent.locate(settings.models_dir)


def test_support_assistant_chain_on_smollm2(settings, hashed_helpcentre):
    from tests_paths import CATALOG_PROMPTS

    from catalog.chains import CHAINS
    from catalog.llm import ENDPOINTS
    from mallard.llm.chains.runner import ChainRunner
    from mallard.llm.client import LLMClient
    from mallard.llm.prompts import PromptRegistry, sync_prompt_files
    from mallard.llm.tracing import read_traces

    registry = PromptRegistry.default(settings)
    sync_prompt_files(registry, CATALOG_PROMPTS)
    client = LLMClient(ENDPOINTS, settings=settings, exact_cache=False)
    runner = ChainRunner(client, registry, retrievers={"helpcentre": hashed_helpcentre})
    batch = runner.run_batch(
        CHAINS["support_assistant"],
        [{"question": "How do I fix error PS-2001?", "id": "Q-x"}],
        run_id="demo-test",
    )
    (item,) = batch.items
    assert item.status == "ok" and item.output.strip(), item.error
    assert item.steps["retrieve"].output["ids"][0] == "HC-023"
    assert batch.summary.prompt_tokens > 100 and batch.summary.cost_usd == 0
    (trace,) = read_traces(settings.lake_dir / "traces")
    assert (trace["prompt_name"], trace["prompt_version"], trace["endpoint"]) == (
        "support_assistant",
        1,
        "smollm2-local",
    )
    assert trace["retrieved_ids"][0] == "HC-023" and trace["input"] == "How do I fix error PS-2001?"
