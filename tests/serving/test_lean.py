"""The lean path of `POST /v1/features/online` answers as its FastAPI route does: the same
requests to an app with the lean path and to one without it get the same status, body and
headers (request ids aside); on the real server it is counted and logged under its route."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest
from serving_helpers import Server, auth, metric_samples
from world import World

from mallard.config import load_settings

ROUTE = "/v1/features/online"


@pytest.fixture(scope="module")
def apps(world: World) -> Iterator[dict[str, object]]:
    from catalog.features import REGISTRY
    from mallard.features.online import open_online_store
    from mallard.serving import ServingClients, create_app
    from mallard.serving.state import open_server_state

    settings = load_settings(home=world.home)
    state = open_server_state(settings)
    store = open_online_store("sqlite", path=str(settings.online_store_path))
    clients = ServingClients(state=state, online_store=store, feature_registry=REGISTRY)
    built = {
        "lean": create_app(clients, settings, warm_up=False, lean=True),
        "fastapi": create_app(clients, settings, warm_up=False, lean=False),
    }
    assert built["lean"].state.services.lean and not built["fastapi"].state.services.lean
    yield built
    store.close()
    state.close()


def _send(app, content: bytes | None, headers: dict[str, str]) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(ROUTE, content=content, headers=headers)

    return asyncio.run(go())


def _cases(world: World, keys: dict[str, str]) -> list[tuple[str, bytes | None, dict[str, str]]]:
    viewer = {**auth(keys["viewer"]), "content-type": "application/json"}
    ingest = {**auth(keys["ingest"]), "content-type": "application/json"}

    def body(value: object) -> bytes:
        return json.dumps(value).encode()

    known = {"customer_id": world.customer}
    return [
        (
            "service",
            body({"entities": [known, {"customer_id": 10**9}], "service": "churn_features"}),
            viewer,
        ),
        (
            "references",
            body({"entities": [known], "features": ["usage_7d:*", "billing_30d:current_plan"]}),
            ingest,
        ),
        ("unknown feature", body({"entities": [known], "features": ["usage_7d:nope"]}), viewer),
        ("unknown view", body({"entities": [known], "features": ["nope:x"]}), viewer),
        ("unknown service", body({"entities": [known], "service": "nope"}), viewer),
        (
            "both",
            body({"entities": [known], "service": "churn_features", "features": ["usage_7d:*"]}),
            viewer,
        ),
        ("neither", body({"entities": [known]}), viewer),
        ("entities not a list", body({"entities": "nope", "service": "churn_features"}), viewer),
        ("no entities", body({"entities": [], "service": "churn_features"}), viewer),
        ("extra field", body({"entities": [known], "service": "churn_features", "x": 1}), viewer),
        (
            "key type",
            body({"entities": [{"customer_id": "x"}], "service": "churn_features"}),
            viewer,
        ),
        ("unknown key", body({"entities": [{"customer": 1}], "service": "churn_features"}), viewer),
        (
            "float key",
            body({"entities": [{"customer_id": 1.5}], "service": "churn_features"}),
            viewer,
        ),
        (
            "huge key",
            body({"entities": [{"customer_id": 2**70}], "service": "churn_features"}),
            viewer,
        ),
        ("not JSON", b"{not json", viewer),
        ("empty body", b"", viewer),
        ("JSON array", b"[1, 2]", viewer),
        (
            "text/plain",
            body({"entities": [known], "service": "churn_features"}),
            {**viewer, "content-type": "text/plain"},
        ),
        (
            "no content type",
            body({"entities": [known], "service": "churn_features"}),
            auth(keys["viewer"]),
        ),
        (
            "no key",
            body({"entities": [known], "service": "churn_features"}),
            {"content-type": "application/json"},
        ),
        (
            "unknown key",
            body({"entities": [known], "service": "churn_features"}),
            {**viewer, "authorization": "Bearer mk_00000000_" + "A" * 43},
        ),
        (
            "x-api-key",
            body({"entities": [known], "service": "churn_features"}),
            {"x-api-key": keys["viewer"], "content-type": "application/json"},
        ),
        ("not utf-8", b"\xff\xfe{}", viewer),
    ]


def _comparable(response: httpx.Response) -> dict:
    body = response.json()
    if "error" in body:
        body["error"].pop("request_id", None)
    return {
        "status": response.status_code,
        "body": body,
        "content-type": response.headers.get("content-type"),
        "www-authenticate": response.headers.get("www-authenticate"),
        "retry-after": response.headers.get("retry-after"),
    }


def test_the_lean_path_answers_as_the_route_does(apps, world: World, keys: dict[str, str]) -> None:
    statuses = set()
    for name, content, headers in _cases(world, keys):
        lean = _comparable(_send(apps["lean"], content, headers))
        routed = _comparable(_send(apps["fastapi"], content, headers))
        assert lean == routed, name
        statuses.add(lean["status"])
    assert statuses == {200, 401, 404, 422}


def test_rate_limits_and_roles_on_the_lean_path(apps, world: World, keys: dict[str, str]) -> None:
    from mallard.serving.state import open_server_state

    state = open_server_state(load_settings(home=world.home))
    try:
        limited = {
            name: state.create_key(f"lean-{name}", "viewer", rate_per_s=0.01, burst=1).key
            for name in apps
        }
    finally:
        state.close()
    body = json.dumps({"entities": [{"customer_id": 1}], "service": "churn_features"}).encode()
    answers = {}
    for name, app in apps.items():
        headers = {**auth(limited[name]), "content-type": "application/json"}
        assert _send(app, body, headers).status_code == 200
        answers[name] = _comparable(_send(app, body, headers))
    assert answers["lean"]["status"] == 429 and answers["lean"]["retry-after"]
    for answer in answers.values():
        answer["body"]["error"].pop("retry_after_s")
        answer["body"]["error"]["message"] = answer["body"]["error"]["message"].split("retry")[0]
        answer.pop("retry-after")
    assert answers["lean"] == answers["fastapi"]


def test_the_real_server_counts_and_logs_it_under_its_route(
    api: httpx.Client, server: Server, keys: dict[str, str], world: World
) -> None:
    response = api.post(
        ROUTE,
        json={"entities": [{"customer_id": world.customer}], "service": "churn_features"},
        headers={**auth(keys["viewer"]), "X-Request-ID": "lean-1"},
    )
    assert response.status_code == 200 and response.headers["x-request-id"] == "lean-1"
    found = metric_samples(api.get("/metrics", headers=auth(keys["viewer"])).text)
    assert found("mallard_http_requests_total", route=ROUTE, method="POST", status="200") >= 1
    lines = [
        json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")
    ]
    mine = [line for line in lines if line.get("request_id") == "lean-1"]
    assert mine and mine[0]["route"] == ROUTE and mine[0]["key"]
