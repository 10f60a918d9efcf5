"""Serving models: which version answers, its inputs, checks, predictions and explanations.

A request names a model and optionally an alias or a version; without either the champion
answers. Alias resolution is cached for `alias_ttl_s` (a promotion or rollback is served within
that many seconds); a version's pipeline, training statistics and explainer are loaded once per
process and version. Rows come as features or as entity keys; with entity keys the features are
read from the online store, and only when the online views are the versions the model was
trained on (`mallard.feature_version.<view>` tags of its training run).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mallard.config import Settings
from mallard.serving.errors import ApiError
from mallard.serving.validation import Issue, check_rows, conform_rows, nan_cells, reject

if TYPE_CHECKING:
    import pandas as pd

    from mallard.features.online import OnlineStore
    from mallard.features.specs import FeatureRegistry
    from mallard.models.explain import RowExplainer
    from mallard.models.loading import LoadedModel
    from mallard.models.statistics import TrainingStatistics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    """A model the server answers for (from its declaration in catalog/)."""

    name: str
    task: str
    strictness: str  # warn | reject
    feature_service: str
    description: str = ""


@dataclass
class Version:
    """One loaded model version and what serving it needs."""

    model: LoadedModel
    stats: TrainingStatistics
    feature_versions: dict[str, str]  # view -> label the version was trained on
    explainer: RowExplainer | None = None  # built on the version's first explanation
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def number(self) -> int:
        return self.model.version


@dataclass
class Resolved:
    version: Version
    variant: str  # champion | the alias | v<N>
    role: str  # the prediction log's role


@dataclass
class Inputs:
    """The rows a request is about: model features, and the keys they belong to."""

    frame: pd.DataFrame
    rows: list[dict[str, Any]]
    keys: list[dict[str, Any]]
    nan: dict[str, list[bool]]
    feature_status: list[dict[str, str]] | None = None
    served_versions: dict[str, str | None] = field(default_factory=dict)
    ood_scores: list[float | None] = field(default_factory=list)


def view_version_label(settings: Settings, registry: FeatureRegistry, view_name: str) -> str | None:
    """The version label (`view@vN`) of a view's current definition, None if never computed."""
    from mallard.features.versions import list_versions

    view = registry.views[view_name]
    for version in list_versions(settings, view_name):
        if version.content_hash == view.version_hash:
            return version.label
    return None


def check_entity_keys(
    entities: list[dict[str, Any]], key_types: dict[str, str], where: str = "entities"
) -> None:
    """Every entity row carries each join key with its declared type, or a 422 naming it."""
    for i, row in enumerate(entities):
        for name, typ in key_types.items():
            value = row.get(name)
            path = f"{where}[{i}].{name}"
            if value is None:
                raise ApiError(
                    422, "missing_key", f"{path}: join key {name!r} is required", field=path
                )
            if typ.startswith("int"):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ApiError(
                        422, "invalid_type", f"{path}: join key {name!r} is an integer", field=path
                    )
                if not -(2**63) <= value < 2**63:
                    raise ApiError(
                        422,
                        "invalid_value",
                        f"{path}: {name} is out of the int64 range",
                        field=path,
                    )
            elif typ == "string" and not isinstance(value, str):
                raise ApiError(
                    422, "invalid_type", f"{path}: join key {name!r} is a string", field=path
                )
        extra = [k for k in row if k not in key_types]
        if extra:
            raise ApiError(
                422,
                "unknown_key",
                f"{where}[{i}].{extra[0]}: not a join key (join keys: {', '.join(key_types)})",
                field=f"{where}[{i}].{extra[0]}",
            )


class ModelService:
    """The served models of one server process."""

    def __init__(
        self,
        settings: Settings,
        models: dict[str, ServedModel],
        *,
        registry: FeatureRegistry | None,
        online_store: OnlineStore | None,
        alias_ttl_s: float = 5.0,
    ) -> None:
        self.settings = settings
        self.models = models
        self.registry = registry
        self.online_store = online_store
        self.alias_ttl_s = alias_ttl_s
        self._aliases: dict[tuple[str, str], tuple[float, int]] = {}
        self._versions: dict[tuple[str, int], Version] = {}
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, int], threading.Lock] = {}
        self._background: set[tuple[str, int]] = set()
        self.load_errors: dict[str, str] = {}
        self.explainers_built = 0
        self.on_explainer_built: Callable[[str, int], None] | None = None

    # -- versions -----------------------------------------------------------------------------
    def served(self, name: str) -> ServedModel:
        model = self.models.get(name)
        if model is None:
            raise ApiError(
                404,
                "unknown_model",
                f"model {name!r} is not served here (served: {', '.join(self.models) or 'none'})",
                field="path.name",
            )
        return model

    def _alias_version(self, name: str, alias: str) -> int:
        from mallard.models.registry import client, version_for_alias

        key = (name, alias)
        cached = self._aliases.get(key)
        if cached is not None and time.monotonic() - cached[0] < self.alias_ttl_s:
            return cached[1]
        mv = version_for_alias(client(self.settings), name, alias)
        if mv is None:
            raise ApiError(
                404,
                "unknown_version",
                f"model {name!r} has no {alias!r} version"
                + (" yet: train and promote one first" if alias == "champion" else ""),
                field="query.alias",
            )
        number = int(mv.version)
        self._aliases[key] = (time.monotonic(), number)
        return number

    def load(self, name: str, number: int) -> Version:
        """A version's pipeline, statistics and trained-on feature versions, once per process."""
        key = (name, number)
        found = self._versions.get(key)
        if found is not None:
            return found
        with self._lock:
            lock = self._loading.setdefault(key, threading.Lock())
        with lock:
            found = self._versions.get(key)
            if found is not None:
                return found
            from mallard.models.loading import load_version
            from mallard.models.registry import RegistryError, client
            from mallard.models.statistics import load_training_statistics

            try:
                model = load_version(self.settings, name, number)
            except RegistryError as exc:
                raise ApiError(404, "unknown_version", str(exc), field="query.version") from None
            try:
                stats = load_training_statistics(self.settings, name, number)
            except RegistryError as exc:  # every served version has its inputs checked
                raise ApiError(409, "not_servable", str(exc), field="query.version") from None
            run = client(self.settings).get_run(model.run_id)
            prefix = "mallard.feature_version."
            trained = {
                k[len(prefix) :]: v for k, v in run.data.tags.items() if k.startswith(prefix)
            }
            version = Version(model, stats, trained)
            self._versions[key] = version
            return version

    def resolve(self, name: str, alias: str | None, version: int | None) -> Resolved:
        if alias is not None and version is not None:
            raise ApiError(
                422, "invalid_request", "give alias or version, not both", field="query.version"
            )
        self.served(name)
        if version is not None:
            champion = self._champion_or_none(name)
            loaded = self.load(name, version)
            role = "champion" if champion == version else "pinned"
            return Resolved(loaded, "champion" if role == "champion" else f"v{version}", role)
        alias = alias or "champion"
        number = self._alias_version(name, alias)
        champion = number if alias == "champion" else self._champion_or_none(name)
        return Resolved(self.load(name, number), alias, "champion" if number == champion else alias)

    def _champion_or_none(self, name: str) -> int | None:
        try:
            return self._alias_version(name, "champion")
        except ApiError:
            return None

    def warm_up(self) -> None:
        """Load every served model's champion (the server's readiness waits for it)."""
        for name in self.models:
            try:
                self.load(name, self._alias_version(name, "champion"))
                self.load_errors.pop(name, None)
            except ApiError as exc:
                self.load_errors[name] = exc.message
            except Exception as exc:  # noqa: BLE001 - reported by /readyz, retried on demand
                log.exception("loading the champion of %s failed", name)
                self.load_errors[name] = f"{type(exc).__name__}: {exc}"

    def readiness(self) -> dict[str, str]:
        """Per served model: `loaded vN`, or why not."""
        out = {}
        for name in self.models:
            try:
                number = self._alias_version(name, "champion")
            except ApiError as exc:
                out[name] = exc.message
                continue
            except Exception as exc:  # noqa: BLE001 - the registry is unreachable
                out[name] = f"registry unreachable: {type(exc).__name__}"
                continue
            if (name, number) in self._versions:
                out[name] = f"loaded v{number}"
            else:
                # A new champion (a promotion or rollback since start): load it in the background,
                # so the server becomes ready again without waiting for a request.
                self._load_in_background(name, number)
                out[name] = self.load_errors.get(name) or f"loading v{number}"
        return out

    def _load_in_background(self, name: str, number: int) -> None:
        key = (name, number)
        with self._lock:
            if key in self._background:
                return
            self._background.add(key)

        def run() -> None:
            try:
                self.load(name, number)
                self.load_errors.pop(name, None)
            except ApiError as exc:
                self.load_errors[name] = exc.message
            except Exception as exc:  # noqa: BLE001 - reported by /readyz
                log.exception("loading %s v%s failed", name, number)
                self.load_errors[name] = f"{type(exc).__name__}: {exc}"
            finally:
                with self._lock:
                    self._background.discard(key)

        threading.Thread(target=run, name=f"mallard-load-{name}-v{number}", daemon=True).start()

    # -- inputs ---------------------------------------------------------------------------------
    def inputs(
        self,
        served: ServedModel,
        version: Version,
        rows: list[dict[str, Any]] | None,
        entities: list[dict[str, Any]] | None,
    ) -> Inputs:
        if (rows is None) == (entities is None):
            raise ApiError(
                422,
                "invalid_request",
                "send either `rows` (feature values) or `entities` (entity keys), not both",
                field="rows" if rows is not None else "entities",
            )
        model = version.model
        numeric = [f for f in model.features if f not in model.categorical]
        if rows is not None:
            frame = conform_rows(rows, model.features, model.categorical)
            return Inputs(frame, rows, [{} for _ in rows], nan_cells(frame, rows, numeric))
        assert entities is not None
        return self._from_online_store(served, version, entities, numeric)

    def _from_online_store(
        self,
        served: ServedModel,
        version: Version,
        entities: list[dict[str, Any]],
        numeric: list[str],
    ) -> Inputs:
        from mallard.features.materialize import get_online_features

        registry, store = self.registry, self.online_store
        if registry is None or store is None:
            raise ApiError(
                503, "unavailable", "this server has no online store: send `rows`", field="entities"
            )
        model = version.model
        refs = [
            ref
            for ref in registry.resolve([served.feature_service])
            if ref.feature.name in model.features
        ]
        views = list(dict.fromkeys(ref.view.name for ref in refs))
        key_types: dict[str, str] = {}
        for view in views:
            key_types.update(registry.views[view].join_keys)
        check_entity_keys(entities, key_types)
        served_versions = {v: view_version_label(self.settings, registry, v) for v in views}
        for view in views:
            trained = version.feature_versions.get(view)
            if trained is not None and trained != served_versions[view]:
                raise ApiError(
                    409,
                    "feature_version_mismatch",
                    f"model {model.name} v{model.version} was trained on {trained}, but the "
                    f"online store serves {served_versions[view] or 'no version'} of {view}: "
                    "send `rows`, or retrain the model on the current view version",
                    field="entities",
                    view=view,
                    trained=trained,
                    served=served_versions[view],
                )
        result = get_online_features(
            store, registry, entities, [f"{ref.view.name}:{ref.feature.name}" for ref in refs]
        )
        rows = [
            {name: result.values[name][i] for name in model.features} for i in range(len(entities))
        ]
        status = [{view: result.status[view][i] for view in views} for i in range(len(entities))]
        frame = conform_rows(rows, model.features, model.categorical, where="entities")
        keys = [{k: e[k] for k in key_types} for e in entities]
        nan = {name: [False] * len(rows) for name in numeric}
        return Inputs(frame, rows, keys, nan, status, served_versions)

    def check(
        self, served: ServedModel, version: Version, inputs: Inputs, metrics: Any, where: str
    ) -> list[list[Issue]]:
        issues, scores = check_rows(inputs.frame, version.stats, inputs.nan)
        flat = [issue for row in issues for issue in row]
        counter = (
            metrics.validation_rejects
            if served.strictness == "reject"
            else metrics.validation_warnings
        )
        for rule in {issue.rule for issue in flat}:
            counter.labels(served.name, rule).inc(sum(1 for i in flat if i.rule == rule))
        if flat and served.strictness == "reject":
            raise reject(served.name, version.number, issues, where)
        inputs.ood_scores = scores
        return issues

    # -- answers --------------------------------------------------------------------------------
    def predict(
        self, version: Version, frame: pd.DataFrame
    ) -> tuple[list[float], list[float] | None]:
        from mallard.monitoring.scoring import predict

        try:
            prediction, score = predict(version.model, finite(frame))
        except ValueError as exc:  # the pipeline refuses the input itself
            raise ApiError(
                422,
                "model_refused_input",
                f"model {version.model.name} v{version.number} cannot score these rows: "
                f"{str(exc)[:300]}",
                field="rows",
            ) from None
        return prediction.tolist(), None if score is None else score.tolist()

    def explain(self, name: str, version: Version, frame: pd.DataFrame) -> pd.DataFrame:
        """SHAP contributions per row (columns: each feature, `base_value`, `prediction`), from
        the version's explainer, built on its first explanation and kept with the version."""
        import numpy as np

        from mallard.models.explain import build_explainer
        from mallard.models.training import _scores, quiet

        model = version.model
        if model.task == "clustering":
            raise ApiError(
                422,
                "not_explainable",
                f"model {name!r} is a clustering: it has segment profiles, not SHAP values",
                field="path.name",
            )
        if version.explainer is None:
            with version.lock:
                if version.explainer is None:
                    version.explainer = build_explainer(self.settings, model)
                    self.explainers_built += 1
                    if self.on_explainer_built is not None:
                        self.on_explainer_built(name, version.number)
        explainer = version.explainer
        x = model.frame(finite(frame))
        result = explainer.contributions(x)
        with quiet():
            if model.task == "classification":
                result["prediction"] = _scores(model.pipeline, x)
            else:
                result["prediction"] = np.asarray(model.pipeline.predict(x), dtype=float)
        result.attrs.update(output=explainer.output, explainer=explainer.kind)
        return result


def finite(frame: pd.DataFrame) -> pd.DataFrame:
    """Infinities as missing values: the pipeline imputes them (each is flagged `infinite`)."""
    import numpy as np

    numeric = [str(name) for name, dtype in frame.dtypes.items() if dtype.kind in "fiu"]
    if not numeric or not np.isinf(frame[numeric].to_numpy(dtype=float)).any():
        return frame
    out = frame.copy()
    out[numeric] = out[numeric].replace([np.inf, -np.inf], np.nan)
    return out
