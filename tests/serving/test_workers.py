"""`mallard serve --workers 2`: what must be shared is shared, whichever worker answers.

Each request goes on a new connection, so both workers answer (the test checks that two pids
did). Rate-limit buckets, revocations and Prometheus counters then have to be shared through
the server state (SQLite files under MALLARD_HOME, and Redis as in prod: both are run) and the
multiprocess metrics folder.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serving_helpers import Server, auth, free_port, metric_samples, server_env, start

from mallard.config import load_settings


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def two_workers(
    request, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Path, dict[str, str]]]:
    """Two workers sharing their state through SQLite files (local) or Redis (as in prod)."""
    home = tmp_path_factory.mktemp(f"two-workers-{request.param}") / "home"
    state = {"MALLARD_SERVE_STATE": request.param}
    if request.param == "redis":
        import redis

        url = request.getfixturevalue("redis_url")
        redis.Redis.from_url(url).flushdb()
        state["MALLARD_REDIS_URL"] = url
    port = free_port()
    server = start(
        [
            str(Path(sys.executable).with_name("mallard")),
            "serve",
            "--workers",
            "2",
            "--port",
            str(port),
        ],
        server_env(
            home,
            MALLARD_SERVE_MODELS="",  # no models: what is tested here is the shared state
            MALLARD_RATE_LIMIT_ADDRESS_PER_S="0.5",
            MALLARD_RATE_LIMIT_ADDRESS_BURST="80",  # the module sends about 50 keyed requests
            **state,
        ),
        port,
        tmp_path_factory.mktemp("two-workers-log") / "server.jsonl",
    )
    try:
        server.wait(timeout=120)
        yield server, home, state
    finally:
        server.stop()


def _get(server: Server, path: str, key: str | None = None) -> httpx.Response:
    # A new connection per request: the kernel spreads them over both workers.
    return httpx.get(server.url + path, headers=auth(key) if key else {}, timeout=30)


def _key(workers, role: str = "viewer", **options) -> tuple[str, str]:
    from mallard.serving.state import open_server_state

    _, home, state = workers
    opened = open_server_state(
        load_settings(home=home), state["MALLARD_SERVE_STATE"], state.get("MALLARD_REDIS_URL", "")
    )
    try:
        created = opened.create_key(f"workers-{role}", role, **options)
        return created.key, created.record.prefix
    finally:
        opened.close()


def _until_both_workers(server: Server) -> set[int]:
    pids: set[int] = set()
    for _ in range(60):
        pids.add(_get(server, "/healthz").json()["pid"])
        if len(pids) == 2:
            break
    return pids


def test_two_workers_answer(two_workers) -> None:
    server = two_workers[0]
    assert len(_until_both_workers(server)) == 2


def test_rate_limit_buckets_are_shared(two_workers) -> None:
    server = two_workers[0]
    key, _ = _key(two_workers, rate_per_s=0.01, burst=4)
    statuses = [_get(server, "/v1/whoami", key).status_code for _ in range(10)]
    assert statuses.count(200) == 4 and statuses.count(429) == 6  # one bucket, not one per worker


def test_a_revocation_is_seen_by_every_worker(two_workers) -> None:
    server = two_workers[0]
    admin, _ = _key(two_workers, "admin")
    viewer, prefix = _key(two_workers, "viewer")
    assert {_get(server, "/v1/whoami", viewer).status_code for _ in range(6)} == {200}
    revoked = httpx.post(f"{server.url}/v1/keys/{prefix}/revoke", headers=auth(admin), timeout=30)
    assert revoked.status_code == 200
    assert {_get(server, "/v1/whoami", viewer).status_code for _ in range(10)} == {401}


def test_prometheus_counters_are_summed_over_workers(two_workers) -> None:
    server = two_workers[0]
    viewer, _ = _key(two_workers, "viewer", rate_per_s=1000, burst=1000)
    before = metric_samples(_get(server, "/metrics", viewer).text)
    route = {"route": "/v1/whoami", "method": "GET", "status": "200"}
    start_count = before("mallard_http_requests_total", **route) or 0
    pids = {_get(server, "/v1/whoami", viewer).status_code for _ in range(20)}
    assert pids == {200}
    after = metric_samples(_get(server, "/metrics", viewer).text)
    assert after("mallard_http_requests_total", **route) == start_count + 20
    assert after("mallard_http_request_duration_seconds_count", **route) == start_count + 20


def test_the_client_address_has_its_own_bucket(two_workers) -> None:
    server = two_workers[0]
    for _ in range(120):  # without a key too: the address bucket comes first
        limited = _get(server, "/v1/whoami")
        if limited.status_code == 429:
            break
    assert limited.status_code == 429
    assert "client address" in limited.json()["error"]["message"]
    assert int(limited.headers["retry-after"]) >= 1
