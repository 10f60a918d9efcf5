"""Load registered model versions (cached per process) and what they were trained on."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mallard.config import Settings
from mallard.models.registry import (
    RegistryError,
    client,
    get_version,
    model_uri,
    run_id_of,
    version_for_alias,
)

if TYPE_CHECKING:
    import pandas as pd

_CACHE: dict[tuple[str, str, int], LoadedModel] = {}
_LOCK = threading.Lock()


@dataclass
class LoadedModel:
    """A fitted pipeline and its inputs, as registered."""

    name: str
    version: int
    run_id: str
    task: str
    features: list[str]
    categorical: list[str]
    label: str | None
    pipeline: Any
    tags: dict[str, str]

    @property
    def estimator(self) -> Any:
        return self.pipeline.steps[-1][1]

    @property
    def preprocessor(self) -> Any:
        return self.pipeline[:-1]

    def frame(self, rows: pd.DataFrame | list[dict[str, Any]] | dict[str, Any]) -> pd.DataFrame:
        """Rows as the pipeline expects them; a missing feature column is an error naming it."""
        import pandas as pd

        from mallard.models.data import conform_features

        if isinstance(rows, dict):
            rows = [rows]
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        missing = [f for f in self.features if f not in frame.columns]
        if missing:
            raise ValueError(
                f"model {self.name!r} v{self.version}: rows lack feature(s) {', '.join(missing)}"
            )
        return conform_features(frame, self.features, self.categorical)


def decision_threshold(model: LoadedModel) -> float | None:
    """The threshold stored with a classifier version (None: trained before thresholds were)."""
    from mallard.models.training import THRESHOLD_TAG

    value = model.tags.get(THRESHOLD_TAG)
    return float(value) if value else None


def resolve_version(settings: Settings, name: str, ref: int | str | None = None) -> int:
    """A version number from a number, an alias (default `champion`), or an error naming both."""
    c = client(settings)
    if ref is None or (isinstance(ref, str) and not ref.isdigit()):
        alias = ref or "champion"
        mv = version_for_alias(c, name, alias)
        if mv is None:
            raise RegistryError(f"model {name!r} has no {alias!r} version yet")
        return int(mv.version)
    return int(get_version(c, name, int(ref)).version)


def load_version(settings: Settings, name: str, version: int) -> LoadedModel:
    """The registered version `version` of `name`, loaded once per process."""
    key = (settings.mlflow_tracking_uri, name, int(version))
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
    import mlflow
    import mlflow.artifacts

    c = client(settings)
    mv = get_version(c, name, version)
    run_id = run_id_of(mv, name)
    inputs = mlflow.artifacts.load_dict(f"runs:/{run_id}/model_inputs.json")
    from mallard.models.training import quiet

    with quiet():
        pipeline = mlflow.sklearn.load_model(model_uri(name, version))
    loaded = LoadedModel(
        name=name,
        version=int(version),
        run_id=run_id,
        task=inputs["task"],
        features=list(inputs["features"]),
        categorical=list(inputs.get("categorical", [])),
        label=inputs.get("label"),
        pipeline=pipeline,
        tags=dict(mv.tags),
    )
    with _LOCK:
        _CACHE[key] = loaded
    return loaded


def load_json_artifact(settings: Settings, run_id: str, path: str) -> dict[str, Any] | None:
    """A JSON artifact of a run, or None when the run has no such artifact."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    client(settings)
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{path}")
    except (MlflowException, OSError, json.JSONDecodeError):
        return None
