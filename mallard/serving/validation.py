"""Input checks of the serving API: request rows against a model version's training statistics.

First the types (a number for a numeric feature, a string for a categorical one; a missing
feature): a row the model cannot read at all is always refused. JSON has no NaN or infinities:
a numeric feature takes the strings "NaN", "Infinity" and "-Infinity" for them (and the
non-standard bare tokens, which Python's json writes). Then the rules, each naming
the row and field:

| rule | when |
| --- | --- |
| `nan` | a numeric value is NaN (send null for "unknown") |
| `infinite` | a numeric value is +inf or -inf (or beyond float range) |
| `null` | a null where the feature was never null in training |
| `below_min` / `above_max` | outside the training range |
| `unknown_category` | a category the training data never had |
| `out_of_distribution` | the row's IsolationForest score is below the threshold that flags the lowest 1 % of training rows (`field` null: the row as a whole) |

With strictness `warn` the rows are answered (an infinity is then imputed as a missing value)
and the issues returned per row; with `reject` any issue refuses the request (422) naming the
first row, field and rule, and listing them all.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import TYPE_CHECKING, Any

from mallard.serving.errors import ApiError

if TYPE_CHECKING:
    import pandas as pd

    from mallard.models.statistics import TrainingStatistics

NON_FINITE = ("NaN", "Infinity", "-Infinity")
RULES = (
    "nan",
    "infinite",
    "null",
    "below_min",
    "above_max",
    "unknown_category",
    "out_of_distribution",
)


def json_number(value: Any) -> Any:
    """A float that JSON can carry (NaN and ±inf as strings)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


@dataclass
class Issue:
    row: int
    field: str | None
    rule: str
    message: str
    details: dict[str, Any] = dataclass_field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "field": self.field,
            "rule": self.rule,
            "message": self.message,
            **{k: json_number(v) for k, v in self.details.items()},
        }


def _numeric(value: Any, row: int, name: str, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, str) and value in NON_FINITE:
        return float(value)  # JSON has no NaN or infinities: these strings stand for them
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(
            422,
            "invalid_type",
            f"{where}[{row}].{name}: feature {name!r} is numeric; got {type(value).__name__} "
            f"{str(value)[:40]!r} (send a number, or null)",
            field=f"{where}[{row}].{name}",
        )
    try:
        return float(value)
    except OverflowError:  # an integer beyond float range
        return math.inf if value > 0 else -math.inf


def conform_rows(
    rows: list[dict[str, Any]],
    features: list[str],
    categorical: list[str],
    *,
    where: str = "rows",
    allowed_extra: set[str] | frozenset[str] = frozenset(),
    index: list[int] | None = None,
) -> pd.DataFrame:
    """Request rows as the model's feature frame, or a 422 naming the row and field.

    `index` gives each row's position in the request (when these rows are part of it)."""
    import pandas as pd

    known = set(features)
    categories = set(categorical)
    columns: dict[str, list[Any]] = {name: [] for name in features}
    for local, row in enumerate(rows):
        i = local if index is None else index[local]
        unknown = [k for k in row if k not in known and k not in allowed_extra]
        if unknown:
            raise ApiError(
                422,
                "unknown_feature",
                f"{where}[{i}].{unknown[0]}: the model has no feature {unknown[0]!r} "
                f"(features: {', '.join(features)})",
                field=f"{where}[{i}].{unknown[0]}",
            )
        for name in features:
            if name not in row:
                raise ApiError(
                    422,
                    "missing_feature",
                    f"{where}[{i}].{name}: feature {name!r} is missing (send null when unknown)",
                    field=f"{where}[{i}].{name}",
                )
            value = row[name]
            if name in categories:
                if value is not None and not isinstance(value, str):
                    raise ApiError(
                        422,
                        "invalid_type",
                        f"{where}[{i}].{name}: feature {name!r} is categorical; got "
                        f"{type(value).__name__} (send a string, or null)",
                        field=f"{where}[{i}].{name}",
                    )
                columns[name].append(value)
            else:
                columns[name].append(_numeric(value, i, name, where))
    frame = pd.DataFrame(columns, columns=features)
    for name in features:
        if name not in categories:
            frame[name] = frame[name].astype("float64")
        else:
            frame[name] = frame[name].astype(object)
    return frame


def _message(issue: dict[str, Any]) -> str:
    name, rule = issue.get("feature"), issue["issue"]
    value = json_number(issue.get("value"))
    if rule == "null":
        return f"{name} is null; it was never null in training"
    if rule == "infinite":
        return f"{name} is infinite"
    if rule == "below_min":
        return f"{name}={value} is below the training minimum {issue['min']}"
    if rule == "above_max":
        return f"{name}={value} is above the training maximum {issue['max']}"
    if rule == "unknown_category":
        return f"{name}={value!r} is a category the training data never had"
    if rule == "missing_column":
        return f"{name} is missing"
    return f"{name}: {rule}"


def check_rows(
    frame: pd.DataFrame, stats: TrainingStatistics, nan_mask: dict[str, list[bool]]
) -> tuple[list[list[Issue]], list[float | None]]:
    """Issues of each row (and each row's out-of-distribution score, None without a detector)."""
    import numpy as np

    issues: list[list[Issue]] = [[] for _ in range(len(frame))]
    for name, flags in nan_mask.items():
        for i, flag in enumerate(flags):
            if flag:
                issues[i].append(
                    Issue(i, name, "nan", f"{name} is NaN; send null for an unknown value")
                )
    sent_nan = {(i, n) for n, flags in nan_mask.items() for i, f in enumerate(flags) if f}
    # The per-feature rules only: the detector's forest (the costliest check) runs once, below.
    for found in dataclasses.replace(stats, detector=None).check(frame):
        rule = found["issue"]
        row, feature = found.get("row"), found.get("feature")
        if rule == "out_of_distribution" or row is None:
            continue
        if rule == "null" and (row, feature) in sent_nan:
            continue  # reported as nan
        details = {k: v for k, v in found.items() if k in ("value", "min", "max")}
        issues[row].append(Issue(row, feature, rule, _message(found), details))
    scores: list[float | None] = [None] * len(frame)
    detector = stats.detector
    if detector is not None and all(f in frame.columns for f in detector.features) and len(frame):
        values = np.asarray(detector.scores(frame), dtype=float)
        for i, score in enumerate(values.tolist()):
            scores[i] = round(score, 6)
            if score < detector.threshold:
                issues[i].append(
                    Issue(
                        i,
                        None,
                        "out_of_distribution",
                        "the row is unlike the training data: out-of-distribution score "
                        f"{score:.4f} < threshold {detector.threshold:.4f}",
                        {"score": round(score, 6), "threshold": round(detector.threshold, 6)},
                    )
                )
    return issues, scores


def nan_cells(
    frame: pd.DataFrame, rows: list[dict[str, Any]], numeric: list[str]
) -> dict[str, list[bool]]:
    """Where a request sent NaN itself (not null) for a numeric feature."""
    return {
        name: [
            (isinstance(r.get(name), float) and math.isnan(r[name])) or r.get(name) == "NaN"
            for r in rows
        ]
        for name in numeric
    }


def reject(model: str, version: int, issues: list[list[Issue]], where: str = "rows") -> ApiError:
    flat = [issue for row in issues for issue in row]
    first = flat[0]
    field_name = f"{where}[{first.row}]" + (f".{first.field}" if first.field else "")
    return ApiError(
        422,
        "validation_failed",
        f"{field_name} breaks rule {first.rule!r}: {first.message} (model {model} v{version} "
        f"refuses such input; {len(flat)} issue(s) in all)",
        field=field_name,
        rule=first.rule,
        issues=[issue.as_dict() for issue in flat[:200]],
    )
