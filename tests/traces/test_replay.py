"""Done when: the sample world's production traces, replayed through the OTLP route as the
spans an instrumented application sends (a request span, a retrieval span with its documents,
the LLM span), come out as gradeable rows equal to the generated ones."""

from __future__ import annotations

import json

import httpx
from trace_helpers import OTLP, PROTOBUF, auth, wait_for

from mallard.sample_world.generate import WorldSpec, _traces_frame
from mallard.traces.replay import otlp_request
from mallard.traces.schema import normalize_trace_id, trace_schema

TEST_END = "2026-06-30"


def test_the_sample_worlds_traces_replayed_through_otlp_equal_the_generated(
    trace_server, trace_keys, trace_store
) -> None:
    import datetime as dt

    generated = _traces_frame(WorldSpec(end_date=dt.date.fromisoformat(TEST_END), customers=2000))
    rows = generated.to_dict("records")
    for row in rows:
        row["timestamp"] = row["timestamp"].to_pydatetime()
        row["retrieved_ids"] = list(row["retrieved_ids"])
    assert len(rows) > 1500
    with httpx.Client(timeout=60) as client:
        for start in range(0, len(rows), 100):
            body = otlp_request(rows[start : start + 100]).SerializeToString()
            response = client.post(
                trace_server.url + OTLP,
                content=body,
                headers={**PROTOBUF, **auth(trace_keys["ingest"])},
            )
            assert response.status_code == 200, response.text
    wanted = {normalize_trace_id(r["trace_id"]) for r in rows}
    wait_for(
        lambda: len(wanted & {r["trace_id"] for r in trace_store.read()}) == len(wanted), timeout=60
    )
    spans = trace_store.frame()
    spans = spans[spans["trace_id"].isin(wanted)]
    assert len(spans) == 3 * len(rows) - sum(not r["retrieved_ids"] for r in rows)
    graded = {
        r["trace_id"]: r
        for r in trace_store.gradeable().to_dict("records")
        if r["trace_id"] in wanted
    }
    assert len(graded) == len(rows)
    mismatches = []
    for expected in rows:
        got = graded[normalize_trace_id(expected["trace_id"])]
        for column in trace_schema().names:
            want, have = expected[column], got[column]
            if column == "trace_id":
                want = normalize_trace_id(want)  # OTLP ids are 32 hex digits
            elif column == "attributes":
                want, have = json.loads(want), json.loads(have)
            elif column == "retrieved_ids":
                have = list(have)
            elif column == "timestamp":
                have = have.to_pydatetime()
            if want != have:
                mismatches.append((expected["trace_id"], column, want, have))
    assert not mismatches, mismatches[:5]
