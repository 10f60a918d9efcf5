"""The server state on both backends (SQLite files locally, a real redis-server for prod): keys
stored only as keyed hashes, revocation and rotation, token buckets, the append-only audit log,
and the server secret."""

from __future__ import annotations

import datetime as dt
import sqlite3
import stat
from pathlib import Path

import pytest

from mallard.config import ConfigError, load_settings
from mallard.serving.ratelimit import Limit
from mallard.serving.state import ServerState, open_server_state


@pytest.fixture(params=["sqlite", "redis"])
def state(request, mallard_home: Path) -> ServerState:
    if request.param == "redis":
        import redis

        url = request.getfixturevalue("redis_url")
        redis.Redis.from_url(url).flushdb()
        opened = open_server_state(load_settings(), "redis", url)
    else:
        opened = open_server_state(load_settings(), "sqlite")
    yield opened
    opened.close()


def test_keys_are_random_shown_once_and_stored_as_a_keyed_hash(state: ServerState) -> None:
    created = state.create_key("alice", "developer", actor="tests")
    key, record = created.key, created.record
    assert key.startswith(f"mk_{record.prefix}_") and len(key) == 3 + 8 + 1 + 43
    assert state.keys.verify(key).prefix == record.prefix
    assert key not in repr(state.keys.list()) and record.hash != key
    assert len(record.hash) == 64  # HMAC-SHA-256
    assert state.keys.verify(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    other = state.create_key("alice", "developer", actor="tests")
    assert other.key != key and other.record.prefix != record.prefix


def test_revoke_rotate_expire(state: ServerState) -> None:
    created = state.create_key("bob", "viewer", actor="tests")
    assert state.revoke_key(created.record.prefix, actor="tests").state() == "revoked"
    assert state.keys.verify(created.key).state() == "revoked"

    old = state.create_key("carol", "admin", scope="all", rate_per_s=3, burst=4, actor="tests")
    new = state.rotate_key(old.record.prefix, actor="tests")
    assert state.keys.verify(old.key).state() == "revoked"
    assert state.keys.verify(old.key).rotated_to == new.record.prefix
    fresh = state.keys.verify(new.key)
    assert (fresh.owner, fresh.role, fresh.rate_per_s, fresh.burst) == ("carol", "admin", 3, 4)

    graced = state.create_key("dan", "viewer", actor="tests")
    state.rotate_key(graced.record.prefix, grace=dt.timedelta(hours=1), actor="tests")
    assert state.keys.verify(graced.key).state() == "active"  # for one more hour

    short = state.keys.create("eve", "viewer", expires_in=dt.timedelta(seconds=0.05))
    import time

    time.sleep(0.1)
    assert state.keys.verify(short.key).state() == "expired"
    actions = [e.action for e in state.audit.list(limit=20)]
    assert actions[:3] == ["keys.rotate", "keys.create", "keys.rotate"]
    with pytest.raises(ValueError, match="role"):
        state.keys.create("x", "root")


def test_token_buckets(state: ServerState) -> None:
    limit = Limit(rate=5, burst=3)
    decisions = [state.limiter.take("key:test", limit) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert 0 < decisions[-1].retry_after <= 0.2 + 1e-6 and decisions[-1].retry_after_header == "1"
    assert state.limiter.take("key:other", limit).allowed  # one bucket per name
    import time

    time.sleep(0.25)
    assert state.limiter.take("key:test", limit).allowed  # refilled


def test_audit_filters(state: ServerState) -> None:
    from mallard.serving.audit import AuditEvent

    for i in range(3):
        state.audit.record(AuditEvent("features.push", f"key:{i}:app", target="usage_7d@v1"))
    state.audit.record(AuditEvent("keys.revoke", "cli:root", target="abcd0123", before={"a": 1}))
    assert [e.action for e in state.audit.list(limit=2)] == ["keys.revoke", "features.push"]
    assert len(state.audit.list(action="features.push")) == 3
    assert len(state.audit.list(action="keys.")) == 1
    assert state.audit.list(actor="key:1:")[0].target == "usage_7d@v1"
    assert state.audit.list(action="keys.revoke")[0].before == {"a": 1}


def test_the_sqlite_audit_log_is_append_only(mallard_home: Path) -> None:
    state = open_server_state(load_settings(), "sqlite")
    state.create_key("x", "viewer")
    con = sqlite3.connect(load_settings().serve_dir / "audit.sqlite")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("DELETE FROM audit")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("UPDATE audit SET actor = 'someone else'")
    state.close()


def test_the_local_secret_is_generated_once_and_private(mallard_home: Path) -> None:
    from mallard.serving.keys import server_secret

    settings = load_settings()
    first = server_secret(settings)
    path = settings.serve_dir / "server_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert server_secret(settings) == first and len(first) >= 32
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        server_secret(settings)


def test_prod_needs_the_server_secret(mallard_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mallard.serving.keys import server_secret

    monkeypatch.setenv("MALLARD_ENV", "prod")
    with pytest.raises(ConfigError, match="MALLARD_SERVER_SECRET"):
        server_secret(load_settings())
    monkeypatch.setenv("MALLARD_SERVER_SECRET", "short")
    with pytest.raises(ConfigError, match="too short"):
        server_secret(load_settings())
    monkeypatch.setenv("MALLARD_SERVER_SECRET", "s" * 40)
    assert server_secret(load_settings()) == b"s" * 40
    assert "s" * 40 not in load_settings().model_dump_json()
