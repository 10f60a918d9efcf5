"""Alerts: recorded in one history table, and posted to a Slack-compatible webhook if configured.

A failed delivery never loses the alert: it is stored first, and the delivery outcome is kept
beside it.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mallard.config import Settings

ALERT_KINDS = (
    "drift",
    "performance",
    "rollback",
    "promotion",
    "quality",
    "error_rate",
    "latency",
    "cost",
    "budget",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    alert_id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    day TEXT,
    severity TEXT NOT NULL,
    reason TEXT NOT NULL,
    details TEXT NOT NULL,
    delivery TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class Alert:
    """Something a person should know: what kind, about which model or prompt, when and why."""

    kind: str
    subject: str
    reason: str
    day: dt.date | None = None
    severity: str = "warning"
    details: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ALERT_KINDS:
            raise ValueError(
                f"alert kind {self.kind!r} is unknown; choose one of {', '.join(ALERT_KINDS)}"
            )


@dataclass(frozen=True)
class StoredAlert:
    alert_id: int
    created_at: str
    kind: str
    subject: str
    day: str | None
    severity: str
    reason: str
    details: dict[str, object]
    delivery: str


def _db(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.execute(_SCHEMA)
    return con


def slack_payload(alert: Alert) -> dict[str, object]:
    """The Slack-compatible JSON body for an alert (Slack, Mattermost and Teams accept `text`)."""
    when = f" on {alert.day.isoformat()}" if alert.day else ""
    text = (
        f":rotating_light: [{alert.severity}] {alert.kind} — {alert.subject}{when}: {alert.reason}"
    )
    return {
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
        "mallard": {**asdict(alert), "day": alert.day.isoformat() if alert.day else None},
    }


def _deliver(url: str, alert: Alert) -> str:
    import httpx

    try:
        reply = httpx.post(url, json=slack_payload(alert), timeout=5.0)
    except httpx.HTTPError as exc:
        return f"failed: {type(exc).__name__}: {exc}"
    return "sent" if reply.is_success else f"failed: HTTP {reply.status_code}"


class AlertSink:
    """Where alerts go: the history table, then a Slack-compatible webhook if one is set."""

    def __init__(self, path: Path | str, webhook_url: str | None = None):
        self.path = Path(path)
        self.webhook_url = webhook_url or None

    def record(self, alert: Alert) -> StoredAlert:
        """Store the alert, then post it to the webhook; a failed post is kept as the delivery."""
        created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        with _db(self.path) as con:
            cursor = con.execute(
                "INSERT INTO alerts (created_at, kind, subject, day, severity, reason, details, "
                "delivery) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    created,
                    alert.kind,
                    alert.subject,
                    alert.day.isoformat() if alert.day else None,
                    alert.severity,
                    alert.reason,
                    json.dumps(alert.details, default=str),
                    "recorded only",
                ),
            )
            alert_id = int(cursor.lastrowid or 0)
        delivery = "recorded only"
        if self.webhook_url:
            delivery = _deliver(self.webhook_url, alert)
            with _db(self.path) as con:
                con.execute(
                    "UPDATE alerts SET delivery = ? WHERE alert_id = ?", (delivery, alert_id)
                )
        return StoredAlert(
            alert_id,
            created,
            alert.kind,
            alert.subject,
            alert.day.isoformat() if alert.day else None,
            alert.severity,
            alert.reason,
            dict(alert.details),
            delivery,
        )

    def list(
        self, kind: str | None = None, subject: str | None = None, limit: int = 100
    ) -> list[StoredAlert]:
        """The newest alerts first, optionally of one kind or about one subject."""
        if not self.path.exists():
            return []
        query = "SELECT * FROM alerts WHERE 1=1"
        params: list[object] = []
        if kind:
            query, params = query + " AND kind = ?", [*params, kind]
        if subject:
            query, params = query + " AND subject = ?", [*params, subject]
        with _db(self.path) as con:
            rows = con.execute(
                query + " ORDER BY alert_id DESC LIMIT ?", [*params, limit]
            ).fetchall()
        return [
            StoredAlert(r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7]), r[8])
            for r in rows
        ]


def alerts_path(settings: Settings) -> Path:
    return settings.monitoring_dir / "alerts.sqlite"


def alert_sink(settings: Settings) -> AlertSink:
    """The alert sink of a deployment: its history table and MALLARD_ALERT_WEBHOOK_URL."""
    return AlertSink(alerts_path(settings), settings.alert_webhook_url)


def list_alerts(
    settings: Settings, kind: str | None = None, subject: str | None = None, limit: int = 100
) -> list[StoredAlert]:
    """The newest alerts of a deployment first (see `AlertSink.list`)."""
    return alert_sink(settings).list(kind, subject, limit)
