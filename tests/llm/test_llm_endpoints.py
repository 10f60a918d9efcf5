from __future__ import annotations

import pytest

from mallard.llm import SMOLLM2_135M, Endpoint, Endpoints, Price, RetryPolicy
from mallard.llm.errors import EndpointConfigError


def local(**overrides):
    options = {"name": "tiny", "provider": "local", "model": "m", "gguf": SMOLLM2_135M}
    options.update(overrides)
    return Endpoint(**options)


@pytest.mark.parametrize(
    ("overrides", "field", "fragment"),
    [
        ({"provider": "azure"}, "provider", "must be one of"),
        ({"model": ""}, "model", "non-empty"),
        ({"gguf": None}, "gguf", "required for provider 'local'"),
        ({"price": Price(input_per_million=-1)}, "price.input_per_million", ">= 0"),
        ({"retry": RetryPolicy(max_retries=-1)}, "retry.max_retries", ">= 0"),
        ({"params": {"temperature": "hot"}}, "params.temperature", "must be a number"),
        (
            {"params": {"max_tokens": 4096}, "context_length": 2048},
            "params.max_tokens",
            "< context_length",
        ),
        ({"params": {"logit_bias": {}}}, "params.logit_bias", "not a supported parameter"),
        ({"max_concurrency": 0}, "max_concurrency", ">= 1"),
        ({"timeout_s": 0}, "timeout_s", "> 0"),
        ({"fallbacks": ["tiny"]}, "fallbacks", "itself"),
        ({"fallbacks": "other"}, "fallbacks", "not one string"),
        ({"base_url": "http://x"}, "base_url", "only for provider 'openai-compatible'"),
    ],
)
def test_invalid_declarations_name_endpoint_and_field(overrides, field, fragment):
    with pytest.raises(EndpointConfigError) as info:
        local(**overrides)
    message = str(info.value)
    assert message.startswith("endpoint 'tiny': field ")
    assert info.value.field == field and info.value.endpoint == "tiny"
    assert fragment in message


def test_openai_compatible_needs_http_base_url():
    with pytest.raises(EndpointConfigError, match=r"endpoint 'api': field 'base_url'"):
        Endpoint(name="api", provider="openai-compatible", model="gpt", base_url="localhost:8000")


def test_bad_name_is_refused():
    with pytest.raises(EndpointConfigError, match="field 'name'"):
        local(name="Has Spaces")


def test_endpoints_check_fallbacks_and_duplicates():
    primary = Endpoint(
        name="api",
        provider="openai-compatible",
        model="gpt",
        base_url="http://x/v1",
        fallbacks=["tiny"],
    )
    with pytest.raises(
        EndpointConfigError, match=r"endpoint 'api': field 'fallbacks' names 'tiny'"
    ):
        Endpoints([primary])
    with pytest.raises(EndpointConfigError, match="declared twice"):
        Endpoints([local(), local()])
    endpoints = Endpoints([primary, local()])
    assert [e.name for e in endpoints.chain("api")] == ["api", "tiny"]
    with pytest.raises(KeyError, match="no endpoint named 'nope'"):
        endpoints["nope"]


def test_declarations_are_immutable_and_params_frozen():
    endpoint = local(params={"temperature": 0.1})
    with pytest.raises(AttributeError):
        endpoint.model = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        endpoint.params["temperature"] = 1.0  # type: ignore[index]


def test_missing_api_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("MALLARD_TEST_KEY", raising=False)
    endpoint = Endpoint(
        name="api",
        provider="openai-compatible",
        model="gpt",
        base_url="http://x/v1",
        api_key_env="MALLARD_TEST_KEY",
    )
    with pytest.raises(EndpointConfigError, match=r"\$MALLARD_TEST_KEY, which is not set"):
        endpoint.api_key()


def test_catalog_declarations_load():
    from catalog.llm import DEMO_ENDPOINT, ENDPOINTS, JUDGE_ENDPOINT

    assert DEMO_ENDPOINT in ENDPOINTS and JUDGE_ENDPOINT in ENDPOINTS
    assert all(e.licence for e in ENDPOINTS.values() if e.is_local)
    assert SMOLLM2_135M.locate().stat().st_size > 50_000_000


def test_price_cost():
    assert Price(2.0, 8.0).cost(1_000_000, 500_000) == pytest.approx(6.0)
