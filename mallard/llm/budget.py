"""Token estimates, worst-case cost and hard budgets per run, per user (per UTC day) and per day.

A call reserves its worst case (prompt tokens + max_tokens at the declared prices) before it is
made; it is refused when spent + reserved + worst case would cross a budget. When the call ends,
the reservation is replaced by the actual cost. With a ledger file, spending is shared by every
process using the same MALLARD_HOME (Dagster runs are separate processes).
"""

from __future__ import annotations

import datetime as dt
import math
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mallard.llm.errors import BudgetExceededError

MESSAGE_OVERHEAD_TOKENS = 4
CHARS_PER_TOKEN_LOWER_BOUND = (
    3.0  # English BPE averages ~4 chars/token; 3 over-estimates on purpose
)


def estimate_tokens(messages: Iterable[dict[str, Any]]) -> int:
    """A deliberately high estimate of prompt tokens when no tokenizer is at hand."""
    total = 3
    for message in messages:
        content = message.get("content") or ""
        total += MESSAGE_OVERHEAD_TOKENS + math.ceil(
            len(str(content)) / CHARS_PER_TOKEN_LOWER_BOUND
        )
    return total


@dataclass(frozen=True)
class Budgets:
    """Hard limits in US dollars; None means no limit. The user and day budgets reset at 00:00 UTC;
    calls without a run id (or user id) are not counted against a run (or user) budget."""

    per_run_usd: float | None = None
    per_user_usd: float | None = None
    per_day_usd: float | None = None

    def __post_init__(self) -> None:
        for name in ("per_run_usd", "per_user_usd", "per_day_usd"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int | float) or value < 0):
                raise ValueError(
                    f"Budgets.{name} must be a non-negative number or None, got {value!r}"
                )

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.per_run_usd, self.per_user_usd, self.per_day_usd))


def _today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


class Reservation:
    def __init__(
        self, ledger: BudgetLedger | None, keys: list[tuple[str, str, str]], amount: float
    ):
        self._ledger = ledger
        self.keys = keys
        self.amount = amount
        self._done = False

    def settle(self, actual: float) -> None:
        if not self._done and self._ledger is not None:
            self._ledger._settle(self.keys, self.amount, actual)
        self._done = True

    def release(self) -> None:
        self.settle(0.0)


class BudgetLedger:
    """Spent and reserved dollars per (scope, key, day). `path=None` keeps it in memory."""

    def __init__(self, budgets: Budgets, path: Path | None = None):
        self.budgets = budgets
        self._lock = threading.Lock()
        self._reserved: dict[tuple[str, str, str], float] = defaultdict(float)
        self._spent: dict[tuple[str, str, str], float] = defaultdict(float)
        self._db: sqlite3.Connection | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(path), check_same_thread=False, timeout=30, isolation_level=None
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS llm_spend (scope TEXT, key TEXT, day TEXT, usd REAL NOT NULL, "
                "PRIMARY KEY (scope, key, day))"
            )

    def _limits(self, run_id: str, user_id: str) -> list[tuple[tuple[str, str, str], float]]:
        day = _today()
        out = []
        if self.budgets.per_run_usd is not None and run_id:
            out.append((("run", run_id, ""), self.budgets.per_run_usd))
        if self.budgets.per_user_usd is not None and user_id:
            out.append((("user", user_id, day), self.budgets.per_user_usd))
        if self.budgets.per_day_usd is not None:
            out.append((("day", "all", day), self.budgets.per_day_usd))
        return out

    def spent(self, scope: str, key: str, day: str = "") -> float:
        ident = (scope, key, day)
        if self._db is not None:
            row = self._db.execute(
                "SELECT usd FROM llm_spend WHERE scope=? AND key=? AND day=?", ident
            ).fetchone()
            return float(row[0]) if row else 0.0
        return self._spent[ident]

    def reserve(self, run_id: str, user_id: str, worst_case: float, detail: str) -> Reservation:
        limits = self._limits(run_id, user_id)
        if not limits:
            return Reservation(None, [], 0.0)
        with self._lock:
            for ident, limit in limits:
                committed = self.spent(*ident) + self._reserved[ident]
                if committed + worst_case > limit + 1e-12:
                    scope, key, day = ident
                    label = {
                        "run": "per-run",
                        "user": f"per-user ({day})",
                        "day": f"per-day ({day})",
                    }[scope]
                    raise BudgetExceededError(label, key, limit, committed, worst_case, detail)
            for ident, _ in limits:
                self._reserved[ident] += worst_case
        return Reservation(self, [ident for ident, _ in limits], worst_case)

    def _settle(self, keys: list[tuple[str, str, str]], reserved: float, actual: float) -> None:
        with self._lock:
            for ident in keys:
                self._reserved[ident] = max(0.0, self._reserved[ident] - reserved)
                if actual <= 0:
                    continue
                if self._db is not None:
                    self._db.execute(
                        "INSERT INTO llm_spend VALUES (?, ?, ?, ?) ON CONFLICT(scope, key, day) "
                        "DO UPDATE SET usd = usd + excluded.usd",
                        (*ident, actual),
                    )
                else:
                    self._spent[ident] += actual

    def remaining(self, run_id: str = "", user_id: str = "") -> float | None:
        """The smallest remaining amount over the budgets that apply (None when none apply)."""
        limits = self._limits(run_id, user_id)
        if not limits:
            return None
        with self._lock:
            return min(
                limit - self.spent(*ident) - self._reserved[ident] for ident, limit in limits
            )


@dataclass(frozen=True)
class CostEstimate:
    """Before a batch starts: how many calls, their estimated prompt tokens, and the cost range."""

    endpoint: str
    calls: int
    prompt_tokens: int
    max_completion_tokens: int
    prompt_cost_usd: float
    worst_case_usd: float
    remaining_budget_usd: float | None

    @property
    def fits_budget(self) -> bool:
        return (
            self.remaining_budget_usd is None
            or self.worst_case_usd <= self.remaining_budget_usd + 1e-12
        )

    def __str__(self) -> str:
        budget = (
            "no budget"
            if self.remaining_budget_usd is None
            else f"${self.remaining_budget_usd:.6f} budget left"
        )
        return (
            f"{self.calls} calls to {self.endpoint!r}: ~{self.prompt_tokens:,} prompt tokens, up to "
            f"{self.max_completion_tokens:,} completion tokens; at least ${self.prompt_cost_usd:.6f}, at most "
            f"${self.worst_case_usd:.6f} ({budget})"
        )
