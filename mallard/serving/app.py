"""The FastAPI app factory: `create_app(clients, settings)`.

The app is handed the deployment's clients (`ServingClients`: the server state, the online
store, the feature registry, the prompt registry, the prediction log's buffer, the served
models); it builds none itself. `cli/serve.py` opens them through `resources.open_resources()`.

Routes are versioned under `/v1`; `/healthz`, `/readyz`, `/metrics`, `/openapi.json` and
`/docs` sit at the root. Every route declares who may call it (`mallard.serving.auth.Access`,
also written into the OpenAPI document as `x-mallard-access`).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from mallard.config import Settings
from mallard.serving.access import Access
from mallard.serving.errors import install_error_handlers
from mallard.serving.features import FeatureService
from mallard.serving.metrics import ServerMetrics
from mallard.serving.middleware import LeanDispatch, ServingMiddleware
from mallard.serving.models import ModelService
from mallard.serving.services import LeanRoute, Services, ServingClients

log = logging.getLogger(__name__)
API_VERSION = "v1"


def create_app(
    clients: ServingClients, settings: Settings, *, warm_up: bool = True, lean: bool = True
) -> FastAPI:
    """The API over `clients`; `settings` give the limits and the MLflow store. `lean`: answer
    the routes that have one on their lean path (mallard/serving/lean.py)."""
    from mallard.serving.routes import ROUTERS

    metrics = ServerMetrics()
    from mallard.evals.online_metrics import OnlineMetricsCollector

    metrics.collectors.append(OnlineMetricsCollector(settings))
    models = ModelService(
        settings,
        {m.name: m for m in clients.models},
        registry=clients.feature_registry,
        online_store=clients.online_store,
    )
    models.on_explainer_built = lambda name, version: metrics.explainers_built.labels(
        name, str(version)
    ).inc()
    services = Services(
        settings,
        clients,
        metrics,
        models,
        FeatureService(settings, clients.feature_registry, clients.online_store),
    )

    def warm_up_then_settle() -> None:
        models.warm_up()
        settle_heap()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for buffer in (clients.prediction_log, clients.traces):
            if buffer is not None:
                buffer.start()  # its first flush replays what a killed server left
        settle_heap()
        if warm_up and clients.models:
            threading.Thread(
                target=warm_up_then_settle, name="mallard-warm-up", daemon=True
            ).start()
        try:
            yield
        finally:
            for buffer in (clients.prediction_log, clients.traces):
                if buffer is not None:
                    buffer.close()
            if clients.close is not None:
                clients.close()

    app = FastAPI(
        title="Mallard",
        version=API_VERSION,
        description=(
            "Features, predictions, explanations and prompts of a Mallard deployment. "
            "Send an API key as `Authorization: Bearer <key>` (`mallard keys create`). "
            'Errors are `{"error": {"code", "message", "field", "request_id"}}`.'
        ),
        lifespan=lifespan,
    )
    app.state.services = services
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    from fastapi.routing import APIRoute

    for api_route in (route for router in ROUTERS for route in router.routes):
        if not isinstance(api_route, APIRoute):
            raise RuntimeError(f"{api_route!r} is not an API route")
        declared = getattr(api_route.endpoint, "access", None)
        if not isinstance(declared, Access):
            raise RuntimeError(f"route {api_route.path} does not declare who may call it")
        for method in api_route.methods or ():
            services.access[(method, api_route.path)] = declared
        shortcut = getattr(api_route.endpoint, "lean", None)
        if lean and shortcut is not None:
            body_model, call = shortcut
            for method in api_route.methods or ():
                services.lean[(method, api_route.path)] = LeanRoute(
                    api_route, declared, body_model, call, _local_stores
                )
    # MALLARD_HOME/reports (plots, Evidently reports) at a fixed URL, public and read-only, for the
    # Dagster UI's links and images: files only (StaticFiles lists no folder and serves nothing
    # outside it); a folder's index.html is its page.
    from fastapi.staticfiles import StaticFiles

    if not settings.reports_dir.exists():
        with contextlib.suppress(OSError):  # a read-only home: served once it has reports
            settings.reports_dir.mkdir(parents=True)
    app.mount(
        "/reports",
        StaticFiles(directory=settings.reports_dir, html=True, check_dir=False),
        name="reports",
    )
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.add_middleware(ServingMiddleware, services=services)
    if services.lean:  # the lean routes are answered before Starlette's own middleware
        build = app.build_middleware_stack

        def outermost() -> Any:
            return LeanDispatch(build(), services)

        app.build_middleware_stack = outermost  # type: ignore[method-assign]
    return app


def settle_heap() -> None:
    """Leave what the server has loaded so far (the libraries, the loaded models) out of every
    later garbage collection: a full collection of a server with MLflow, scikit-learn and pandas
    loaded walks some 400,000 objects (hundreds of milliseconds), a pause every request waiting
    behind it would share. Objects created later are collected as usual."""
    gc.collect()
    gc.freeze()


def _local_stores(services: Services) -> bool:
    """Whether the server state and the online store are local files (calls of microseconds,
    fine on the event loop) rather than a network service."""
    store = services.clients.online_store
    return services.state.kind == "sqlite" and (store is None or store.kind == "sqlite")


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with the key scheme and each keyed operation's `security`."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["apiKey"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "A Mallard API key (`mk_…`, from `mallard keys create`)",
    }
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            declared = operation.get("x-mallard-access") or {}
            if declared and not declared.get("public"):
                operation["security"] = [{"apiKey": []}]
    app.openapi_schema = schema
    return schema
