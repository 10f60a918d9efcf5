"""What every worker of the server shares: the key ring, the rate-limit buckets, the audit log.

`open_server_state` builds them for one deployment: SQLite files under `MALLARD_HOME/serve`
(the embedded default; every worker on the machine opens the same files) or one Redis server
(prod: every worker on every machine). The deployment's resource (resources/) calls it.
"""

from __future__ import annotations

import datetime as dt
import getpass
from dataclasses import dataclass
from typing import Any

from mallard.config import Settings
from mallard.serving.audit import AuditEvent, AuditLog, RedisAuditLog, SqliteAuditLog
from mallard.serving.keys import (
    CreatedKey,
    KeyRecord,
    KeyRing,
    RedisKeyStore,
    SqliteKeyStore,
    server_secret,
)
from mallard.serving.ratelimit import Limit, RateLimiter, RedisRateLimiter, SqliteRateLimiter


@dataclass
class ServerState:
    keys: KeyRing
    limiter: RateLimiter
    audit: AuditLog
    key_limit: Limit
    address_limit: Limit
    kind: str
    _redis: Any = None

    def ping(self) -> None:
        """Raise if a store cannot be reached (readiness)."""
        self.keys.store.ping()
        self.limiter.ping()
        self.audit.ping()

    def close(self) -> None:
        self.keys.store.close()
        self.limiter.close()
        self.audit.close()
        if self._redis is not None:
            self._redis.close()

    # Key operations outside a request (the CLI), each recorded in the audit log.
    def create_key(
        self, owner: str, role: str, *, actor: str | None = None, **options: Any
    ) -> CreatedKey:
        actor = actor or cli_actor()
        created = self.keys.create(owner, role, created_by=actor, **options)
        self.audit.record(
            AuditEvent(
                "keys.create", actor, target=created.record.prefix, after=created.record.public()
            )
        )
        return created

    def revoke_key(self, prefix: str, *, actor: str | None = None) -> KeyRecord:
        before, after = self.keys.revoke(prefix)
        self.audit.record(
            AuditEvent(
                "keys.revoke",
                actor or cli_actor(),
                target=prefix,
                before=before.public(),
                after=after.public(),
            )
        )
        return after

    def rotate_key(
        self, prefix: str, *, grace: dt.timedelta = dt.timedelta(0), actor: str | None = None
    ) -> CreatedKey:
        actor = actor or cli_actor()
        before, after, created = self.keys.rotate(prefix, grace=grace, created_by=actor)
        self.audit.record(
            AuditEvent(
                "keys.rotate",
                actor,
                target=prefix,
                before=before.public(),
                after={"old": after.public(), "new": created.record.public()},
            )
        )
        return created


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def open_server_state(
    settings: Settings, kind: str | None = None, redis_url: str = ""
) -> ServerState:
    """The server's shared state for `kind` (`sqlite` or `redis`; default from the settings)."""
    kind = kind or settings.serve_state_kind
    secret = server_secret(settings)
    key_limit = Limit(settings.rate_limit_key_per_s, settings.rate_limit_key_burst)
    address_limit = Limit(settings.rate_limit_address_per_s, settings.rate_limit_address_burst)
    if kind == "sqlite":
        folder = settings.serve_dir
        folder.mkdir(parents=True, exist_ok=True)
        return ServerState(
            KeyRing(SqliteKeyStore(folder / "keys.sqlite"), secret),
            SqliteRateLimiter(folder / "buckets.sqlite"),
            SqliteAuditLog(folder / "audit.sqlite"),
            key_limit,
            address_limit,
            kind,
        )
    if kind == "redis":
        import redis

        url = redis_url or settings.redis_url
        client = redis.Redis.from_url(url, socket_timeout=5, health_check_interval=30)
        return ServerState(
            KeyRing(RedisKeyStore(client), secret),
            RedisRateLimiter(client),
            RedisAuditLog(client),
            key_limit,
            address_limit,
            kind,
            client,
        )
    raise ValueError(f"unknown server state kind {kind!r}: choose sqlite or redis")
