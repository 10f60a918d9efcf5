"""Input schema versions: compatible changes are absorbed, incompatible ones refused with what
changed and how to migrate (on the real server, over versions registered as the test goes)."""

from __future__ import annotations

import json

import httpx
import pytest
from serving_helpers import auth
from world import OPTIONAL_FEATURE, SCHEMA_MODEL, World, register_version

from mallard.serving.schema_versions import InputSchema, SchemaField, adapt_rows, changes

HEADER = "X-Mallard-Schema-Version"


def _schema(*fields: tuple[str, str, bool]) -> InputSchema:
    return InputSchema(tuple(SchemaField(*f) for f in fields))


def test_the_version_names_the_fields_and_types_only() -> None:
    a = _schema(("x", "numeric", False), ("plan", "categorical", True))
    same = _schema(("plan", "categorical", False), ("x", "numeric", True))  # order, optionality
    retyped = _schema(("x", "numeric", False), ("plan", "numeric", True))
    assert a.version == same.version and len(a.version) == 12
    assert a.version != retyped.version


def test_what_changed_between_two_schemas() -> None:
    old = _schema(
        ("minutes_7d", "numeric", False),
        ("tickets_30d", "numeric", True),
        ("current_plan", "categorical", False),
    )
    new = _schema(
        ("watch_minutes_7d", "numeric", False),
        ("current_plan", "numeric", False),
        ("hours", "numeric", True),
        ("region", "categorical", False),
    )
    found = {c.field: c for c in changes(old, new)}
    assert found["minutes_7d"].kind == "renamed" and found["minutes_7d"].to == "watch_minutes_7d"
    assert found["tickets_30d"].kind == "removed"
    assert found["current_plan"].kind == "type_changed"
    assert (found["current_plan"].old_type, found["current_plan"].new_type) == (
        "categorical",
        "numeric",
    )
    assert found["hours"].kind == "added" and found["hours"].compatible
    assert found["region"].kind == "added" and not found["region"].compatible
    assert [c.compatible for c in found.values()].count(True) == 1
    # An added optional field alone is compatible, and rows without it read null there.
    grown = _schema(*[(f.name, f.type, f.optional) for f in old.fields], ("hours", "numeric", True))
    assert all(c.compatible for c in changes(old, grown))
    assert adapt_rows([{"minutes_7d": 1.0}], changes(old, grown)) == [
        {"hours": None, "minutes_7d": 1.0}
    ]


def _predict(
    api: httpx.Client, key: str, rows: list[dict], schema: str | None = None, **params
) -> httpx.Response:
    headers = {**auth(key), "content-type": "application/json"}
    if schema is not None:
        headers[HEADER] = schema
    return api.post(
        f"/v1/models/{SCHEMA_MODEL}/predict",
        content=json.dumps({"rows": rows}),
        params=params,
        headers=headers,
    )


def _error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == code, body
    return body


def test_schema_evolution_over_http(api: httpx.Client, keys: dict[str, str], world: World) -> None:
    developer = keys["developer"]
    first = api.get(f"/v1/models/{SCHEMA_MODEL}/schema", headers=auth(keys["ingest"])).json()
    assert first["version"] == 1
    names = [f["name"] for f in first["fields"]]
    assert OPTIONAL_FEATURE not in names and "minutes_7d" in names
    s1 = first["schema_version"]
    old_row = {k: v for k, v in world.sample_row.items() if k != OPTIONAL_FEATURE}

    answered = _predict(api, developer, [old_row], s1)
    assert answered.status_code == 200, answered.text
    assert answered.json()["schema_version"] == s1 and answered.headers[HEADER.lower()] == s1

    # v2 adds an optional field (null in training): a client still on v1's schema is served.
    features = list(world.features)
    v2 = register_version(world.home, SCHEMA_MODEL, features, list(world.categorical))
    s2 = api.get(
        f"/v1/models/{SCHEMA_MODEL}/schema", params={"version": v2}, headers=auth(developer)
    ).json()["schema_version"]
    assert s2 != s1
    served = _predict(api, developer, [old_row], s1, version=v2)
    assert served.status_code == 200, served.text
    body = served.json()
    assert body["version"] == v2 and body["schema_version"] == s2
    assert body["predictions"][0]["prediction"] is not None
    by_body = api.post(
        f"/v1/models/{SCHEMA_MODEL}/predict",
        json={"rows": [old_row], "schema_version": s1},
        params={"version": v2},
        headers=auth(developer),
    )
    assert by_body.status_code == 200, by_body.text
    # Without a declared schema the rows must match the serving version exactly.
    _error(_predict(api, developer, [old_row], version=v2), 422, "missing_feature")

    # v3 renames a field, removes one and changes a type: a v2 client is refused, told how.
    renamed = [
        "watch_minutes_7d" if f == "minutes_7d" else f for f in features if f != "tickets_30d"
    ]
    v3 = register_version(
        world.home,
        SCHEMA_MODEL,
        renamed,
        [],
        transform=lambda frame: frame.assign(
            watch_minutes_7d=frame["minutes_7d"],
            current_plan=frame["current_plan"].map({"basic": 1.0, "standard": 2.0}).fillna(3.0),
        ),
    )
    refused = _error(
        _predict(api, developer, [world.sample_row], s2, version=v3), 409, "schema_incompatible"
    )
    message = refused["message"]
    assert "minutes_7d was renamed to watch_minutes_7d" in message
    assert "tickets_30d was removed" in message
    assert "current_plan changed type from categorical to numeric" in message
    assert "To migrate: " in message and "send minutes_7d's value as watch_minutes_7d" in message
    assert "stop sending tickets_30d" in message and "send current_plan as a number" in message
    s3 = refused["schema_version"]
    assert refused["requested"] == s2 and f"{HEADER}: {s3}" in message
    assert refused["field"] == "schema_version"
    assert {c["change"] for c in refused["changes"]} == {"renamed", "removed", "type_changed"}
    migrated = {
        **{k: v for k, v in world.sample_row.items() if k not in ("minutes_7d", "tickets_30d")},
        "watch_minutes_7d": world.sample_row["minutes_7d"],
        "current_plan": 1.0,
    }
    ok = _predict(api, developer, [migrated], s3, version=v3)
    assert ok.status_code == 200, ok.text
    assert ok.json()["schema_version"] == s3

    # An added required field (never null in training) is incompatible too.
    v4 = register_version(
        world.home,
        SCHEMA_MODEL,
        [*first_names(first), "sessions_copy"],
        list(world.categorical),
        transform=lambda frame: frame.assign(sessions_copy=frame["sessions_7d"].fillna(0.0)),
    )
    required = _error(
        _predict(api, developer, [old_row], s1, version=v4), 409, "schema_incompatible"
    )
    assert "sessions_copy (numeric) was added as a required field" in required["message"]

    # A schema no version has, a header and a body that disagree, a malformed version.
    _error(_predict(api, developer, [old_row], "0123456789ab"), 422, "unknown_schema_version")
    disagree = api.post(
        f"/v1/models/{SCHEMA_MODEL}/predict",
        json={"rows": [old_row], "schema_version": s2},
        headers={**auth(developer), HEADER: s1},
    )
    _error(disagree, 422, "invalid_request")
    _error(_predict(api, developer, [old_row], "not-a-version"), 422, "invalid_request")


def first_names(schema: dict) -> list[str]:
    return [f["name"] for f in schema["fields"]]


@pytest.mark.parametrize("route", ["predict", "explain"])
def test_responses_carry_the_schema_version(
    api: httpx.Client, keys: dict[str, str], world: World, route: str
) -> None:
    from world import MODEL

    schema = api.get(f"/v1/models/{MODEL}/schema", headers=auth(keys["viewer"])).json()
    response = api.post(
        f"/v1/models/{MODEL}/{route}",
        json={"rows": [world.sample_row]},
        headers=auth(keys["admin"]),
    )
    assert response.status_code == 200, response.text
    assert response.json()["schema_version"] == schema["schema_version"]
    assert response.headers[HEADER.lower()] == schema["schema_version"]
    listed = {m["name"]: m for m in api.get("/v1/models", headers=auth(keys["viewer"])).json()}
    assert listed[MODEL]["schema_version"] == schema["schema_version"]
