"""The API server: the FastAPI app factory and what it is made of.

`create_app(clients, settings)` builds the app over clients it is handed (`ServingClients`);
the deployment (cli/serve.py) opens them through the resources. Nothing here imports Dagster or
the deployment.
"""

from mallard.serving.app import ServingClients, create_app
from mallard.serving.models import ServedModel

__all__ = ["ServedModel", "ServingClients", "create_app"]
