"""The demo's own calls to the API (pipelines/demo_api.py) on the served test world: `mallard
serve` started and stopped, every call answered, its predictions in the prediction log, the key
it made revoked and both operations audited."""

from __future__ import annotations

import json

from world import World

from mallard.config import load_settings
from pipelines.demo_api import ApiCalls, DemoServer, calls_on


def test_the_demo_serves_calls_and_leaves_no_key_behind(world: World) -> None:
    from mallard.monitoring.predictions import read_predictions
    from mallard.serving.state import open_server_state

    settings = load_settings(home=world.home)
    said: list[str] = []
    server = DemoServer(settings, said.append)
    calls = ApiCalls(url=server.url)
    with server:  # what the demo does (pipelines/demo.py, _serve_and_stream)
        calls_on(server, calls, customer_id=world.customer)

    assert said == [f"starting the API on {server.url} (mallard serve, 1 worker) …"]
    assert calls.status == {
        "features": 200,
        "predict": 200,
        "explain": 200,
        "prompt": 200,
        "metrics": 200,
    }
    assert any(line.startswith("predict    churn_classifier v") for line in calls.lines)
    assert any(line.startswith("explain    top features: ") for line in calls.lines)
    # the server's clean stop flushed the prediction log: the call is there, from the API
    logged = read_predictions(settings, model_name="churn_classifier")
    ours = logged[logged["run_id"] == calls.request_ids["predict"]]
    assert list(ours["source"]) == ["api"]
    assert list(ours["entity_key"]) == [json.dumps({"customer_id": world.customer})]

    state = open_server_state(settings)
    try:
        demo_keys = [k for k in state.keys.list() if k.owner == "mallard-demo"]
        assert demo_keys and all(k.revoked_at is not None for k in demo_keys)
        actions = [e.action for e in state.audit.list(actor="demo")]
        assert "keys.create" in actions and "keys.revoke" in actions
    finally:
        state.close()
