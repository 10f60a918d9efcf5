"""`GET /v1/models`, `POST /v1/models/{name}/predict`, `POST /v1/models/{name}/explain`."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from fastapi import APIRouter, Header, Path, Query, Request, Response

from mallard.serving.access import READERS, WRITERS, Access
from mallard.serving.auth import route
from mallard.serving.errors import ApiError
from mallard.serving.models import Group, Inputs, ModelService, ServedModel, split_keys
from mallard.serving.routes.common import request_id, services
from mallard.serving.schema_versions import SCHEMA_HEADER, InputSchema
from mallard.serving.schemas import (
    SCHEMA_VERSION,
    ExplainRequest,
    ExplainResponse,
    ModelInfo,
    PredictRequest,
    PredictResponse,
    SchemaResponse,
)
from mallard.serving.validation import Issue, json_number

router = APIRouter(prefix="/v1/models", tags=["models"])
NAME = Path(max_length=100, description="A served model's name")
ALIAS = Query(
    None,
    max_length=100,
    pattern=r"^[A-Za-z0-9_-]+$",
    description="Serve the version this MLflow alias points at (default: champion)",
)
VERSION = Query(None, ge=1, le=2**31 - 1, description="Serve this registered version")
SCHEMA = Header(
    None,
    alias=SCHEMA_HEADER,
    pattern=SCHEMA_VERSION,
    description="The input schema the rows were written for (as the body's schema_version)",
)


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


@route(router, "get", "", Access(READERS), response_model=list[ModelInfo])
def list_models(request: Request) -> list[dict[str, Any]]:
    """The served models, their strictness and champion."""
    s = services(request)
    readiness = s.models.readiness()
    out = []
    for m in s.models.models.values():
        schema = None
        loaded = readiness.get(m.name, "")
        if loaded.startswith("loaded v"):
            schema = s.models.load(m.name, int(loaded.removeprefix("loaded v"))).schema.version
        canary = None
        if m.canary is not None:
            found = s.models.challenger(m)
            canary = {
                "challenger": m.canary.challenger,
                "share": m.canary.share,
                "version": found.version.number if found and found.version else None,
                "state": found.state if found else "",
            }
        out.append(
            {
                "name": m.name,
                "task": m.task,
                "strictness": m.strictness,
                "feature_service": m.feature_service,
                "description": m.description,
                "champion": loaded,
                "schema_version": schema,
                "canary": canary,
            }
        )
    return out


@route(
    router,
    "get",
    "/{name}/schema",
    Access(READERS, ingest=True),
    response_model=SchemaResponse,
    responses={404: {"description": "No such model, alias or version"}},
)
def model_schema(
    request: Request,
    name: str = NAME,
    alias: str | None = ALIAS,
    version: int | None = VERSION,
) -> dict[str, Any]:
    """The input schema of the champion (or an alias or version): its version and fields."""
    s = services(request)
    s.models.served(name)
    resolved = s.models.resolve(name, alias, version)
    schema = resolved.version.schema
    return {
        "model": name,
        "version": resolved.version.number,
        "variant": resolved.variant,
        "schema_version": schema.version,
        "fields": schema.describe(),
    }


def _declared(
    models: ModelService, name: str, body: PredictRequest, header: str | None
) -> InputSchema | None:
    """The schema the request says its rows follow (header or body; they must agree)."""
    if header and body.schema_version and header != body.schema_version:
        raise ApiError(
            422,
            "invalid_request",
            f"{SCHEMA_HEADER} says {header} but schema_version says {body.schema_version}",
            field="schema_version",
        )
    given = header or body.schema_version
    return None if given is None else models.known_schema(name, given)


def _answer_inputs(
    models: ModelService,
    served: ServedModel,
    body: PredictRequest,
    group: Group,
    features: list[dict[str, Any]] | None,
    keys: list[dict[str, Any] | None],
    declared: InputSchema | None,
    champion: Group,
) -> Inputs:
    """One variant's rows, as its version reads them."""
    index = group.index
    written_for = declared
    if written_for is None and group is not champion:
        written_for = champion.resolved.version.schema  # a challenger reads champion-shaped rows
    if features is not None:
        return models.inputs(
            served,
            group.resolved.version,
            [features[i] for i in index],
            None,
            keys=[keys[i] for i in index],
            index=index,
            written_for=written_for,
        )
    assert body.entities is not None
    return models.inputs(
        served, group.resolved.version, None, [body.entities[i] for i in index], index=index
    )


def _issues(issues: list[Issue]) -> list[dict[str, Any]]:
    return [issue.as_dict() for issue in issues]


@route(
    router,
    "post",
    "/{name}/predict",
    Access(WRITERS, ingest=True),
    response_model=PredictResponse,
    responses={
        404: {"description": "No such model, alias or version"},
        409: {"description": "The online views are not the versions the model was trained on"},
        422: {"description": "Invalid input; with strictness reject, a row breaks a rule"},
    },
)
def predict(
    body: PredictRequest,
    request: Request,
    response: Response,
    name: str = NAME,
    alias: str | None = ALIAS,
    version: int | None = VERSION,
    schema_header: str | None = SCHEMA,
) -> dict[str, Any]:
    """Predictions of the champion (or an alias or version) for feature rows or entity keys,
    each row checked against that version's training statistics, each logged (source api).
    Under a declared canary, entities on the challenger's side of the sticky split are answered
    by the challenger; each prediction says which variant and version answered it."""
    from mallard.monitoring.predictions import api_rows

    s = services(request)
    served = s.models.served(name)
    declared = _declared(s.models, name, body, schema_header)
    where = "rows" if body.rows is not None else "entities"
    features: list[dict[str, Any]] | None = None
    keys: list[dict[str, Any] | None]
    if body.rows is not None:
        features, keys = split_keys(body.rows, s.models.key_types(served))
    elif body.entities is not None:
        keys = [dict(e) for e in body.entities]
    else:
        keys = []
    if (body.rows is None) == (body.entities is None):
        raise ApiError(
            422,
            "invalid_request",
            "send either `rows` (feature values) or `entities` (entity keys), not both",
            field="rows" if body.rows is not None else "entities",
        )
    groups = s.models.groups(served, alias, version, keys)
    champion = groups[0]
    answered: list[tuple[Group, Inputs, list[list[Issue]]]] = []
    for group in (g for g in groups if g.index):
        inputs = _answer_inputs(s.models, served, body, group, features, keys, declared, champion)
        issues = s.models.check(
            served, group.resolved.version, inputs, s.metrics, where, group.index
        )
        answered.append((group, inputs, issues))
    rid = request_id(request)
    now = dt.datetime.now(dt.UTC)
    out: list[dict[str, Any]] = [{} for _ in keys]
    logged_rows: list[dict[str, Any]] = []
    feature_versions: dict[str, str | None] = {}
    for group, inputs, issues in answered:
        loaded = group.resolved.version
        predictions, scores = s.models.predict(loaded, inputs.frame)
        logged = [{k: json_number(v) for k, v in row.items()} for row in inputs.rows]
        logged_rows += api_rows(
            inputs.keys,
            logged,
            predictions,
            scores,
            timestamp=now,
            model_name=name,
            model_version=str(loaded.number),
            role=group.resolved.role,
            request_id=rid,
        )
        feature_versions.update(inputs.served_versions)
        for local, i in enumerate(group.index):
            entry: dict[str, Any] = {
                "prediction": _finite(predictions[local]),
                "score": _finite(scores[local]) if scores is not None else None,
                "flagged": bool(issues[local]),
                "issues": _issues(issues[local]),
                "ood_score": inputs.ood_scores[local] if inputs.ood_scores else None,
                "variant": group.resolved.variant,
                "version": loaded.number,
            }
            if body.entities is not None:
                entry["entity"] = inputs.keys[local]
                entry["feature_status"] = (
                    inputs.feature_status[local] if inputs.feature_status else None
                )
            out[i] = entry
    buffer = s.clients.prediction_log
    if buffer is not None:
        try:
            buffer.append(logged_rows)
        except OSError as exc:
            raise ApiError(
                503,
                "prediction_log_unavailable",
                f"the prediction could not be logged ({exc.strerror}); nothing was answered",
            ) from None
    for group, _, _ in answered:
        loaded = group.resolved.version
        s.metrics.predictions.labels(name, str(loaded.number), group.resolved.variant).inc(
            len(group.index)
        )
    variants = {g.resolved.variant: g.resolved.version.number for g, _, _ in answered}
    single = answered[0][0].resolved if len(answered) == 1 else None
    schema = champion.resolved.version.schema.version
    response.headers[SCHEMA_HEADER] = schema
    return {
        "model": name,
        "version": single.version.number if single else None,
        "variant": single.variant if single else "split",
        "variants": variants,
        "schema_version": schema,
        "strictness": served.strictness,
        "request_id": rid,
        "predictions": out,
        "feature_versions": feature_versions or None,
    }


@route(
    router,
    "post",
    "/{name}/explain",
    Access(READERS),
    response_model=ExplainResponse,
    responses={
        404: {"description": "No such model, alias or version"},
        422: {"description": "Invalid input, or a model that has no SHAP values (clustering)"},
    },
)
def explain(
    body: ExplainRequest,
    request: Request,
    response: Response,
    name: str = NAME,
    alias: str | None = ALIAS,
    version: int | None = VERSION,
    schema_header: str | None = SCHEMA,
) -> dict[str, Any]:
    """SHAP values per row, the base value and the top-k features, for the version that served
    (its explainer is built once per version; a canary's challenger answers only when named)."""
    s = services(request)
    served = s.models.served(name)
    declared = _declared(s.models, name, body, schema_header)
    resolved = s.models.resolve(name, alias, version)
    loaded = resolved.version
    rows = body.rows
    keys = None
    if rows is not None:
        rows, keys = split_keys(rows, s.models.key_types(served))
    inputs = s.models.inputs(served, loaded, rows, body.entities, keys=keys, written_for=declared)
    where = "rows" if body.rows is not None else "entities"
    issues = s.models.check(served, loaded, inputs, s.metrics, where)
    table = s.models.explain(name, loaded, inputs.frame)
    features = list(loaded.model.features)
    out = []
    for i in range(len(table)):
        row = table.iloc[i]
        values = {f: _finite(row[f]) for f in features}
        ranked = sorted(features, key=lambda f: abs(values[f] or 0.0), reverse=True)[: body.top_k]
        out.append(
            {
                "prediction": _finite(row["prediction"]),
                "base_value": _finite(row["base_value"]),
                "shap_values": values,
                "top_features": [
                    {
                        "feature": f,
                        "shap_value": values[f],
                        "value": _value(inputs.frame.iloc[i][f]),
                    }
                    for f in ranked
                ],
                "flagged": bool(issues[i]),
                "issues": _issues(issues[i]),
            }
        )
    s.metrics.explanations.labels(name, str(loaded.number)).inc(len(out))
    response.headers[SCHEMA_HEADER] = loaded.schema.version
    return {
        "model": name,
        "version": loaded.number,
        "variant": resolved.variant,
        "output": str(table.attrs.get("output", "")),
        "explainer": str(table.attrs.get("explainer", "")),
        "schema_version": loaded.schema.version,
        "request_id": request_id(request),
        "explanations": out,
    }


def _value(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item"):
        return _value(value.item())
    return value
