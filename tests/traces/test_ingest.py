"""Trace ingestion over a real uvicorn server: an application with the stock OpenTelemetry SDK
(its OTLP/HTTP exporter, the openai-v2 instrumentation, no Mallard code), raw OTLP protobuf,
OTLP JSON, gzip, OpenInference attributes, JSON rows; duplicates stored once; malformed input
of each kind refused naming the field, with nothing of its batch written; who may send."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import httpx
import pytest
from click.testing import CliRunner
from spans import llm_spans, new_span_id, new_trace_id, request, to_json
from trace_helpers import HERE, OTLP, PROTOBUF, auth, wait_for

from mallard.llm.testing import FakeOpenAIServer


def stored(store, keys) -> set[tuple[str, str]]:
    """Which of `keys` (trace_id, span_id) the table holds."""
    wanted = set(keys)
    return {(r["trace_id"], r["span_id"]) for r in store.read()} & wanted


def all_stored(store, keys) -> bool:
    return stored(store, keys) == set(keys)


def count(store, keys) -> int:
    wanted = set(keys)
    return sum((r["trace_id"], r["span_id"]) in wanted for r in store.read())


def post_otlp(server, key: str, message, **options) -> httpx.Response:
    return httpx.post(
        server.url + OTLP,
        content=message.SerializeToString(),
        headers={**PROTOBUF, **auth(key), **options.pop("headers", {})},
        timeout=30,
        **options,
    )


def test_an_app_with_the_stock_sdk_and_openai_instrumentation_shows_up(
    trace_server, trace_keys, trace_store, trace_home, monkeypatch
) -> None:
    with FakeOpenAIServer() as fake:
        env = {
            **os.environ,
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": trace_server.url + OTLP,
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "Authorization=Bearer%20" + trace_keys["ingest"],
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip",
            "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY",
        }
        ran = subprocess.run(
            [sys.executable, str(HERE / "instrumented_app.py"), fake.base_url, "How do I cancel?"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert ran.returncode == 0, ran.stderr
    assert "Failed to export" not in ran.stderr, ran.stderr
    trace_id, answer = ran.stdout.strip().split("\t")
    spans = wait_for(lambda: len(trace_store.spans(trace_id)) == 2 and trace_store.spans(trace_id))
    by_kind = {s["span_kind"]: s for s in spans}
    call, request_span = by_kind["llm"], by_kind["other"]
    assert (
        call["span_name"] == "chat fake-model" and call["parent_span_id"] == request_span["span_id"]
    )
    assert (call["provider"], call["model"]) == ("openai", "fake-model")
    assert (call["input"], call["output"]) == ("How do I cancel?", answer)
    assert call["prompt_tokens"] > 0 and call["completion_tokens"] > 0
    assert (request_span["user_id"], request_span["session_id"]) == ("cust-42", "s-7")
    kept = json.loads(call["attributes"])
    assert kept["otel.resource"]["service.name"] == "support-app"
    assert json.loads(kept["gen_ai.input.messages"])[0]["role"] == "system"  # kept whole

    monkeypatch.setenv("MALLARD_HOME", str(trace_home))
    monkeypatch.setenv("DAGSTER_HOME", str(trace_home / "dagster"))
    from cli.main import main

    listed = CliRunner().invoke(main, ["traces", "list", "--limit", "1000"])
    assert listed.exit_code == 0, listed.output
    line = next(line for line in listed.output.splitlines() if trace_id in line)
    assert "2 span(s)" in line and "fake-model" in line and "How do I cancel?" in line
    shown = CliRunner().invoke(main, ["traces", "show", trace_id])
    assert shown.exit_code == 0, shown.output
    assert "[llm] chat fake-model" in shown.output and "[other] answer question" in shown.output
    assert "gradeable: input 'How do I cancel?'" in shown.output


@pytest.mark.parametrize(
    ("encoding", "gzipped"),
    [("protobuf", False), ("json", False), ("protobuf", True), ("json", True)],
)
def test_raw_otlp_protobuf_and_json_gzip_or_not(
    trace_server, trace_keys, trace_store, encoding: str, gzipped: bool
) -> None:
    message, keys = llm_spans(5)
    body = to_json(message) if encoding == "json" else message.SerializeToString()
    headers = {
        "Content-Type": "application/json" if encoding == "json" else "application/x-protobuf",
        **auth(trace_keys["ingest"]),
    }
    if gzipped:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    response = httpx.post(trace_server.url + OTLP, content=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    if encoding == "json":
        assert response.headers["content-type"] == "application/json" and response.json() == {}
    else:
        assert response.headers["content-type"] == "application/x-protobuf"
    wait_for(lambda: all_stored(trace_store, keys))
    rows = [r for r in trace_store.read() if (r["trace_id"], r["span_id"]) in set(keys)]
    assert sorted(r["input"] for r in rows) == [f"q{i}" for i in range(5)]
    assert {r["model"] for r in rows} == {"gpt-4o-mini"}


def test_openinference_spans_and_the_gradeable_row(trace_server, trace_keys, trace_store) -> None:
    trace_id, root, retriever, llm = new_trace_id(), new_span_id(), new_span_id(), new_span_id()
    t0 = 1_780_000_000_000_000_000
    message = request(
        [
            {
                "trace_id": trace_id,
                "span_id": root,
                "name": "query",
                "start": t0,
                "end": t0 + 500_000_000,
                "attributes": {
                    "openinference.span.kind": "CHAIN",
                    "input.value": "Is 4K included?",
                    "output.value": "On Premium, yes.",
                },
            },
            {
                "trace_id": trace_id,
                "span_id": retriever,
                "parent": root,
                "name": "retrieve",
                "start": t0 + 1_000_000,
                "end": t0 + 20_000_000,
                "attributes": {
                    "openinference.span.kind": "RETRIEVER",
                    "retrieval.documents.0.document.id": "plans",
                    "retrieval.documents.0.document.content": "Premium includes 4K.",
                },
            },
            {
                "trace_id": trace_id,
                "span_id": llm,
                "parent": root,
                "name": "llm",
                "start": t0 + 30_000_000,
                "end": t0 + 450_000_000,
                "attributes": {
                    "openinference.span.kind": "LLM",
                    "llm.model_name": "gpt-4o-mini",
                    "llm.token_count.prompt": 120,
                    "llm.token_count.completion": 6,
                    "llm.input_messages.0.message.role": "user",
                    "llm.input_messages.0.message.content": "Premium includes 4K. Is 4K included?",
                    "llm.output_messages.0.message.role": "assistant",
                    "llm.output_messages.0.message.content": "On Premium, yes.",
                },
            },
        ]
    )
    assert post_otlp(trace_server, trace_keys["ingest"], message).status_code == 200
    spans = wait_for(
        lambda: len(trace_store.spans(trace_id.hex())) == 3 and trace_store.spans(trace_id.hex())
    )
    assert [s["span_kind"] for s in spans] == ["chain", "retrieval", "llm"]
    graded = trace_store.gradeable()
    row = graded[graded["trace_id"] == trace_id.hex()].iloc[0]
    assert (row["input"], row["output"], list(row["retrieved_ids"])) == (
        "Is 4K included?",
        "On Premium, yes.",
        ["plans"],
    )
    assert row["retrieved_text"] == "Premium includes 4K." and row["span_id"] == llm.hex()
    assert (row["model"], row["prompt_tokens"], row["completion_tokens"]) == ("gpt-4o-mini", 120, 6)


def test_json_rows(trace_server, trace_keys, trace_store) -> None:
    trace_id = "0f8e3a5c-1b2d-4e6f-8a9b-0c1d2e3f4a5b"
    rows = [
        {
            "trace_id": trace_id,
            "timestamp": "2026-06-01T10:00:00Z",
            "model": "gpt-4o-mini",
            "input": "hello",
            "output": "hi",
            "prompt_tokens": 3,
            "attributes": {"app": "web"},
        },
        {
            "trace_id": trace_id,
            "span_id": "retrieval-1",
            "span_kind": "retrieval",
            "timestamp": "2026-06-01T09:59:59.5",
            "retrieved_ids": ["a", "b"],
        },
    ]
    response = httpx.post(
        trace_server.url + "/v1/traces",
        json={"rows": rows},
        headers=auth(trace_keys["ingest"]),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert (response.json()["spans"], response.json()["traces"]) == (2, 1)
    normalized = trace_id.replace("-", "")
    spans = wait_for(
        lambda: len(trace_store.spans(normalized)) == 2 and trace_store.spans(normalized)
    )
    retrieval, call = spans
    assert retrieval["span_id"] == "retrieval-1" and retrieval["retrieved_ids"] == ["a", "b"]
    assert call["span_kind"] == "llm" and len(call["span_id"]) == 16  # derived from the trace id
    assert json.loads(call["attributes"]) == {"app": "web"}
    assert str(retrieval["timestamp"]) == "2026-06-01 09:59:59.500000+00:00"  # naive: UTC


def test_duplicate_batches_are_stored_once(trace_server, trace_keys, trace_store) -> None:
    message, keys = llm_spans(20)
    assert post_otlp(trace_server, trace_keys["ingest"], message).status_code == 200
    wait_for(lambda: all_stored(trace_store, keys))
    # The same batch again (a retry after a lost answer), after its first copy was committed,
    # and twice within one flush; then the same spans as JSON.
    for _ in range(3):
        assert post_otlp(trace_server, trace_keys["ingest"], message).status_code == 200
    response = httpx.post(
        trace_server.url + OTLP,
        content=to_json(message),
        headers={"Content-Type": "application/json", **auth(trace_keys["ingest"])},
        timeout=30,
    )
    assert response.status_code == 200
    # One batch holding a span twice.
    doubled, doubled_keys = llm_spans(1)
    spans = doubled.resource_spans[0].scope_spans[0].spans
    spans.add().CopyFrom(spans[0])
    assert post_otlp(trace_server, trace_keys["ingest"], doubled).status_code == 200
    marker, marker_keys = llm_spans(1)
    assert post_otlp(trace_server, trace_keys["ingest"], marker).status_code == 200
    wait_for(lambda: all_stored(trace_store, marker_keys))
    assert count(trace_store, keys) == 20
    assert count(trace_store, doubled_keys) == 1


def _bad_spans() -> list[tuple[str, dict, str]]:
    """(what, span fields that break it, the field the answer must name)."""
    where = "resourceSpans[0].scopeSpans[0].spans[1]"
    return [
        ("short trace id", {"trace_id": b"\x01" * 8}, f"{where}.traceId"),
        ("zero span id", {"span_id": b"\x00" * 8}, f"{where}.spanId"),
        ("bad parent", {"parent": b"\x01\x02"}, f"{where}.parentSpanId"),
        ("no start", {"start": 0, "end": 5}, f"{where}.startTimeUnixNano"),
        ("ends first", {"start": 2_000, "end": 1_000}, f"{where}.endTimeUnixNano"),
        (
            "tokens as text",
            {"attributes": {"gen_ai.usage.input_tokens": "many"}},
            f"{where}.attributes[gen_ai.usage.input_tokens]",
        ),
        (
            "messages not JSON",
            {"attributes": {"gen_ai.request.model": "m", "gen_ai.output.messages": "["}},
            f"{where}.attributes[gen_ai.output.messages]",
        ),
    ]


def _batch_with(bad: dict):
    good = {
        "trace_id": new_trace_id(),
        "span_id": new_span_id(),
        "attributes": {"gen_ai.request.model": "m"},
    }
    broken = {"trace_id": new_trace_id(), "span_id": new_span_id(), **bad}
    message = request([good, broken])
    return message, [(good["trace_id"].hex(), good["span_id"].hex())]


def test_malformed_input_of_each_kind_is_refused_naming_the_field(
    trace_server, trace_keys, trace_store
) -> None:
    key = auth(trace_keys["ingest"])
    url = trace_server.url + OTLP
    refused_keys: list[tuple[str, str]] = []

    def refused(response: httpx.Response, status: int, field: str) -> None:
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["field"] == field, error
        assert error["message"] and error["request_id"]

    for _what, bad, field in _bad_spans():
        message, good_keys = _batch_with(bad)
        refused_keys += good_keys
        for as_json in (False, True):
            body = to_json(message) if as_json else message.SerializeToString()
            kind = "application/json" if as_json else "application/x-protobuf"
            response = httpx.post(url, content=body, headers={"Content-Type": kind, **key})
            refused(response, 400, field)
    message, good_keys = llm_spans(2)
    refused_keys += good_keys
    body = message.SerializeToString()
    refused(httpx.post(url, content=b"\x0a\xff\xff", headers={**PROTOBUF, **key}), 400, "body")
    refused(
        httpx.post(
            url, content=b'{"resourceSpans": [', headers={"Content-Type": "application/json", **key}
        ),
        400,
        "body",
    )
    refused(
        httpx.post(
            url,
            content=b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz"}]}]}]}',
            headers={"Content-Type": "application/json", **key},
        ),
        400,
        "resourceSpans[0].scopeSpans[0].spans[0].traceId",
    )
    refused(
        httpx.post(
            url,
            content=json.dumps(
                {"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}
            ).encode(),
            headers={"Content-Type": "application/json", **key},
        ),
        400,
        "resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano",
    )
    refused(
        httpx.post(url, content=body, headers={"Content-Type": "text/plain", **key}),
        415,
        "header.content-type",
    )
    refused(
        httpx.post(url, content=body, headers={**PROTOBUF, "Content-Encoding": "br", **key}),
        415,
        "header.content-encoding",
    )
    refused(
        httpx.post(url, content=body, headers={**PROTOBUF, "Content-Encoding": "gzip", **key}),
        400,
        "body",
    )
    rows_url = trace_server.url + "/v1/traces"
    good_row = {"trace_id": new_trace_id().hex(), "timestamp": "2026-06-01T10:00:00Z"}
    refused_keys.append((good_row["trace_id"], ""))
    for bad_row, field in (
        ({"trace_id": "t1"}, "rows[1].timestamp"),
        (
            {"trace_id": "t1", "timestamp": "2026-06-01", "prompt_tokens": -1},
            "rows[1].prompt_tokens",
        ),
        ({"trace_id": "t1", "timestamp": "2026-06-01", "span_kind": "db"}, "rows[1].span_kind"),
        ({"trace_id": "t1", "timestamp": "2026-06-01", "colour": "red"}, "rows[1].colour"),
        ({"trace_id": "t1", "timestamp": "2026-06-01", "attributes": "[1]"}, "rows[1].attributes"),
    ):
        refused(httpx.post(rows_url, json={"rows": [good_row, bad_row]}, headers=key), 422, field)
    # A good batch after them: once it is stored, nothing of the refused ones is.
    marker, marker_keys = llm_spans(1)
    assert post_otlp(trace_server, trace_keys["ingest"], marker).status_code == 200
    wait_for(lambda: all_stored(trace_store, marker_keys))
    held = {r["trace_id"] for r in trace_store.read()}
    assert not {trace_id for trace_id, _ in refused_keys} & held


def test_who_may_send(trace_server, trace_keys) -> None:
    message, _ = llm_spans(1)
    body = message.SerializeToString()
    url = trace_server.url + OTLP
    assert httpx.post(url, content=body, headers=PROTOBUF).status_code == 401
    assert (
        httpx.post(
            url, content=body, headers={**PROTOBUF, **auth(trace_keys["viewer"])}
        ).status_code
        == 403
    )
    assert (
        httpx.post(
            url, content=body, headers={**PROTOBUF, "X-API-Key": trace_keys["ingest"]}
        ).status_code
        == 200
    )
    assert (
        httpx.post(url, content=body, headers={**PROTOBUF, **auth(trace_keys["admin"])}).status_code
        == 200
    )
    # An ingest key sends traffic and nothing else.
    assert (
        httpx.get(trace_server.url + "/v1/audit", headers=auth(trace_keys["ingest"])).status_code
        == 403
    )
    metrics = httpx.get(trace_server.url + "/metrics", headers=auth(trace_keys["viewer"])).text
    assert "mallard_trace_spans_received_total" in metrics


def test_every_batch_is_audited_accepted_or_refused(trace_server, trace_keys) -> None:
    """Who sent how many spans, and who was refused: each batch in the audit log by request id."""
    message, _ = llm_spans(3)
    sent = post_otlp(trace_server, trace_keys["ingest"], message)
    refused = httpx.post(
        trace_server.url + OTLP,
        content=b"\x0a\xff not protobuf",
        headers={**PROTOBUF, **auth(trace_keys["ingest"])},
        timeout=30,
    )
    rows = httpx.post(
        trace_server.url + "/v1/traces",
        json={"rows": [{"trace_id": new_trace_id().hex(), "timestamp": "2026-06-30T10:00:00Z"}]},
        headers=auth(trace_keys["admin"]),
        timeout=30,
    )
    assert sent.status_code == 200 and rows.status_code == 200
    assert refused.status_code == 400
    audit = httpx.get(
        trace_server.url + "/v1/audit",
        params={"action": "traces.ingest", "limit": 200},
        headers=auth(trace_keys["admin"]),
    ).json()
    by_request = {entry["request_id"]: entry for entry in audit}
    accepted = by_request[sent.headers["x-request-id"]]
    assert accepted["status"] == 200 and accepted["after"] == {"spans": 3, "traces": 3}
    assert accepted["actor"].startswith("key:")
    assert by_request[rows.headers["x-request-id"]]["after"]["spans"] == 1
    assert by_request[refused.headers["x-request-id"]]["status"] == 400
