"""Production quality over the API: quality trends, the model comparison and the alert history,
each a page of rows (`limit`, `offset`; `next_offset` is null on the last page). The figures are
those of the analytics assets (mallard.evals.online_analytics), computed from the tables when
asked."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from mallard.serving.access import READERS, Access
from mallard.serving.auth import route
from mallard.serving.routes.common import services

router = APIRouter(tags=["analytics"])


class Page(BaseModel):
    """One page of rows."""

    items: list[dict[str, Any]]
    total: int
    limit: int
    offset: int
    next_offset: int | None


def _clean(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def page(rows: Sequence[Mapping[Any, Any]], limit: int, offset: int) -> dict[str, Any]:
    """`rows[offset:offset + limit]` with the total and the next offset."""
    items = [{str(k): _clean(v) for k, v in row.items()} for row in rows[offset : offset + limit]]
    following = offset + limit
    return {
        "items": items,
        "total": len(rows),
        "limit": limit,
        "offset": offset,
        "next_offset": following if following < len(rows) else None,
    }


@route(router, "get", "/v1/analytics/trends", Access(READERS), response_model=Page)
def trends(
    request: Request,
    period: Literal["hour", "day", "week", "month"] = "hour",
    eval_name: str | None = Query(None, max_length=200),
    grader: str | None = Query(None, max_length=200),
    prompt_name: str | None = Query(None, max_length=200),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    """Online-eval quality per period, eval, prompt version, model and grader, oldest first."""
    from mallard.evals import online_scores
    from mallard.evals.online_analytics import quality_trends

    scores = online_scores.current(
        online_scores.frame(services(request).settings, eval_name=eval_name)
    )
    if grader:
        scores = scores[scores["grader"] == grader]
    if prompt_name:
        scores = scores[scores["prompt_name"] == prompt_name]
    return page(quality_trends(scores, period=period).to_dict("records"), limit, offset)


@route(router, "get", "/v1/analytics/compare-models", Access(READERS), response_model=Page)
def compare_models(
    request: Request,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    """Production traffic per endpoint and model: latency percentiles, error and success
    rates, tokens and cost, the busiest first (Mallard's own calls left out)."""
    from mallard.evals.online_analytics import model_comparison
    from mallard.traces.store import trace_store

    table = model_comparison(trace_store(services(request).settings).gradeable())
    return page(table.to_dict("records"), limit, offset)


@route(router, "get", "/v1/alerts/history", Access(READERS), response_model=Page)
def alert_history(
    request: Request,
    kind: str | None = Query(None, max_length=50),
    subject: str | None = Query(None, max_length=500),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    """Alerts recorded (quality, error rate, drift, rollbacks …), newest first."""
    from dataclasses import asdict

    from mallard.monitoring.alerts import list_alerts

    found = list_alerts(services(request).settings, kind, subject, limit=1_000_000)
    return page([asdict(a) for a in found], limit, offset)
