"""Daily monitoring results per model (drift share, performance): one SQLite table, owned here.

The drift and performance assets write a row per model, day and kind; the sensors and the demo
summary read them back.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from typing import Any

from mallard.config import Settings

_SCHEMA = """
CREATE TABLE IF NOT EXISTS daily_results (
    model TEXT NOT NULL,
    day TEXT NOT NULL,
    kind TEXT NOT NULL,            -- drift | performance
    role TEXT NOT NULL DEFAULT 'champion',
    model_version TEXT NOT NULL,
    value REAL,                    -- drift share, or the deciding metric
    details TEXT NOT NULL,         -- JSON
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (model, day, kind, role)
)
"""


def _db(settings: Settings) -> sqlite3.Connection:
    path = settings.monitoring_dir / "results.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.execute(_SCHEMA)
    return con


def record(
    settings: Settings,
    model: str,
    day: dt.date,
    kind: str,
    model_version: str,
    value: float | None,
    details: dict[str, Any],
    role: str = "champion",
) -> None:
    """Store (or replace) one day's result."""
    with _db(settings) as con:
        con.execute(
            "INSERT OR REPLACE INTO daily_results VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                model,
                day.isoformat(),
                kind,
                role,
                model_version,
                value,
                json.dumps(details, default=str),
                dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            ),
        )


def read(
    settings: Settings, model: str, kind: str, after: dt.date | None = None, role: str = "champion"
) -> list[dict[str, Any]]:
    """Results of one kind for a model, oldest day first (optionally only days after `after`)."""
    if not (settings.monitoring_dir / "results.sqlite").exists():
        return []
    query = "SELECT day, model_version, value, details FROM daily_results WHERE model=? AND kind=? AND role=?"
    params: list[Any] = [model, kind, role]
    if after is not None:
        query += " AND day > ?"
        params.append(after.isoformat())
    with _db(settings) as con:
        rows = con.execute(query + " ORDER BY day", params).fetchall()
    return [
        {"day": dt.date.fromisoformat(d), "model_version": v, "value": x, "details": json.loads(j)}
        for d, v, x, j in rows
    ]
