"""`GET /v1/models`, `POST /v1/models/{name}/predict`, `POST /v1/models/{name}/explain`."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from fastapi import APIRouter, Path, Query, Request

from mallard.serving.auth import READERS, WRITERS, Access, route
from mallard.serving.errors import ApiError
from mallard.serving.routes.common import request_id, services
from mallard.serving.schemas import (
    ExplainRequest,
    ExplainResponse,
    ModelInfo,
    PredictRequest,
    PredictResponse,
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
    return [
        {
            "name": m.name,
            "task": m.task,
            "strictness": m.strictness,
            "feature_service": m.feature_service,
            "description": m.description,
            "champion": readiness.get(m.name, ""),
        }
        for m in s.models.models.values()
    ]


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
    name: str = NAME,
    alias: str | None = ALIAS,
    version: int | None = VERSION,
) -> dict[str, Any]:
    """Predictions of the champion (or an alias or version) for feature rows or entity keys,
    each row checked against that version's training statistics, each logged (source api)."""
    from mallard.monitoring.predictions import api_rows

    s = services(request)
    served = s.models.served(name)
    resolved = s.models.resolve(name, alias, version)
    loaded = resolved.version
    inputs = s.models.inputs(served, loaded, body.rows, body.entities)
    where = "rows" if body.rows is not None else "entities"
    issues = s.models.check(served, loaded, inputs, s.metrics, where)
    predictions, scores = s.models.predict(loaded, inputs.frame)
    rid = request_id(request)
    buffer = s.clients.prediction_log
    if buffer is not None:
        logged = [{k: json_number(v) for k, v in row.items()} for row in inputs.rows]
        try:
            buffer.append(
                api_rows(
                    inputs.keys,
                    logged,
                    predictions,
                    scores,
                    timestamp=dt.datetime.now(dt.UTC),
                    model_name=name,
                    model_version=str(loaded.number),
                    role=resolved.role,
                    request_id=rid,
                )
            )
        except OSError as exc:
            raise ApiError(
                503,
                "prediction_log_unavailable",
                f"the prediction could not be logged ({exc.strerror}); nothing was answered",
            ) from None
    s.metrics.predictions.labels(name, str(loaded.number), resolved.variant).inc(len(predictions))
    out = []
    for i, prediction in enumerate(predictions):
        entry: dict[str, Any] = {
            "prediction": _finite(prediction),
            "score": _finite(scores[i]) if scores is not None else None,
            "flagged": bool(issues[i]),
            "issues": _issues(issues[i]),
            "ood_score": inputs.ood_scores[i] if inputs.ood_scores else None,
        }
        if body.entities is not None:
            entry["entity"] = inputs.keys[i]
            entry["feature_status"] = inputs.feature_status[i] if inputs.feature_status else None
        out.append(entry)
    return {
        "model": name,
        "version": loaded.number,
        "variant": resolved.variant,
        "strictness": served.strictness,
        "request_id": rid,
        "predictions": out,
        "feature_versions": inputs.served_versions or None,
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
    name: str = NAME,
    alias: str | None = ALIAS,
    version: int | None = VERSION,
) -> dict[str, Any]:
    """SHAP values per row, the base value and the top-k features, for the version that served
    (its explainer is built once per version)."""
    s = services(request)
    served = s.models.served(name)
    resolved = s.models.resolve(name, alias, version)
    loaded = resolved.version
    inputs = s.models.inputs(served, loaded, body.rows, body.entities)
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
    return {
        "model": name,
        "version": loaded.number,
        "variant": resolved.variant,
        "output": str(table.attrs.get("output", "")),
        "explainer": str(table.attrs.get("explainer", "")),
        "request_id": request_id(request),
        "explanations": out,
    }


def _value(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item"):
        return _value(value.item())
    return value
