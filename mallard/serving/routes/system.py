"""Probes and metrics: `/healthz` (the process is alive), `/readyz` (stores reachable, each
served model loaded), `/metrics` (Prometheus text), `/v1/whoami`."""

from __future__ import annotations

import os
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from mallard.serving.access import PUBLIC, READERS, Access
from mallard.serving.auth import route
from mallard.serving.routes.common import principal, services

router = APIRouter()


@route(router, "get", "/healthz", PUBLIC, tags=["system"])
async def healthz(request: Request) -> dict[str, Any]:
    """The process is alive (no store is touched)."""
    s = services(request)
    return {"status": "ok", "pid": os.getpid(), "uptime_s": round(time.time() - s.started_at, 1)}


def _check(checks: dict[str, str], name: str, probe: Any) -> None:
    try:
        probe()
        checks[name] = "ok"
    except Exception as exc:  # noqa: BLE001 - a readiness probe reports, it does not raise
        checks[name] = f"unreachable: {type(exc).__name__}: {str(exc)[:200]}"


@route(
    router,
    "get",
    "/readyz",
    PUBLIC,
    tags=["system"],
    responses={503: {"description": "A store is unreachable or a served model is not loaded"}},
)
def readyz(request: Request) -> JSONResponse:
    """The stores are reachable and each served model's champion is loaded in this process."""
    s = services(request)
    clients = s.clients
    checks: dict[str, str] = {}
    _check(checks, "server_state", s.state.ping)
    if clients.online_store is not None:
        _check(checks, "online_store", clients.online_store.views)
    if clients.prompts is not None:
        _check(checks, "prompt_registry", clients.prompts.names)
    if clients.prediction_log is not None:
        buffer = clients.prediction_log
        checks["prediction_log"] = (
            "ok" if buffer.last_error is None else f"flush failing: {buffer.last_error[:200]}"
        )
    models = s.models.readiness()
    ready = all(v == "ok" for v in checks.values()) and all(
        v.startswith("loaded") for v in models.values()
    )
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks, "models": models},
        status_code=200 if ready else 503,
    )


@route(
    router,
    "get",
    "/metrics",
    Access(READERS),
    tags=["system"],
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
def metrics(request: Request) -> Response:
    """Prometheus text: requests and latency by route and status, predictions by model and
    variant, validation warnings and rejects (summed over every worker)."""
    s = services(request)
    return Response(s.metrics.exposition(), media_type=s.metrics.content_type)


@route(router, "get", "/v1/whoami", Access(READERS, ingest=True), tags=["system"])
def whoami(request: Request) -> dict[str, str]:
    """The calling key's prefix, owner, role and scope."""
    p = principal(request)
    return {"prefix": p.prefix, "owner": p.owner, "role": p.role, "scope": p.scope}
