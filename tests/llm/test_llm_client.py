"""The client against fake OpenAI-compatible servers, through the real `openai` client."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from llm_helpers import metric_value, remote, run_closing

from mallard.llm.budget import Budgets
from mallard.llm.endpoints import BreakerPolicy, Price, RateLimit, RetryPolicy
from mallard.llm.errors import (
    AllEndpointsFailedError,
    BudgetExceededError,
    CallTimeoutError,
    CircuitOpenError,
    RequestRejectedError,
    StructuredOutputError,
)
from mallard.llm.testing import dead_url
from mallard.llm.tracing import read_traces

SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "string"},
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
    },
    "required": ["answer", "score"],
}


def test_plain_call_counts_tokens_and_cost(server, make_client, metrics):
    client = make_client(
        [remote("api", server, price=Price(input_per_million=1000, output_per_million=2000))],
        exact_cache=False,
    )
    reply = client.complete("api", "hello there world", user_id="u1")
    assert reply.text == "echo: hello there world"
    assert (reply.prompt_tokens, reply.completion_tokens) == (3, 4)
    assert reply.cost_usd == pytest.approx((3 * 1000 + 4 * 2000) / 1e6)
    assert reply.attempts == 1 and reply.cache == "miss" and reply.endpoint == "api"
    assert server.requests[0].body["max_tokens"] == 50  # the declared default parameter was sent
    assert (
        metric_value(metrics, "mallard_llm_calls_total", endpoint="api", status="ok", cache="miss")
        == 1
    )
    assert metric_value(metrics, "mallard_llm_tokens_total", endpoint="api", kind="completion") == 4
    assert metric_value(metrics, "mallard_llm_cost_usd_total", endpoint="api") == pytest.approx(
        reply.cost_usd
    )


@pytest.mark.parametrize("fault", ["500", "503", "timeout", "malformed", "429"])
def test_transient_faults_are_retried(fault, server, make_client, metrics):
    client = make_client([remote("api", server)], exact_cache=False)
    server.push_faults(fault, fault)
    reply = client.complete("api", "q")
    assert reply.text == "echo: q"
    assert reply.attempts == 3 and server.completion_calls == 3
    assert metric_value(metrics, "mallard_llm_retries_total", endpoint="api") == 2


def test_retry_after_is_honoured(server, make_client):
    client = make_client([remote("api", server)], exact_cache=False)
    server.push_faults("429:0.4")
    started = time.monotonic()
    reply = client.complete("api", "q")
    assert reply.attempts == 2
    gap = server.requests[1].at - server.requests[0].at
    assert gap >= 0.4, gap  # the jittered backoff alone would be at most 0.01 s
    assert time.monotonic() - started < 1.5


def test_retries_exhausted_then_failover(server, backup_server, make_client, metrics, settings):
    client = make_client(
        [remote("api", server, fallbacks=["backup"]), remote("backup", backup_server)],
        exact_cache=False,
    )
    server.push_faults("500", "500", "500", "500")
    reply = client.complete("api", "q", run_id="r1")
    assert reply.endpoint == "backup" and reply.model == "fake-model"
    assert server.completion_calls == 4 and backup_server.completion_calls == 1
    assert reply.endpoints_tried == ["api", "backup"]
    assert (
        metric_value(
            metrics, "mallard_llm_failovers_total", from_endpoint="api", to_endpoint="backup"
        )
        == 1
    )
    client.flush()
    (row,) = read_traces(settings.lake_dir / "traces")
    assert row["endpoint"] == "backup" and row["status"] == "ok" and row["run_id"] == "r1"
    assert json.loads(row["attributes"])["endpoints_tried"] == ["api", "backup"]


def test_dead_endpoint_fails_over(backup_server, make_client):
    client = make_client(
        [
            remote(
                "api",
                dead_url(),
                fallbacks=["backup"],
                retry=RetryPolicy(max_retries=1, base_delay_s=0.01),
            ),
            remote("backup", backup_server),
        ],
        exact_cache=False,
    )
    reply = client.complete("api", "q")
    assert reply.endpoint == "backup" and reply.attempts == 3


def test_stopped_server_is_dead_and_error_is_typed(server, make_client, settings):
    client = make_client(
        [remote("api", server, retry=RetryPolicy(max_retries=1, base_delay_s=0.01))],
        exact_cache=False,
    )
    assert client.complete("api", "before").text == "echo: before"
    server.stop()
    with pytest.raises(AllEndpointsFailedError) as info:
        client.complete("api", "after")
    assert "connection failed" in str(info.value)
    client.flush()
    rows = read_traces(settings.lake_dir / "traces")
    assert sorted(r["status"] for r in rows) == ["error", "ok"]
    error_row = next(r for r in rows if r["status"] == "error")
    assert (
        error_row["error"].startswith("AllEndpointsFailedError") and error_row["input"] == "after"
    )


def test_client_errors_are_not_retried(server, make_client):
    client = make_client([remote("api", server)], exact_cache=False)
    server.push_faults("400")
    with pytest.raises(AllEndpointsFailedError) as info:
        client.complete("api", "q")
    assert isinstance(info.value.errors[0], RequestRejectedError)
    assert server.completion_calls == 1


def test_timeout_is_typed_and_bounded(server, make_client):
    client = make_client(
        [remote("api", server, retry=RetryPolicy(max_retries=0))], exact_cache=False
    )
    server.push_faults("timeout")
    started = time.monotonic()
    with pytest.raises(AllEndpointsFailedError) as info:
        client.complete("api", "q")
    assert isinstance(info.value.errors[0], CallTimeoutError)
    assert 0.25 <= time.monotonic() - started < 0.9


def test_circuit_breaker_transitions(server, make_client, metrics):
    endpoint = remote(
        "api",
        server,
        retry=RetryPolicy(max_retries=0),
        breaker=BreakerPolicy(failure_threshold=2, reset_timeout_s=0.3),
    )
    client = make_client([endpoint], exact_cache=False)
    state = client.state("api")
    server.push_faults("500", "500")
    for _ in range(2):
        with pytest.raises(AllEndpointsFailedError):
            client.complete("api", "q")
    assert state.breaker.state == "open"
    assert metric_value(metrics, "mallard_llm_breaker_state", endpoint="api") == 2
    with pytest.raises(AllEndpointsFailedError) as info:
        client.complete("api", "q")
    assert isinstance(info.value.errors[0], CircuitOpenError)
    assert server.completion_calls == 2  # the open breaker kept the call away from the server

    time.sleep(0.35)
    assert state.breaker.state == "half_open"
    server.push_faults("500")  # the probe fails: open again
    with pytest.raises(AllEndpointsFailedError):
        client.complete("api", "q")
    assert state.breaker.state == "open" and server.completion_calls == 3

    time.sleep(0.35)
    assert client.complete("api", "q").text == "echo: q"  # the probe succeeds: closed
    assert state.breaker.state == "closed"
    assert metric_value(metrics, "mallard_llm_breaker_state", endpoint="api") == 0
    assert state.breaker.transitions == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


def test_open_breaker_fails_over_without_waiting(server, backup_server, make_client):
    endpoint = remote(
        "api",
        server,
        fallbacks=["backup"],
        retry=RetryPolicy(max_retries=5, base_delay_s=0.01),
        breaker=BreakerPolicy(failure_threshold=2, reset_timeout_s=60),
    )
    client = make_client([endpoint, remote("backup", backup_server)], exact_cache=False)
    server.push_faults(*["500"] * 10)
    reply = client.complete("api", "q")
    assert reply.endpoint == "backup"
    assert server.completion_calls == 2  # retries stop once the breaker opens
    assert client.complete("api", "q2").endpoint == "backup" and server.completion_calls == 2


def test_batch_with_random_faults_loses_no_item(server, backup_server, make_client):
    client = make_client(
        [
            remote("api", server, fallbacks=["backup"], max_concurrency=4),
            remote("backup", backup_server),
        ],
        exact_cache=False,
    )
    faults = ["500", "ok", "429", "ok", "malformed", "ok", "503", "timeout", "ok", "ok"] * 3
    server.push_faults(*faults)

    async def run():
        return await asyncio.gather(*(client.acomplete("api", f"item {i}") for i in range(20)))

    replies = run_closing(client, run)
    assert sorted(r.text for r in replies) == sorted(f"echo: item {i}" for i in range(20))
    assert server.max_in_flight <= 4


def test_concurrency_limit(server, make_client):
    server.delay_s = 0.1
    client = make_client([remote("api", server, max_concurrency=2, timeout_s=2)], exact_cache=False)
    threads = [threading.Thread(target=client.complete, args=("api", f"q{i}")) for i in range(6)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert server.max_in_flight == 2 and server.completion_calls == 6
    assert elapsed >= 0.29, elapsed  # three waves of two


def test_concurrency_limit_async(server, make_client):
    server.delay_s = 0.1
    client = make_client([remote("api", server, max_concurrency=3, timeout_s=2)], exact_cache=False)

    async def run():
        return await asyncio.gather(*(client.acomplete("api", f"q{i}") for i in range(9)))

    assert len(run_closing(client, run)) == 9
    assert server.max_in_flight == 3


def test_rate_limit_spaces_calls(server, make_client):
    client = make_client(
        [remote("api", server, rate_limit=RateLimit(requests_per_second=20, burst=2))],
        exact_cache=False,
    )
    client.complete(
        "api", "warm-up"
    )  # opens the HTTP client; the bucket is full again after the sleep
    time.sleep(0.2)
    server.clear()
    for i in range(8):
        client.complete("api", f"q{i}")
    times = [r.at for r in server.requests]
    # 2 at once from the burst, then one every 50 ms: 6 × 50 ms = 0.3 s for the rest
    assert times[-1] - times[0] >= 0.25, times[-1] - times[0]
    gaps = [b - a for a, b in zip(times[2:], times[3:], strict=False)]
    assert min(gaps) >= 0.025  # nominally 50 ms; jitter on a loaded machine eats into single gaps


def test_rate_limit_async(server, make_client):
    client = make_client(
        [remote("api", server, rate_limit=RateLimit(requests_per_second=25, burst=1))],
        exact_cache=False,
    )

    async def run():
        await client.acomplete("api", "warm-up")  # opens the HTTP client
        await asyncio.sleep(0.1)
        server.clear()
        await asyncio.gather(*(client.acomplete("api", f"q{i}") for i in range(6)))

    run_closing(client, run)
    times = sorted(r.at for r in server.requests)
    # 5 intervals of 40 ms (unlimited, the 6 calls would arrive within a few ms); the margin
    # absorbs scheduling jitter on a loaded 2-core machine
    assert times[-1] - times[0] >= 0.15, times[-1] - times[0]


def test_in_flight_duplicates_share_one_call(server, make_client, metrics):
    server.delay_s = 0.2
    client = make_client([remote("api", server, timeout_s=2)], exact_cache=False)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(client.complete("api", "same")))
        for _ in range(5)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert server.completion_calls == 1
    assert len(results) == 5 and {r.text for r in results} == {"echo: same"}
    assert sum(r.deduplicated for r in results) == 4
    assert metric_value(metrics, "mallard_llm_deduplicated_total", endpoint="api") == 4


def test_in_flight_duplicates_async(server, make_client):
    server.delay_s = 0.1
    client = make_client([remote("api", server, timeout_s=2)], exact_cache=False)

    async def run():
        return await asyncio.gather(
            *(client.acomplete("api", "same") for _ in range(4)),
            client.acomplete("api", "different"),
        )

    replies = run_closing(client, run)
    assert server.completion_calls == 2
    assert sum(r.deduplicated for r in replies) == 3


def test_structured_output_valid(server, make_client):
    client = make_client([remote("api", server)], exact_cache=False)
    reply = client.complete("api", "rate it", schema=SCHEMA)
    assert reply.parsed == {"answer": "ok", "score": 3}
    assert server.requests[0].body["response_format"]["type"] == "json_schema"


def test_structured_output_one_repair(server, make_client):
    client = make_client([remote("api", server)], exact_cache=False)
    server.push_faults("badjson")
    reply = client.complete("api", "rate it", schema=SCHEMA)
    assert reply.parsed == {"answer": "ok", "score": 3} and server.completion_calls == 2
    repair = server.requests[1].body["messages"]
    assert repair[-2] == {"role": "assistant", "content": "this is not json"}
    assert "not valid" in repair[-1]["content"]


def test_structured_output_typed_error_after_repair(server, make_client):
    client = make_client([remote("api", server)], exact_cache=False)
    server.push_faults("badjson", "badjson")
    with pytest.raises(StructuredOutputError) as info:
        client.complete("api", "rate it", schema=SCHEMA)
    assert server.completion_calls == 2 and info.value.raw == "this is not json"


def test_structured_output_schema_violation_is_repaired(make_client, settings):
    from mallard.llm.testing import FakeOpenAIServer

    replies = iter(['{"answer": "x", "score": 9}', '{"answer": "x", "score": 4}'])
    with FakeOpenAIServer(reply=lambda body: next(replies)) as srv:
        client = make_client([remote("api", srv)], exact_cache=False)
        reply = client.complete("api", "rate", schema=SCHEMA)
        assert reply.parsed["score"] == 4
        assert (
            "score: 9 is greater than the maximum of 5"
            in srv.requests[1].body["messages"][-1]["content"]
        )


def test_structured_output_with_pydantic_model(server, make_client):
    from pydantic import BaseModel

    class Verdict(BaseModel):
        answer: str
        score: int

    client = make_client([remote("api", server)], exact_cache=False)
    reply = client.complete("api", "rate", schema=Verdict)
    assert reply.parsed == Verdict(answer="ok", score=3)


def test_run_budget_refuses_before_calling(server, make_client, metrics):
    pricey = remote(
        "api",
        server,
        price=Price(input_per_million=10_000, output_per_million=10_000),
        params={"max_tokens": 20},
    )
    client = make_client([pricey], exact_cache=False, budgets=Budgets(per_run_usd=0.5))
    # worst case per call: (~9 estimated prompt tokens + 20 max_tokens) × $0.01 ≈ $0.29; actual ≈ $0.05
    replies = []
    with pytest.raises(BudgetExceededError) as info:
        for i in range(20):
            replies.append(client.complete("api", f"more {i}", run_id="run-1"))
    assert replies[0].cost_usd == pytest.approx(0.05)  # 2 prompt + 3 completion tokens at $0.01
    message = str(info.value)
    assert "per-run budget 'run-1' is $0.500000" in message and "20 max_tokens" in message
    spent = client.ledger.spent("run", "run-1")
    assert spent == pytest.approx(sum(r.cost_usd for r in replies)) and spent <= 0.5
    assert spent + info.value.worst_case > 0.5
    assert server.completion_calls == len(replies)  # the refused call never reached the server
    assert client.complete(
        "api", "other run", run_id="run-2"
    ).text  # another run has its own budget
    assert metric_value(metrics, "mallard_llm_budget_refusals_total", scope="per-run") == 1


def test_user_and_day_budgets_persist_across_clients(server, make_client):
    pricey = remote(
        "api",
        server,
        price=Price(input_per_million=10_000, output_per_million=10_000),
        params={"max_tokens": 10},
    )
    budgets = Budgets(per_user_usd=0.3, per_day_usd=0.5)
    client = make_client([pricey], exact_cache=False, budgets=budgets)
    client.complete("api", "a", user_id="alice")
    client.complete("api", "b", user_id="alice")
    with pytest.raises(BudgetExceededError, match=r"per-user \(\d{4}-\d\d-\d\d\) budget 'alice'"):
        for _ in range(5):
            client.complete("api", "c", user_id="alice", cache=False)
    # a second process (client) sees the same day's spending through the ledger file
    other = make_client([pricey], exact_cache=False, budgets=budgets)
    with pytest.raises(BudgetExceededError, match=r"per-day .* budget 'all'"):
        for i in range(10):
            other.complete("api", f"d{i}", user_id=f"user{i}")
    assert other.ledger.spent("day", "all", other.ledger._limits("", "")[0][0][2]) <= 0.5


def test_structured_budget_counts_the_repair(server, make_client):
    pricey = remote(
        "api",
        server,
        price=Price(input_per_million=0, output_per_million=10_000),
        params={"max_tokens": 30},
    )
    # one call's output worst case is $0.30; with a possible repair it is $0.60
    client = make_client([pricey], exact_cache=False, budgets=Budgets(per_run_usd=0.5))
    assert client.complete("api", "plain", run_id="r").text
    with pytest.raises(BudgetExceededError, match="with one structured-output repair"):
        client.complete("api", "json please", run_id="r2", schema=SCHEMA)


def test_batch_cost_estimate(server, make_client):
    primary = remote(
        "api",
        server,
        price=Price(input_per_million=1.0, output_per_million=2.0),
        params={"max_tokens": 100},
        fallbacks=["backup"],
    )
    backup = remote("backup", server, price=Price(input_per_million=3.0, output_per_million=4.0))
    client = make_client([primary, backup], exact_cache=False, budgets=Budgets(per_run_usd=0.001))
    batch = [f"question number {i} about the Pondstream subscription" for i in range(10)]
    estimate = client.estimate_cost("api", batch, run_id="r")
    assert estimate.calls == 10 and estimate.max_completion_tokens == 1000
    assert estimate.prompt_tokens > 10 * 15  # an over-estimate: 3 characters per token
    assert estimate.worst_case_usd == pytest.approx((estimate.prompt_tokens * 3 + 1000 * 4) / 1e6)
    assert estimate.remaining_budget_usd == pytest.approx(0.001)
    assert not estimate.fits_budget and "10 calls" in str(estimate)
    assert server.completion_calls == 0


def test_repeat_skips_caches(server, make_client):
    client = make_client([remote("api", server)])
    client.complete("api", "same")
    replies = client.complete("api", "same", repeat=3)
    assert [r.cache for r in replies] == ["miss"] * 3 and server.completion_calls == 4
    assert client.complete("api", "same").cache == "exact" and server.completion_calls == 4


def test_async_path_faults_and_failover(server, backup_server, make_client):
    client = make_client(
        [remote("api", server, fallbacks=["backup"]), remote("backup", backup_server)],
        exact_cache=False,
    )
    server.push_faults("429:0.2", "ok", "500", "500", "500", "500")

    async def run():
        first = await client.acomplete("api", "x")
        second = await client.acomplete("api", "y")
        return first, second

    first, second = run_closing(client, run)
    assert first.endpoint == "api" and first.attempts == 2
    assert second.endpoint == "backup"


def test_traces_are_batched_into_one_commit(server, make_client, settings):
    from deltalake import DeltaTable

    from mallard.traces.schema import trace_schema

    client = make_client([remote("api", server)], exact_cache=False)
    for i in range(25):
        client.complete(
            "api",
            f"q{i}",
            user_id="u",
            session_id="s",
            prompt_name="p",
            prompt_version=2,
            retrieved_ids=["a1"],
            attributes={"k": i},
        )
    assert client.traces.pending == 25
    assert client.flush() == 25
    table = DeltaTable(str(settings.lake_dir / "traces"))
    assert table.version() == 0  # one commit for 25 calls
    data = table.to_pyarrow_table()
    assert data.schema.equals(trace_schema())
    row = data.to_pylist()[0]
    assert (row["prompt_name"], row["prompt_version"], row["retrieved_ids"], row["cache"]) == (
        "p",
        2,
        ["a1"],
        "miss",
    )


def test_metrics_exposition(server, make_client, metrics):
    client = make_client([remote("api", server)])
    client.complete("api", "q")
    client.complete("api", "q")
    text = metrics.exposition().decode()
    assert 'mallard_llm_calls_total{cache="exact",endpoint="api",status="ok"} 1.0' in text
    assert 'mallard_llm_cache_lookups_total{kind="exact",result="hit"} 1.0' in text
    assert (
        "mallard_llm_latency_seconds_bucket" in text
        and 'mallard_llm_breaker_state{endpoint="api"} 0.0' in text
    )


def test_unknown_parameter_is_refused(server, make_client):
    client = make_client([remote("api", server)])
    with pytest.raises(TypeError, match="unknown LLM parameter"):
        client.complete("api", "q", temprature=0.2)


def test_json_replies_with_raw_newlines_in_strings_parse():
    """llama.cpp's JSON grammar admits raw control characters inside strings (SmolLM2 writes
    them); a strict parser would turn a well-formed verdict into a failed call."""
    from mallard.llm.structured import extract_json

    value, error = extract_json('Sure: {"reasoning": "line one\nline two", "supported": "yes"}')
    assert error == "" and value == {"reasoning": "line one\nline two", "supported": "yes"}
    assert extract_json('{"reasoning": "cut off')[0] is None
