"""The API's routes, one module per area; each declares who may call it."""

from mallard.serving.routes import (
    admin,
    analytics,
    annotations,
    features,
    models,
    prompts,
    system,
    traces,
)

ROUTERS = [
    system.router,
    features.router,
    models.router,
    prompts.router,
    traces.router,
    annotations.router,
    analytics.router,
    admin.router,
]

__all__ = ["ROUTERS"]
