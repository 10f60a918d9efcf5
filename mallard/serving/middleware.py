"""The one ASGI middleware around every request: request id, size limit, errors, metrics, logs.

- The request id is the caller's `X-Request-ID` when it is a short token, else a new one; it is
  in every response's `X-Request-ID`, every error body and the access log line.
- A body larger than `max_body_bytes` is refused with 413, whether its Content-Length says so
  or it streams past the limit.
- An exception nothing else handled becomes a JSON 500 naming the request id; its trace goes to
  the log only.
- Each request is counted and timed by route template and status, and logged as one JSON line.
- A refused call to a mutating route (401, 403, 422, …) is still recorded in the audit log.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

import anyio
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException

from mallard.serving.audit import AuditEvent
from mallard.serving.errors import error_body
from mallard.serving.lean import serve as serve_lean

if TYPE_CHECKING:
    from mallard.serving.services import Services

access_log = logging.getLogger("mallard.serving.access")
error_log = logging.getLogger("mallard.serving.error")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


class ServingMiddleware:
    def __init__(self, app: Any, services: Services) -> None:
        self.app = app
        self.services = services

    async def _respond(self, send: Any, status: int, body: dict[str, Any], request_id: str) -> None:
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"x-request-id", request_id.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = _header(scope, b"x-request-id")
        request_id = given if given and _REQUEST_ID.match(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        limit = self.services.settings.serve_max_body_bytes
        outcome = {"status": 500, "started": False}

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                outcome["status"] = message["status"]
                outcome["started"] = True
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
                # Recorded before the caller has its answer: what it sees, the log has.
                await self._audit_refusal(scope, state, int(message["status"]), request_id)
            await send(message)

        received = 0

        async def receive_wrapper() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, f"the request body is larger than {limit} bytes")
            return message

        try:
            length = _header(scope, b"content-length")
            if length is not None and (not length.isdigit() or int(length) > limit):
                status = 413 if length.isdigit() else 400
                message = (
                    f"the request body is larger than {limit} bytes"
                    if status == 413
                    else "Content-Length is not a number"
                )
                code = "request_too_large" if status == 413 else "bad_request"
                await self._respond(
                    send, status, error_body(code, message, request_id=request_id), request_id
                )
                outcome.update(status=status, started=True)
            else:
                await self.app(scope, receive_wrapper, send_wrapper)
        except Exception:
            error_log.exception(
                "unhandled error", extra={"request_id": request_id, "path": scope.get("path")}
            )
            if not outcome["started"]:
                await self._audit_refusal(scope, state, 500, request_id)
                await self._respond(
                    send,
                    500,
                    error_body(
                        "internal",
                        f"internal error; the server log has the details under request id {request_id}",
                        request_id=request_id,
                    ),
                    request_id,
                )
            outcome["status"] = 500
        finally:
            seconds = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            status = int(outcome["status"])
            self.services.metrics.observe_request(template, method, status, seconds)
            principal = state.get("principal")
            access_log.info(
                f"{method} {scope.get('path')} {status}",
                extra={
                    "request_id": request_id,
                    "method": method,
                    "route": template,
                    "path": scope.get("path"),
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                    "key": principal.prefix if principal else None,
                    "client": (scope.get("client") or ("", 0))[0],
                },
            )

    async def _audit_refusal(
        self, scope: dict[str, Any], state: dict[str, Any], status: int, request_id: str
    ) -> None:
        """A call to a mutating route its handler did not record (refused by auth, validation,
        or an error) is recorded here, with its outcome."""
        access = self.services.access_of(scope.get("route"), scope.get("method", ""))
        if access is None or not access.mutating or state.get("audited"):
            return
        principal = state.get("principal")
        event = AuditEvent(
            access.action,
            principal.actor if principal else "anonymous",
            target=str(scope.get("path", "")),
            request_id=request_id,
            status=status,
            client=(scope.get("client") or ("", 0))[0],
        )
        state["audited"] = True
        try:
            await anyio.to_thread.run_sync(self.services.state.audit.record, event)
        except Exception:  # noqa: BLE001 - the refusal still goes out; the failure is logged
            error_log.exception("audit record failed", extra={"request_id": request_id})


class LeanDispatch:
    """The outermost layer: a request for a route with a lean path (mallard/serving/lean.py) is
    answered there, inside `ServingMiddleware` (request id, size limit, errors, metrics, the
    access log) but outside Starlette's and FastAPI's own middleware; every other request goes
    to the app."""

    def __init__(self, app: Any, services: Services) -> None:
        self.app = app
        self.services = services
        self.lean = ServingMiddleware(self._serve, services)

    async def _serve(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        route = self.services.lean[(scope["method"], scope["path"])]
        await serve_lean(route, self.services, scope, receive, send)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and (scope.get("method"), scope.get("path")) in self.services.lean
        ):
            await self.lean(scope, receive, send)
            return
        await self.app(scope, receive, send)
