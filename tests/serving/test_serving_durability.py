"""Acknowledged predictions survive `kill -9` of the server that answered them.

A second server on the same MALLARD_HOME holds its prediction-log rows in its write-ahead
segments (it would flush only hourly); it answers some predictions and is killed with SIGKILL.
Its segments are unlocked by the kill, so the first server's buffer, flushing every 0.3 s on the
same folder, replays them: every acknowledged prediction reaches the log exactly once.
"""

from __future__ import annotations

import signal
import sys
import time

import httpx
from serving_helpers import HERE, SERVER_SETTINGS, Server, auth, free_port, server_env, start
from world import MODEL, World

from mallard.config import load_settings


def test_acknowledged_predictions_survive_kill_9(
    server: Server, world: World, keys: dict[str, str], tmp_path
) -> None:
    from mallard.monitoring.predictions import read_predictions

    port = free_port()
    doomed = start(
        [sys.executable, str(HERE / "server_app.py"), str(port)],
        server_env(world.home, **{**SERVER_SETTINGS, "MALLARD_PREDICTION_LOG_FLUSH_S": "3600"}),
        port,
        tmp_path / "doomed.jsonl",
    )
    try:
        doomed.wait()
        acknowledged = []
        for _ in range(5):
            response = httpx.post(
                f"{doomed.url}/v1/models/{MODEL}/predict",
                json={"entities": [{"customer_id": world.customer}]},
                headers=auth(keys["ingest"]),
                timeout=30,
            )
            assert response.status_code == 200
            acknowledged.append(response.json()["request_id"])
    finally:
        doomed.stop(signal.SIGKILL)
    assert doomed.process.returncode == -signal.SIGKILL

    settings = load_settings(home=world.home)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        logged = read_predictions(settings, MODEL)
        found = logged[logged["run_id"].isin(acknowledged)]
        if len(found) == len(acknowledged):
            break
        time.sleep(0.3)
    assert sorted(found["run_id"]) == sorted(acknowledged)  # each exactly once
    assert set(found["source"]) == {"api"}
