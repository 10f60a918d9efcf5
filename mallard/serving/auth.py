"""Who may call what: every route declares an `Access`, and one dependency enforces it.

Three roles, each including the one below it for reading: `viewer` reads (online features,
explanations, prompts, models, metrics), `developer` also sends traffic and writes (predictions,
feature pushes), `admin` also manages keys and reads the audit log. A key's `scope` narrows it:
an `ingest` key (an application that only sends traffic) may call only the routes that declare
`ingest=True`, whatever its role.

The dependency, in order: the client address's token bucket, the key (missing, unknown,
revoked or expired: 401), the key's bucket (429 with Retry-After), then the role and scope
(403): one HMAC and a few indexed lookups, on the event loop with SQLite state and in the thread
pool with Redis.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from mallard.serving.access import Access
from mallard.serving.errors import ApiError
from mallard.serving.keys import ROLES
from mallard.serving.ratelimit import Limit

if TYPE_CHECKING:
    from mallard.serving.services import Services


@dataclass(frozen=True)
class Principal:
    """The caller of a request, as the audit log and the access log name it."""

    prefix: str
    owner: str
    role: str
    scope: str

    @property
    def actor(self) -> str:
        return f"key:{self.prefix}:{self.owner}"


def presented_key(headers: Mapping[str, str]) -> str | None:
    header = headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    other = headers.get("x-api-key")
    return other.strip() if other and other.strip() else None


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _limited(services: Services, bucket: str, kind: str, limit: Limit) -> None:
    decision = services.state.limiter.take(bucket, limit)
    if not decision.allowed:
        services.metrics.rate_limited.labels(kind).inc()
        raise ApiError(
            429,
            "rate_limited",
            f"too many requests for this {kind}: at most {limit.rate:g}/s with bursts of "
            f"{limit.burst}; retry after {decision.retry_after_header} s",
            headers={"Retry-After": decision.retry_after_header},
            retry_after_s=round(decision.retry_after, 3),
        )


def _unauthenticated(services: Services, reason: str, message: str) -> ApiError:
    services.metrics.auth_failures.labels(reason).inc()
    return ApiError(
        401,
        "unauthenticated",
        message,
        field="header.authorization",
        headers={"WWW-Authenticate": 'Bearer realm="mallard"'},
        reason=reason,
    )


def check_access(
    services: Services,
    access: Access,
    headers: Mapping[str, str],
    address: str,
    state: dict[str, Any],
) -> Principal:
    """Enforce `access` for a request (its headers and client address); the caller, also kept
    in the request's `state` for the access and audit logs. Raises the ApiError to answer."""
    server = services.state
    _limited(services, f"addr:{address}", "client address", server.address_limit)
    key = presented_key(headers)
    if key is None:
        raise _unauthenticated(
            services,
            "missing_key",
            "this route needs an API key: send `Authorization: Bearer <key>` "
            "(create one with `mallard keys create`)",
        )
    record = server.keys.verify(key)
    if record is None:
        raise _unauthenticated(services, "unknown_key", "the API key is not valid")
    status = record.state()
    if status != "active":
        raise _unauthenticated(
            services, f"{status}_key", f"the API key {record.prefix} is {status}"
        )
    principal = Principal(record.prefix, record.owner, record.role, record.scope)
    state["principal"] = principal
    limit = Limit(
        record.rate_per_s or server.key_limit.rate, record.burst or server.key_limit.burst
    )
    _limited(services, f"key:{record.prefix}", "key", limit)
    if not access.allows(record.role, record.scope):
        services.metrics.auth_failures.labels("forbidden").inc()
        if record.role in access.roles:
            why = "ingest-scoped keys may call only the routes that send traffic"
        else:
            roles = ", ".join(sorted(access.roles, key=ROLES.index))
            why = f"this route needs the role {roles}; key {record.prefix} has {record.role}"
        raise ApiError(403, "forbidden", why, field="header.authorization")
    return principal


def authorize(access: Access) -> Callable[[Request], Awaitable[Principal]]:
    """The dependency that enforces `access` and returns the caller: on the event loop when the
    server state is local SQLite files (a few calls of microseconds each), in the thread pool
    when it is Redis (network round trips)."""

    async def dependency(request: Request) -> Principal:
        services: Services = request.app.state.services
        args = (
            services,
            access,
            request.headers,
            client_address(request),
            request.scope.setdefault("state", {}),
        )
        if services.state.kind == "sqlite":
            return check_access(*args)
        return await run_in_threadpool(check_access, *args)

    return dependency


def access(spec: Access) -> dict[str, Any]:
    """Keyword arguments of a route decorator declaring `spec` (enforced, and in the OpenAPI)."""
    options: dict[str, Any] = {"openapi_extra": {"x-mallard-access": spec.describe()}}
    if not spec.public:
        options["dependencies"] = [Depends(authorize(spec))]
        options["responses"] = {
            401: {"description": "No, an unknown, a revoked or an expired API key"},
            403: {"description": "The key's role or scope may not call this route"},
            429: {"description": "Rate limited; see Retry-After"},
        }
    return options


def route(
    router: Any, method: str, path: str, spec: Access, **options: Any
) -> Callable[[Any], Any]:
    """Register an endpoint on `router` with its declared access (`endpoint.access`)."""

    def decorate(endpoint: Any) -> Any:
        endpoint.access = spec
        declared = access(spec)
        responses = {**declared.pop("responses", {}), **options.pop("responses", {})}
        getattr(router, method)(path, responses=responses, **declared, **options)(endpoint)
        return endpoint

    return decorate
