"""Input schema versions: what a model version reads, named by a hash, and what changed since.

A model version's input schema is its features, each with its type (`numeric` or
`categorical`) and whether it is optional (null was seen in training, so the model imputes it),
read from the version's training statistics. Its version is a hash of the names and types
(`InputSchema.version`, 12 hex digits): two model versions trained on the same columns share it.

A client says which schema its rows were written for (`X-Mallard-Schema-Version`, or
`schema_version` in the body). Against the schema of the version that serves:

| change | compatible | what the server does |
| --- | --- | --- |
| a field added, optional | yes | rows without it are read with null there |
| a field added, required (never null in training) | no | refused: the client cannot know it |
| a field removed | no | refused: the model no longer reads what the client sends |
| a field renamed (one removed and one added, same type) | no | refused, naming both |
| a field's type changed | no | refused, naming both types |

A refusal (409 `schema_incompatible`) says what changed and how to migrate.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mallard.serving.errors import ApiError

SCHEMA_HEADER = "X-Mallard-Schema-Version"


@dataclass(frozen=True)
class SchemaField:
    name: str
    type: str  # numeric | categorical
    optional: bool  # null was seen in training: the model imputes it

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "optional": self.optional}


@dataclass(frozen=True)
class InputSchema:
    """The fields a model version reads, in its feature order."""

    fields: tuple[SchemaField, ...]

    @classmethod
    def from_statistics(cls, features: Mapping[str, Mapping[str, Any]]) -> InputSchema:
        """From training statistics' per-feature entries (`type`, `nulls`)."""
        return cls(
            tuple(
                SchemaField(name, str(entry["type"]), int(entry.get("nulls") or 0) > 0)
                for name, entry in features.items()
            )
        )

    @property
    def version(self) -> str:
        """A hash of the field names and types (not their order, not optionality)."""
        text = json.dumps(sorted((f.name, f.type) for f in self.fields))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def by_name(self) -> dict[str, SchemaField]:
        return {f.name: f for f in self.fields}

    def describe(self) -> list[dict[str, Any]]:
        return [f.as_dict() for f in self.fields]


@dataclass(frozen=True)
class Change:
    """One difference from the client's schema (`old`) to the serving one (`new`)."""

    kind: str  # added | removed | renamed | type_changed
    field: str
    compatible: bool
    to: str | None = None  # renamed: the new name
    old_type: str | None = None
    new_type: str | None = None
    optional: bool | None = None

    def describe(self) -> str:
        if self.kind == "added":
            if self.compatible:
                return f"{self.field} ({self.new_type}) was added as an optional field"
            return f"{self.field} ({self.new_type}) was added as a required field"
        if self.kind == "removed":
            return f"{self.field} was removed"
        if self.kind == "renamed":
            return f"{self.field} was renamed to {self.to}"
        return f"{self.field} changed type from {self.old_type} to {self.new_type}"

    def migration(self) -> str:
        if self.kind == "added":
            what = "a number" if self.new_type == "numeric" else "a string"
            return f"send {self.field} ({what}{', or null' if self.optional else ''})"
        if self.kind == "removed":
            return f"stop sending {self.field}"
        if self.kind == "renamed":
            return f"send {self.field}'s value as {self.to}"
        what = "a number" if self.new_type == "numeric" else "a string"
        return f"send {self.field} as {what}"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "change": self.kind,
            "field": self.field,
            "compatible": self.compatible,
            "message": self.describe(),
        }
        if self.to is not None:
            out["to"] = self.to
        if self.old_type is not None:
            out["old_type"] = self.old_type
        if self.new_type is not None:
            out["new_type"] = self.new_type
        return out


def changes(old: InputSchema, new: InputSchema) -> list[Change]:
    """What changed from `old` to `new`; a removed and an added field of the same type whose
    names are alike (or the only such pair) count as a rename."""
    before, after = old.by_name, new.by_name
    removed = [f for f in old.fields if f.name not in after]
    added = [f for f in new.fields if f.name not in before]
    out: list[Change] = []
    for f in old.fields:
        if f.name in after and after[f.name].type != f.type:
            out.append(
                Change(
                    "type_changed",
                    f.name,
                    False,
                    old_type=f.type,
                    new_type=after[f.name].type,
                    optional=after[f.name].optional,
                )
            )
    renamed: dict[str, str] = {}
    for f in removed:
        candidates = [a for a in added if a.type == f.type and a.name not in renamed.values()]
        close = difflib.get_close_matches(f.name, [a.name for a in candidates], n=1, cutoff=0.5)
        if close:
            renamed[f.name] = close[0]
        elif len(removed) == 1 and len(candidates) == 1:
            renamed[f.name] = candidates[0].name
    for f in removed:
        if f.name in renamed:
            out.append(Change("renamed", f.name, False, to=renamed[f.name], old_type=f.type))
        else:
            out.append(Change("removed", f.name, False, old_type=f.type))
    for f in added:
        if f.name in renamed.values():
            continue
        out.append(Change("added", f.name, f.optional, new_type=f.type, optional=f.optional))
    return out


def incompatible(
    model: str,
    version: int,
    old: InputSchema,
    new: InputSchema,
    found: list[Change],
    where: str,
) -> ApiError:
    """The 409 that says what changed and how to migrate."""
    breaking = [c for c in found if not c.compatible]
    steps = [c.migration() for c in found if not c.compatible or c.kind == "added"]
    return ApiError(
        409,
        "schema_incompatible",
        f"the rows were written for input schema {old.version} of model {model}, but v{version} "
        f"reads schema {new.version}, which is incompatible: "
        + "; ".join(c.describe() for c in breaking)
        + ". To migrate: "
        + "; ".join(steps)
        + f"; then send {SCHEMA_HEADER}: {new.version} "
        f"(GET /v1/models/{model}/schema lists its fields)",
        field=where,
        requested=old.version,
        schema_version=new.version,
        changes=[c.as_dict() for c in found],
    )


def adapt_rows(rows: list[dict[str, Any]], found: list[Change]) -> list[dict[str, Any]]:
    """Rows written for the old schema, read by the new one: an added optional field they do
    not carry is null."""
    added = [c.field for c in found if c.kind == "added" and c.compatible]
    if not added:
        return rows
    return [{**{name: None for name in added}, **row} for row in rows]
