"""Feature-view versions: a content hash of the definition, shown as a short sequence number.

Each view keeps `lake/features/<view>/versions.json`, an append-only list of the hashes it has
had; version N is the N-th distinct definition, and its offline table lives beside the others
so `view@v1` stays readable after the definition changes.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mallard.config import Settings
from mallard.features.specs import FeatureView
from mallard.specs import DeclarationError


@dataclass(frozen=True)
class ViewVersion:
    """One version of a feature view: its number, content hash and offline table."""

    view: str
    number: int
    content_hash: str
    table_path: Path

    @property
    def label(self) -> str:
        return f"{self.view}@v{self.number}"


def _view_dir(settings: Settings, view_name: str) -> Path:
    return settings.lake_dir / "features" / view_name


def _read(settings: Settings, view_name: str) -> list[str]:
    path = _view_dir(settings, view_name) / "versions.json"
    return json.loads(path.read_text()) if path.exists() else []


def _version(settings: Settings, view_name: str, number: int, content_hash: str) -> ViewVersion:
    return ViewVersion(
        view_name,
        number,
        content_hash,
        _view_dir(settings, view_name) / f"v{number}-{content_hash}",
    )


def register_version(settings: Settings, view: FeatureView) -> ViewVersion:
    """The version of the view's current definition, numbering it if it is new."""
    hashes = _read(settings, view.name)
    if view.version_hash not in hashes:
        hashes.append(view.version_hash)
        folder = _view_dir(settings, view.name)
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=folder, delete=False, suffix=".tmp") as handle:
            json.dump(hashes, handle)
        os.replace(handle.name, folder / "versions.json")
    return _version(settings, view.name, hashes.index(view.version_hash) + 1, view.version_hash)


def list_versions(settings: Settings, view_name: str) -> list[ViewVersion]:
    return [
        _version(settings, view_name, i + 1, h) for i, h in enumerate(_read(settings, view_name))
    ]


def resolve_version(
    settings: Settings, view: FeatureView, reference: str | None = None
) -> ViewVersion:
    """`None` or `"latest"` → the current definition; `"v2"` / `2` → that numbered version."""
    if reference in (None, "latest"):
        return register_version(settings, view)
    number = (
        int(str(reference).removeprefix("v")) if str(reference).removeprefix("v").isdigit() else 0
    )
    versions = list_versions(settings, view.name)
    if not 1 <= number <= len(versions):
        raise DeclarationError(
            f"FeatureView {view.name!r}: version {reference!r} does not exist "
            f"(known: {', '.join(v.label for v in versions) or 'none yet'})"
        )
    return versions[number - 1]
