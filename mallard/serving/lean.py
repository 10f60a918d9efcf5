"""The lean path of the hottest read route: the same declaration, checks and answers as its
FastAPI route, without FastAPI's per-request machinery.

FastAPI's routing, dependency solving, thread-pool hops and response validation cost about
0.3 ms of CPU a request (benchmarks/serving.py), more than reading one entity's features from
the SQLite online store. So `POST /v1/features/online` is answered here: `ServingMiddleware`
hands a request for it to `serve`, which authenticates it with the route's declared `Access`
(`auth.check_access`, as the FastAPI dependency does), parses the body as FastAPI does and
validates it with the route's own request model, calls the same `FeatureService.online` and
writes its JSON; a refusal is the same JSON error (`errors.py`). The FastAPI route remains the
declaration — the OpenAPI document, the docs, the access matrix — and answers when the lean path
is switched off (`create_app(..., lean=False)`); tests/serving/test_lean.py sends the same
requests to both and compares the answers.

With SQLite state and online store (local files, microseconds a call) the work runs on the event
loop; with Redis it runs in the thread pool, as FastAPI would run the route.
"""

from __future__ import annotations

import email.message
import json
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from mallard.serving.auth import check_access
from mallard.serving.errors import STATUS_CODES, ApiError, error_body, invalid_request

if TYPE_CHECKING:
    from mallard.serving.services import LeanRoute, Services


class _Invalid(Exception):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors


def _json_type(content_type: str | None) -> bool:
    if not content_type:  # FastAPI's strict content type: no header, no JSON
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


def parse(model: type[BaseModel], body: bytes, content_type: str | None) -> BaseModel:
    """The body as FastAPI reads a JSON body parameter: required, JSON when the content type
    says so, validated by the model; the errors located under `body`."""
    if not body:
        raise _Invalid([{"type": "missing", "loc": ("body",), "msg": "Field required"}])
    data: Any = body
    if _json_type(content_type):
        try:
            data = json.loads(body)
        except json.JSONDecodeError as exc:
            raise _Invalid(
                [{"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error"}]
            ) from None
        except UnicodeDecodeError:
            raise _Invalid(
                [{"type": "json_invalid", "loc": ("body", 0), "msg": "JSON decode error"}]
            ) from None
    try:
        return model.model_validate(data, from_attributes=True)  # as FastAPI validates a body
    except ValidationError as exc:
        raise _Invalid(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        ) from None


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _answer(services: Services, lean: LeanRoute, scope: dict[str, Any], body: bytes) -> Any:
    headers = Headers(scope=scope)
    address = (scope.get("client") or ("unknown", 0))[0]
    check_access(services, lean.access, headers, address, scope.setdefault("state", {}))
    parsed = parse(lean.body_model, body, headers.get("content-type"))
    return lean.call(services, parsed)


async def serve(
    lean: LeanRoute, services: Services, scope: dict[str, Any], receive: Any, send: Any
) -> None:
    """Answer one request on the lean path (the middleware wraps it: request id, size limit,
    metrics, the access log, a 500 for anything unexpected)."""
    import anyio
    from pydantic_core import to_json

    scope["route"] = lean.route
    request_id = str(scope.get("state", {}).get("request_id", ""))
    extra_headers: dict[str, str] = {}
    try:
        body = await _body(receive)
        if lean.inline(services):
            result = _answer(services, lean, scope, body)
        else:
            result = await anyio.to_thread.run_sync(_answer, services, lean, scope, body)
        status, payload = 200, to_json(result)
    except ApiError as exc:
        status = exc.status
        extra_headers = exc.headers
        payload = json.dumps(
            error_body(exc.code, exc.message, field=exc.field, request_id=request_id, **exc.details)
        ).encode()
    except _Invalid as exc:
        found = invalid_request(exc.errors)
        status = found.pop("status")
        payload = json.dumps(
            error_body(found.pop("code"), found.pop("message"), request_id=request_id, **found)
        ).encode()
    except HTTPException as exc:  # the body outgrew the size limit as it streamed in
        status = exc.status_code
        code = STATUS_CODES.get(status, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        payload = json.dumps(error_body(code, message, request_id=request_id)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *[(k.lower().encode(), v.encode()) for k, v in extra_headers.items()],
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
