"""API keys: random 256-bit secrets, stored only as an HMAC-SHA-256 under the server secret.

A key reads `mk_<prefix>_<secret>`: the prefix (8 hex digits) identifies it in lists, logs and
the audit trail; the secret is 32 random bytes (base64url). The store keeps the prefix, the
owner, the role, the scope, the expiry, the revocation and the keyed hash of the whole key,
never the key: it is shown once, when it is created or rotated. Verifying a request is one
HMAC (about a microsecond) and one indexed lookup, so authentication costs little next to the
request itself, and a revocation is seen by the next request of every worker (nothing is
cached).

The server secret comes from MALLARD_SERVER_SECRET (required in prod); locally it is generated
once into `MALLARD_HOME/serve/server_secret` (mode 0600). Changing it invalidates every key.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import secrets
import sqlite3
import threading
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from mallard.config import ConfigError, Settings

ROLES = ("admin", "developer", "viewer")
SCOPES = ("all", "ingest")
KEY_PATTERN = re.compile(r"^mk_([0-9a-f]{8})_[A-Za-z0-9_-]{43}$")
SECRET_FILE = "server_secret"


class KeyOperationError(LookupError):
    """No such key (by prefix), or a key operation that cannot be done; the message says why."""


def server_secret(settings: Settings) -> bytes:
    """The HMAC secret: MALLARD_SERVER_SECRET, or (locally) the one generated under home."""
    if settings.server_secret is not None and settings.server_secret.get_secret_value():
        value = settings.server_secret.get_secret_value()
        if len(value) < 32:
            raise ConfigError(
                "MALLARD_SERVER_SECRET is too short: use at least 32 characters "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
            )
        return value.encode()
    if settings.env == "prod":
        raise ConfigError(
            "MALLARD_ENV=prod needs MALLARD_SERVER_SECRET (the HMAC secret API keys are hashed "
            "with; at least 32 characters, the same for every server of the deployment)"
        )
    path = settings.serve_dir / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
    if path.stat().st_mode & 0o077:
        raise ConfigError(
            f"{path} is readable by other users (mode {oct(path.stat().st_mode & 0o777)}): "
            f"chmod 600 it"
        )
    value = path.read_text().strip()
    if len(value) < 32:
        raise ConfigError(f"{path} holds no usable secret: delete it to generate a new one")
    return value.encode()


def new_key() -> tuple[str, str]:
    """(prefix, key): a fresh random key and its identifying prefix."""
    prefix = secrets.token_hex(4)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    return prefix, f"mk_{prefix}_{secret}"


def key_hash(secret: bytes, key: str) -> str:
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()


def _now() -> float:
    return dt.datetime.now(dt.UTC).timestamp()


def _iso(value: float | None) -> str | None:
    if value is None:
        return None
    return dt.datetime.fromtimestamp(value, dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class KeyRecord:
    """What the store knows of a key (never the key itself)."""

    prefix: str
    owner: str
    role: str
    scope: str
    created_at: float
    expires_at: float
    hash: str = ""
    revoked_at: float | None = None
    rotated_to: str | None = None
    rate_per_s: float | None = None  # None: the server's default per-key limit
    burst: int | None = None
    created_by: str = ""

    def state(self, now: float | None = None) -> str:
        now = _now() if now is None else now
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= now:
            return "expired"
        return "active"

    def public(self) -> dict[str, Any]:
        """The record as shown to people and the audit log (no hash)."""
        return {
            "prefix": self.prefix,
            "owner": self.owner,
            "role": self.role,
            "scope": self.scope,
            "state": self.state(),
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
            "revoked_at": _iso(self.revoked_at),
            "rotated_to": self.rotated_to,
            "rate_per_s": self.rate_per_s,
            "burst": self.burst,
            "created_by": self.created_by,
        }


def _record(row: dict[str, Any]) -> KeyRecord:
    return KeyRecord(**{k: row[k] for k in KeyRecord.__dataclass_fields__ if k in row})


class KeyStore(ABC):
    """Key records by prefix and by keyed hash, shared by every worker of the deployment."""

    @abstractmethod
    def insert(self, record: KeyRecord) -> None: ...

    @abstractmethod
    def by_hash(self, digest: str) -> KeyRecord | None: ...

    @abstractmethod
    def by_prefix(self, prefix: str) -> KeyRecord | None: ...

    @abstractmethod
    def update(self, record: KeyRecord) -> None: ...

    @abstractmethod
    def all(self) -> list[KeyRecord]: ...

    def ping(self) -> None:
        self.by_prefix("00000000")

    def close(self) -> None:
        return None


_KEYS_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    prefix TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    role TEXT NOT NULL,
    scope TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    revoked_at REAL,
    rotated_to TEXT,
    rate_per_s REAL,
    burst INTEGER,
    created_by TEXT NOT NULL
);
"""
_COLUMNS = (
    "prefix",
    "hash",
    "owner",
    "role",
    "scope",
    "created_at",
    "expires_at",
    "revoked_at",
    "rotated_to",
    "rate_per_s",
    "burst",
    "created_by",
)


class SqliteFile:
    """One SQLite file shared by processes: a connection per thread, WAL, a busy timeout."""

    def __init__(self, path: Path, schema: str, *, synchronous: str = "NORMAL") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._schema = schema
        self._synchronous = synchronous
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        self.con().executescript(schema)

    def con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            con.execute("PRAGMA journal_mode=WAL")
            con.execute(f"PRAGMA synchronous={self._synchronous}")
            con.execute("PRAGMA busy_timeout=30000")
            self._local.con = con
            with self._guard:
                self._all.append(con)
        return con

    def close(self) -> None:
        with self._guard:
            for con in self._all:
                con.close()
            self._all.clear()
        self._local = threading.local()


class SqliteKeyStore(KeyStore):
    def __init__(self, path: Path) -> None:
        self.db = SqliteFile(path, _KEYS_SCHEMA)

    def _one(self, where: str, value: str) -> KeyRecord | None:
        row = (
            self.db.con()
            .execute(f"SELECT {', '.join(_COLUMNS)} FROM api_keys WHERE {where} = ?", (value,))
            .fetchone()
        )
        return None if row is None else _record(dict(zip(_COLUMNS, row, strict=True)))

    def insert(self, record: KeyRecord) -> None:
        values = asdict(record)
        self.db.con().execute(
            f"INSERT INTO api_keys ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
            [values[c] for c in _COLUMNS],
        )

    def by_hash(self, digest: str) -> KeyRecord | None:
        return self._one("hash", digest)

    def by_prefix(self, prefix: str) -> KeyRecord | None:
        return self._one("prefix", prefix)

    def update(self, record: KeyRecord) -> None:
        values = asdict(record)
        self.db.con().execute(
            "UPDATE api_keys SET expires_at = ?, revoked_at = ?, rotated_to = ? WHERE prefix = ?",
            (values["expires_at"], values["revoked_at"], values["rotated_to"], record.prefix),
        )

    def all(self) -> list[KeyRecord]:
        rows = (
            self.db.con()
            .execute(f"SELECT {', '.join(_COLUMNS)} FROM api_keys ORDER BY created_at")
            .fetchall()
        )
        return [_record(dict(zip(_COLUMNS, row, strict=True))) for row in rows]

    def close(self) -> None:
        self.db.close()


class RedisKeyStore(KeyStore):
    """Keys in Redis: `<ns>:key:<prefix>` → the record (JSON), `<ns>:keyhash:<hash>` → prefix."""

    def __init__(self, client: Any, namespace: str = "mallard") -> None:
        self.r = client
        self.ns = namespace

    def _key(self, prefix: str) -> str:
        return f"{self.ns}:key:{prefix}"

    def _hash_key(self, digest: str) -> str:
        return f"{self.ns}:keyhash:{digest}"

    def insert(self, record: KeyRecord) -> None:
        payload = json.dumps(asdict(record))
        if not self.r.set(self._key(record.prefix), payload, nx=True):
            raise KeyOperationError(f"key prefix {record.prefix} exists already")
        self.r.set(self._hash_key(record.hash), record.prefix)
        self.r.sadd(f"{self.ns}:keys", record.prefix)

    def by_prefix(self, prefix: str) -> KeyRecord | None:
        raw = self.r.get(self._key(prefix))
        return None if raw is None else _record(json.loads(raw))

    def by_hash(self, digest: str) -> KeyRecord | None:
        prefix = self.r.get(self._hash_key(digest))
        if prefix is None:
            return None
        record = self.by_prefix(prefix.decode() if isinstance(prefix, bytes) else prefix)
        return record if record is not None and record.hash == digest else None

    def update(self, record: KeyRecord) -> None:
        self.r.set(self._key(record.prefix), json.dumps(asdict(record)))

    def all(self) -> list[KeyRecord]:
        prefixes = sorted(p.decode() for p in self.r.smembers(f"{self.ns}:keys"))
        records = [self.by_prefix(p) for p in prefixes]
        return sorted((r for r in records if r is not None), key=lambda r: r.created_at)

    def ping(self) -> None:
        self.r.ping()


@dataclass(frozen=True)
class CreatedKey:
    """A new key: shown once, then only its record remains."""

    key: str
    record: KeyRecord


def parse_duration(text: str) -> dt.timedelta:
    """`90d`, `12h`, `30m`, `45s` or a number of days."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([dhms]?)\s*", text)
    if not match:
        raise ValueError(f"{text!r} is not a duration; use e.g. 90d, 12h or 30m")
    number, unit = float(match.group(1)), match.group(2) or "d"
    return dt.timedelta(seconds=number * {"d": 86_400, "h": 3_600, "m": 60, "s": 1}[unit])


class KeyRing:
    """Creates, verifies, revokes and rotates keys over a store with the server secret."""

    def __init__(self, store: KeyStore, secret: bytes) -> None:
        self.store = store
        self._secret = secret

    def verify(self, key: str) -> KeyRecord | None:
        """The record of a presented key (any state), or None for a key the store never issued."""
        if not KEY_PATTERN.match(key):
            return None
        return self.store.by_hash(key_hash(self._secret, key))

    def create(
        self,
        owner: str,
        role: str,
        *,
        scope: str = "all",
        expires_in: dt.timedelta = dt.timedelta(days=90),
        rate_per_s: float | None = None,
        burst: int | None = None,
        created_by: str = "",
    ) -> CreatedKey:
        if role not in ROLES:
            raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
        if scope not in SCOPES:
            raise ValueError(f"scope {scope!r} is not one of {', '.join(SCOPES)}")
        if not owner.strip():
            raise ValueError("owner must name who the key is for")
        if expires_in.total_seconds() <= 0:
            raise ValueError("the key must expire in the future")
        if rate_per_s is not None and not rate_per_s > 0:
            raise ValueError("rate_per_s must be > 0")
        if burst is not None and burst < 1:
            raise ValueError("burst must be at least 1")
        now = _now()
        prefix, key = new_key()
        record = KeyRecord(
            prefix=prefix,
            owner=owner.strip(),
            role=role,
            scope=scope,
            created_at=now,
            expires_at=now + expires_in.total_seconds(),
            hash=key_hash(self._secret, key),
            rate_per_s=rate_per_s,
            burst=burst,
            created_by=created_by,
        )
        self.store.insert(record)
        return CreatedKey(key, record)

    def get(self, prefix: str) -> KeyRecord:
        record = self.store.by_prefix(prefix)
        if record is None:
            raise KeyOperationError(f"no key with prefix {prefix!r}")
        return record

    def revoke(self, prefix: str) -> tuple[KeyRecord, KeyRecord]:
        """(before, after); revoking a revoked key changes nothing."""
        before = self.get(prefix)
        if before.revoked_at is not None:
            return before, before
        after = replace(before, revoked_at=_now())
        self.store.update(after)
        return before, after

    def rotate(
        self, prefix: str, *, grace: dt.timedelta = dt.timedelta(0), created_by: str = ""
    ) -> tuple[KeyRecord, KeyRecord, CreatedKey]:
        """A new key with the old one's owner, role, scope, limits and lifetime; the old key is
        revoked, or (with `grace`) expires that much later. Returns (old before, old after, new)."""
        before = self.get(prefix)
        if before.state() != "active":
            raise KeyOperationError(
                f"key {prefix} is {before.state()}: only an active key can be rotated"
            )
        lifetime = dt.timedelta(seconds=max(before.expires_at - before.created_at, 60))
        created = self.create(
            before.owner,
            before.role,
            scope=before.scope,
            expires_in=lifetime,
            rate_per_s=before.rate_per_s,
            burst=before.burst,
            created_by=created_by,
        )
        now = _now()
        if grace.total_seconds() > 0:
            after = replace(
                before,
                expires_at=min(before.expires_at, now + grace.total_seconds()),
                rotated_to=created.record.prefix,
            )
        else:
            after = replace(before, revoked_at=now, rotated_to=created.record.prefix)
        self.store.update(after)
        return before, after, created

    def list(self) -> list[KeyRecord]:
        return self.store.all()
