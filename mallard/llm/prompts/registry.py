"""The prompt registry: immutable versions and labels moved only by recorded promote/rollback.

Storage is one SQLite file in the lake folder (`<lake>/prompt_registry.sqlite`), not a Delta
table, because a label move must be a compare-and-set that records who, when and why in the same
transaction, and immutability must hold against any writer: triggers refuse UPDATE and DELETE on
versions and on the label history. A label has no mutable row at all: it points at the version
of its latest recorded event. `versions_table()` / `events_table()` export Arrow tables for DuckDB
and Dagster metadata.

`get(name, label)` caches in memory for `cache_ttl_s` and keeps a last-known-good copy on disk
under MALLARD_HOME; when the store cannot be read it serves that copy (and logs it) instead of
failing the caller.
"""

from __future__ import annotations

import datetime as dt
import difflib
import getpass
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mallard.llm.errors import PromptError, PromptNotFoundError, PromptStoreUnavailableError
from mallard.llm.prompts.template import PromptTemplate, render_messages

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS prompt_versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    content TEXT NOT NULL,
    description TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (name, version),
    UNIQUE (name, content_hash)
);
CREATE TABLE IF NOT EXISTS prompt_label_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    label TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('promote', 'rollback')),
    from_version INTEGER,
    to_version INTEGER NOT NULL,
    actor TEXT NOT NULL CHECK (actor <> ''),
    reason TEXT NOT NULL CHECK (reason <> ''),
    at TEXT NOT NULL,
    FOREIGN KEY (name, to_version) REFERENCES prompt_versions (name, version)
);
CREATE INDEX IF NOT EXISTS prompt_label_events_by_label ON prompt_label_events (name, label, id);
CREATE TRIGGER IF NOT EXISTS prompt_versions_immutable_update BEFORE UPDATE ON prompt_versions
BEGIN SELECT RAISE(ABORT, 'prompt versions are immutable: register a new version instead'); END;
CREATE TRIGGER IF NOT EXISTS prompt_versions_immutable_delete BEFORE DELETE ON prompt_versions
BEGIN SELECT RAISE(ABORT, 'prompt versions are immutable: they cannot be deleted'); END;
CREATE TRIGGER IF NOT EXISTS prompt_label_events_append_only_update BEFORE UPDATE ON prompt_label_events
BEGIN SELECT RAISE(ABORT, 'label history is append-only'); END;
CREATE TRIGGER IF NOT EXISTS prompt_label_events_append_only_delete BEFORE DELETE ON prompt_label_events
BEGIN SELECT RAISE(ABORT, 'label history is append-only'); END;
"""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def default_actor() -> str:
    for variable in ("MALLARD_USER", "DAGSTER_RUN_ID"):
        if os.environ.get(variable):
            return (
                os.environ[variable]
                if variable == "MALLARD_USER"
                else f"dagster-run:{os.environ[variable]}"
            )
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@dataclass(frozen=True)
class PromptVersion:
    """One immutable version of a prompt."""

    name: str
    version: int
    content_hash: str
    template: PromptTemplate
    created_at: str
    created_by: str
    source: str = ""
    label: str | None = None
    from_fallback: bool = False

    @property
    def endpoint(self) -> str | None:
        return self.template.endpoint

    @property
    def params(self) -> dict[str, Any]:
        return self.template.params

    @property
    def variables(self) -> tuple[str, ...]:
        return self.template.variables

    def render(
        self, variables: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> list[dict[str, str]]:
        """Chat messages with every declared variable substituted; PromptRenderError otherwise."""
        return render_messages(self.template, self.version, {**(variables or {}), **kwargs})

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "content_hash": self.content_hash,
            "content": self.template.content(),
            "description": self.template.description,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "source": self.source,
            "label": self.label,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, from_fallback: bool = False) -> PromptVersion:
        template = PromptTemplate.from_content(
            data["name"],
            data["content"],
            description=data.get("description", ""),
            source=data.get("source", ""),
        )
        return cls(
            name=data["name"],
            version=data["version"],
            content_hash=data["content_hash"],
            template=template,
            created_at=data["created_at"],
            created_by=data["created_by"],
            source=data.get("source", ""),
            label=data.get("label"),
            from_fallback=from_fallback,
        )


@dataclass(frozen=True)
class LabelEvent:
    id: int
    name: str
    label: str
    action: str
    from_version: int | None
    to_version: int
    actor: str
    reason: str
    at: str


class PromptRegistry:
    """Versions, labels and their history for every prompt, in one SQLite file."""

    def __init__(
        self,
        path: Path | str,
        *,
        cache_dir: Path | str | None = None,
        cache_ttl_s: float = 30.0,
        on_label_move: Callable[[PromptRegistry, LabelEvent], None] | None = None,
    ):
        self.path = Path(path)
        # Called after each recorded label move has committed (the MLflow mirror, for one).
        self.on_label_move = on_label_move
        self.cache_dir = (
            Path(cache_dir) if cache_dir is not None else self.path.parent / ".prompt_cache"
        )
        self.cache_ttl_s = cache_ttl_s
        self._memory: dict[tuple[str, str], tuple[float, PromptVersion]] = {}
        self._lock = threading.Lock()
        self._initialised = False

    @classmethod
    def default(cls, settings: Any = None) -> PromptRegistry:
        """The registry of this MALLARD_HOME: `<lake>/prompt_registry.sqlite`; its label moves
        are mirrored into the home's MLflow prompt registry when that store is in use."""
        if settings is None:
            from mallard.config import get_settings

            settings = get_settings()
        from mallard.llm.prompts.mlflow_mirror import label_mirror

        return cls(
            Path(settings.lake_dir) / "prompt_registry.sqlite",
            cache_dir=Path(settings.home) / "llm" / "prompt_cache",
            on_label_move=label_mirror(settings),
        )

    def _moved(self, event: LabelEvent | None) -> LabelEvent | None:
        if event is not None and self.on_label_move is not None:
            self.on_label_move(self, event)
        return event

    @contextmanager
    def _db(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        if not self._initialised:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA foreign_keys = ON")
            if not self._initialised:
                db.executescript(_SCHEMA)
                self._initialised = True
            if write:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            else:
                yield db
        finally:
            db.close()

    # Versions ---------------------------------------------------------------------------------
    def register(
        self, template: PromptTemplate, *, actor: str | None = None
    ) -> tuple[PromptVersion, bool]:
        """Store a template as the next version, or return the existing version with the same
        content hash. Returns (version, created)."""
        digest = template.content_hash
        with self._db(write=True) as db:
            row = db.execute(
                "SELECT * FROM prompt_versions WHERE name = ? AND content_hash = ?",
                (template.name, digest),
            ).fetchone()
            if row is not None:
                return self._version(row), False
            (latest,) = db.execute(
                "SELECT coalesce(max(version), 0) FROM prompt_versions WHERE name = ?",
                (template.name,),
            ).fetchone()
            values = (
                template.name,
                latest + 1,
                digest,
                json.dumps(template.content(), ensure_ascii=False),
                template.description,
                template.source,
                _now(),
                actor or default_actor(),
            )
            db.execute("INSERT INTO prompt_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?)", values)
            row = db.execute(
                "SELECT * FROM prompt_versions WHERE name = ? AND version = ?",
                (template.name, latest + 1),
            ).fetchone()
        return self._version(row), True

    @staticmethod
    def _version(row: tuple[Any, ...], label: str | None = None) -> PromptVersion:
        name, version, digest, content, description, source, created_at, created_by = row
        template = PromptTemplate.from_content(
            name, json.loads(content), description=description, source=source
        )
        return PromptVersion(
            name=name,
            version=version,
            content_hash=digest,
            template=template,
            created_at=created_at,
            created_by=created_by,
            source=source,
            label=label,
        )

    def version(self, name: str, version: int) -> PromptVersion:
        with self._db() as db:
            row = db.execute(
                "SELECT * FROM prompt_versions WHERE name = ? AND version = ?", (name, version)
            ).fetchone()
        if row is None:
            raise PromptNotFoundError(f"prompt {name!r} has no version {version}")
        return self._version(row)

    def versions(self, name: str) -> list[PromptVersion]:
        with self._db() as db:
            rows = db.execute(
                "SELECT * FROM prompt_versions WHERE name = ? ORDER BY version", (name,)
            ).fetchall()
        return [self._version(r) for r in rows]

    def names(self) -> list[str]:
        with self._db() as db:
            return [
                r[0] for r in db.execute("SELECT DISTINCT name FROM prompt_versions ORDER BY name")
            ]

    # Labels -----------------------------------------------------------------------------------
    @staticmethod
    def _label_version(db: sqlite3.Connection, name: str, label: str) -> int | None:
        row = db.execute(
            "SELECT to_version FROM prompt_label_events WHERE name = ? AND label = ? "
            "ORDER BY id DESC LIMIT 1",
            (name, label),
        ).fetchone()
        return row[0] if row else None

    def labels(self, name: str) -> dict[str, int]:
        """Each label of a prompt and the version it points at."""
        with self._db() as db:
            rows = db.execute(
                "SELECT label, to_version FROM prompt_label_events e WHERE name = ? AND id = "
                "(SELECT max(id) FROM prompt_label_events WHERE name = e.name AND label = e.label) ORDER BY label",
                (name,),
            ).fetchall()
        return dict(rows)

    def history(self, name: str, label: str | None = None) -> list[LabelEvent]:
        """Every recorded label move (who, when, why), oldest first."""
        query = (
            "SELECT * FROM prompt_label_events WHERE name = ?"
            + (" AND label = ?" if label else "")
            + " ORDER BY id"
        )
        with self._db() as db:
            rows = db.execute(query, (name, label) if label else (name,)).fetchall()
        return [LabelEvent(*row) for row in rows]

    def _record(
        self,
        db: sqlite3.Connection,
        name: str,
        label: str,
        action: str,
        from_version: int | None,
        to_version: int,
        actor: str | None,
        reason: str,
    ) -> LabelEvent:
        if not reason or not reason.strip():
            raise PromptError(f"{action} of prompt {name!r} label {label!r} needs a reason (why)")
        if not label or not label.replace("-", "_").isidentifier():
            raise PromptError(f"label {label!r} must be a word such as staging, live or canary")
        values = (
            name,
            label,
            action,
            from_version,
            to_version,
            actor or default_actor(),
            reason.strip(),
            _now(),
        )
        cursor = db.execute(
            "INSERT INTO prompt_label_events (name, label, action, from_version, to_version, actor, reason, at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            values,
        )
        with self._lock:
            self._memory.pop((name, label), None)
        return LabelEvent(int(cursor.lastrowid or 0), *values)

    def promote(
        self,
        name: str,
        version: int | None = None,
        *,
        label: str = "live",
        from_label: str | None = None,
        reason: str,
        actor: str | None = None,
        expect_version: int | None = None,
    ) -> LabelEvent | None:
        """Point `label` at `version` (or at the version `from_label` points at), recording who and why.
        `expect_version` makes it a compare-and-set: refused if the label has moved meanwhile.
        Returns None when the label already points there."""
        with self._db(write=True) as db:
            if version is None:
                if from_label is None:
                    raise PromptError("promote needs a version or a from_label")
                version = self._label_version(db, name, from_label)
                if version is None:
                    raise PromptNotFoundError(
                        f"prompt {name!r} has no label {from_label!r} to promote from"
                    )
            if (
                db.execute(
                    "SELECT 1 FROM prompt_versions WHERE name = ? AND version = ?", (name, version)
                ).fetchone()
                is None
            ):
                raise PromptNotFoundError(f"prompt {name!r} has no version {version}")
            current = self._label_version(db, name, label)
            if expect_version is not None and current != expect_version:
                raise PromptError(
                    f"prompt {name!r} label {label!r} is at v{current}, not v{expect_version}: "
                    "it moved meanwhile; nothing changed"
                )
            if current == version:
                return None
            event = self._record(db, name, label, "promote", current, version, actor, reason)
        return self._moved(event)

    def rollback(
        self,
        name: str,
        *,
        label: str = "live",
        to_version: int | None = None,
        reason: str,
        actor: str | None = None,
    ) -> LabelEvent:
        """Move `label` back to the version it pointed at before the current one (or to `to_version`,
        which must be one it pointed at earlier), recording who and why."""
        with self._db(write=True) as db:
            rows = db.execute(
                "SELECT to_version FROM prompt_label_events WHERE name = ? AND label = ? ORDER BY id",
                (name, label),
            ).fetchall()
            if not rows:
                raise PromptNotFoundError(f"prompt {name!r} has no label {label!r}")
            trail = [r[0] for r in rows]
            current = trail[-1]
            earlier = [v for v in trail[:-1] if v != current]
            if to_version is None:
                if not earlier:
                    raise PromptError(
                        f"prompt {name!r} label {label!r} has no earlier version to roll back to"
                    )
                to_version = earlier[-1]
            elif to_version not in earlier:
                raise PromptError(
                    f"prompt {name!r} label {label!r} never pointed at v{to_version} before; "
                    f"earlier versions: {sorted(set(earlier))}; use promote instead"
                )
            event = self._record(db, name, label, "rollback", current, to_version, actor, reason)
        self._moved(event)
        return event

    # Runtime retrieval -------------------------------------------------------------------------
    def get(self, name: str, label: str = "live", *, version: int | None = None) -> PromptVersion:
        """The version a label points at (or a given version), from a short-lived memory cache, the
        store, or — when the store cannot be read — the last-known-good copy."""
        if version is not None:
            return self.version(name, version)
        key = (name, label)
        cached = self._memory.get(key)
        if cached is not None and time.monotonic() - cached[0] < self.cache_ttl_s:
            return cached[1]
        try:
            with self._db() as db:
                found = self._label_version(db, name, label)
                row = (
                    None
                    if found is None
                    else db.execute(
                        "SELECT * FROM prompt_versions WHERE name = ? AND version = ?",
                        (name, found),
                    ).fetchone()
                )
        except (sqlite3.Error, OSError) as exc:
            return self._fallback(name, label, exc)
        if row is None:
            raise PromptNotFoundError(
                f"prompt {name!r} has no label {label!r}; labels: {self._safe_labels(name)}"
            )
        result = self._version(row, label=label)
        with self._lock:
            self._memory[key] = (time.monotonic(), result)
        self._save_last_known_good(result)
        return result

    def _safe_labels(self, name: str) -> dict[str, int]:
        try:
            return self.labels(name)
        except (sqlite3.Error, OSError):
            return {}

    def _lkg_path(self, name: str, label: str) -> Path:
        return self.cache_dir / f"{name}@{label}.json"

    def _save_last_known_good(self, version: PromptVersion) -> None:
        path = self._lkg_path(version.name, version.label or "")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(version.to_json(), ensure_ascii=False))
            os.replace(tmp, path)
        except OSError as exc:  # the cache is an aid; failing to write it must not fail the call
            log.warning("could not write last-known-good prompt %s: %s", path, exc)

    def _fallback(self, name: str, label: str, exc: Exception) -> PromptVersion:
        cached = self._memory.get((name, label))
        if cached is not None:
            log.warning(
                "prompt store %s unreadable (%s); serving cached %s@%s v%d",
                self.path,
                exc,
                name,
                label,
                cached[1].version,
            )
            return replace(cached[1], from_fallback=True)
        path = self._lkg_path(name, label)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            raise PromptStoreUnavailableError(
                f"prompt store {self.path} is unreadable ({type(exc).__name__}: {exc}) and there is no "
                f"last-known-good copy of {name}@{label}"
            ) from exc
        log.warning(
            "prompt store %s unreadable (%s); serving last-known-good %s@%s v%s",
            self.path,
            exc,
            name,
            label,
            data.get("version"),
        )
        return PromptVersion.from_json(data, from_fallback=True)

    # Reports ----------------------------------------------------------------------------------
    def diff(self, name: str, a: int, b: int) -> str:
        """A unified diff of two versions' messages and model configuration."""

        def lines(v: PromptVersion) -> list[str]:
            out = [
                f"# variables: {', '.join(v.variables)}",
                f"# model: {json.dumps(dict(v.template.model), sort_keys=True)}",
            ]
            for role, content in v.template.messages:
                out.append(f"[{role}]")
                out.extend(content.splitlines())
            return out

        first, second = self.version(name, a), self.version(name, b)
        return "\n".join(
            difflib.unified_diff(
                lines(first), lines(second), f"{name} v{a}", f"{name} v{b}", lineterm=""
            )
        )

    def versions_table(self) -> list[dict[str, Any]]:
        """One row per version with the labels pointing at it (for metadata and DuckDB)."""
        out = []
        for name in self.names():
            labels = self.labels(name)
            for v in self.versions(name):
                out.append(
                    {
                        "name": name,
                        "version": v.version,
                        "content_hash": v.content_hash[:12],
                        "labels": ",".join(
                            sorted(lab for lab, ver in labels.items() if ver == v.version)
                        ),
                        "endpoint": v.endpoint or "",
                        "created_at": v.created_at,
                        "created_by": v.created_by,
                        "description": v.template.description,
                    }
                )
        return out

    def events_table(self) -> list[dict[str, Any]]:
        return [e.__dict__ for name in self.names() for e in self.history(name)]


def sync_prompt_files(
    registry: PromptRegistry, directory: Path | str, *, actor: str = "catalog"
) -> list[dict[str, Any]]:
    """Register every `*.toml` prompt file under `directory` (in path order, so v1 before v2).
    New content becomes a new version; unchanged files are no-ops. A label a file declares is set
    only when the prompt does not have that label yet (later moves are promote/rollback)."""
    results = []
    for path in sorted(Path(directory).rglob("*.toml")):
        template = PromptTemplate.from_file(path)
        version, created = registry.register(template, actor=actor)
        labelled = []
        existing = registry.labels(template.name)
        for label in template.labels:
            if label not in existing:
                registry.promote(
                    template.name,
                    version.version,
                    label=label,
                    actor=actor,
                    reason=f"initial label declared in {path.name}",
                )
                labelled.append(label)
        results.append(
            {
                "name": template.name,
                "version": version.version,
                "created": created,
                "labels_set": labelled,
                "file": str(path),
            }
        )
    return results
