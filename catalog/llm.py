"""LLM endpoints of this deployment.

Local models run in-process with llama.cpp from GGUF files shipped in PyPI packages (see
docs/LLM.md for their licences); the OpenAI-compatible ones are examples of remote endpoints with
prices, keys from the environment and fallbacks to the local models.
"""

from mallard.llm import (
    QWEN25_CODER_05B,
    QWEN25_CODER_15B,
    SMOLLM2_135M,
    BreakerPolicy,
    Endpoint,
    Endpoints,
    Price,
    RateLimit,
    RetryPolicy,
)

smollm2_local = Endpoint(
    name="smollm2-local",
    provider="local",
    model="SmolLM2-135M-Instruct-Q4_1",
    gguf=SMOLLM2_135M,
    context_length=2048,
    params={"temperature": 0.0, "max_tokens": 192},
    max_concurrency=1,
    timeout_s=120.0,
    retry=RetryPolicy(max_retries=1),
    description="Fast and small: protocol tests and the support-assistant demo.",
)

qwen_05b_local = Endpoint(
    name="qwen-0.5b-local",
    provider="local",
    model="Qwen2.5-Coder-0.5B-Instruct-Q4_K_M",
    gguf=QWEN25_CODER_05B,
    context_length=4096,
    params={"temperature": 0.0, "max_tokens": 256},
    max_concurrency=1,
    timeout_s=180.0,
    retry=RetryPolicy(max_retries=1),
    fallbacks=("smollm2-local",),
    description="Where speed matters more than quality (yes/no reference checks).",
)

qwen_15b_local = Endpoint(
    name="qwen-1.5b-local",
    provider="local",
    model="Qwen2.5-Coder-1.5B-Instruct-Q4_K_M",
    gguf=QWEN25_CODER_15B,
    context_length=4096,
    params={"temperature": 0.0, "max_tokens": 256},
    max_concurrency=1,
    timeout_s=300.0,
    retry=RetryPolicy(max_retries=1),
    description="The judge-grade local default (rubric scores with a JSON schema).",
)

llama_server = Endpoint(
    name="llama-server",
    provider="openai-compatible",
    base_url="http://127.0.0.1:8765/v1",
    model="judge",
    structured_output="json_object",
    context_length=2048,
    params={"temperature": 0.0, "max_tokens": 256},
    max_concurrency=1,
    timeout_s=120.0,
    fallbacks=("qwen-1.5b-local",),
    description="`python -m llama_cpp.server --model_alias judge --port 8765`, e.g. on a bigger machine.",
)

openai_mini = Endpoint(
    name="openai-gpt-4o-mini",
    provider="openai-compatible",
    base_url="https://api.openai.com/v1",
    api_key_env="OPENAI_API_KEY",
    model="gpt-4o-mini",
    context_length=128_000,
    params={"temperature": 0.0, "max_tokens": 512},
    price=Price(input_per_million=0.15, output_per_million=0.60),
    max_concurrency=8,
    rate_limit=RateLimit(requests_per_second=5, burst=5),
    timeout_s=30.0,
    breaker=BreakerPolicy(failure_threshold=5, reset_timeout_s=30),
    fallbacks=("qwen-1.5b-local",),
    description="A hosted model: the sample world's production traffic. No network at run time, "
    "so the demo points it at a scripted stand-in (mallard/sample_world/assistant.py).",
)

ENDPOINTS = Endpoints([smollm2_local, qwen_05b_local, qwen_15b_local, llama_server, openai_mini])

DEMO_ENDPOINT = "smollm2-local"
OWNER = "assistant@pondstream.example"
"""Who owns the assistant's prompts, chain, evals and their assets."""
JUDGE_ENDPOINT = "qwen-1.5b-local"
