"""Eval datasets: declared files (JSONL, CSV or Parquet) imported into versioned Delta tables.

    support = EvalDataset(name="support_questions", source="sample/helpcentre/eval_questions.jsonl",
                          id_field="question_id", input_fields=("question",),
                          reference_field="reference_answer", category_field="category")
    result = import_dataset(support)            # a new Delta version only when the content changed
    snapshot = load_dataset("support_questions", version=3)   # reads can pin a version

Every item has input variables (what the prompt or chain is rendered with), an optional gold
reference answer, an optional expected label and score, a category and free metadata. An import
validates the whole file first and names the line (row, for Parquet) and field of every problem;
when there is one, nothing is written. A dataset is global (usable by every prompt and chain) or
owned by one prompt or chain (`owner="prompt:<name>"` / `"chain:<name>"`).

The `eval_datasets/<name>` tables have one schema (`DATASET_COLUMNS`), owned by this module.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mallard.specs import DeclarationError, check_identifier

if TYPE_CHECKING:
    import pyarrow as pa

FORMATS = ("jsonl", "csv", "parquet")
MAX_REPORTED_PROBLEMS = 50

DATASET_COLUMNS: dict[str, str] = {
    "item_id": "the item's id, unique in the dataset",
    "position": "order of the item in the imported file",
    "inputs": "JSON object of the input variables",
    "reference": "gold reference answer, null when none",
    "expected_label": "expected label (e.g. pass/fail), null when none",
    "expected_score": "expected score, null when none",
    "category": "category of the item",
    "metadata": "JSON object of the other fields",
    "content_hash": "sha256 of the item's content",
}


def dataset_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            ("item_id", pa.string()),
            ("position", pa.int32()),
            ("inputs", pa.string()),
            ("reference", pa.string()),
            ("expected_label", pa.string()),
            ("expected_score", pa.float64()),
            ("category", pa.string()),
            ("metadata", pa.string()),
            ("content_hash", pa.string()),
        ]
    )


class DatasetValidationError(ValueError):
    """A dataset file has bad items; `problems` lists (line, field, message). Nothing was imported."""

    def __init__(
        self,
        dataset: str,
        source: str,
        problems: list[tuple[str, str, str]],
        total: int | None = None,
    ):
        self.dataset = dataset
        self.source = source
        self.problems = problems
        total = len(problems) if total is None else total
        shown = "\n".join(
            f"  {where}, field {name!r}: {message}" if name else f"  {where}: {message}"
            for where, name, message in problems
        )
        more = f"\n  … and {total - len(problems)} more" if total > len(problems) else ""
        super().__init__(
            f"dataset {dataset!r}: {total} problem(s) in {source}; nothing was imported:\n{shown}{more}"
        )


@dataclass(frozen=True)
class EvalDataset:
    """A declared eval dataset: where its file is and which fields mean what."""

    name: str
    source: str | Path
    input_fields: tuple[str, ...] = ("question",)
    id_field: str = "id"
    reference_field: str | None = None
    label_field: str | None = None
    labels: tuple[str, ...] = ()
    score_field: str | None = None
    score_range: tuple[float, float] | None = None
    category_field: str | None = None
    metadata_fields: tuple[str, ...] | None = None
    owner: str | None = None
    format: str | None = None
    description: str = ""
    max_field_chars: int = 100_000
    """The longest value a field may hold (a whole article is ~10k characters)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_fields", tuple(self.input_fields))
        object.__setattr__(self, "labels", tuple(self.labels))
        if self.metadata_fields is not None:
            object.__setattr__(self, "metadata_fields", tuple(self.metadata_fields))
        check_identifier("EvalDataset", self.name)
        where = f"EvalDataset {self.name!r}"
        if not self.input_fields:
            raise DeclarationError(
                f"{where}: input_fields is empty; name the fields a prompt is rendered with"
            )
        fmt = self.file_format
        if fmt not in FORMATS:
            raise DeclarationError(
                f"{where}: format={fmt!r} is not one of {FORMATS} (set format= or use a "
                ".jsonl, .csv or .parquet file)"
            )
        if self.owner is not None:
            kind, _, owner = self.owner.partition(":")
            if kind not in ("prompt", "chain") or not owner:
                raise DeclarationError(
                    f"{where}: owner={self.owner!r} must be 'prompt:<name>' or 'chain:<name>' "
                    "(or None for a global dataset)"
                )
        if self.score_range is not None and not self.score_range[0] < self.score_range[1]:
            raise DeclarationError(
                f"{where}: score_range={self.score_range!r} must be (low, high) with low < high"
            )
        if self.labels and self.label_field is None:
            raise DeclarationError(f"{where}: labels are declared but label_field is not")
        used = [
            self.id_field,
            *self.input_fields,
            self.reference_field,
            self.label_field,
            self.score_field,
            self.category_field,
        ]
        named = [f for f in used if f]
        if len(set(named)) != len(named):
            raise DeclarationError(f"{where}: a field is used for two roles: {named}")

    @property
    def file_format(self) -> str:
        if self.format:
            return self.format
        suffix = Path(str(self.source)).suffix.lower().lstrip(".")
        return {"json": "jsonl", "ndjson": "jsonl", "pq": "parquet"}.get(suffix, suffix)

    @property
    def is_global(self) -> bool:
        return self.owner is None

    def usable_by(self, *, prompt: str | None = None, chain: str | None = None) -> bool:
        """Global datasets serve everyone; an owned one only its prompt or chain."""
        if self.owner is None:
            return True
        return self.owner in ({f"prompt:{prompt}"} if prompt else set()) | (
            {f"chain:{chain}"} if chain else set()
        )

    def path(self, settings: Any = None) -> Path:
        if settings is None:
            from mallard.config import get_settings

            settings = get_settings()
        return Path(settings.resolve(self.source))


@dataclass(frozen=True)
class DatasetSlice:
    """A named subset of a dataset (e.g. the ~10 items the demo runs): explicit item ids, some
    categories, the first `per_category` items of each category, and/or the first `limit` items."""

    name: str
    dataset: str
    item_ids: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    per_category: int | None = None
    limit: int | None = None
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "item_ids", tuple(self.item_ids))
        object.__setattr__(self, "categories", tuple(self.categories))
        check_identifier("DatasetSlice", self.name)
        check_identifier("DatasetSlice", self.dataset, "dataset", self.name)
        for value, label in ((self.per_category, "per_category"), (self.limit, "limit")):
            if value is not None and value < 1:
                raise DeclarationError(
                    f"DatasetSlice {self.name!r}: {label}={value} must be at least 1"
                )
        if len(set(self.item_ids)) != len(self.item_ids):
            raise DeclarationError(f"DatasetSlice {self.name!r}: an item id is listed twice")

    def apply(self, items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        known = {item["item_id"] for item in items}
        missing = [i for i in self.item_ids if i not in known]
        if missing:
            raise DeclarationError(
                f"DatasetSlice {self.name!r}: item id(s) {missing} are not in dataset "
                f"{self.dataset!r} (this version)"
            )
        chosen = [
            dict(item)
            for item in items
            if (not self.item_ids or item["item_id"] in self.item_ids)
            and (not self.categories or item["category"] in self.categories)
        ]
        if self.per_category is not None:
            seen: Counter[str] = Counter()
            kept = []
            for item in chosen:
                seen[item["category"]] += 1
                if seen[item["category"]] <= self.per_category:
                    kept.append(item)
            chosen = kept
        return chosen[: self.limit] if self.limit is not None else chosen


# Reading and validating files -------------------------------------------------------------------
def _records(spec: EvalDataset, path: Path) -> Iterable[tuple[str, Any]]:
    """(where, record) for every record of the file; `where` names the line (or row)."""
    fmt = spec.file_format
    if fmt == "jsonl":
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield f"line {number}", json.loads(line)
                except json.JSONDecodeError as exc:
                    yield (
                        f"line {number}",
                        ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})"),
                    )
    elif fmt == "csv":
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            for record in reader:
                if None in record:
                    yield f"line {reader.line_num}", ValueError("more values than header columns")
                    continue
                yield (
                    f"line {reader.line_num}",
                    {k: (None if v == "" else v) for k, v in record.items()},
                )
    else:
        import pyarrow.parquet as pq

        for number, record in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield f"row {number}", record


def _is_missing(value: Any) -> bool:
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (isinstance(value, str) and not value.strip())
    )


def _plain(value: Any) -> Any:
    """JSON-safe value (Parquet hands over dates, decimals, numpy scalars)."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def item_hash(item: Mapping[str, Any]) -> str:
    content = {
        k: item[k]
        for k in (
            "item_id",
            "inputs",
            "reference",
            "expected_label",
            "expected_score",
            "category",
            "metadata",
        )
    }
    blob = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def read_items(spec: EvalDataset, path: Path | str | None = None) -> list[dict[str, Any]]:
    """Validate a whole dataset file and return its items, or raise DatasetValidationError naming
    the line and field of each problem (the first MAX_REPORTED_PROBLEMS of them)."""
    path = Path(path) if path is not None else spec.path()
    if not path.is_file():
        raise DatasetValidationError(spec.name, str(path), [("file", "", "does not exist")])
    problems: list[tuple[str, str, str]] = []
    total = 0

    def problem(where: str, name: str, message: str) -> None:
        nonlocal total
        total += 1
        if len(problems) < MAX_REPORTED_PROBLEMS:
            problems.append((where, name, message))

    roles = {
        spec.id_field,
        *spec.input_fields,
        spec.reference_field,
        spec.label_field,
        spec.score_field,
        spec.category_field,
    }
    items: list[dict[str, Any]] = []
    first_line: dict[str, str] = {}
    try:
        records = list(_records(spec, path))
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
        raise DatasetValidationError(
            spec.name, str(path), [("file", "", f"cannot be read: {exc}")]
        ) from None
    for where, record in records:
        if isinstance(record, Exception):
            problem(where, "", str(record))
            continue
        if not isinstance(record, Mapping):
            problem(where, "", f"is a {type(record).__name__}, not an object")
            continue
        bad = False
        for name, value in record.items():
            size = len(value) if isinstance(value, str) else len(str(value))
            if size > spec.max_field_chars:
                problem(
                    where,
                    str(name),
                    f"is {size:,} characters; the limit is {spec.max_field_chars:,} "
                    "(max_field_chars of the dataset declaration)",
                )
                bad = True
        raw_id = record.get(spec.id_field)
        if _is_missing(raw_id):
            problem(where, spec.id_field, "missing (every item needs an id)")
            bad = True
        item_id = str(raw_id).strip() if not _is_missing(raw_id) else ""
        if item_id and item_id in first_line:
            problem(
                where, spec.id_field, f"duplicate id {item_id!r} (first on {first_line[item_id]})"
            )
            bad = True
        elif item_id:
            first_line[item_id] = where
        inputs = {}
        for name in spec.input_fields:
            value = record.get(name)
            if _is_missing(value):
                problem(where, name, "missing or empty (an input variable)")
                bad = True
            else:
                inputs[name] = _plain(value)
        reference = None
        if spec.reference_field:
            value = record.get(spec.reference_field)
            if not _is_missing(value):
                if not isinstance(value, str):
                    problem(
                        where, spec.reference_field, f"must be text, got {type(value).__name__}"
                    )
                    bad = True
                reference = str(value)
        label = None
        if spec.label_field:
            value = record.get(spec.label_field)
            if not _is_missing(value):
                label = str(value).strip()
                if spec.labels and label not in spec.labels:
                    problem(where, spec.label_field, f"{label!r} is not one of {list(spec.labels)}")
                    bad = True
        score = None
        if spec.score_field:
            value = record.get(spec.score_field)
            if not _is_missing(value):
                try:
                    if isinstance(value, bool) or value is None:
                        raise ValueError
                    score = float(value)
                    if math.isnan(score) or math.isinf(score):
                        raise ValueError
                except (TypeError, ValueError):
                    problem(where, spec.score_field, f"{value!r} is not a number")
                    bad = True
                else:
                    low_high = spec.score_range
                    if low_high is not None and not low_high[0] <= score <= low_high[1]:
                        problem(
                            where,
                            spec.score_field,
                            f"{score:g} is outside {low_high[0]:g}–{low_high[1]:g}",
                        )
                        bad = True
        category = "all"
        if spec.category_field:
            value = record.get(spec.category_field)
            if _is_missing(value):
                problem(
                    where, spec.category_field, "missing (the dataset declares a category field)"
                )
                bad = True
            else:
                category = str(value).strip()
        if spec.metadata_fields is None:
            metadata = {
                k: _plain(v) for k, v in record.items() if k not in roles and not _is_missing(v)
            }
        else:
            metadata = {
                k: _plain(record.get(k))
                for k in spec.metadata_fields
                if not _is_missing(record.get(k))
            }
        if bad:
            continue
        item = {
            "item_id": item_id,
            "inputs": inputs,
            "reference": reference,
            "expected_label": label,
            "expected_score": score,
            "category": category,
            "metadata": metadata,
        }
        item["content_hash"] = item_hash(item)
        items.append(item)
    if not records and not problems:
        problem("file", "", "has no items")
    if problems:
        raise DatasetValidationError(spec.name, str(path), problems, total)
    return items


# The versioned Delta store ----------------------------------------------------------------------
@dataclass
class DatasetSnapshot:
    """One version of a dataset: its items (inputs and metadata as dicts)."""

    name: str
    version: int
    items: list[dict[str, Any]]
    content_hash: str = ""

    def by_category(self) -> dict[str, int]:
        return dict(sorted(Counter(item["category"] for item in self.items).items()))

    def item(self, item_id: str) -> dict[str, Any]:
        for item in self.items:
            if item["item_id"] == item_id:
                return item
        raise KeyError(f"dataset {self.name!r} v{self.version} has no item {item_id!r}")


@dataclass
class ImportResult:
    name: str
    version: int
    created: bool
    items: int
    by_category: dict[str, int] = field(default_factory=dict)
    content_hash: str = ""
    source: str = ""


def dataset_hash(item_hashes: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(item_hashes).encode()).hexdigest()


def table_path(name: str, settings: Any = None) -> Path:
    if settings is None:
        from mallard.config import get_settings

        settings = get_settings()
    return Path(settings.lake_dir) / "eval_datasets" / name


def _to_arrow(items: Sequence[Mapping[str, Any]]) -> pa.Table:
    import pyarrow as pa

    rows = [
        {
            "item_id": i["item_id"],
            "position": n,
            "inputs": json.dumps(i["inputs"], ensure_ascii=False, sort_keys=True),
            "reference": i["reference"],
            "expected_label": i["expected_label"],
            "expected_score": i["expected_score"],
            "category": i["category"],
            "metadata": json.dumps(i["metadata"], ensure_ascii=False, sort_keys=True),
            "content_hash": i["content_hash"],
        }
        for n, i in enumerate(items)
    ]
    return pa.Table.from_pylist(rows, schema=dataset_schema())


def _from_arrow(table: pa.Table) -> list[dict[str, Any]]:
    rows = sorted(table.to_pylist(), key=lambda r: r["position"])
    for row in rows:
        row["inputs"] = json.loads(row["inputs"])
        row["metadata"] = json.loads(row["metadata"])
        row.pop("position")
    return rows


def import_dataset(
    spec: EvalDataset, *, settings: Any = None, path: Path | str | None = None
) -> ImportResult:
    """Validate the file and, when its content differs from the latest version, write it as a new
    Delta version (one commit, overwrite). Unchanged content writes nothing."""
    from deltalake import CommitProperties, DeltaTable, write_deltalake

    source = Path(path) if path is not None else spec.path(settings)
    items = read_items(spec, source)
    digest = dataset_hash(i["content_hash"] for i in items)
    by_category = dict(sorted(Counter(i["category"] for i in items).items()))
    target = table_path(spec.name, settings)
    if DeltaTable.is_deltatable(str(target)):
        table = DeltaTable(str(target))
        current = table.to_pyarrow_table(columns=["position", "content_hash"]).sort_by("position")
        if dataset_hash(current.column("content_hash").to_pylist()) == digest:
            return ImportResult(
                spec.name, table.version(), False, len(items), by_category, digest, str(source)
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    write_deltalake(
        str(target),
        _to_arrow(items),
        mode="overwrite",
        schema_mode="overwrite",
        commit_properties=CommitProperties(
            custom_metadata={
                "mallard.dataset": spec.name,
                "mallard.content_hash": digest,
                "mallard.source": str(source),
                "mallard.items": str(len(items)),
            }
        ),
    )
    version = DeltaTable(str(target)).version()
    return ImportResult(spec.name, version, True, len(items), by_category, digest, str(source))


def load_dataset(name: str, version: int | None = None, *, settings: Any = None) -> DatasetSnapshot:
    """A dataset's items at `version` (default: the latest)."""
    from deltalake import DeltaTable

    target = table_path(name, settings)
    if not DeltaTable.is_deltatable(str(target)):
        raise LookupError(
            f"eval dataset {name!r} has not been imported yet (materialize eval_datasets/{name} "
            "or run `mallard evals run`, which imports it)"
        )
    try:
        table = DeltaTable(str(target), version=version)
    except Exception as exc:  # deltalake raises its own error types for a missing version
        raise LookupError(f"eval dataset {name!r} has no version {version}: {exc}") from None
    items = _from_arrow(table.to_pyarrow_table())
    return DatasetSnapshot(
        name, table.version(), items, dataset_hash(i["content_hash"] for i in items)
    )


def dataset_versions(name: str, *, settings: Any = None) -> list[dict[str, Any]]:
    """Every version of a dataset, newest first: version, timestamp, items, content hash, source."""
    from deltalake import DeltaTable

    target = table_path(name, settings)
    if not DeltaTable.is_deltatable(str(target)):
        return []
    out = []
    for entry in DeltaTable(str(target)).history():
        out.append(
            {
                "version": entry.get("version"),
                "timestamp": entry.get("timestamp"),
                "items": int(entry.get("mallard.items", 0) or 0),
                "content_hash": str(entry.get("mallard.content_hash", ""))[:12],
                "source": entry.get("mallard.source", ""),
            }
        )
    return out


def snapshot_for(
    catalog: Any,
    dataset: str,
    *,
    version: int | None,
    settings: Any,
    import_latest: bool = False,
) -> DatasetSnapshot:
    """A dataset version: the pinned one, else the latest (importing the file first when asked or
    when nothing was imported yet)."""
    if version is None and import_latest:
        import_dataset(catalog.dataset(dataset), settings=settings)
    try:
        return load_dataset(dataset, version, settings=settings)
    except LookupError:
        if version is not None:
            raise
        import_dataset(catalog.dataset(dataset), settings=settings)
        return load_dataset(dataset, None, settings=settings)
