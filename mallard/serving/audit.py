"""The audit log: every mutating API call and every key operation, append-only.

An event records who (the key's prefix and owner, or the CLI user), what (the action and its
target), when, the request id, the outcome (HTTP status) and the state before and after. Locally
it is an SQLite file under MALLARD_HOME whose triggers refuse UPDATE and DELETE; in prod, a Redis
stream. `mallard audit list` and `GET /v1/audit` (admins) read it, newest first.
"""

from __future__ import annotations

import datetime as dt
import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mallard.serving.keys import SqliteFile

MAX_STATE_CHARS = 20_000  # before/after are summaries, not copies of large payloads


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def _state(value: Any) -> str:
    text = json.dumps(value, default=str, sort_keys=True)
    if len(text) > MAX_STATE_CHARS:
        text = json.dumps({"truncated": True, "preview": text[:MAX_STATE_CHARS]})
    return text


@dataclass(frozen=True)
class AuditEvent:
    action: str  # e.g. keys.create, features.push
    actor: str  # key prefix:owner, or cli:<user>
    target: str = ""
    request_id: str = ""
    status: int = 200
    before: Any = None
    after: Any = None
    client: str = ""
    at: str = field(default_factory=_now)
    id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class AuditLog(ABC):
    @abstractmethod
    def record(self, event: AuditEvent) -> None: ...

    @abstractmethod
    def list(
        self, *, limit: int = 50, action: str | None = None, actor: str | None = None
    ) -> list[AuditEvent]:
        """Newest first, filtered on the action (or an action prefix ending in `.`) and actor."""

    def ping(self) -> None:
        self.list(limit=1)

    def close(self) -> None:
        return None


def _matches(event: AuditEvent, action: str | None, actor: str | None) -> bool:
    if action and not (
        event.action == action or (action.endswith(".") and event.action.startswith(action))
    ):
        return False
    return not (actor and actor not in event.actor)


_AUDIT_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    request_id TEXT NOT NULL,
    status INTEGER NOT NULL,
    before TEXT NOT NULL,
    after TEXT NOT NULL,
    client TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_action ON audit (action, id);
CREATE TRIGGER IF NOT EXISTS audit_append_only_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_append_only_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""
_FIELDS = (
    "id",
    "at",
    "actor",
    "action",
    "target",
    "request_id",
    "status",
    "before",
    "after",
    "client",
)


def _event(row: dict[str, Any]) -> AuditEvent:
    return AuditEvent(
        action=row["action"],
        actor=row["actor"],
        target=row["target"],
        request_id=row["request_id"],
        status=int(row["status"]),
        before=json.loads(row["before"]),
        after=json.loads(row["after"]),
        client=row["client"],
        at=row["at"],
        id=int(row["id"]) if row.get("id") is not None else None,
    )


class SqliteAuditLog(AuditLog):
    def __init__(self, path: Path) -> None:
        self.db = SqliteFile(path, _AUDIT_SCHEMA, synchronous="FULL")

    def record(self, event: AuditEvent) -> None:
        self.db.con().execute(
            "INSERT INTO audit (at, actor, action, target, request_id, status, before, after, client) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event.at,
                event.actor,
                event.action,
                event.target,
                event.request_id,
                event.status,
                _state(event.before),
                _state(event.after),
                event.client,
            ),
        )

    def list(
        self, *, limit: int = 50, action: str | None = None, actor: str | None = None
    ) -> list[AuditEvent]:
        where, params = [], []
        if action:
            if action.endswith("."):
                where.append("substr(action, 1, ?) = ?")
                params += [len(action), action]
            else:
                where.append("action = ?")
                params.append(action)
        if actor:
            where.append("instr(actor, ?) > 0")
            params.append(actor)
        sql = f"SELECT {', '.join(_FIELDS)} FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        rows = self.db.con().execute(sql, [*params, int(limit)]).fetchall()
        return [_event(dict(zip(_FIELDS, row, strict=True))) for row in rows]

    def close(self) -> None:
        self.db.close()


class RedisAuditLog(AuditLog):
    """A Redis stream (`<ns>:audit`): XADD to record, XREVRANGE to read."""

    def __init__(self, client: Any, namespace: str = "mallard") -> None:
        self.r = client
        self.stream = f"{namespace}:audit"

    def record(self, event: AuditEvent) -> None:
        values = {k: v for k, v in event.as_dict().items() if k != "id"}
        values["before"], values["after"] = _state(event.before), _state(event.after)
        self.r.xadd(self.stream, {k: str(v) for k, v in values.items()})

    def list(
        self, *, limit: int = 50, action: str | None = None, actor: str | None = None
    ) -> list[AuditEvent]:
        out: list[AuditEvent] = []
        last = "+"
        while len(out) < limit:
            chunk = self.r.xrevrange(self.stream, max=last, min="-", count=500)
            if not chunk:
                break
            for entry_id, raw in chunk:
                values = {
                    (k.decode() if isinstance(k, bytes) else k): (
                        v.decode() if isinstance(v, bytes) else v
                    )
                    for k, v in raw.items()
                }
                stream_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                millis, seq = (int(part) for part in stream_id.split("-"))
                values["id"] = millis * 1000 + seq
                event = _event(values)
                if _matches(event, action, actor):
                    out.append(event)
                    if len(out) >= limit:
                        break
            last = f"({stream_id}"
            if len(chunk) < 500:
                break
        return out

    def ping(self) -> None:
        self.r.ping()
