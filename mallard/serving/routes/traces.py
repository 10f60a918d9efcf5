"""`POST /v1/traces` (JSON trace rows) and `POST /v1/otlp/v1/traces` (OTLP/HTTP).

Applications send their LLM traffic here; an ingest-scoped key is what they should hold (it may
call only the routes that send traffic). Point a stock OpenTelemetry OTLP/HTTP exporter at
`<server>/v1/otlp/v1/traces` with an `Authorization: Bearer <key>` header (docs/TRACES.md).

Each batch is checked whole and written whole to the trace buffer's write-ahead log before the
answer (mallard.traces.ingest): 200 means the spans are on disk; 400/415/422 name the field at
fault and nothing of the batch was kept; 429 (buffer full) or 503 (the lake is failing, or the
log cannot be written) carry Retry-After, and nothing of the batch was kept either.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from mallard.serving.access import WRITERS, Access
from mallard.serving.audit import AuditEvent
from mallard.serving.auth import route
from mallard.serving.errors import ApiError
from mallard.serving.routes.common import client, principal, request_id, services
from mallard.traces.rows import TraceBatch

if TYPE_CHECKING:
    from mallard.lake.buffer import DurableBuffer
    from mallard.serving.metrics import ServerMetrics
    from mallard.serving.services import Services
    from mallard.traces.ingest import Accepted

router = APIRouter(tags=["traces"])
# Audited: who sent how many spans (the spans themselves are in the traces table).
INGEST = Access(WRITERS, ingest=True, mutating=True, action="traces.ingest")
MAX_INFLATED_FACTOR = 16  # a gzip body may inflate to 16× the body limit (at least 16 MiB)


class TracesAccepted(BaseModel):
    spans: int
    traces: int
    request_id: str


class _Metrics:
    """The ingestion counters, in the app's registry (so in /metrics, summed over workers)."""

    def __init__(self, s: Services) -> None:
        from prometheus_client import Counter

        r = s.metrics.registry
        self.spans = Counter(
            "mallard_trace_spans_received",
            "Spans acknowledged (written to the trace buffer's log), by route and span kind.",
            ["route", "kind"],
            registry=r,
        )
        self.refused = Counter(
            "mallard_trace_batches_refused",
            "Trace batches refused (nothing of them kept), by reason.",
            ["reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "mallard_trace_duplicate_spans",
            "Spans a flush skipped because the table (or the flush) already had their key.",
            registry=r,
        )
        self.appended = Counter(
            "mallard_trace_spans_stored",
            "Spans appended to the traces table by this worker's flushes.",
            registry=r,
        )
        self.flushes = Counter(
            "mallard_trace_flushes",
            "Trace buffer flushes that reached the sink (one Delta commit each, unless every span "
            "was a duplicate).",
            registry=r,
        )
        self.flush_seconds = Counter(
            "mallard_trace_flush_seconds",
            "Seconds the trace flushes spent, by phase (prepare: rows to Arrow; check: the "
            "duplicate lookup; write: the Delta commit).",
            ["phase"],
            registry=r,
        )
        buffer = s.clients.traces
        sink = getattr(buffer, "sink", None)
        if sink is not None and hasattr(sink, "on_flush"):
            sink.on_flush = self.flushed

    def flushed(self, report: Any) -> None:
        self.duplicates.inc(report.duplicates_in_batch + report.duplicates_stored)
        self.appended.inc(report.appended)
        self.flushes.inc()
        self.flush_seconds.labels("prepare").inc(report.prepare_s)
        self.flush_seconds.labels("check").inc(report.check_s)
        self.flush_seconds.labels("write").inc(report.write_s)


_metrics: weakref.WeakKeyDictionary[ServerMetrics, _Metrics] = weakref.WeakKeyDictionary()


def _metrics_of(s: Services) -> _Metrics:
    found = _metrics.get(s.metrics)  # one set per app (its registry)
    if found is None:
        found = _metrics[s.metrics] = _Metrics(s)
    return found


def _buffer(s: Services) -> DurableBuffer:
    buffer = s.clients.traces
    if buffer is None:
        raise ApiError(503, "unavailable", "this server does not ingest traces")
    return buffer


def _refusal(s: Services, exc: Exception) -> ApiError:
    from mallard.lake.buffer import BufferFull
    from mallard.traces.otlp import TraceInputError

    metrics = _metrics_of(s)
    if isinstance(exc, TraceInputError):
        metrics.refused.labels(exc.code).inc()
        return ApiError(exc.status, exc.code, exc.message, field=exc.field)
    if isinstance(exc, BufferFull):
        metrics.refused.labels("buffer_full").inc()
        retry = str(max(1, round(exc.retry_after_s)))
        status = 503 if exc.failing else 429
        return ApiError(
            status,
            "buffer_full" if status == 429 else "unavailable",
            f"{exc}; nothing of this batch was kept"
            + (" (the last flush failed)" if exc.failing else ""),
            headers={"Retry-After": retry},
            retry_after_s=exc.retry_after_s,
        )
    if isinstance(exc, OSError):
        metrics.refused.labels("write_ahead_failed").inc()
        return ApiError(
            503,
            "unavailable",
            f"the trace log could not be written ({type(exc).__name__}); nothing was kept",
            headers={"Retry-After": "5"},
        )
    raise exc


def _counted(s: Services, route_name: str, accepted: Accepted) -> None:
    metrics = _metrics_of(s)
    for kind, count in accepted.kinds.items():
        metrics.spans.labels(route_name, kind).inc(count)


def _audit(s: Services, request: Request, route_name: str, accepted: Accepted) -> None:
    """The accepted batch in the audit log (a refused one is recorded by the middleware)."""
    request.state.audited = True
    s.state.audit.record(
        AuditEvent(
            "traces.ingest",
            principal(request).actor,
            target=route_name,
            request_id=request_id(request),
            status=200,
            after={"spans": accepted.spans, "traces": accepted.traces},
            client=client(request),
        )
    )


@route(
    router,
    "post",
    "/v1/traces",
    INGEST,
    response_model=TracesAccepted,
    responses={
        422: {"description": "A row is malformed (the field is named); nothing was kept"},
        429: {
            "description": "The trace buffer is full or the key is rate limited; see Retry-After"
        },
        503: {"description": "The lake is failing or the log cannot be written; see Retry-After"},
    },
)
def ingest_trace_rows(body: TraceBatch, request: Request) -> dict[str, Any]:
    """Trace rows as JSON (`{"rows": [...]}`, each a span of the traces table: `trace_id` and
    `timestamp` required). Written whole before the answer, each (trace_id, span_id) once."""
    from mallard.traces.ingest import ingest_rows

    s = services(request)
    buffer = _buffer(s)
    try:
        accepted = ingest_rows(buffer, body)
    except Exception as exc:  # noqa: BLE001 - each refusal becomes its answer
        raise _refusal(s, exc) from None
    _counted(s, "rows", accepted)
    _audit(s, request, "rows", accepted)
    return {
        "spans": accepted.spans,
        "traces": accepted.traces,
        "request_id": str(getattr(request.state, "request_id", "")),
    }


@route(
    router,
    "post",
    "/v1/otlp/v1/traces",
    INGEST,
    response_class=Response,
    responses={
        200: {
            "description": "An ExportTraceServiceResponse, in the request's encoding",
            "content": {"application/x-protobuf": {}, "application/json": {}},
        },
        400: {"description": "Malformed OTLP (the field is named); nothing was kept"},
        413: {"description": "The body (or what it inflates to) is too large"},
        415: {"description": "Not protobuf or JSON, or an encoding other than gzip"},
        429: {
            "description": "The trace buffer is full or the key is rate limited; see Retry-After"
        },
        503: {"description": "The lake is failing or the log cannot be written; see Retry-After"},
    },
)
async def ingest_otlp_traces(request: Request) -> Response:
    """OTLP/HTTP trace export (`ExportTraceServiceRequest`) in protobuf or JSON, gzip or not:
    point an OpenTelemetry OTLP/HTTP exporter's traces endpoint here. GenAI (`gen_ai.*`) and
    OpenInference (`llm.*`, `input.value`, `retrieval.documents`) attributes become columns;
    every other attribute is kept in `attributes`."""
    from mallard.traces.ingest import ingest_otlp
    from mallard.traces.otlp import ok_response

    s = services(request)
    buffer = _buffer(s)
    body = await request.body()
    content_type = request.headers.get("content-type")
    limit = max(16 * 1024 * 1024, MAX_INFLATED_FACTOR * s.settings.serve_max_body_bytes)
    try:
        accepted = await anyio.to_thread.run_sync(
            lambda: ingest_otlp(
                buffer,
                body,
                content_type,
                request.headers.get("content-encoding"),
                max_bytes=limit,
            )
        )
    except Exception as exc:  # noqa: BLE001 - each refusal becomes its answer
        raise _refusal(s, exc) from None
    _counted(s, "otlp", accepted)
    await anyio.to_thread.run_sync(_audit, s, request, "otlp", accepted)
    payload, media = ok_response(content_type)
    return Response(payload, media_type=media)


# The OTLP route reads its body itself: describe it in the OpenAPI document.
for _route in router.routes:
    if getattr(_route, "path", None) == "/v1/otlp/v1/traces":
        _route.openapi_extra = {  # type: ignore[attr-defined]
            **(getattr(_route, "openapi_extra", None) or {}),
            "requestBody": {
                "required": True,
                "description": "An OTLP ExportTraceServiceRequest (Content-Encoding: gzip allowed)",
                "content": {
                    "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
                    "application/json": {"schema": {"type": "object"}},
                },
            },
        }
