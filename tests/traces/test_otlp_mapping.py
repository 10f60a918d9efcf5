"""OTLP spans to trace rows: the GenAI conventions (current message attributes, the older
prompt/completion events and flat attributes, errors), OpenInference, unknown attributes kept,
protobuf and JSON the same, and the span → gradeable-row rule."""

from __future__ import annotations

import gzip
import json

import pytest
from spans import new_span_id, new_trace_id, request, to_json

from mallard.traces import otlp
from mallard.traces.gradeable import gradeable_row


def rows_of(message, *, as_json: bool = False, gzipped: bool = False) -> list[dict]:
    body = to_json(message) if as_json else message.SerializeToString()
    if gzipped:
        body = gzip.compress(body)
    return otlp.to_rows(
        otlp.decode(
            body,
            "application/json" if as_json else "application/x-protobuf",
            "gzip" if gzipped else None,
        )
    )


def one(attributes: dict, **span) -> dict:
    message = request(
        [{"trace_id": new_trace_id(), "span_id": new_span_id(), "attributes": attributes, **span}]
    )
    return rows_of(message)[0]


def extra(row: dict) -> dict:
    return json.loads(row["attributes"])


def test_genai_current_attributes() -> None:
    row = one(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.usage.input_tokens": 812,
            "gen_ai.usage.output_tokens": 41,
            "gen_ai.request.temperature": 0.2,
            "gen_ai.input.messages": json.dumps(
                [
                    {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
                    {"role": "user", "parts": [{"type": "text", "content": "How do I cancel?"}]},
                ]
            ),
            "gen_ai.output.messages": json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": "In Settings."}]}]
            ),
        },
        name="chat gpt-4o-mini",
        start=1_750_000_000_000_000_000,
        end=1_750_000_000_250_000_000,
    )
    assert row["span_kind"] == "llm" and row["span_name"] == "chat gpt-4o-mini"
    assert (row["model"], row["provider"]) == ("gpt-4o-mini-2024-07-18", "openai")
    assert (row["prompt_tokens"], row["completion_tokens"]) == (812, 41)
    assert (row["input"], row["output"]) == ("How do I cancel?", "In Settings.")
    assert row["latency_ms"] == 250.0 and row["status"] == "ok"
    kept = extra(row)
    # The request model (the response model won), the temperature, the operation, and the
    # conversation (the input column holds only its last user message) stay as attributes.
    assert kept["gen_ai.request.model"] == "gpt-4o-mini"
    assert kept["gen_ai.request.temperature"] == 0.2
    assert kept["gen_ai.operation.name"] == "chat"
    assert json.loads(kept["gen_ai.input.messages"])[0]["role"] == "system"
    assert "gen_ai.output.messages" not in kept  # one plain answer: the column holds it whole
    assert "gen_ai.usage.input_tokens" not in kept


def test_genai_older_events_and_flat_attributes() -> None:
    events = one(
        {
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4",
            "gen_ai.usage.prompt_tokens": 7,
        },
        events=[
            (
                "gen_ai.content.prompt",
                {"gen_ai.prompt": json.dumps([{"role": "user", "content": "hi"}])},
            ),
            (
                "gen_ai.content.completion",
                {"gen_ai.completion": json.dumps([{"role": "assistant", "content": "hello"}])},
            ),
        ],
    )
    assert (events["input"], events["output"], events["provider"]) == ("hi", "hello", "openai")
    assert events["prompt_tokens"] == 7 and "otel.events" not in extra(events)
    per_message = one(
        {"gen_ai.request.model": "gpt-4"},
        events=[
            ("gen_ai.system.message", {"content": "Be brief."}),
            ("gen_ai.user.message", {"content": "what plans exist?"}),
            (
                "gen_ai.choice",
                {"index": 0, "message": json.dumps({"role": "assistant", "content": "Two."})},
            ),
        ],
    )
    assert (per_message["input"], per_message["output"]) == ("what plans exist?", "Two.")
    assert len(extra(per_message)["otel.events"]) == 3  # a system message too: kept whole
    flat = one(
        {
            "gen_ai.request.model": "gpt-3.5-turbo",
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.content": "refund?",
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.content": "Within 14 days.",
            "gen_ai.usage.completion_tokens": 4,
        }
    )
    assert (flat["input"], flat["output"], flat["completion_tokens"]) == (
        "refund?",
        "Within 14 days.",
        4,
    )
    assert not any(k.startswith("gen_ai.prompt") for k in extra(flat))


def test_errors_from_the_status_error_type_and_exception_event() -> None:
    typed = one(
        {"gen_ai.request.model": "gpt-4o-mini", "error.type": "APITimeoutError"},
        status=(2, "request timed out after 30 s"),
    )
    assert typed["status"] == "error"
    assert typed["error"] == "APITimeoutError: request timed out after 30 s"
    raised = one(
        {"gen_ai.request.model": "gpt-4o-mini"},
        status=(2, ""),
        events=[
            (
                "exception",
                {
                    "exception.type": "RateLimitError",
                    "exception.message": "429",
                    "exception.stacktrace": "…",
                },
            )
        ],
    )
    assert raised["error"] == "RateLimitError: 429"
    assert extra(raised)["otel.events"][0]["attributes"]["exception.stacktrace"] == "…"
    assert one({"gen_ai.request.model": "m"})["error"] == ""


def test_openinference_llm_retriever_and_chain() -> None:
    trace_id = new_trace_id()
    root, retriever, llm = new_span_id(), new_span_id(), new_span_id()
    t0 = 1_750_000_000_000_000_000
    message = request(
        [
            {
                "trace_id": trace_id,
                "span_id": root,
                "name": "rag",
                "start": t0,
                "end": t0 + 900_000_000,
                "attributes": {
                    "openinference.span.kind": "CHAIN",
                    "input.value": "Can I pause my plan?",
                    "output.value": "Yes, for up to 3 months.",
                    "user.id": "cust-9",
                    "session.id": "s-1",
                },
            },
            {
                "trace_id": trace_id,
                "span_id": retriever,
                "parent": root,
                "name": "retrieve",
                "start": t0 + 10_000_000,
                "end": t0 + 60_000_000,
                "attributes": {
                    "openinference.span.kind": "RETRIEVER",
                    "input.value": "Can I pause my plan?",
                    "retrieval.documents.0.document.id": "kb-12",
                    "retrieval.documents.0.document.content": "Plans can be paused…",
                    "retrieval.documents.0.document.score": 0.91,
                    "retrieval.documents.1.document.id": "kb-40",
                    "retrieval.documents.1.document.content": "Billing cycles…",
                },
            },
            {
                "trace_id": trace_id,
                "span_id": llm,
                "parent": root,
                "name": "ChatCompletion",
                "start": t0 + 70_000_000,
                "end": t0 + 880_000_000,
                "attributes": {
                    "openinference.span.kind": "LLM",
                    "llm.model_name": "claude-3-5-haiku",
                    "llm.provider": "anthropic",
                    "llm.token_count.prompt": 950,
                    "llm.token_count.completion": 12,
                    "llm.token_count.total": 962,
                    "llm.cost.total": 0.00081,
                    "input.value": '{"messages": "…"}',
                    "input.mime_type": "application/json",
                    "llm.input_messages.0.message.role": "user",
                    "llm.input_messages.0.message.content": "Context: … Question: Can I pause?",
                    "llm.output_messages.0.message.role": "assistant",
                    "llm.output_messages.0.message.content": "Yes, for up to 3 months.",
                    "llm.invocation_parameters": '{"temperature": 0}',
                },
            },
        ]
    )
    rows = {r["span_name"]: r for r in rows_of(message)}
    assert [rows[n]["span_kind"] for n in ("rag", "retrieve", "ChatCompletion")] == [
        "chain",
        "retrieval",
        "llm",
    ]
    retrieval = rows["retrieve"]
    assert retrieval["retrieved_ids"] == ["kb-12", "kb-40"]
    assert retrieval["retrieved_text"] == "Plans can be paused…\n\nBilling cycles…"
    assert extra(retrieval)["retrieval.documents.0.document.score"] == 0.91
    call = rows["ChatCompletion"]
    assert (call["model"], call["provider"], call["prompt_tokens"], call["completion_tokens"]) == (
        "claude-3-5-haiku",
        "anthropic",
        950,
        12,
    )
    assert call["cost_usd"] == 0.00081
    assert call["input"] == "Context: … Question: Can I pause?"
    kept = extra(call)
    assert kept["llm.token_count.total"] == 962 and kept["input.value"] == '{"messages": "…"}'
    assert "openinference.span.kind" not in kept and "llm.model_name" not in kept
    assert rows["rag"]["parent_span_id"] == "" and call["parent_span_id"] == root.hex()

    graded = gradeable_row(list(rows.values()))
    assert graded is not None
    assert graded["span_id"] == llm.hex() and graded["parent_span_id"] == ""
    assert (graded["input"], graded["output"]) == (
        "Can I pause my plan?",
        "Yes, for up to 3 months.",
    )
    assert graded["retrieved_ids"] == ["kb-12", "kb-40"]
    assert graded["retrieved_text"] == retrieval["retrieved_text"]
    assert (graded["user_id"], graded["session_id"], graded["model"]) == (
        "cust-9",
        "s-1",
        "claude-3-5-haiku",
    )


def test_the_gradeable_rule_leaves_out_mallards_own_and_traces_without_a_call() -> None:
    t0 = 1_750_000_000_000_000_000
    trace = new_trace_id()
    own = request(
        [
            {
                "trace_id": trace,
                "span_id": new_span_id(),
                "start": t0,
                "attributes": {"gen_ai.request.model": "judge", "mallard.run_id": "run-1"},
            }
        ]
    )
    rows = rows_of(own)
    assert rows[0]["run_id"] == "run-1"
    assert gradeable_row(rows) is None
    assert gradeable_row(rows, include_own=True) is not None
    only_retrieval = rows_of(
        request(
            [
                {
                    "trace_id": new_trace_id(),
                    "span_id": new_span_id(),
                    "attributes": {"retrieval.documents.0.document.id": "a"},
                }
            ]
        )
    )
    assert gradeable_row(only_retrieval) is None
    # Two calls: the one that ended last answers; tokens and cost add up.
    trace = new_trace_id()
    first, second = new_span_id(), new_span_id()
    two = rows_of(
        request(
            [
                {
                    "trace_id": trace,
                    "span_id": first,
                    "start": t0,
                    "end": t0 + 100,
                    "attributes": {
                        "gen_ai.request.model": "a",
                        "gen_ai.usage.input_tokens": 3,
                        "mallard.cost_usd": 0.5,
                    },
                },
                {
                    "trace_id": trace,
                    "span_id": second,
                    "start": t0 + 200,
                    "end": t0 + 300,
                    "attributes": {
                        "gen_ai.request.model": "b",
                        "gen_ai.usage.input_tokens": 4,
                        "mallard.cost_usd": 0.25,
                    },
                },
            ]
        )
    )
    graded = gradeable_row(two)
    assert graded is not None and graded["span_id"] == second.hex() and graded["model"] == "b"
    assert graded["prompt_tokens"] == 7 and graded["cost_usd"] == 0.75


def test_unknown_attributes_resource_scope_and_links_are_kept() -> None:
    linked = new_trace_id()
    message = request(
        [
            {
                "trace_id": new_trace_id(),
                "span_id": new_span_id(),
                "kind": 3,
                "attributes": {
                    "gen_ai.request.model": "m",
                    "app.tenant": "acme",
                    "app.flags": [True, False],
                    "app.nested": {"a": 1, "b": [1.5, "x"]},
                    "http.status_code": 200,
                },
            }
        ],
        resource={"service.name": "support-app", "deployment.environment": "prod"},
    )
    message.resource_spans[0].scope_spans[0].spans[0].links.add(
        trace_id=linked, span_id=new_span_id()
    )
    kept = extra(rows_of(message)[0])
    assert kept["app.tenant"] == "acme" and kept["app.flags"] == [True, False]
    assert kept["app.nested"] == {"a": 1, "b": [1.5, "x"]} and kept["http.status_code"] == 200
    assert kept["otel.resource"] == {
        "service.name": "support-app",
        "deployment.environment": "prod",
    }
    assert kept["otel.scope"] == {"name": "tests"} and kept["otel.span_kind"] == "client"
    assert kept["otel.links"][0]["trace_id"] == linked.hex()


def test_protobuf_json_and_gzip_give_the_same_rows() -> None:
    message = request(
        [
            {
                "trace_id": new_trace_id(),
                "span_id": new_span_id(),
                "parent": new_span_id(),
                "attributes": {
                    "gen_ai.request.model": "m",
                    "gen_ai.usage.input_tokens": 3,
                    "x": 1.5,
                },
                "status": (2, "boom"),
            }
        ]
    )
    expected = rows_of(message)
    assert rows_of(message, as_json=True) == expected
    assert rows_of(message, gzipped=True) == expected
    assert rows_of(message, as_json=True, gzipped=True) == expected


@pytest.mark.parametrize(
    ("attributes", "field"),
    [
        ({"gen_ai.usage.input_tokens": "lots"}, "attributes[gen_ai.usage.input_tokens]"),
        ({"gen_ai.usage.output_tokens": -1}, "attributes[gen_ai.usage.output_tokens]"),
        ({"gen_ai.request.model": ["a"]}, "attributes[gen_ai.request.model]"),
        ({"gen_ai.input.messages": "{not json"}, "attributes[gen_ai.input.messages]"),
        ({"mallard.span_kind": "database"}, "attributes[mallard.span_kind]"),
        ({"mallard.cost_usd": "free"}, "attributes[mallard.cost_usd]"),
    ],
)
def test_a_mapped_attribute_of_the_wrong_type_names_itself(attributes: dict, field: str) -> None:
    with pytest.raises(otlp.TraceInputError) as refused:
        one({"gen_ai.request.model": "m", **attributes})
    assert refused.value.field == f"resourceSpans[0].scopeSpans[0].spans[0].{field}"


def test_a_call_at_the_calendars_end_or_with_no_finite_latency_is_still_gradeable() -> None:
    """A span starting on 9999-12-31 (a client's clock, a fuzzer) or whose latency is not finite
    ends where it starts: the trace is graded, not a 500 from every reader."""
    import datetime as dt

    calls = [
        {
            "trace_id": "t" * 32,
            "span_id": f"{i:016x}",
            "parent_span_id": "",
            "span_kind": "llm",
            "timestamp": dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC),
            "latency_ms": latency,
            "input": f"q{i}",
            "output": f"a{i}",
            "run_id": "",
        }
        for i, latency in enumerate([5_000.0, float("inf"), float("nan")])
    ]
    row = gradeable_row(calls)
    assert row is not None and row["input"] in {"q0", "q1", "q2"}
