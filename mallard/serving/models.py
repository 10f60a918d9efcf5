"""Serving models: which version answers, its inputs, checks, predictions and explanations.

A request names a model and optionally an alias or a version; without either the champion
answers. Alias resolution is cached for `alias_ttl_s` (a promotion or rollback is served within
that many seconds); a version's pipeline, training statistics and explainer are loaded once per
process and version. Rows come as features or as entity keys; with entity keys the features are
read from the online store, and only when the online views are the versions the model was
trained on (`mallard.feature_version.<view>` tags of its training run).

A model that declares a canary (`ServedModel.canary`) sends each entity whose key falls on the
challenger's side of the sticky split (`mallard.models.canary.in_challenger`) to its challenger,
when the request names neither an alias nor a version; rows without an entity key go to the
champion. A challenger serves only while it is not the champion, its canary has not ended (the
`mallard.canary` tag of its version) and its input schema is compatible with the champion's.

Each version's input schema (`mallard.serving.schema_versions`) is read from its training
statistics; a request that names the schema its rows were written for is refused when the
serving version's schema is incompatible with it, and has compatible changes absorbed.
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
from mallard.serving.schema_versions import InputSchema, adapt_rows, changes, incompatible
from mallard.serving.validation import Issue, check_rows, conform_rows, nan_cells, reject

if TYPE_CHECKING:
    import pandas as pd

    from mallard.features.online import OnlineStore
    from mallard.features.specs import FeatureRegistry, FeatureView
    from mallard.models.explain import RowExplainer
    from mallard.models.loading import LoadedModel
    from mallard.models.specs import Canary
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
    canary: Canary | None = None  # a challenger serving a share of the traffic


@dataclass
class Version:
    """One loaded model version and what serving it needs."""

    model: LoadedModel
    stats: TrainingStatistics
    feature_versions: dict[str, str]  # view -> label the version was trained on
    explainer: RowExplainer | None = None  # built on the version's first explanation
    lock: threading.Lock = field(default_factory=threading.Lock)
    schema: InputSchema = field(init=False)

    def __post_init__(self) -> None:
        self.schema = InputSchema.from_statistics(
            {name: self.stats.features[name] for name in self.model.features}
        )

    @property
    def number(self) -> int:
        return self.model.version


@dataclass
class Resolved:
    version: Version
    variant: str  # champion | challenger | the alias | v<N>
    role: str  # the prediction log's role


@dataclass
class Challenger:
    """A canary's challenger as this process serves it: the version, or why not."""

    version: Version | None
    state: str
    share: float = 0.0
    alias: str | None = None


@dataclass
class Group:
    """The rows of a request one variant answers (`index`: their positions in the request)."""

    resolved: Resolved
    index: list[int]


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


_labels: dict[tuple[str, str], tuple[FeatureView, str]] = {}


def view_version_label(settings: Settings, registry: FeatureRegistry, view_name: str) -> str | None:
    """The version label (`view@vN`) of a view's current definition, None if never computed.

    A definition keeps its number once it has one (versions.json only grows), so a label found
    is kept for the process."""
    from mallard.features.versions import list_versions

    view = registry.views[view_name]
    key = (str(settings.lake_dir), view_name)
    found = _labels.get(key)
    if found is not None and found[0] is view:
        return found[1]
    for version in list_versions(settings, view_name):
        if version.content_hash == view.version_hash:
            _labels[key] = (view, version.label)
            return version.label
    return None


def check_entity_keys(
    entities: list[dict[str, Any]],
    key_types: dict[str, str],
    where: str = "entities",
    index: list[int] | None = None,
) -> None:
    """Every entity row carries each join key with its declared type, or a 422 naming it
    (`index`: each row's position in the request, when these rows are part of it)."""
    for local, row in enumerate(entities):
        i = local if index is None else index[local]
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
        if extra and where == "entities":
            raise ApiError(
                422,
                "unknown_key",
                f"{where}[{i}].{extra[0]}: not a join key (join keys: {', '.join(key_types)})",
                field=f"{where}[{i}].{extra[0]}",
            )


def split_keys(
    rows: list[dict[str, Any]], key_types: dict[str, str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any] | None]]:
    """Feature rows that may carry their entity's join keys: (the features, each row's key or
    None). A row gives all the join keys or none (null counts as none)."""
    if not key_types or not any(k in row for row in rows for k in key_types):
        return rows, [None] * len(rows)
    features: list[dict[str, Any]] = []
    keys: list[dict[str, Any] | None] = []
    for i, row in enumerate(rows):
        key = {k: row[k] for k in key_types if row.get(k) is not None}
        if key and len(key) < len(key_types):
            missing = next(k for k in key_types if k not in key)
            raise ApiError(
                422,
                "missing_key",
                f"rows[{i}].{missing}: a row that gives its entity's key gives every join key "
                f"({', '.join(key_types)})",
                field=f"rows[{i}].{missing}",
            )
        if key:
            check_entity_keys([key], key_types, "rows", [i])
        features.append({k: v for k, v in row.items() if k not in key_types})
        keys.append(key or None)
    return features, keys


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
        self._challengers: dict[str, tuple[float, Challenger]] = {}
        self._refreshing: set[tuple[Any, ...]] = set()
        self._schemas: dict[str, dict[int, InputSchema]] = {}
        self._schema_scans: dict[str, float] = {}
        self._key_types: dict[str, dict[str, str]] = {}
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
        """The version an alias points at: from the cache, re-read in the background once older
        than `alias_ttl_s` (no request waits for the registry after the first)."""
        key = (name, alias)
        cached = self._aliases.get(key)
        if cached is None:
            return self._read_alias(name, alias)
        if time.monotonic() - cached[0] >= self.alias_ttl_s:
            self._in_background(("alias", name, alias), self._refresh_alias, name, alias)
        return cached[1]

    def _refresh_alias(self, name: str, alias: str) -> None:
        try:
            self._read_alias(name, alias)
        except ApiError:  # the alias is gone: the next request asks the registry itself
            self._aliases.pop((name, alias), None)

    def _in_background(self, key: tuple[Any, ...], target: Callable[..., Any], *args: Any) -> None:
        """Run `target(*args)` in a thread, at most one at a time per `key`; a failure is logged
        and the cached answer stays (the registry unreachable: serve what was resolved)."""
        with self._lock:
            if key in self._refreshing:
                return
            self._refreshing.add(key)

        def run() -> None:
            try:
                target(*args)
            except Exception:  # noqa: BLE001 - the cached answer keeps serving
                log.warning("refreshing %s failed", key, exc_info=True)
            finally:
                with self._lock:
                    self._refreshing.discard(key)

        threading.Thread(target=run, name=f"mallard-refresh-{key[1]}", daemon=True).start()

    def _read_alias(self, name: str, alias: str) -> int:
        from mallard.models.registry import client, version_for_alias

        key = (name, alias)
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

    # -- the canary ---------------------------------------------------------------------------
    def challenger(self, served: ServedModel) -> Challenger | None:
        """The declared challenger as served now (re-read every `alias_ttl_s`), None without a
        canary."""
        rule = served.canary
        if rule is None:
            return None
        cached = self._challengers.get(served.name)
        if cached is None:
            return self._resolve_challenger(served, rule)
        if time.monotonic() - cached[0] >= self.alias_ttl_s:
            self._in_background(("challenger", served.name), self._resolve_challenger, served, rule)
        return cached[1]

    def _resolve_challenger(self, served: ServedModel, rule: Canary) -> Challenger:
        try:
            found = self._find_challenger(served, rule)
        except Exception as exc:  # noqa: BLE001 - the champion answers; /v1/models says why
            log.warning("resolving the challenger of %s failed: %s", served.name, exc)
            found = Challenger(None, f"inactive: {type(exc).__name__}: {str(exc)[:200]}")
        self._challengers[served.name] = (time.monotonic(), found)
        return found

    def _find_challenger(self, served: ServedModel, rule: Canary) -> Challenger:
        from mallard.models.canary import CANARY_TAG, ENDED
        from mallard.models.registry import client, get_version, version_for_alias

        name = served.name
        c = client(self.settings)
        alias = rule.challenger if isinstance(rule.challenger, str) else None
        mv = version_for_alias(c, name, alias) if alias else get_version(c, name, rule.challenger)
        if mv is None:
            return Challenger(None, f"inactive: no {alias!r} version", rule.share, alias)
        number = int(mv.version)
        champion = self._champion_or_none(name)
        if champion is None:
            return Challenger(None, "inactive: no champion", rule.share, alias)
        if number == champion:
            return Challenger(None, f"inactive: v{number} is the champion", rule.share, alias)
        ended = (mv.tags or {}).get(CANARY_TAG)
        if ended in ENDED:
            return Challenger(
                None, f"inactive: the canary of v{number} ended ({ended})", rule.share, alias
            )
        version = self.load(name, number)
        found = changes(self.load(name, champion).schema, version.schema)
        breaking = [change.describe() for change in found if not change.compatible]
        if breaking:
            return Challenger(
                None,
                f"inactive: v{number}'s input schema {version.schema.version} is incompatible "
                f"with the champion's: {'; '.join(breaking)}",
                rule.share,
                alias,
            )
        return Challenger(
            version,
            f"serving v{number} to {rule.share:.0%} of entities",
            rule.share,
            alias,
        )

    def groups(
        self,
        served: ServedModel,
        alias: str | None,
        version: int | None,
        keys: list[dict[str, Any] | None],
    ) -> list[Group]:
        """Which variant answers which rows: the named alias or version answers all of them;
        else, under a canary, each entity on the challenger's side goes to the challenger. The
        first group is the base variant (the champion, or what was named), maybe empty."""
        from mallard.models.canary import in_challenger

        resolved = self.resolve(served.name, alias, version)
        everything = Group(resolved, list(range(len(keys))))
        if alias is not None or version is not None or served.canary is None:
            return [everything]
        found = self.challenger(served)
        if found is None or found.version is None:
            return [everything]
        chosen = [
            i
            for i, key in enumerate(keys)
            if key is not None and in_challenger(served.name, key, found.share)
        ]
        picked = set(chosen)
        rest = [i for i in range(len(keys)) if i not in picked]
        # The first group is always the base variant (maybe without rows): its schema is the
        # one requests are written for.
        return [
            Group(resolved, rest),
            Group(Resolved(found.version, "challenger", "challenger"), chosen),
        ]

    # -- input schemas -----------------------------------------------------------------------
    def known_schema(self, name: str, schema_version: str) -> InputSchema:
        """The input schema of that version hash, from any registered version of the model."""
        for (model, _), loaded in list(self._versions.items()):
            if model == name and loaded.schema.version == schema_version:
                return loaded.schema
        for schema in self._schemas.get(name, {}).values():
            if schema.version == schema_version:
                return schema
        last = self._schema_scans.get(name)
        if last is None or time.monotonic() - last >= self.alias_ttl_s:
            self._scan_schemas(name)
            for schema in self._schemas.get(name, {}).values():
                if schema.version == schema_version:
                    return schema
        raise ApiError(
            422,
            "unknown_schema_version",
            f"no registered version of model {name!r} has input schema {schema_version!r} "
            f"(GET /v1/models/{name}/schema gives the current one)",
            field="schema_version",
        )

    def _scan_schemas(self, name: str) -> None:
        from mallard.models.loading import load_json_artifact
        from mallard.models.registry import client
        from mallard.models.statistics import STATISTICS_ARTIFACT

        self._schema_scans[name] = time.monotonic()
        known = self._schemas.setdefault(name, {})
        for mv in client(self.settings).search_model_versions(f"name='{name}'"):
            number = int(mv.version)
            if number in known or mv.run_id is None:
                continue
            data = load_json_artifact(self.settings, mv.run_id, STATISTICS_ARTIFACT)
            if data and data.get("features"):
                known[number] = InputSchema.from_statistics(data["features"])

    def key_types(self, served: ServedModel) -> dict[str, str]:
        """The join keys of the model's feature service (what an entity key is made of)."""
        if self.registry is None:
            return {}
        found = self._key_types.get(served.name)
        if found is None:
            found = {}
            for ref in self.registry.resolve([served.feature_service]):
                found.update(ref.view.join_keys)
            self._key_types[served.name] = found
        return found

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
        *,
        keys: list[dict[str, Any] | None] | None = None,
        index: list[int] | None = None,
        written_for: InputSchema | None = None,
        schema_field: str = "schema_version",
    ) -> Inputs:
        """The rows as `version` reads them. `rows` are features (their keys, if any, in
        `keys`); `written_for` is the schema the rows follow, when it may differ from the
        version's: compatible changes are absorbed, an incompatible one refuses the request."""
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
            if written_for is not None and written_for.version != version.schema.version:
                found = changes(written_for, version.schema)
                if any(not change.compatible for change in found):
                    raise incompatible(
                        served.name,
                        version.number,
                        written_for,
                        version.schema,
                        found,
                        schema_field,
                    )
                rows = adapt_rows(rows, found)
            frame = conform_rows(rows, model.features, model.categorical, index=index)
            logged_keys = [k or {} for k in keys] if keys is not None else [{} for _ in rows]
            return Inputs(frame, rows, logged_keys, nan_cells(frame, rows, numeric))
        assert entities is not None
        return self._from_online_store(served, version, entities, numeric, index)

    def _from_online_store(
        self,
        served: ServedModel,
        version: Version,
        entities: list[dict[str, Any]],
        numeric: list[str],
        index: list[int] | None = None,
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
        check_entity_keys(entities, key_types, index=index)
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
        self,
        served: ServedModel,
        version: Version,
        inputs: Inputs,
        metrics: Any,
        where: str,
        index: list[int] | None = None,
    ) -> list[list[Issue]]:
        issues, scores = check_rows(inputs.frame, version.stats, inputs.nan)
        flat = [issue for row in issues for issue in row]
        if index is not None:  # each issue names the row's position in the request
            for issue in flat:
                issue.row = index[issue.row]
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
