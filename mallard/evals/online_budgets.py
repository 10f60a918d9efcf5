"""Spend budgets on ingested production traffic, per user or tenant, declared in
catalog/online_evals.py and evaluated as asset checks on `llm_costs`:

    SpendBudget("user_daily", period="day", limit_usd=0.01)
    SpendBudget("tenant_monthly", period="month", limit_usd=50, scope="tenant")

Spend is the cost of the production traces (Mallard's own calls left out) a user (the trace's
`user_id`) or tenant (its `tenant` attribute, or `tenant_attribute`) made in the current UTC day
or month: the period holding the newest trace, so a replayed world is judged as of its own time.
A budget alerts once when the spend reaches each of `levels` (80 % and 100 % by default) in a
period; the 100 % alert is critical. The next period starts again from nothing.

This watches spend after the fact. The LLM client's own calls keep their hard stop
(`mallard.llm.budget.Budgets`): a call that would go over its budget is refused before it is
made.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mallard.specs import DeclarationError, check_identifier

if TYPE_CHECKING:
    import pandas as pd

    from mallard.monitoring.alerts import AlertSink

PERIODS = ("day", "month")
SCOPES = ("user", "tenant")


@dataclass(frozen=True)
class SpendBudget:
    """At most `limit_usd` of production spend per `scope` key and `period`."""

    name: str
    period: str
    limit_usd: float
    scope: str = "user"
    levels: tuple[float, ...] = (0.8, 1.0)
    tenant_attribute: str = "tenant"
    description: str = ""

    def __post_init__(self) -> None:
        check_identifier("SpendBudget", self.name)
        where = f"SpendBudget {self.name!r}"
        if self.period not in PERIODS:
            raise DeclarationError(f"{where}: period={self.period!r}; choose one of {PERIODS}")
        if self.scope not in SCOPES:
            raise DeclarationError(f"{where}: scope={self.scope!r}; choose one of {SCOPES}")
        limit = self.limit_usd
        if isinstance(limit, bool) or not isinstance(limit, int | float) or not limit > 0:
            raise DeclarationError(
                f"{where}: limit_usd={limit!r} must be a positive number of US dollars"
            )
        levels = tuple(self.levels)
        if not levels or any(
            isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v) or v <= 0
            for v in levels
        ):
            raise DeclarationError(
                f"{where}: levels={self.levels!r} must be shares of the limit > 0, e.g. (0.8, 1.0)"
            )
        object.__setattr__(self, "levels", tuple(sorted(levels)))


@dataclass(frozen=True)
class BudgetFiring:
    """A scope key whose spend in a period reached a level of its budget."""

    budget: str
    subject: str
    period_start: dt.date
    spent_usd: float
    limit_usd: float
    level: float
    calls: int
    reason: str

    @property
    def key(self) -> str:
        return f"{self.budget}:{self.subject}:{self.period_start.isoformat()}:{self.level:g}"


def period_start(moment: dt.datetime, period: str) -> dt.date:
    """The first day of the UTC day or month holding `moment`."""
    day = moment.astimezone(dt.UTC).date()
    return day if period == "day" else day.replace(day=1)


def _tenant(value: Any, attribute: str) -> str:
    if isinstance(value, str) and value:
        try:
            value = json.loads(value)
        except ValueError:
            return ""
    return str(value.get(attribute) or "") if isinstance(value, dict) else ""


def evaluate_budget(
    budget: SpendBudget, traces: pd.DataFrame | None, *, as_of: dt.datetime | None = None
) -> list[BudgetFiring]:
    """The scope keys whose spend in the period holding `as_of` (default: the newest trace)
    reached a level; for each, the highest level reached. `traces`: gradeable rows."""
    if traces is None or traces.empty:
        return []
    end = as_of or traces["timestamp"].max().to_pydatetime()
    start = period_start(end, budget.period)
    begin = dt.datetime.combine(start, dt.time(), tzinfo=dt.UTC)
    part = traces[(traces["timestamp"] >= begin) & (traces["timestamp"] <= end)]
    if budget.scope == "user":
        keys = part["user_id"].fillna("").astype(str)
    else:
        keys = part["attributes"].map(lambda v: _tenant(v, budget.tenant_attribute))
    part = part.assign(_key=keys)
    part = part[part["_key"] != ""]
    out = []
    label = "daily" if budget.period == "day" else "monthly"
    for key, group in part.groupby("_key", sort=True):
        spent = float(group["cost_usd"].sum())
        reached = [v for v in budget.levels if spent >= v * budget.limit_usd]
        if not reached:
            continue
        level = reached[-1]
        subject = f"{budget.scope} {key}"
        out.append(
            BudgetFiring(
                budget.name,
                subject,
                start,
                spent,
                budget.limit_usd,
                level,
                len(group),
                f"{subject} spent ${spent:.4f} of the {label} budget ${budget.limit_usd:g} "
                f"({spent / budget.limit_usd:.0%} ≥ {level:.0%}) in the {budget.period} from "
                f"{start.isoformat()}, {len(group)} calls",
            )
        )
    return out


def notify_budget(sink: AlertSink, budget: SpendBudget, firing: BudgetFiring) -> str:
    """Record and send the firing once per budget, scope key, period and level: the delivery,
    or "suppressed" when that level was already reported in this period."""
    from mallard.monitoring.alerts import Alert

    for previous in sink.list(kind="budget", subject=firing.subject, limit=200):
        if previous.details.get("key") == firing.key:
            return "suppressed"
    stored = sink.record(
        Alert(
            kind="budget",
            subject=firing.subject,
            reason=firing.reason,
            day=firing.period_start,
            severity="critical" if firing.level >= 1 else "warning",
            details={
                "budget": budget.name,
                "key": firing.key,
                "period": budget.period,
                "period_start": firing.period_start.isoformat(),
                "spent_usd": firing.spent_usd,
                "limit_usd": firing.limit_usd,
                "level": firing.level,
                "calls": firing.calls,
            },
        )
    )
    return stored.delivery
