"""Log-probabilities on the client's path: asked for with `complete(..., logprobs=k)`, returned
per generated token by an OpenAI-compatible server and by the local llama.cpp provider (recorded
from the raw distribution, before the JSON grammar), kept in the exact cache, absent for callers
that do not ask."""

from __future__ import annotations

import json
import math

import pytest

from mallard.llm import SMOLLM2_135M, Endpoint, RetryPolicy
from mallard.llm.testing import FakeOpenAIServer

SCHEMA = {
    "type": "object",
    "properties": {"verdict": {"type": "string", "enum": ["yes", "no"]}},
    "required": ["verdict"],
}


def remote(server: FakeOpenAIServer, name: str = "remote") -> Endpoint:
    return Endpoint(
        name=name,
        provider="openai-compatible",
        model="fake-model",
        base_url=server.base_url,
        timeout_s=5,
        retry=RetryPolicy(max_retries=0),
    )


def verdict_reply(body):
    return json.dumps({"verdict": "yes"}), {"yes": {"yes": 0.7, "no": 0.25, "maybe": 0.05}}


def test_remote_logprobs_round_trip_and_cache(make_client):
    with FakeOpenAIServer(reply=verdict_reply) as server:
        client = make_client([remote(server)])
        reply = client.complete("remote", "Is it?", schema=SCHEMA, logprobs=3)
        body = server.requests[-1].body
        assert body["logprobs"] is True and body["top_logprobs"] == 3
        tokens = [t["token"] for t in reply.logprobs]
        assert "".join(tokens) == reply.text
        at = reply.logprobs[tokens.index("yes")]
        assert math.isclose(math.exp(at["logprob"]), 0.7)
        assert [a["token"] for a in at["top_logprobs"]] == ["yes", "no", "maybe"]
        # the exact cache keeps them; a call that does not ask is a different call, without them
        again = client.complete("remote", "Is it?", schema=SCHEMA, logprobs=3)
        assert again.cache == "exact" and again.logprobs == reply.logprobs
        plain = client.complete("remote", "Is it?", schema=SCHEMA)
        assert plain.cache == "miss" and plain.logprobs is None
        assert "logprobs" not in server.requests[-1].body
        with pytest.raises(TypeError, match="logprobs"):
            client.complete("remote", "Is it?", logprobs=-1)


def test_endpoint_without_logprobs_returns_none(make_client):
    with FakeOpenAIServer(reply=verdict_reply, logprobs=False) as server:
        client = make_client([remote(server)])
        reply = client.complete("remote", "Is it?", schema=SCHEMA, logprobs=5)
        assert reply.parsed == {"verdict": "yes"} and reply.logprobs is None


def test_local_smollm2_logprobs_follow_the_generated_tokens(make_client):
    tiny = Endpoint(
        name="tiny",
        provider="local",
        model="SmolLM2-135M-Instruct",
        gguf=SMOLLM2_135M,
        context_length=1024,
        params={"temperature": 0.0, "max_tokens": 16},
        max_concurrency=1,
        retry=RetryPolicy(max_retries=0),
    )
    client = make_client([tiny], exact_cache=False)
    prompt = "Is Paris in France? Reply yes or no."
    plain = client.complete("tiny", prompt, schema=SCHEMA)
    reply = client.complete("tiny", prompt, schema=SCHEMA, logprobs=20)
    # recording does not change what is generated
    assert reply.text == plain.text and plain.logprobs is None
    assert "".join(t["token"] for t in reply.logprobs) == reply.text
    for entry in reply.logprobs:
        assert entry["logprob"] <= 1e-9 and len(entry["top_logprobs"]) == 20
        assert sum(math.exp(a["logprob"]) for a in entry["top_logprobs"]) <= 1 + 1e-6
    verdict = next(t for t in reply.logprobs if t["token"].strip(' "') == reply.parsed["verdict"])
    assert any(a["token"] == verdict["token"] for a in verdict["top_logprobs"])
