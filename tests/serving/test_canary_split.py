"""The canary on the real server: a sticky split by entity key, the variant in every response,
the prediction log's `challenger` role and the `variant` metric label; the challenger stops
serving when its canary ends."""

from __future__ import annotations

import json
import time

import httpx
from server_app import CANARY_SHARE
from serving_helpers import auth, metric_samples
from world import CANARY_MODEL, World, register_version

from mallard.config import load_settings
from mallard.models.canary import binomial_bounds, in_challenger

KEYS = 10_000
BATCH = 500  # rows a request (the test server takes bodies up to 256 KiB)


def _canary(api: httpx.Client, key: str) -> dict:
    models = {m["name"]: m for m in api.get("/v1/models", headers=auth(key)).json()}
    return models[CANARY_MODEL]["canary"]


def _wait_for(api: httpx.Client, key: str, prefix: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    state = _canary(api, key)
    while not state["state"].startswith(prefix) and time.monotonic() < deadline:
        time.sleep(0.5)
        state = _canary(api, key)
    assert state["state"].startswith(prefix), state
    return state


def _predict(api: httpx.Client, key: str, body: dict, **params) -> dict:
    response = api.post(
        f"/v1/models/{CANARY_MODEL}/predict", json=body, params=params, headers=auth(key)
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_the_split_is_sticky_and_its_share_binomial(
    api: httpx.Client, keys: dict[str, str], world: World
) -> None:
    from mallard.models.registry import client

    developer, viewer = keys["developer"], keys["viewer"]
    assert _canary(api, viewer)["state"] == "inactive: no 'challenger' version"
    before = _predict(api, developer, {"rows": [{**world.sample_row, "customer_id": 1}]})
    assert before["variant"] == "champion" and before["variants"] == {"champion": 1}

    settings = load_settings(home=world.home)
    challenger = register_version(
        world.home, CANARY_MODEL, list(world.features), list(world.categorical)
    )
    client(settings).set_registered_model_alias(CANARY_MODEL, "challenger", str(challenger))
    state = _wait_for(api, viewer, "serving")
    assert state == {
        "challenger": "challenger",
        "share": CANARY_SHARE,
        "version": challenger,
        "state": f"serving v{challenger} to 30% of entities",
    }

    variant: dict[int, str] = {}
    for start in range(1, KEYS + 1, BATCH):
        ids = list(range(start, start + BATCH))
        body = _predict(
            api, keys["ingest"], {"rows": [{**world.sample_row, "customer_id": i} for i in ids]}
        )
        assert body["variant"] == "split" and body["version"] is None
        assert body["variants"] == {"champion": 1, "challenger": challenger}
        for i, prediction in zip(ids, body["predictions"], strict=True):
            variant[i] = prediction["variant"]
            assert prediction["version"] == (challenger if variant[i] == "challenger" else 1)
    # The split is the documented hash: the same in the test process as in the server.
    assert all(
        (variant[i] == "challenger")
        == in_challenger(CANARY_MODEL, {"customer_id": i}, CANARY_SHARE)
        for i in variant
    )
    served = sum(v == "challenger" for v in variant.values())
    low, high = binomial_bounds(KEYS, CANARY_SHARE, 0.999)
    assert low <= served <= high, (low, served, high)

    # Sticky: the same entities in another order and other company meet the same variant.
    again = list(range(KEYS, KEYS - 500, -1)) + list(range(1, 300, 7))
    body = _predict(
        api, developer, {"rows": [{**world.sample_row, "customer_id": i} for i in again]}
    )
    assert [p["variant"] for p in body["predictions"]] == [variant[i] for i in again]
    # By entity key (features from the online store) as by rows.
    entity = _predict(api, developer, {"entities": [{"customer_id": world.customer}]})
    expected = (
        "challenger"
        if in_challenger(CANARY_MODEL, {"customer_id": world.customer}, CANARY_SHARE)
        else "champion"
    )
    assert entity["variant"] == expected and entity["predictions"][0]["variant"] == expected
    # Rows without an entity key cannot be split: the champion answers them.
    keyless = _predict(api, developer, {"rows": [world.sample_row] * 5})
    assert keyless["variant"] == "champion"
    # Naming an alias or a version bypasses the split.
    pinned = _predict(
        api,
        developer,
        {"rows": [{**world.sample_row, "customer_id": i} for i in range(1, 50)]},
        alias="challenger",
    )
    assert pinned["variants"] == {"challenger": challenger}

    found = metric_samples(api.get("/metrics", headers=auth(viewer)).text)
    assert (
        found(
            "mallard_predictions_total",
            model=CANARY_MODEL,
            version=str(challenger),
            variant="challenger",
        )
        >= served
    )
    assert found("mallard_predictions_total", model=CANARY_MODEL, variant="champion") >= (
        KEYS - served
    )

    # The prediction log: the challenger's rows with role challenger, each with its key.
    from mallard.monitoring.predictions import read_predictions

    deadline = time.monotonic() + 20
    logged = read_predictions(settings, CANARY_MODEL, role="challenger")
    while len(logged) < served and time.monotonic() < deadline:
        time.sleep(0.3)
        logged = read_predictions(settings, CANARY_MODEL, role="challenger")
    assert len(logged) >= served
    assert set(logged["model_version"]) == {str(challenger)}
    logged_keys = {json.loads(k)["customer_id"] for k in logged["entity_key"]}
    assert {i for i, v in variant.items() if v == "challenger"} <= logged_keys
    assert "customer_id" not in json.loads(logged["features"].iloc[0])

    # When the canary ends (the analysis tags the challenger's version), the champion answers.
    client(settings).set_model_version_tag(
        CANARY_MODEL, str(challenger), "mallard.canary", "rolled_back"
    )
    _wait_for(api, viewer, "inactive: the canary of")
    after = _predict(
        api, developer, {"rows": [{**world.sample_row, "customer_id": i} for i in range(1, 200)]}
    )
    assert after["variants"] == {"champion": 1}


def test_a_row_key_is_checked(api: httpx.Client, keys: dict[str, str], world: World) -> None:
    response = api.post(
        f"/v1/models/{CANARY_MODEL}/predict",
        json={"rows": [world.sample_row, {**world.sample_row, "customer_id": "seven"}]},
        headers=auth(keys["developer"]),
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "rows[1].customer_id" and error["code"] == "invalid_type"
