"""Spend budgets on ingested traffic: a user alerts at 80 % and at 100 % of a daily budget, once
per level and period; a new period starts from nothing; tenants come from an attribute; the
budgets run as checks on llm_costs; a bad budget is refused naming the field."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import pandas as pd
import pytest
from online_helpers import AT, append, call, resources_for

from mallard.evals.online_budgets import SpendBudget, evaluate_budget, notify_budget
from mallard.monitoring.alerts import AlertSink
from mallard.specs import DeclarationError

DAILY = SpendBudget(name="daily", period="day", limit_usd=0.01)


def rows(spend: list[tuple[str, float, dt.datetime]], tenant: str = "") -> pd.DataFrame:
    """Gradeable rows: (user, cost, time) each; a production call."""
    return pd.DataFrame(
        [
            {
                "trace_id": f"t{i}",
                "timestamp": pd.Timestamp(at),
                "user_id": user,
                "cost_usd": cost,
                "attributes": json.dumps({"tenant": tenant or f"acme-{user}"}),
            }
            for i, (user, cost, at) in enumerate(spend)
        ]
    )


def test_a_user_alerts_at_80_and_100_percent_once_each_per_day(tmp_path) -> None:
    sink = AlertSink(tmp_path / "alerts.sqlite")
    morning = [("u1", 0.002, AT + dt.timedelta(minutes=i)) for i in range(3)]  # $0.006: 60 %
    assert evaluate_budget(DAILY, rows(morning)) == []
    noon = [*morning, ("u1", 0.0025, AT + dt.timedelta(hours=3)), ("u2", 0.001, AT)]
    (near,) = evaluate_budget(DAILY, rows(noon))  # $0.0085: 85 %, u2 at 10 % stays quiet
    assert (near.subject, near.level) == ("user u1", 0.8)
    assert "85% ≥ 80%" in near.reason and "daily budget $0.01" in near.reason
    assert notify_budget(sink, DAILY, near) == "recorded only"
    assert notify_budget(sink, DAILY, near) == "suppressed"  # the next check, same level
    evening = [*noon, ("u1", 0.002, AT + dt.timedelta(hours=8))]
    (over,) = evaluate_budget(DAILY, rows(evening))  # $0.0105: 105 %
    assert over.level == 1.0 and notify_budget(sink, DAILY, over) == "recorded only"
    assert notify_budget(sink, DAILY, over) == "suppressed"
    stored = sink.list(kind="budget")
    assert [(a.details["level"], a.severity) for a in stored] == [
        (1.0, "critical"),
        (0.8, "warning"),
    ]
    # the next day starts from nothing; the monthly budget still counts the whole month
    tomorrow = [*evening, ("u1", 0.001, AT + dt.timedelta(days=1))]
    assert evaluate_budget(DAILY, rows(tomorrow)) == []
    monthly = SpendBudget(name="monthly", period="month", limit_usd=0.0125)
    (month,) = evaluate_budget(monthly, rows(tomorrow))
    assert month.level == 0.8 and month.period_start == AT.date().replace(day=1)


def test_a_tenant_budget_sums_its_users(tmp_path) -> None:
    tenant = SpendBudget(name="tenant_daily", period="day", limit_usd=0.01, scope="tenant")
    spend = [(f"u{i}", 0.003, AT + dt.timedelta(minutes=i)) for i in range(4)]
    (firing,) = evaluate_budget(tenant, rows(spend, tenant="acme"))
    assert firing.subject == "tenant acme" and firing.level == 1.0 and firing.calls == 4
    assert evaluate_budget(DAILY, rows(spend, tenant="acme")) == []  # each user spent $0.003


def test_the_budgets_run_as_checks_on_llm_costs(tmp_path) -> None:
    """Over a real traces table: a user at 90 % of the deployment's daily budget gets the 80 %
    alert; Mallard's own calls do not count."""
    from assets.online_evals import BUDGET_CHECKS, llm_costs
    from catalog.online_evals import user_daily_budget
    from resources import AlertSinkResource

    home = tmp_path / "home"
    share = user_daily_budget.limit_usd * 0.9 / 3
    production = [call(i, cost_usd=share, user_id="u-busy") for i in range(3)]
    own = [call(10 + i, cost_usd=1.0, user_id="u-busy", run_id="eval-run") for i in range(3)]
    append(home, [*production, *own])
    resources = resources_for(home)
    resources["alerts"] = AlertSinkResource(lake=resources["lake"])
    result = dg.materialize([llm_costs, *BUDGET_CHECKS], resources=resources, raise_on_error=False)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    daily = checks["budget_user_daily"]
    assert daily.passed and daily.metadata["near_limit"].value == 1  # 90 %: warned, not over
    assert "user u-busy spent $0.0045" in daily.description
    (alert,) = resources["alerts"].sink().list(kind="budget")
    assert alert.details["budget"] == "user_daily" and alert.details["level"] == 0.8


def test_a_bad_budget_is_refused_naming_the_field() -> None:
    with pytest.raises(DeclarationError, match="period='week'; choose one of"):
        SpendBudget(name="b", period="week", limit_usd=1)
    with pytest.raises(DeclarationError, match="limit_usd=0 must be a positive number"):
        SpendBudget(name="b", period="day", limit_usd=0)
    with pytest.raises(DeclarationError, match="scope='team'; choose one of"):
        SpendBudget(name="b", period="day", limit_usd=1, scope="team")
    with pytest.raises(DeclarationError, match=r"levels=\(\) must be shares of the limit"):
        SpendBudget(name="b", period="day", limit_usd=1, levels=())
