"""What every `mallard` command shares: the deployment's resources and settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mallard.config import Settings


@contextmanager
def deployment() -> Iterator[Any]:
    """The deployment's resources (resources/), set up for one command and torn down after it."""
    from resources import open_resources

    with open_resources() as resources:
        yield resources


def lake_settings() -> Settings:
    """The lake's settings, as the resources of this MALLARD_ENV define them."""
    with deployment() as resources:
        return resources.lake.settings()


def mlflow_settings() -> Settings:
    """The lake's settings pointed at this deployment's MLflow store."""
    with deployment() as resources:
        return resources.mlflow.settings()
