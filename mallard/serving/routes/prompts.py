"""`GET /v1/prompts/{name}`: a prompt version by label (default `live`) or number, with an ETag."""

from __future__ import annotations

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from mallard.serving.access import READERS, Access
from mallard.serving.auth import route
from mallard.serving.errors import ApiError
from mallard.serving.routes.common import services
from mallard.serving.schemas import PromptResponse

router = APIRouter(prefix="/v1/prompts", tags=["prompts"])


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return etag in tags


@route(
    router,
    "get",
    "/{name}",
    Access(READERS, ingest=True),
    response_model=PromptResponse,
    responses={304: {"description": "The version is the one named by If-None-Match"}},
)
def get_prompt(
    request: Request,
    name: str = Path(max_length=200),
    label: str | None = Query(None, max_length=100, description="Default: live"),
    version: int | None = Query(None, ge=1, le=2**31 - 1),
) -> Response:
    """The version a label points at, or a given version. The ETag names the version; send it
    back as If-None-Match to get a 304 while it is unchanged."""
    from mallard.llm.errors import PromptNotFoundError, PromptStoreUnavailableError

    if label is not None and version is not None:
        raise ApiError(
            422, "invalid_request", "give label or version, not both", field="query.version"
        )
    registry = services(request).clients.prompts
    if registry is None:
        raise ApiError(503, "unavailable", "this server has no prompt registry")
    try:
        found = registry.get(name, label or "live", version=version)
    except PromptNotFoundError as exc:
        field = (
            "query.version" if version is not None else ("query.label" if label else "path.name")
        )
        raise ApiError(404, "unknown_prompt", str(exc), field=field) from None
    except PromptStoreUnavailableError as exc:
        raise ApiError(503, "unavailable", str(exc)) from None
    etag = f'"{found.name}-v{found.version}-{found.content_hash[:16]}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if _etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    payload = found.to_json()
    payload["label"] = label or ("live" if version is None else None)
    payload["variables"] = list(found.variables)
    return JSONResponse(payload, headers=headers)
