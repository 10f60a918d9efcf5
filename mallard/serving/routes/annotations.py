"""`POST /v1/annotations`: a person's verdict for a judge on one item (developers; audited), and
`GET /v1/annotations`: the labels given (viewers). Labels go to the `human_labels` table
(mallard.evals.labels) and feed the next `mallard evals align`."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from mallard.serving.access import READERS, WRITERS, Access
from mallard.serving.audit import AuditEvent
from mallard.serving.auth import route
from mallard.serving.errors import ApiError
from mallard.serving.routes.common import client, principal, request_id, services

router = APIRouter(prefix="/v1/annotations", tags=["annotations"])


class AnnotationSample(BaseModel):
    """What was judged, for an item that is not in a labelled dataset (an eval answer)."""

    model_config = ConfigDict(extra="forbid")
    question: str = Field(max_length=10_000)
    answer: str = Field(max_length=20_000)
    reference: str | None = Field(None, max_length=20_000)
    contexts: list[str] = Field(default_factory=list, max_length=20)
    context_ids: list[str] = Field(default_factory=list, max_length=20)


class AnnotationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    judge: str = Field(min_length=1, max_length=200, pattern=r"^[a-z][a-z0-9_]*$")
    dataset: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    item_id: str = Field(min_length=1, max_length=300)
    verdict: Literal["pass", "fail"]
    score: float | None = Field(None, ge=1, le=5)
    reason: str = Field("", max_length=2000)
    sample: AnnotationSample | None = None


class AnnotationResponse(BaseModel):
    label_id: str
    judge: str
    dataset: str
    item_id: str
    verdict: str
    score: float | None
    reason: str
    author: str
    version: int
    source: str
    timestamp: str


def _public(label: Any) -> dict[str, Any]:
    out = label.to_json()
    out.pop("sample", None)
    return out


@route(
    router,
    "post",
    "",
    Access(WRITERS, mutating=True, action="annotations.create"),
    response_model=AnnotationResponse,
    status_code=201,
)
def create_annotation(body: AnnotationRequest, request: Request) -> dict[str, Any]:
    """Record a verdict; its author is the calling key's owner, its version the item's previous
    labels for this judge + 1."""
    from mallard.evals.labels import LabelError, add_label

    s = services(request)
    actor = principal(request).actor
    sample = None
    if body.sample is not None:
        sample = {
            "item_id": body.item_id,
            "inputs": {"question": body.sample.question},
            "answer": body.sample.answer,
            "reference": body.sample.reference,
            "contexts": body.sample.contexts,
            "context_ids": body.sample.context_ids,
        }
    try:
        label = add_label(
            judge=body.judge,
            dataset=body.dataset,
            item_id=body.item_id,
            verdict=body.verdict,
            author=actor,
            settings=s.settings,
            source="api",
            reason=body.reason,
            score=body.score,
            sample=sample,
        )
    except LabelError as exc:
        field = f"body.{exc.field}" if exc.field else "body"
        raise ApiError(422, "invalid_request", str(exc), field=field) from None
    public = _public(label)
    s.state.audit.record(
        AuditEvent(
            "annotations.create",
            actor,
            target=f"{body.judge}:{body.dataset}:{body.item_id}",
            request_id=request_id(request),
            status=201,
            client=client(request),
            after=public,
        )
    )
    request.state.audited = True
    return public


@route(router, "get", "", Access(READERS), response_model=list[AnnotationResponse])
def list_annotations(
    request: Request,
    judge: str | None = Query(None, max_length=200),
    limit: int = Query(100, ge=1, le=1000),
) -> list[dict[str, Any]]:
    """Labels given, newest first (every version)."""
    from mallard.evals.labels import all_labels

    labels = all_labels(services(request).settings, judge)
    return [_public(label) for label in reversed(labels)][:limit]
