"""Data drift of a day's features against a reference, with Evidently on bounded samples.

Evidently on millions of rows is slow, and p-value tests on huge samples flag differences too
small to matter. Mallard samples both sides to at most `sample_size` rows (seeded, so a report
is reproducible). Above 1,000 rows Evidently's own choice is a distance measure (normed
Wasserstein for numbers, Jensen–Shannon for categories) whose threshold does not shrink with
sample size, so a 5,000-row sample flags what the full data flags, in a fraction of the time.
"""

from __future__ import annotations

import datetime as dt
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


class DriftInputError(ValueError):
    """The data cannot be compared (no rows, no common columns); the message says which."""


@dataclass(frozen=True)
class DriftConfig:
    """How drift is judged: methods and thresholds per column, and sampling.

    The share of drifted features that counts as "drifted" is the retrain policy's
    (`RetrainPolicy.drift_share`), so the check and the sensor agree.
    """

    sample_size: int | None = 5_000
    num_method: str | None = None  # None: Evidently's choice for the sample size
    cat_method: str | None = None
    num_threshold: float | None = None  # None: the method's default threshold
    cat_threshold: float | None = None
    per_column_method: dict[str, str] = field(default_factory=dict)
    per_column_threshold: dict[str, float] = field(default_factory=dict)
    seed: int = 0


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    threshold: float
    score: float
    drifted: bool


@dataclass
class DriftResult:
    """A drift report's headline numbers, per-column results and any problems with the inputs."""

    share_drifted: float
    columns: list[ColumnDrift]
    rows_reference: int
    rows_current: int
    rows_compared: int
    problems: list[str]
    seconds: float
    html_path: str | None = None

    @property
    def drifted(self) -> dict[str, float]:
        return {c.column: round(c.score, 6) for c in self.columns if c.drifted}


def _sample(frame: pd.DataFrame, size: int | None, seed: int) -> pd.DataFrame:
    if size is None or len(frame) <= size:
        return frame
    return frame.sample(n=size, random_state=seed)


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numerical: list[str],
    categorical: list[str],
    config: DriftConfig | None = None,
    html_path: Path | None = None,
    summary: bool = True,
    drift_share: float | None = None,
    header: str | None = None,
) -> DriftResult:
    """Compare `current` with `reference` column by column (DataDriftPreset + DataSummaryPreset).

    `drift_share` is the share of drifted features that counts as dataset drift (Mallard's
    `RetrainPolicy.drift_share`; None: Evidently's 0.5), so the report's own text states the
    rule Mallard acts on; `header`, a line of text shown above the report."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset, DataSummaryPreset

    config = config or DriftConfig()
    started = time.perf_counter()
    if len(current) == 0:
        raise DriftInputError("the current data has no rows: nothing to compare with the reference")
    if len(reference) == 0:
        raise DriftInputError("the reference data has no rows: train or choose a reference first")
    problems: list[str] = []
    usable_num: list[str] = []
    usable_cat: list[str] = []
    for kind, columns, usable in (
        ("numerical", numerical, usable_num),
        ("categorical", categorical, usable_cat),
    ):
        for column in columns:
            if column not in current.columns:
                problems.append(f"feature {column!r} is missing from the current data")
            elif column not in reference.columns:
                problems.append(f"feature {column!r} is missing from the reference data")
            elif reference[column].nunique(dropna=True) <= 1 and kind == "numerical":
                problems.append(
                    f"feature {column!r} has a single value in the reference: drift cannot be scored on it"
                )
            elif current[column].notna().sum() == 0:
                problems.append(f"feature {column!r} is entirely null in the current data")
            else:
                usable.append(column)
    if not usable_num and not usable_cat:
        raise DriftInputError("no feature can be compared: " + "; ".join(problems))

    columns = usable_num + usable_cat
    ref = _sample(reference[columns], config.sample_size, config.seed)
    cur = _sample(current[columns], config.sample_size, config.seed + 1)
    definition = DataDefinition(numerical_columns=usable_num, categorical_columns=usable_cat)
    methods = {c: m for c, m in config.per_column_method.items() if c in columns}
    thresholds: dict[str, float] = {}
    if config.per_column_threshold:
        # Evidently needs a threshold for every column once one is given per column.
        for column in columns:
            numeric = column in usable_num
            method = methods.get(column) or (config.num_method if numeric else config.cat_method)
            fallback = config.num_threshold if numeric else config.cat_threshold
            default = fallback if fallback is not None else _default_threshold(method, len(cur))
            thresholds[column] = config.per_column_threshold.get(column, default)
    presets: list[Any] = [
        DataDriftPreset(
            columns=columns,
            **({"drift_share": drift_share} if drift_share is not None else {}),
            num_method=config.num_method,
            cat_method=config.cat_method,
            num_threshold=config.num_threshold,
            cat_threshold=config.cat_threshold,
            per_column_method=methods or None,
            per_column_threshold=thresholds or None,
        )
    ]
    if summary:
        presets.append(DataSummaryPreset(columns=columns))
    with warnings.catch_warnings():
        # A category absent from one side makes scipy's chi-square divide by zero; the test's
        # p-value is still defined (0), and the warning would repeat for every column and day.
        warnings.filterwarnings("ignore", "divide by zero", RuntimeWarning, "scipy")
        snapshot = Report(presets, include_tests=True).run(
            Dataset.from_pandas(cur, data_definition=definition),
            Dataset.from_pandas(ref, data_definition=definition),
        )
    result = snapshot.dict()
    values = {m["id"]: m["value"] for m in result["metrics"]}
    per_column = []
    for test in result["tests"]:
        params = test.get("metric_config", {}).get("params", {})
        if params.get("type") != "evidently:metric_v2:ValueDrift":
            continue
        status = str(getattr(test["status"], "value", test["status"]))
        per_column.append(
            ColumnDrift(
                column=params["column"],
                method=str(params["method"]),
                threshold=float(params["threshold"]),
                score=float(values[test["metric_config"]["metric_id"]]),
                drifted=status == "FAIL",
            )
        )
    share = sum(c.drifted for c in per_column) / max(len(per_column), 1)
    path = None
    if html_path is not None:
        Path(html_path).parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html_path))
        if header:
            add_header(Path(html_path), header)
        path = str(html_path)
    return DriftResult(
        share,
        per_column,
        len(reference),
        len(current),
        len(cur),
        problems,
        time.perf_counter() - started,
        path,
    )


_P_VALUE_TESTS = {
    "ks",
    "chisquare",
    "z",
    "fisher_exact",
    "t_test",
    "mannw",
    "anderson",
    "cramer_von_mises",
    "g_test",
    "epps_singleton",
}


def _default_threshold(method: str | None, rows: int) -> float:
    """Evidently's default threshold: 0.05 for p-value tests, 0.1 for distances (auto: by size)."""
    if method is None:
        return 0.05 if rows <= 1000 else 0.1
    return 0.05 if method in _P_VALUE_TESTS else 0.1


def add_header(html_path: Path, text: str) -> None:
    """Put a line of text (escaped) at the top of a saved HTML report."""
    import html

    page = html_path.read_text(encoding="utf-8")
    banner = (
        '<div id="mallard-header" style="font: 14px/1.4 sans-serif; padding: 10px 16px; '
        'background: #fff8e1; border-bottom: 1px solid #e0c97f; color: #222">'
        f"{html.escape(text)}</div>"
    )
    start = page.find("<body")
    end = page.find(">", start) + 1 if start >= 0 else 0
    html_path.write_text(page[:end] + banner + page[end:], encoding="utf-8")


def report_path(reports_dir: Path, model: str, day: dt.date) -> Path:
    """Where the HTML drift report of one model and day is kept."""
    return reports_dir / "drift" / model / f"{day.isoformat()}.html"
