"""The API's routes, one module per area; each declares who may call it."""

from mallard.serving.routes import admin, features, models, prompts, system

ROUTERS = [system.router, features.router, models.router, prompts.router, admin.router]

__all__ = ["ROUTERS"]
