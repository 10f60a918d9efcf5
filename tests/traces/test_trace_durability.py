"""The guarantees over real servers: `kill -9` of the server during a stream of batches loses
no acknowledged span (counted against the table after a restart), and a full buffer answers
429 with Retry-After and loses nothing of a client that retries after it."""

from __future__ import annotations

import signal
import threading
import time

import httpx
from spans import llm_spans
from trace_helpers import OTLP, PROTOBUF, auth, make_keys, start_server, wait_for

from mallard.config import load_settings
from mallard.traces.store import trace_store


def _keys_in(store) -> list[tuple[str, str]]:
    return [(r["trace_id"], r["span_id"]) for r in store.read()]


def test_kill_9_during_a_stream_loses_no_acknowledged_span(tmp_path) -> None:
    home = tmp_path / "home"
    keys = make_keys(home)
    store = trace_store(load_settings(home=home))
    # Flushing every 0.5 s: at the kill, some acknowledged spans are committed, the rest are
    # only in the write-ahead log.
    doomed = start_server(home, tmp_path / "doomed.jsonl", "--flush-s", "0.5")
    acknowledged: list[tuple[str, str]] = []
    sent = {"batches": 0, "failed": 0}
    stop = threading.Event()

    def stream() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set() and sent["batches"] < 2000:
                message, batch = llm_spans(50)
                sent["batches"] += 1
                try:
                    response = client.post(
                        doomed.url + OTLP,
                        content=message.SerializeToString(),
                        headers={**PROTOBUF, **auth(keys["ingest"])},
                    )
                except httpx.HTTPError:
                    sent["failed"] += 1
                    continue
                if response.status_code == 200:
                    acknowledged.extend(batch)

    sender = threading.Thread(target=stream)
    sender.start()
    try:
        wait_for(lambda: len(acknowledged) >= 1500, timeout=60, every=0.05)
        doomed.stop(signal.SIGKILL)
        time.sleep(0.3)  # requests keep failing against the dead server
    finally:
        stop.set()
        sender.join(timeout=30)
        doomed.stop(signal.SIGKILL)
    assert doomed.process.returncode == -signal.SIGKILL
    assert sent["failed"] >= 1  # the stream was still running at the kill
    only_logged = set(acknowledged) - set(_keys_in(store))
    assert only_logged  # acknowledged, not yet in the table: only the write-ahead log has them
    restarted = start_server(home, tmp_path / "restarted.jsonl", "--flush-s", "0.2")
    try:
        found = wait_for(lambda: set(acknowledged) <= set(_keys_in(store)) and _keys_in(store))
    finally:
        restarted.stop()
    lost = set(acknowledged) - set(found)
    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged spans lost"
    assert len(found) == len(set(found))  # and none twice
    assert not list((home / "buffers" / "traces").glob("*.wal"))  # every segment replayed


def test_a_full_buffer_answers_429_and_a_retrying_client_loses_nothing(tmp_path) -> None:
    home = tmp_path / "home"
    keys = make_keys(home)
    store = trace_store(load_settings(home=home))
    server = start_server(
        home,
        tmp_path / "tight.jsonl",
        "--flush-s",
        "1.0",
        "--flush-rows",
        "1000000",
        "--max-pending",
        "200",
    )
    try:
        batches = [llm_spans(100) for _ in range(6)]
        refusals: list[httpx.Response] = []
        with httpx.Client(timeout=30) as client:
            for message, _ in batches:
                body = message.SerializeToString()
                for _attempt in range(30):
                    response = client.post(
                        server.url + OTLP,
                        content=body,
                        headers={**PROTOBUF, **auth(keys["ingest"])},
                    )
                    if response.status_code != 429:
                        break
                    refusals.append(response)
                    time.sleep(float(response.headers["Retry-After"]))
                assert response.status_code == 200, response.text
        assert refusals, "the buffer never filled"
        first = refusals[0]
        assert int(first.headers["Retry-After"]) >= 1
        assert first.json()["error"]["code"] == "buffer_full"
        expected = {key for _, keys_ in batches for key in keys_}
        held = wait_for(lambda: expected <= set(_keys_in(store)) and _keys_in(store))
        assert len([k for k in held if k in expected]) == len(expected) == 600
        metrics = httpx.get(server.url + "/metrics", headers=auth(keys["viewer"])).text
        assert 'mallard_trace_batches_refused_total{reason="buffer_full"}' in metrics
    finally:
        server.stop()


def test_a_failing_lake_answers_503_and_the_acknowledged_spans_land_once_it_is_back(
    tmp_path,
) -> None:
    home = tmp_path / "home"
    keys = make_keys(home)
    store = trace_store(load_settings(home=home))
    store.table_path.parent.mkdir(parents=True, exist_ok=True)
    store.table_path.write_text("not a table")  # every flush fails: the lake is broken
    server = start_server(
        home, tmp_path / "failing.jsonl", "--flush-s", "0.2", "--max-pending", "200"
    )
    try:
        acknowledged: list[tuple[str, str]] = []
        refused: httpx.Response | None = None
        with httpx.Client(timeout=30) as client:
            for _ in range(10):
                message, batch = llm_spans(100)
                response = client.post(
                    server.url + OTLP,
                    content=message.SerializeToString(),
                    headers={**PROTOBUF, **auth(keys["ingest"])},
                )
                if response.status_code == 200:
                    acknowledged += batch
                    time.sleep(0.5)  # a flush fails in between
                    continue
                refused = response
                break
        assert refused is not None and refused.status_code == 503, refused
        assert refused.json()["error"]["code"] == "unavailable"
        assert "last flush failed" in refused.json()["error"]["message"]
        assert int(refused.headers["Retry-After"]) >= 1
        assert acknowledged
        store.table_path.unlink()  # the lake is back
        held = wait_for(lambda: set(acknowledged) <= set(_keys_in(store)) and _keys_in(store))
        assert len(held) == len(acknowledged)  # every acknowledged span, none of the refused
    finally:
        server.stop()
