"""Human labels: verdicts people give through the annotation queue (`mallard evals annotate`,
`POST /v1/annotations`), stored in the `human_labels` table.

A label is for one judge (its task) and one item: a dataset item (it overrides the dataset's own
verdict) or an answer from an eval run (then it carries the sample it judged). Labels are never
updated in place: a new verdict on the same item is the next version, with its author, and the
latest version wins when calibrating and aligning.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mallard.evals import store

VERDICTS = ("pass", "fail")
DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SOURCES = ("cli", "api", "import")


class LabelError(ValueError):
    """A label that cannot be recorded (unknown verdict, no author, …); `field` names the input."""

    def __init__(self, message: str, field: str = ""):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Label:
    label_id: str
    judge: str
    dataset: str
    item_id: str
    verdict: str
    author: str
    version: int
    timestamp: Any
    source: str = "cli"
    reason: str = ""
    score: float | None = None
    sample: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def to_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["timestamp"] = str(self.timestamp)
        return out

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Label:
        sample = row.get("sample")
        return cls(
            label_id=row["label_id"],
            judge=row["judge"],
            dataset=row["dataset"],
            item_id=row["item_id"],
            verdict=row["verdict"],
            author=row["author"],
            version=int(row["version"]),
            timestamp=row["timestamp"],
            source=row.get("source") or "",
            reason=row.get("reason") or "",
            score=row.get("score"),
            sample=json.loads(sample) if sample else None,
        )


def all_labels(settings: Any = None, judge: str | None = None) -> list[Label]:
    rows = store.read(
        "human_labels", settings=settings, filters={"judge": judge} if judge else None
    )
    return sorted((Label.from_row(r) for r in rows), key=lambda lb: (lb.timestamp, lb.version))


def latest_labels(settings: Any = None, judge: str | None = None) -> dict[tuple[str, str], Label]:
    """The latest version per (dataset, item) of a judge's labels."""
    latest: dict[tuple[str, str], Label] = {}
    for label in all_labels(settings, judge):
        key = (label.dataset, label.item_id)
        if key not in latest or label.version >= latest[key].version:
            latest[key] = label
    return latest


def add_label(
    *,
    judge: str,
    dataset: str,
    item_id: str,
    verdict: str,
    author: str,
    settings: Any = None,
    source: str = "cli",
    reason: str = "",
    score: float | None = None,
    sample: Mapping[str, Any] | None = None,
) -> Label:
    """Record a verdict; returns it with its version (previous versions of the item + 1). Without
    `sample` the item must be in the stored dataset (its verdict is overridden); with it, the
    sample is what was judged (an eval answer) and is kept with the label."""
    verdict = verdict.strip().lower()
    if verdict not in VERDICTS:
        raise LabelError(f"verdict {verdict!r} must be one of {list(VERDICTS)}", "verdict")
    if not author.strip():
        raise LabelError("a label needs its author", "author")
    if source not in SOURCES:
        raise LabelError(f"source {source!r} must be one of {list(SOURCES)}", "source")
    if score is not None and not 1 <= score <= 5:
        raise LabelError(f"score {score} must be within 1-5", "score")
    for name, value in (("judge", judge), ("dataset", dataset), ("item_id", item_id)):
        if not value or len(value) > 300:
            raise LabelError(f"{name} must be 1-300 characters", name)
    if not DATASET_NAME.match(dataset):
        raise LabelError(
            f"dataset {dataset!r} must be a dataset or eval name: letters, digits, _ . - "
            "(starting with a letter or digit)",
            "dataset",
        )
    if not sample:
        _check_item(dataset, item_id, settings)
    previous = [
        lb for lb in all_labels(settings, judge) if lb.dataset == dataset and lb.item_id == item_id
    ]
    label = Label(
        label_id=uuid.uuid4().hex,
        judge=judge,
        dataset=dataset,
        item_id=item_id,
        verdict=verdict,
        author=author.strip(),
        version=max((lb.version for lb in previous), default=0) + 1,
        timestamp=store.now(),
        source=source,
        reason=reason[:2000],
        score=score,
        sample=dict(sample) if sample else None,
    )
    row = label.to_json()
    row["timestamp"] = label.timestamp
    row["sample"] = (
        json.dumps(label.sample, ensure_ascii=False, default=str) if label.sample else None
    )
    store.append("human_labels", [row], settings=settings)
    return label


def _check_item(dataset: str, item_id: str, settings: Any) -> None:
    from mallard.evals.datasets import load_dataset

    try:
        snapshot = load_dataset(dataset, settings=settings)
    except LookupError:
        raise LabelError(
            f"dataset {dataset!r} is not a stored eval dataset: import it (`mallard evals "
            "import`), or label an eval answer with its sample (question, answer, contexts)",
            "dataset",
        ) from None
    try:
        snapshot.item(item_id)
    except KeyError:
        raise LabelError(
            f"item_id {item_id!r} is not in dataset {dataset!r} (v{snapshot.version}): give an "
            "item of the dataset, or the sample that was judged",
            "item_id",
        ) from None
