"""Keys and the audit log, for admins: `/v1/keys…`, `GET /v1/audit`.

A key cannot revoke or rotate itself over the API (409): an admin key stays usable whatever the
requests it sends, and losing the last admin key takes a deliberate `mallard keys` command.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Path, Query, Request

from mallard.serving.access import ADMINS, Access
from mallard.serving.audit import AuditEvent
from mallard.serving.auth import route
from mallard.serving.errors import ApiError
from mallard.serving.keys import KeyOperationError
from mallard.serving.routes.common import client, principal, request_id, services
from mallard.serving.schemas import (
    AuditEntry,
    CreatedKeyResponse,
    KeyCreateRequest,
    KeyInfo,
    KeyRotateRequest,
)

router = APIRouter(prefix="/v1", tags=["admin"])
PREFIX = Path(pattern=r"^[0-9a-f]{8}$", description="The key's 8-hex-digit prefix")


def _record(request: Request, action: str, target: str, status: int = 200, **state: Any) -> None:
    s = services(request)
    s.state.audit.record(
        AuditEvent(
            action,
            principal(request).actor,
            target=target,
            request_id=request_id(request),
            status=status,
            client=client(request),
            **state,
        )
    )
    request.state.audited = True


@route(router, "get", "/keys", Access(ADMINS), response_model=list[KeyInfo])
def list_keys(request: Request) -> list[dict[str, Any]]:
    """Every key's record (never the key)."""
    return [record.public() for record in services(request).state.keys.list()]


@route(
    router,
    "post",
    "/keys",
    Access(ADMINS, mutating=True, action="keys.create"),
    response_model=CreatedKeyResponse,
    status_code=201,
)
def create_key(body: KeyCreateRequest, request: Request) -> dict[str, Any]:
    """A new key, shown once in the response."""
    s = services(request)
    try:
        created = s.state.keys.create(
            body.owner,
            body.role,
            scope=body.scope,
            expires_in=dt.timedelta(days=body.expires_in_days),
            rate_per_s=body.rate_per_s,
            burst=body.burst,
            created_by=principal(request).actor,
        )
    except ValueError as exc:
        raise ApiError(422, "invalid_request", str(exc), field="body") from None
    _record(request, "keys.create", created.record.prefix, 201, after=created.record.public())
    return {"key": created.key, "record": created.record.public()}


def _not_own(request: Request, prefix: str, what: str) -> None:
    if principal(request).prefix == prefix:
        raise ApiError(
            409,
            "own_key",
            f"a key cannot {what} itself over the API: use another admin key, or "
            f"`mallard keys {what} {prefix}`",
            field="path.prefix",
        )


def _get(request: Request, prefix: str) -> None:
    try:
        services(request).state.keys.get(prefix)
    except KeyOperationError as exc:
        raise ApiError(404, "unknown_key", str(exc), field="path.prefix") from None


@route(
    router,
    "post",
    "/keys/{prefix}/revoke",
    Access(ADMINS, mutating=True, action="keys.revoke"),
    response_model=KeyInfo,
)
def revoke_key(request: Request, prefix: str = PREFIX) -> dict[str, Any]:
    """Revoke a key: its next request is refused (401), on every worker."""
    _not_own(request, prefix, "revoke")
    _get(request, prefix)
    before, after = services(request).state.keys.revoke(prefix)
    _record(request, "keys.revoke", prefix, before=before.public(), after=after.public())
    return after.public()


@route(
    router,
    "post",
    "/keys/{prefix}/rotate",
    Access(ADMINS, mutating=True, action="keys.rotate"),
    response_model=CreatedKeyResponse,
    status_code=201,
)
def rotate_key(
    request: Request, body: KeyRotateRequest | None = None, prefix: str = PREFIX
) -> dict[str, Any]:
    """A new key for the same owner, role and scope; the old one is revoked (or, with
    `grace_seconds`, expires that much later)."""
    _not_own(request, prefix, "rotate")
    _get(request, prefix)
    grace = dt.timedelta(seconds=body.grace_seconds if body else 0)
    try:
        before, after, created = services(request).state.keys.rotate(
            prefix, grace=grace, created_by=principal(request).actor
        )
    except KeyOperationError as exc:
        raise ApiError(409, "not_rotatable", str(exc), field="path.prefix") from None
    _record(
        request,
        "keys.rotate",
        prefix,
        201,
        before=before.public(),
        after={"old": after.public(), "new": created.record.public()},
    )
    return {"key": created.key, "record": created.record.public()}


@route(router, "get", "/audit", Access(ADMINS), response_model=list[AuditEntry])
def audit_log(
    request: Request,
    limit: int = Query(50, ge=1, le=1000),
    action: str | None = Query(
        None, max_length=100, description="An action, or a prefix ending in '.'"
    ),
    actor: str | None = Query(None, max_length=200, description="Part of the actor"),
) -> list[dict[str, Any]]:
    """The audit log, newest first: who, what, when, the request id, before and after."""
    events = services(request).state.audit.list(limit=limit, action=action, actor=actor)
    return [e.as_dict() for e in events]
