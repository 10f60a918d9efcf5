"""The API on a real uvicorn server (127.0.0.1): routes, the auth matrix, rate limits, features,
predictions with validation in both strictness modes, explanations, prompts, metrics, the audit
log and the prediction log the drift assets read."""

from __future__ import annotations

import datetime as dt
import json
import math
import time

import httpx
import pytest
from serving_helpers import Server, auth, metric_samples
from world import CANARY_MODEL, MODEL, PROMPT, SCHEMA_MODEL, STRICT, World

from mallard.config import load_settings

ROLES = ("admin", "developer", "viewer", "ingest")


def _json(response: httpx.Response) -> dict:
    assert response.headers["content-type"].startswith("application/json"), response.text
    assert "Traceback" not in response.text
    return response.json()


def _error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = _json(response)["error"]
    assert body["message"] and body["code"] and body["request_id"]
    assert response.headers["x-request-id"] == body["request_id"]
    if code is not None:
        assert body["code"] == code, body
    return body


def _post(api: httpx.Client, path: str, key: str, body: dict, **params) -> httpx.Response:
    # json.dumps writes NaN and Infinity tokens (httpx's own encoder refuses them).
    return api.post(
        path,
        content=json.dumps(body),
        params=params,
        headers={**auth(key), "content-type": "application/json"},
    )


def test_health_readiness_docs(api: httpx.Client) -> None:
    health = _json(api.get("/healthz"))
    assert health["status"] == "ok" and health["pid"] > 0
    ready = api.get("/readyz")
    assert ready.status_code == 200, ready.text
    checks = ready.json()
    assert set(checks["checks"]) == {
        "server_state",
        "online_store",
        "prompt_registry",
        "prediction_log",
    }
    assert checks["models"] == {
        MODEL: "loaded v1",
        STRICT: "loaded v1",
        SCHEMA_MODEL: "loaded v1",
        CANARY_MODEL: "loaded v1",
    }
    document = api.get("/openapi.json").json()
    assert all(
        path == "/healthz" or path.startswith(("/v1/", "/readyz", "/metrics"))
        for path in document["paths"]
    )
    assert "swagger" in api.get("/docs").text.lower()


# -- the auth matrix ---------------------------------------------------------------------------
def _sample_request(path: str, method: str) -> tuple[str, dict | None]:
    concrete = path.replace("{name}", MODEL).replace("{prefix}", "00000000")
    if path == "/v1/prompts/{name}":
        concrete = f"/v1/prompts/{PROMPT}"
    return concrete, ({} if method == "post" else None)


def test_every_route_declares_access_and_the_matrix_holds(
    api: httpx.Client, keys: dict[str, str]
) -> None:
    """Every role (and no key, an unknown key) against every route: 401, 403 or allowed."""
    document = api.get("/openapi.json").json()
    callers = {
        "none": None,
        "unknown": "mk_00000000_" + "A" * 43,
        **{role: keys[role] for role in ROLES},
    }
    checked = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            declared = operation.get("x-mallard-access")
            assert declared is not None, f"{method.upper()} {path} declares no access"
            concrete, body = _sample_request(path, method)
            for caller, key in callers.items():
                headers = auth(key) if key else {}
                response = api.request(method, concrete, json=body, headers=headers)
                status = response.status_code
                role = "developer" if caller == "ingest" else caller
                if declared["public"]:
                    expected = "allowed"
                elif key is None or caller == "unknown":
                    expected = 401
                elif role in declared["roles"] and (caller != "ingest" or declared["ingest"]):
                    expected = "allowed"
                else:
                    expected = 403
                where = f"{method.upper()} {path} as {caller}: {status} {response.text[:200]}"
                if expected == "allowed":
                    assert status not in (401, 403, 429) and status < 500, where
                else:
                    assert status == expected, where
                    _error(response, status)
                checked += 1
    assert checked >= 15 * len(callers)


def test_the_declared_matrix(api: httpx.Client) -> None:
    document = api.get("/openapi.json").json()
    access = {
        (m.upper(), p): (tuple(op["x-mallard-access"]["roles"]), op["x-mallard-access"]["ingest"])
        for p, ops in document["paths"].items()
        for m, op in ops.items()
    }
    everyone = ("admin", "developer", "viewer")
    assert access[("POST", "/v1/models/{name}/predict")] == (("admin", "developer"), True)
    assert access[("POST", "/v1/models/{name}/explain")] == (everyone, False)
    assert access[("POST", "/v1/features/online")] == (everyone, True)
    assert access[("POST", "/v1/features/push")] == (("admin", "developer"), True)
    assert access[("GET", "/v1/prompts/{name}")] == (everyone, True)
    assert access[("GET", "/v1/audit")] == (("admin",), False)
    assert access[("POST", "/v1/keys/{prefix}/revoke")] == (("admin",), False)
    assert access[("GET", "/healthz")] == ((), False)


def test_revoking_a_key_takes_effect_on_the_next_request(
    api: httpx.Client, keys: dict[str, str]
) -> None:
    created = _json(
        api.post(
            "/v1/keys", json={"owner": "short-lived", "role": "viewer"}, headers=auth(keys["admin"])
        )
    )
    key, prefix = created["key"], created["record"]["prefix"]
    assert api.get("/v1/whoami", headers=auth(key)).json()["owner"] == "short-lived"
    revoked = api.post(f"/v1/keys/{prefix}/revoke", headers=auth(keys["admin"]))
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    body = _error(api.get("/v1/whoami", headers=auth(key)), 401, "unauthenticated")
    assert body["reason"] == "revoked_key"
    # A key cannot revoke (or rotate) itself over the API: the fuzzer's key stays usable.
    me = api.get("/v1/whoami", headers=auth(keys["admin"])).json()["prefix"]
    _error(api.post(f"/v1/keys/{me}/revoke", headers=auth(keys["admin"])), 409, "own_key")


def test_rotation_issues_a_new_key_and_retires_the_old(
    api: httpx.Client, keys: dict[str, str]
) -> None:
    created = _json(
        api.post(
            "/v1/keys", json={"owner": "rotating", "role": "developer"}, headers=auth(keys["admin"])
        )
    )
    rotated = api.post(
        f"/v1/keys/{created['record']['prefix']}/rotate", json={}, headers=auth(keys["admin"])
    )
    assert rotated.status_code == 201, rotated.text
    new = rotated.json()
    assert new["record"]["owner"] == "rotating" and new["record"]["role"] == "developer"
    _error(api.get("/v1/whoami", headers=auth(created["key"])), 401)
    assert api.get("/v1/whoami", headers=auth(new["key"])).status_code == 200


def test_429_with_retry_after_and_recovery(api: httpx.Client, keys: dict[str, str]) -> None:
    created = _json(
        api.post(
            "/v1/keys",
            json={"owner": "bursty", "role": "viewer", "rate_per_s": 1, "burst": 2},
            headers=auth(keys["admin"]),
        )
    )
    headers = auth(created["key"])
    statuses = [api.get("/v1/whoami", headers=headers).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    limited = api.get("/v1/whoami", headers=headers)
    _error(limited, 429, "rate_limited")
    wait = int(limited.headers["retry-after"])
    assert 1 <= wait <= 2
    time.sleep(wait)
    assert api.get("/v1/whoami", headers=headers).status_code == 200


# -- errors, limits, request ids -----------------------------------------------------------------
def test_errors_are_json_naming_the_field(api: httpx.Client, keys: dict[str, str]) -> None:
    body = _error(
        _post(api, f"/v1/models/{MODEL}/predict", keys["developer"], {"rows": [{"x": 1}]}), 422
    )
    assert body["code"] == "unknown_feature" and body["field"] == "rows[0].x"
    body = _error(
        api.post("/v1/features/online", json={"entities": "nope"}, headers=auth(keys["viewer"])),
        422,
    )
    assert body["field"] == "entities"
    body = _error(
        api.post(
            "/v1/features/online",
            content=b"{not json",
            headers={**auth(keys["viewer"]), "content-type": "application/json"},
        ),
        422,
    )
    assert "JSON" in body["message"]
    _error(api.get("/v1/nowhere"), 404, "not_found")
    _error(api.delete("/healthz"), 405, "method_not_allowed")
    _error(
        _post(api, "/v1/models/nope/predict", keys["developer"], {"rows": [{}]}),
        404,
        "unknown_model",
    )
    body = _error(
        _post(
            api, f"/v1/models/{MODEL}/predict", keys["developer"], {"rows": [{}]}, alias="staging"
        ),
        404,
    )
    assert body["code"] == "unknown_version" and body["field"] == "query.alias"


def test_request_size_limit(api: httpx.Client, keys: dict[str, str]) -> None:
    big = json.dumps({"entities": [{"customer_id": i} for i in range(40_000)]}).encode()
    headers = {**auth(keys["viewer"]), "content-type": "application/json"}
    _error(api.post("/v1/features/online", content=big, headers=headers), 413, "request_too_large")

    def chunks():
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    # No Content-Length: the limit applies to the bytes as they stream in.
    _error(
        api.post("/v1/features/online", content=chunks(), headers=headers), 413, "request_too_large"
    )


def test_request_ids_and_json_logs(api: httpx.Client, server: Server, keys: dict[str, str]) -> None:
    given = api.get("/v1/whoami", headers={**auth(keys["viewer"]), "X-Request-ID": "trace-42"})
    assert given.headers["x-request-id"] == "trace-42"
    fresh = api.get("/healthz")
    assert len(fresh.headers["x-request-id"]) == 32
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [
            json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")
        ]
        mine = [line for line in lines if line.get("request_id") == "trace-42"]
        if mine:
            break
        time.sleep(0.1)
    assert mine and mine[0]["route"] == "/v1/whoami" and mine[0]["status"] == 200
    assert mine[0]["key"] and mine[0]["duration_ms"] >= 0
    assert all(isinstance(line, dict) for line in lines)


# -- features -----------------------------------------------------------------------------------
def test_online_features_with_staleness_and_versions(
    api: httpx.Client, keys: dict[str, str], world: World
) -> None:
    response = api.post(
        "/v1/features/online",
        json={
            "entities": [{"customer_id": world.customer}, {"customer_id": 10_000_000}],
            "service": "churn_features",
        },
        headers=auth(keys["ingest"]),
    )
    body = _json(response)
    assert response.status_code == 200
    known, unknown = body["rows"]
    assert known["values"]["minutes_7d"] == pytest.approx(world.sample_row["minutes_7d"])
    assert known["status"] == {
        "usage_7d": "present",
        "billing_30d": "present",
        "support_30d": "present",
    }
    assert not any(known["stale"].values())
    assert set(unknown["status"].values()) == {"missing"}
    assert body["views"]["usage_7d"] == {
        "version": "usage_7d@v1",
        "ttl_seconds": 2 * 86_400,
        "features": ["minutes_7d", "sessions_7d", "errors_7d", "active_days_7d", "error_rate_7d"],
    }
    by_ref = api.post(
        "/v1/features/online",
        json={
            "entities": [{"customer_id": world.customer}],
            "features": ["billing_30d:current_plan"],
        },
        headers=auth(keys["viewer"]),
    ).json()
    assert by_ref["rows"][0]["values"] == {"current_plan": world.sample_row["current_plan"]}
    body = _error(
        api.post(
            "/v1/features/online",
            json={"entities": [{"customer_id": 1}], "features": ["usage_7d:nope"]},
            headers=auth(keys["viewer"]),
        ),
        422,
    )
    assert body["field"] == "features[0]" and "nope" in body["message"]


def _usage_row(customer: int, when: dt.datetime, **values) -> dict:
    row = {
        "customer_id": customer,
        "event_timestamp": when.isoformat(),
        "created_timestamp": when.isoformat(),
        "minutes_7d": 120.0,
        "sessions_7d": 4,
        "errors_7d": 0,
        "active_days_7d": 3,
        "error_rate_7d": 0.0,
    }
    return {**row, **values}


def test_push_writes_through_the_checks_or_not_at_all(
    api: httpx.Client, keys: dict[str, str], world: World
) -> None:
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    from catalog.features import usage_7d
    from mallard.features.versions import register_version

    table = str(register_version(load_settings(home=world.home), usage_7d).table_path)
    before = DeltaTable(table).version()
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    three_days_ago = dt.datetime.combine(now.date() - dt.timedelta(days=3), dt.time(12), dt.UTC)

    def partition_rows() -> int:
        data = DeltaTable(table).to_pyarrow_table()
        return int(pc.sum(pc.equal(data.column("_partition_date"), three_days_ago.date())).as_py())

    rows_before = partition_rows()
    assert rows_before > 0  # the asset wrote that day's partition
    fresh, stale = 5_000_001, 5_000_002
    refused = api.post(
        "/v1/features/push",
        json={
            "view": "usage_7d",
            "rows": [_usage_row(fresh, now), _usage_row(fresh + 9, now, active_days_7d=9)],
        },
        headers=auth(keys["ingest"]),
    )
    body = _error(refused, 422, "check_failed")
    assert body["field"] == "rows[1].active_days_7d" and body["rule"] == "<= 7"
    assert DeltaTable(table).version() == before  # nothing written
    online = api.post(
        "/v1/features/online",
        json={"entities": [{"customer_id": fresh}], "features": ["usage_7d:*"]},
        headers=auth(keys["viewer"]),
    ).json()
    assert online["rows"][0]["status"]["usage_7d"] == "missing"

    pushed = api.post(
        "/v1/features/push",
        json={
            "view": "usage_7d",
            "rows": [_usage_row(fresh, now), _usage_row(stale, three_days_ago)],
        },
        headers=auth(keys["ingest"]),
    )
    assert pushed.status_code == 200, pushed.text
    assert pushed.json()["version"] == "usage_7d@v1" and pushed.json()["rows"] == 2
    assert DeltaTable(table).version() == before + 1  # one commit
    assert partition_rows() == rows_before + 1  # the partition's other rows are kept
    rows = api.post(
        "/v1/features/online",
        json={
            "entities": [{"customer_id": fresh}, {"customer_id": stale}],
            "features": ["usage_7d:minutes_7d"],
        },
        headers=auth(keys["viewer"]),
    ).json()["rows"]
    assert rows[0]["values"] == {"minutes_7d": 120.0} and rows[0]["stale"] == {"usage_7d": False}
    assert rows[1]["values"] == {"minutes_7d": None} and rows[1]["stale"] == {"usage_7d": True}
    _error(
        api.post(
            "/v1/features/push",
            json={"view": "usage_7d", "rows": [_usage_row(1, now)]},
            headers=auth(keys["viewer"]),
        ),
        403,
    )


# -- predictions and validation ------------------------------------------------------------------
def _rules(prediction: dict) -> set[tuple[str | None, str]]:
    return {(issue["field"], issue["rule"]) for issue in prediction["issues"]}


def _bad_rows(world: World) -> dict[str, tuple[dict, str | None]]:
    row = world.sample_row
    numeric = [f for f in world.features if f not in world.categorical]
    extreme = {**row, **{f: world.stats["features"][f]["max"] for f in numeric}}
    return {
        "nan": ({**row, "minutes_7d": math.nan}, "minutes_7d"),
        "infinite": ({**row, "minutes_7d": "-Infinity"}, "minutes_7d"),
        "null": ({**row, "minutes_7d": None}, "minutes_7d"),
        "below_min": ({**row, "minutes_7d": -5.0}, "minutes_7d"),
        "above_max": ({**row, "monthly_price": 10_000.0}, "monthly_price"),
        "unknown_category": ({**row, "current_plan": "platinum"}, "current_plan"),
        "out_of_distribution": (extreme, None),
    }


def test_predict_rows_and_entities_agree(
    api: httpx.Client, keys: dict[str, str], world: World
) -> None:
    by_rows = _json(
        _post(api, f"/v1/models/{MODEL}/predict", keys["developer"], {"rows": [world.sample_row]})
    )
    by_keys = _json(
        _post(
            api,
            f"/v1/models/{MODEL}/predict",
            keys["ingest"],
            {"entities": [{"customer_id": world.customer}]},
        )
    )
    assert by_rows["version"] == by_keys["version"] == 1 and by_rows["variant"] == "champion"
    assert by_keys["predictions"][0]["score"] == pytest.approx(by_rows["predictions"][0]["score"])
    assert not by_rows["predictions"][0]["flagged"]
    assert by_keys["feature_versions"] == {
        "usage_7d": "usage_7d@v1",
        "billing_30d": "billing_30d@v1",
        "support_30d": "support_30d@v1",
    }
    assert by_keys["predictions"][0]["feature_status"]["usage_7d"] == "present"
    pinned = _json(
        _post(
            api,
            f"/v1/models/{MODEL}/predict",
            keys["developer"],
            {"rows": [world.sample_row]},
            version=1,
        )
    )
    assert pinned["version"] == 1 and pinned["variant"] == "champion"
    _error(
        _post(
            api,
            f"/v1/models/{MODEL}/predict",
            keys["developer"],
            {"rows": [world.sample_row]},
            version=7,
        ),
        404,
        "unknown_version",
    )
    _error(
        _post(api, f"/v1/models/{MODEL}/predict", keys["viewer"], {"rows": [world.sample_row]}), 403
    )


def test_every_rule_warns_in_warn_mode(
    api: httpx.Client, keys: dict[str, str], world: World
) -> None:
    cases = _bad_rows(world)
    response = _post(
        api,
        f"/v1/models/{MODEL}/predict",
        keys["developer"],
        {"rows": [r for r, _ in cases.values()]},
    )
    body = _json(response)
    assert response.status_code == 200 and body["strictness"] == "warn"
    for (rule, (_, field)), prediction in zip(cases.items(), body["predictions"], strict=True):
        assert prediction["flagged"], rule
        assert (field, rule) in _rules(prediction), (rule, prediction["issues"])
        assert prediction["prediction"] is not None
    assert body["predictions"][-1]["ood_score"] < world.stats["ood"]["threshold"]


@pytest.mark.parametrize(
    "rule",
    [
        "nan",
        "infinite",
        "null",
        "below_min",
        "above_max",
        "unknown_category",
        "out_of_distribution",
    ],
)
def test_every_rule_rejects_in_reject_mode(
    api: httpx.Client, keys: dict[str, str], world: World, rule: str
) -> None:
    row, field = _bad_rows(world)[rule]
    body = _error(
        _post(
            api,
            f"/v1/models/{STRICT}/predict",
            keys["developer"],
            {"rows": [world.sample_row, row]},
        ),
        422,
        "validation_failed",
    )
    assert body["rule"] == rule
    assert body["field"] == ("rows[1]" if field is None else f"rows[1].{field}")
    assert rule in body["message"] and body["issues"][0]["row"] == 1
    assert (
        _post(
            api, f"/v1/models/{STRICT}/predict", keys["developer"], {"rows": [world.sample_row]}
        ).status_code
        == 200
    )


def test_types_are_checked_whatever_the_strictness(
    api: httpx.Client, keys: dict[str, str], world: World
) -> None:
    for row, field in (
        ({**world.sample_row, "minutes_7d": "lots"}, "rows[0].minutes_7d"),
        ({**world.sample_row, "current_plan": 3}, "rows[0].current_plan"),
        ({k: v for k, v in world.sample_row.items() if k != "tickets_30d"}, "rows[0].tickets_30d"),
    ):
        body = _error(
            _post(api, f"/v1/models/{MODEL}/predict", keys["developer"], {"rows": [row]}), 422
        )
        assert body["field"] == field
    body = _error(
        _post(
            api,
            f"/v1/models/{MODEL}/predict",
            keys["developer"],
            {"entities": [{"customer_id": "x"}]},
        ),
        422,
    )
    assert body["field"] == "entities[0].customer_id"


def test_explain_returns_shap_values_base_and_top_k(
    api: httpx.Client, keys: dict[str, str], world: World
) -> None:
    body = _json(
        _post(
            api,
            f"/v1/models/{MODEL}/explain",
            keys["viewer"],
            {"rows": [world.sample_row], "top_k": 3},
        )
    )
    assert body["version"] == 1 and body["explainer"] == "tree" and body["output"] == "probability"
    explanation = body["explanations"][0]
    assert set(explanation["shap_values"]) == set(world.features)
    assert len(explanation["top_features"]) == 3
    total = explanation["base_value"] + sum(explanation["shap_values"].values())
    assert total == pytest.approx(explanation["prediction"], abs=1e-6)
    ranked = [abs(t["shap_value"]) for t in explanation["top_features"]]
    assert ranked == sorted(ranked, reverse=True)
    again = _json(
        _post(
            api,
            f"/v1/models/{MODEL}/explain",
            keys["viewer"],
            {"entities": [{"customer_id": world.customer}]},
        )
    )
    assert again["explanations"][0]["prediction"] == pytest.approx(explanation["prediction"])
    found = metric_samples(api.get("/metrics", headers=auth(keys["viewer"])).text)
    assert found("mallard_explainers_built_total", model=MODEL, version="1") == 1.0


def test_prompt_by_label_or_version_with_etag(api: httpx.Client, keys: dict[str, str]) -> None:
    live = api.get(f"/v1/prompts/{PROMPT}", headers=auth(keys["ingest"]))
    assert (
        live.status_code == 200 and live.json()["version"] == 1 and live.json()["label"] == "live"
    )
    etag = live.headers["etag"]
    unchanged = api.get(
        f"/v1/prompts/{PROMPT}", headers={**auth(keys["ingest"]), "If-None-Match": etag}
    )
    assert (
        unchanged.status_code == 304 and unchanged.headers["etag"] == etag and not unchanged.content
    )
    assert (
        api.get(
            f"/v1/prompts/{PROMPT}", params={"version": 1}, headers=auth(keys["viewer"])
        ).headers["etag"]
        == etag
    )
    _error(
        api.get(f"/v1/prompts/{PROMPT}", params={"label": "staging"}, headers=auth(keys["viewer"])),
        404,
        "unknown_prompt",
    )
    _error(api.get("/v1/prompts/nope", headers=auth(keys["viewer"])), 404)


# -- what the calls leave behind -------------------------------------------------------------------
def test_metrics_count_requests_predictions_and_validation(
    api: httpx.Client, keys: dict[str, str], world: World
) -> None:
    _post(api, f"/v1/models/{MODEL}/predict", keys["developer"], {"rows": [world.sample_row] * 3})
    _post(
        api,
        f"/v1/models/{STRICT}/predict",
        keys["developer"],
        {"rows": [{**world.sample_row, "minutes_7d": -1.0}]},
    )
    found = metric_samples(api.get("/metrics", headers=auth(keys["viewer"])).text)
    route = {"route": "/v1/models/{name}/predict", "method": "POST", "status": "200"}
    assert found("mallard_http_requests_total", **route) >= 2
    assert found("mallard_http_request_duration_seconds_bucket", **route, le="+Inf") >= 2
    assert found("mallard_predictions_total", model=MODEL, version="1", variant="champion") >= 3
    assert found("mallard_validation_rejects_total", model=STRICT, rule="below_min") >= 1
    assert found("mallard_validation_warnings_total", model=MODEL, rule="below_min") >= 1
    assert found("mallard_http_requests_total", route="unmatched", method="GET", status="404") >= 1
    assert found("mallard_http_requests_total", route="/v1/nowhere") is None


def test_the_audit_log_has_every_mutating_call(
    api: httpx.Client, keys: dict[str, str], world: World, monkeypatch
) -> None:
    from click.testing import CliRunner

    from cli.main import main

    created = api.post(
        "/v1/keys", json={"owner": "audited", "role": "viewer"}, headers=auth(keys["admin"])
    )
    request_id = created.headers["x-request-id"]
    denied = api.post(
        "/v1/features/push", json={"view": "usage_7d", "rows": []}, headers=auth(keys["viewer"])
    )
    assert denied.status_code == 403
    events = api.get("/v1/audit", params={"limit": 200}, headers=auth(keys["admin"])).json()
    create = next(e for e in events if e["request_id"] == request_id)
    assert create["action"] == "keys.create" and create["actor"].startswith("key:")
    assert (
        create["after"]["owner"] == "audited"
        and create["before"] is None
        and "hash" not in create["after"]
    )
    refused = next(e for e in events if e["request_id"] == denied.headers["x-request-id"])
    assert refused["action"] == "features.push" and refused["status"] == 403
    pushes = [e for e in events if e["action"] == "features.push" and e["status"] == 200]
    assert pushes and pushes[0]["before"] is not None and pushes[0]["after"]
    _error(api.get("/v1/audit", headers=auth(keys["developer"])), 403)

    monkeypatch.setenv("MALLARD_HOME", str(world.home))
    result = CliRunner().invoke(
        main, ["audit", "list", "--json", "--action", "keys.", "--limit", "500"]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert request_id in {line["request_id"] for line in lines}
    assert any(line["actor"].startswith("cli:") for line in lines)  # the keys the fixture made


def test_predictions_reach_the_log_the_drift_assets_read(
    api: httpx.Client, keys: dict[str, str], world: World
) -> None:
    from mallard.monitoring.predictions import read_predictions

    response = _post(
        api,
        f"/v1/models/{MODEL}/predict",
        keys["ingest"],
        {"entities": [{"customer_id": world.customer}]},
    )
    request_id = response.json()["request_id"]
    settings = load_settings(home=world.home)
    deadline = time.monotonic() + 15
    logged = None
    while time.monotonic() < deadline:
        frame = read_predictions(settings, MODEL, role="champion")
        logged = frame[frame["run_id"] == request_id]
        if len(logged):
            break
        time.sleep(0.2)
    assert logged is not None and len(logged) == 1
    row = logged.iloc[0]
    assert row["source"] == "api" and row["model_version"] == "1"
    assert json.loads(row["entity_key"]) == {"customer_id": world.customer}
    assert json.loads(row["features"])["minutes_7d"] == pytest.approx(
        world.sample_row["minutes_7d"]
    )
    assert row["score"] == pytest.approx(response.json()["predictions"][0]["score"])
    assert row["day"] == dt.datetime.now(dt.UTC).date()


def test_a_new_champion_is_served_within_seconds(
    api: httpx.Client, keys: dict[str, str], world: World
) -> None:
    """Promotion (or rollback) moves the alias; the server follows it, reloading itself."""
    from mallard.models.registry import client, get_version, set_champion

    settings = load_settings(home=world.home)
    c = client(settings)
    first = get_version(c, STRICT, 1)
    second = c.create_model_version(STRICT, first.source, first.run_id)  # the same pipeline
    set_champion(settings, c, STRICT, int(second.version), action="promote", reason="test")
    deadline = time.monotonic() + 30
    served = None
    while time.monotonic() < deadline:
        body = _post(
            api, f"/v1/models/{STRICT}/predict", keys["developer"], {"rows": [world.sample_row]}
        ).json()
        served = body.get("version")
        if served == int(second.version):
            break
        time.sleep(0.5)
    assert served == int(second.version)
    assert body["variant"] == "champion"
    ready = api.get("/readyz").json()
    assert ready["models"][STRICT] == f"loaded v{second.version}"
