"""`complete` and `acomplete` share one policy: the same fault script gives the same records."""

from __future__ import annotations

from typing import Any

import pytest
from llm_helpers import remote, run_closing

from mallard.llm.budget import BudgetLedger, Budgets
from mallard.llm.client import Attempt
from mallard.llm.endpoints import Price
from mallard.llm.tracing import TraceRecorder, read_traces

SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "score": {"type": "integer"}},
    "required": ["answer", "score"],
}

# (endpoint, prompt, faults for the primary server, faults for the backup server, options)
SCRIPT: list[tuple[str, str, list[str], list[str], dict[str, Any]]] = [
    ("api", "faulty", ["500", "timeout", "429:0.3"], [], {}),  # three retries, then ok
    ("api", "faulty", [], [], {}),  # exact cache hit
    ("api", "down", ["500"] * 4, [], {}),  # retries exhausted: failover
    ("api", "rate it", ["badjson"], [], {"schema": SCHEMA}),  # one structured-output repair
    ("api", "refused", ["400"], ["400"], {}),  # not retried, fails over, fails
    ("pricey", "too dear", [], [], {"run_id": "r1"}),  # budget stop before any call
]


def _record(outcome: Any) -> tuple[Any, ...]:
    if isinstance(outcome, BaseException):
        return ("error", type(outcome).__name__, str(outcome))
    return (
        "ok",
        outcome.text,
        outcome.endpoint,
        outcome.cache,
        outcome.attempts,
        outcome.endpoints_tried,
        outcome.attempt_log,
        outcome.prompt_tokens,
        outcome.completion_tokens,
        outcome.cost_usd,
        outcome.parsed,
    )


def _trace_rows(path) -> list[dict[str, Any]]:
    volatile = ("trace_id", "timestamp", "latency_ms")
    return [{k: v for k, v in row.items() if k not in volatile} for row in read_traces(path)]


def _run(name, sync, server, backup_server, make_client, tmp_path) -> dict[str, Any]:
    """One pass of SCRIPT through `complete` (sync) or `acomplete`: a fresh client seeded like the
    other pass, an empty exact cache, its own ledger and traces."""
    server.clear()
    backup_server.clear()
    server.hang_s = 3.0  # a generous timeout: a slow machine must not add a timeout to one pass
    endpoints = [
        remote("api", server, fallbacks=["backup"], timeout_s=1.0),
        remote("backup", backup_server, timeout_s=1.0),
        remote(
            "pricey",
            server,
            price=Price(input_per_million=1000, output_per_million=1000),
            params={"max_tokens": 50},
        ),
    ]
    budgets = Budgets(per_run_usd=0.01)  # a worst case of 50 tokens at $0.001 is $0.05
    traces = TraceRecorder(tmp_path / name / "traces")
    client = make_client(
        endpoints,
        semantic_cache=False,
        budgets=budgets,
        budget_ledger=BudgetLedger(budgets),
        traces=traces,
    )
    assert client.exact_cache is not None
    client.exact_cache.clear()  # the passes share MALLARD_HOME (an empty ExactCache is falsy)
    outcomes: list[Any] = []

    def prepare(primary: list[str], backup: list[str]) -> None:
        server.push_faults(*primary)
        backup_server.push_faults(*backup)

    if sync:
        for endpoint, prompt, primary, backup, options in SCRIPT:
            prepare(primary, backup)
            try:
                outcomes.append(client.complete(endpoint, prompt, **options))
            except Exception as exc:  # noqa: BLE001 - the error is the record
                outcomes.append(exc)
    else:

        async def script() -> None:
            for endpoint, prompt, primary, backup, options in SCRIPT:
                prepare(primary, backup)
                try:
                    outcomes.append(await client.acomplete(endpoint, prompt, **options))
                except Exception as exc:  # noqa: BLE001
                    outcomes.append(exc)

        run_closing(client, script)
    traces.flush()
    return {
        "calls": [_record(outcome) for outcome in outcomes],
        "traces": _trace_rows(tmp_path / name / "traces"),
        "requests": [[(r.fault, r.body) for r in srv.requests] for srv in (server, backup_server)],
    }


def test_fault_script_gives_identical_attempt_records(server, backup_server, make_client, tmp_path):
    sync = _run("sync", True, server, backup_server, make_client, tmp_path)
    async_ = _run("async", False, server, backup_server, make_client, tmp_path)
    assert async_["calls"] == sync["calls"]
    assert async_["traces"] == sync["traces"]
    assert async_["requests"] == sync["requests"]

    # the script did what it says, so equality above is not between two empty runs
    faulty, hit, down, repaired, refused, dear = sync["calls"]
    log = faulty[6]
    assert [(a.endpoint, a.attempt, a.outcome) for a in log] == [
        ("api", 1, "server"),
        ("api", 2, "timeout"),
        ("api", 3, "rate_limited"),
        ("api", 4, "ok"),
    ]
    assert 0 < log[0].delay_s <= 0.01 and 0 < log[1].delay_s <= 0.02
    assert log[2].delay_s == pytest.approx(0.3) and log[3].delay_s is None  # Retry-After
    assert faulty[4] == len(log) == 4
    assert hit[3] == "exact" and hit[4] == 0 and hit[6] == []
    assert [(a.endpoint, a.outcome, a.delay_s is None) for a in down[6]] == [
        *[("api", "server", False)] * 3,
        ("api", "server", True),  # no backoff after the last retry: fail over at once
        ("backup", "ok", True),
    ]
    assert repaired[6] == [Attempt("api", 1, "ok"), Attempt("api", 1, "ok")]
    assert repaired[10] == {"answer": "ok", "score": 3}
    assert refused[:2] == ("error", "AllEndpointsFailedError")
    assert dear[:2] == ("error", "BudgetExceededError")
    assert [row["status"] for row in sync["traces"]] == ["ok"] * 4 + ["error"] * 2
