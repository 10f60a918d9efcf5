"""Request and response bodies of the API (what the OpenAPI document describes)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# A feature value: a number (NaN and ±Infinity are accepted, and flagged), a string, a boolean
# or null. Entity keys are integers or strings.
FeatureValue = float | int | str | bool | None
KeyValue = int | str

MAX_ROWS = 1000
MAX_PUSH_ROWS = 10_000


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    code: str = Field(description="A stable machine-readable code, e.g. validation_failed")
    message: str = Field(description="What is wrong, naming the field")
    field: str | None = Field(None, description="The field at fault, e.g. rows[0].minutes_7d")
    request_id: str = ""


class ErrorBody(BaseModel):
    error: ErrorDetail


class OnlineFeaturesRequest(_Body):
    entities: list[dict[str, KeyValue]] = Field(
        min_length=1, max_length=MAX_ROWS, description="Entity keys, e.g. [{'customer_id': 7}]"
    )
    features: list[str] | None = Field(
        None,
        min_length=1,
        max_length=500,
        description="`view:feature` or `view:*` references (or give `service`)",
    )
    service: str | None = Field(None, max_length=200, description="A feature service's name")


class OnlineRow(BaseModel):
    entity: dict[str, Any]
    values: dict[str, Any]
    status: dict[str, str] = Field(description="Per view: present, missing, stale or missing_view")
    stale: dict[str, bool] = Field(description="Per view: older than the view's ttl")
    event_timestamps: dict[str, str | None]


class ViewInfo(BaseModel):
    version: str | None = Field(description="The view version that served, e.g. usage_7d@v1")
    ttl_seconds: float | None
    features: list[str]


class OnlineFeaturesResponse(BaseModel):
    rows: list[OnlineRow]
    views: dict[str, ViewInfo]
    missing_views: list[str]


class PushRequest(_Body):
    view: str = Field(max_length=200, description="The feature view to write to")
    rows: list[dict[str, FeatureValue]] = Field(
        min_length=1,
        max_length=MAX_PUSH_ROWS,
        description="Join keys, event_timestamp (ISO 8601), optional created_timestamp, and "
        "every feature of the view",
    )


class PushResponse(BaseModel):
    view: str
    version: str
    rows: int
    partitions: list[str]
    offline_table_version: int
    online_keys_updated: int


SCHEMA_VERSION = r"^[0-9a-f]{12}$"


class PredictRequest(_Body):
    rows: list[dict[str, FeatureValue]] | None = Field(
        None,
        min_length=1,
        max_length=MAX_ROWS,
        description="Feature values, one dict per row; a row may also carry its entity's join "
        "keys (the canary split and the prediction log use them)",
    )
    entities: list[dict[str, KeyValue]] | None = Field(
        None,
        min_length=1,
        max_length=MAX_ROWS,
        description="Entity keys: features are read from the online store instead",
    )
    schema_version: str | None = Field(
        None,
        pattern=SCHEMA_VERSION,
        description="The input schema the rows were written for (or the "
        "X-Mallard-Schema-Version header): compatible changes since are absorbed, an "
        "incompatible one is refused (409) saying how to migrate",
    )


class ExplainRequest(PredictRequest):
    top_k: int = Field(5, ge=1, le=100, description="How many top features to list per row")


class RowIssue(BaseModel):
    row: int
    field: str | None
    rule: str = Field(
        description="nan, infinite, null, below_min, above_max, unknown_category or out_of_distribution"
    )
    message: str


class Prediction(BaseModel):
    prediction: float | None
    score: float | None = Field(description="Positive-class probability (classification)")
    flagged: bool
    issues: list[dict[str, Any]]
    ood_score: float | None
    variant: str = Field(description="Who answered this row: champion, challenger, an alias, v<N>")
    version: int = Field(description="The model version that answered this row")
    entity: dict[str, Any] | None = None
    feature_status: dict[str, str] | None = None


class PredictResponse(BaseModel):
    model: str
    version: int | None = Field(
        description="The version that answered (null when a canary split the rows: see variants)"
    )
    variant: str = Field(
        description="champion, challenger, an alias or v<N>; `split` when both canary "
        "variants answered rows of this request"
    )
    variants: dict[str, int] = Field(description="Each variant that answered, and its version")
    schema_version: str = Field(description="The input schema of the version that answered")
    strictness: Literal["warn", "reject"]
    request_id: str
    predictions: list[Prediction]
    feature_versions: dict[str, str | None] | None = None


class Explanation(BaseModel):
    prediction: float | None
    base_value: float | None
    shap_values: dict[str, float | None]
    top_features: list[dict[str, Any]]
    flagged: bool
    issues: list[dict[str, Any]]


class ExplainResponse(BaseModel):
    model: str
    version: int
    variant: str
    output: str = Field(
        description="What base value plus SHAP values add up to: log_odds, probability or value"
    )
    explainer: str
    schema_version: str = Field(description="The input schema of the version that answered")
    request_id: str
    explanations: list[Explanation]


class ModelInfo(BaseModel):
    name: str
    task: str
    strictness: str
    feature_service: str
    description: str
    champion: str
    schema_version: str | None = Field(description="The champion's input schema, once loaded")
    canary: dict[str, Any] | None = Field(
        None, description="The declared challenger, its share and whether it serves now"
    )


class SchemaFieldInfo(BaseModel):
    name: str
    type: Literal["numeric", "categorical"]
    optional: bool = Field(description="Null is accepted (the model saw nulls in training)")


class SchemaResponse(BaseModel):
    model: str
    version: int
    variant: str
    schema_version: str
    fields: list[SchemaFieldInfo]


class PromptResponse(BaseModel):
    name: str
    version: int
    label: str | None
    content_hash: str
    content: Any
    description: str
    variables: list[str]
    created_at: str
    created_by: str


class KeyCreateRequest(_Body):
    owner: str = Field(
        min_length=1, max_length=200, pattern=r"\S", description="Who or what the key is for"
    )
    role: Literal["admin", "developer", "viewer"]
    scope: Literal["all", "ingest"] = "all"
    expires_in_days: float = Field(90, ge=1 / 1440, le=3650, description="At least a minute")
    rate_per_s: float | None = Field(None, gt=0, le=1_000_000)
    burst: int | None = Field(None, ge=1, le=1_000_000)


class KeyRotateRequest(_Body):
    grace_seconds: float = Field(
        0, ge=0, le=30 * 86_400, description="How long the old key keeps working (0: revoked now)"
    )


class KeyInfo(BaseModel):
    prefix: str
    owner: str
    role: str
    scope: str
    state: str
    created_at: str | None
    expires_at: str | None
    revoked_at: str | None
    rotated_to: str | None
    rate_per_s: float | None
    burst: int | None
    created_by: str


class CreatedKeyResponse(BaseModel):
    key: str = Field(description="The key itself: shown this once, store it now")
    record: KeyInfo


class AuditEntry(BaseModel):
    id: int | None
    at: str
    actor: str
    action: str
    target: str
    request_id: str
    status: int
    before: Any
    after: Any
    client: str
