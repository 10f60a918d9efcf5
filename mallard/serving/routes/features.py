"""`POST /v1/features/online` and `POST /v1/features/push`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request

from mallard.serving.access import READERS, WRITERS, Access
from mallard.serving.audit import AuditEvent
from mallard.serving.auth import route
from mallard.serving.errors import ApiError
from mallard.serving.routes.common import client, principal, request_id, services
from mallard.serving.schemas import (
    OnlineFeaturesRequest,
    OnlineFeaturesResponse,
    PushRequest,
    PushResponse,
)

if TYPE_CHECKING:
    from mallard.serving.services import Services

router = APIRouter(prefix="/v1/features", tags=["features"])
PUSH = Access(WRITERS, ingest=True, mutating=True, action="features.push")


@route(
    router, "post", "/online", Access(READERS, ingest=True), response_model=OnlineFeaturesResponse
)
def online_features(body: OnlineFeaturesRequest, request: Request) -> dict[str, Any]:
    """Values for entity keys, by `view:feature` references or a feature service, with each
    view's staleness (its ttl) and the view version that served them."""
    return _online(services(request), body)


def _online(s: Services, body: OnlineFeaturesRequest) -> dict[str, Any]:
    return s.features.online(body.entities, body.features, body.service)


# Also answered on the lean path (mallard/serving/lean.py): the same call, without FastAPI's
# per-request machinery.
online_features.lean = (OnlineFeaturesRequest, _online)  # type: ignore[attr-defined]


@route(
    router,
    "post",
    "/push",
    PUSH,
    response_model=PushResponse,
    responses={422: {"description": "A row fails a check of the view: nothing was written"}},
)
def push_features(body: PushRequest, request: Request) -> dict[str, Any]:
    """Write rows to a view through the feature assets' writer and checks: a row that fails a
    check refuses the whole batch (nothing is written)."""
    s = services(request)
    who = principal(request)
    try:
        result = s.features.push(body.view, body.rows)
    except ApiError as exc:
        request.state.audited = True
        s.state.audit.record(
            AuditEvent(
                "features.push",
                who.actor,
                target=body.view,
                request_id=request_id(request),
                status=exc.status,
                after={"refused": exc.code, "message": exc.message, "rows": len(body.rows)},
                client=client(request),
            )
        )
        raise
    s.metrics.feature_rows_pushed.labels(result["view"]).inc(result["rows"])
    s.state.audit.record(
        AuditEvent(
            "features.push",
            who.actor,
            target=result["version"],
            request_id=request_id(request),
            before=result.pop("before"),
            after=result.pop("after"),
            client=client(request),
        )
    )
    request.state.audited = True
    return result
