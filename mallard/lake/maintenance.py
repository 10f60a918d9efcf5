"""Keeping the lake's Delta tables small: every table vacuumed, the append-only logs compacted.

The tables are found under the lake root (every folder holding a `_delta_log`), not listed, so a
new owner's table is maintained without a line here; a `MaintenancePolicy` (declared in
catalog/maintenance.py) says per top-level folder what else applies.

Vacuum removes the data files that no version within the retention reads: files that replaced
versions dropped more than the retention ago, and files no commit references at all (a write
killed before its commit, a commit that lost a race) once they are older than the retention and
than `in_flight`, since a younger unreferenced file may belong to a write still under way. It
deletes exactly what deltalake's vacuum lists (as a dry run) and writes no commit: deltalake's
vacuum would add two (VACUUM START and END), moving the table's version, and owners give the
version meaning — the offline store keys its latest projection to the main table's version,
and a training set's or an eval dataset's latest commit carries its metadata.

Compaction (deltalake's `optimize.compact`) rewrites many small files into few, as a new
version; only the tables declared append-only logs, whose readers never look at versions, get
it. The files it replaces stay (and older versions stay readable) until a vacuum after the
retention.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

DELTA_LOG = "_delta_log"
DEFAULT_RETENTION = dt.timedelta(days=7)
# Dagster fails a run after 6 h (max_runtime_seconds in dagster.yaml): no write takes longer.
DEFAULT_IN_FLIGHT = dt.timedelta(hours=6)


@dataclass(frozen=True)
class MaintenancePolicy:
    """How the lake's tables are kept, by the top-level lake folder they live in."""

    # How long a replaced version stays readable (time travel), and how old an unreferenced
    # file must be before it is taken for debris rather than a write in flight.
    retention: dt.timedelta = DEFAULT_RETENTION
    # An unreferenced file younger than this may be a write still in flight: it stays, whatever
    # the retention.
    in_flight: dt.timedelta = DEFAULT_IN_FLIGHT
    # Folders of append-only logs (one table each, or tables below): compacted.
    compact: tuple[str, ...] = ()
    # Folders whose every version must stay readable: only unreferenced files are removed.
    keep_every_version: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.retention < dt.timedelta(0) or self.in_flight < dt.timedelta(0):
            raise ValueError(f"retention and in_flight must not be negative: {self}")

    def folder(self, table: Path, root: Path) -> str:
        return table.relative_to(root).parts[0]


@dataclass(frozen=True)
class TableReport:
    """What maintaining one table found and did."""

    table: str  # its path under the lake root
    version: int
    files_before: int  # data files on disk
    referenced: int  # data files the current version reads
    removed: int
    removed_bytes: int
    compacted: int = 0  # small files rewritten (they stay until a later vacuum)
    compacted_into: int = 0
    files_after: int = 0
    note: str = ""
    error: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class LakeReport:
    """Every table's report, and the totals."""

    root: str
    retention: dt.timedelta
    dry_run: bool
    tables: list[TableReport] = field(default_factory=list)

    @property
    def removed(self) -> int:
        return sum(t.removed for t in self.tables)

    @property
    def removed_bytes(self) -> int:
        return sum(t.removed_bytes for t in self.tables)

    @property
    def errors(self) -> list[TableReport]:
        return [t for t in self.tables if t.error]


def find_tables(root: str | os.PathLike[str]) -> list[Path]:
    """Every Delta table under `root` (a folder holding `_delta_log`), sorted; none inside another."""
    base = Path(root)
    found: list[Path] = []
    if not base.is_dir():
        return found
    for folder, subfolders, _files in os.walk(base):
        if DELTA_LOG in subfolders:
            found.append(Path(folder))
            subfolders[:] = []  # a table's own folders are partitions, not tables
        else:
            subfolders[:] = sorted(s for s in subfolders if not s.startswith("."))
    return sorted(found)


def data_files(table: str | os.PathLike[str]) -> Iterator[Path]:
    """The data files on disk of a table (everything but its log)."""
    base = Path(table)
    for folder, subfolders, files in os.walk(base):
        if Path(folder) == base:
            subfolders[:] = [s for s in subfolders if s != DELTA_LOG]
        for name in files:
            if name.endswith(".parquet"):
                yield Path(folder) / name


def _on_disk(table: Path, relative: str) -> Path:
    # deltalake lists object-store paths, which percent-encode some characters of partition values.
    path = table / relative
    return path if path.exists() else table / unquote(relative)


def maintain_table(
    table: str | os.PathLike[str],
    *,
    retention: dt.timedelta = DEFAULT_RETENTION,
    in_flight: dt.timedelta = DEFAULT_IN_FLIGHT,
    compact: bool = False,
    keep_every_version: bool = False,
    dry_run: bool = False,
    root: str | os.PathLike[str] | None = None,
) -> TableReport:
    """Vacuum one table (without a commit) and, if `compact`, compact it; see the module doc."""
    from deltalake import DeltaTable
    from deltalake.exceptions import CommitFailedError

    started = time.perf_counter()
    path = Path(table)
    name = str(path.relative_to(root)) if root is not None else str(path)
    delta = DeltaTable(str(path))
    version = delta.version()
    before = list(data_files(path))
    referenced = len(delta.file_uris())
    keep = [int(h["version"]) for h in delta.history()] if keep_every_version else None

    def expired(older_than: dt.timedelta, *, full: bool) -> set[str]:
        return set(
            delta.vacuum(
                retention_hours=math.ceil(older_than.total_seconds() / 3600),
                dry_run=True,
                full=full,
                enforce_retention_duration=False,
                keep_versions=keep,
            )
        )

    # Files of replaced versions by the retention; files no commit references (`full`) only
    # once older than a write may take, whatever the retention.
    doomed = expired(retention, full=False) | expired(max(retention, in_flight), full=True)
    removed = removed_bytes = 0
    for relative in sorted(doomed):
        file = _on_disk(path, relative)
        try:
            size = file.stat().st_size
            if not dry_run:
                file.unlink()
        except FileNotFoundError:  # another vacuum was quicker
            continue
        removed += 1
        removed_bytes += size
    compacted = compacted_into = 0
    note = ""
    if compact and not dry_run:
        try:
            metrics = DeltaTable(str(path)).optimize.compact()
        except CommitFailedError as exc:
            note = f"compaction skipped, a writer committed first ({exc}); the next run retries"
        else:
            compacted = int(metrics.get("numFilesRemoved", 0))
            compacted_into = int(metrics.get("numFilesAdded", 0))
    return TableReport(
        table=name,
        version=version,
        files_before=len(before),
        referenced=referenced,
        removed=removed,
        removed_bytes=removed_bytes,
        compacted=compacted,
        compacted_into=compacted_into,
        files_after=len(before) - (0 if dry_run else removed) + compacted_into,
        note=note,
        seconds=time.perf_counter() - started,
    )


def maintain_lake(
    root: str | os.PathLike[str],
    policy: MaintenancePolicy,
    *,
    retention: dt.timedelta | None = None,
    dry_run: bool = False,
    log: Callable[[str], None] | None = None,
) -> LakeReport:
    """Maintain every table under `root` by `policy` (`retention` overrides the policy's).

    A table that fails (unreadable log, a disk error) is reported and the others go on.
    """
    base = Path(root)
    keep = policy.retention if retention is None else retention
    if keep < dt.timedelta(0):
        raise ValueError(f"retention must not be negative, got {keep}")
    report = LakeReport(str(base), keep, dry_run)
    for table in find_tables(base):
        folder = policy.folder(table, base)
        try:
            result = maintain_table(
                table,
                retention=keep,
                in_flight=policy.in_flight,
                compact=folder in policy.compact,
                keep_every_version=folder in policy.keep_every_version,
                dry_run=dry_run,
                root=base,
            )
        except Exception as exc:  # one broken table must not stop the others' maintenance
            result = TableReport(
                str(table.relative_to(base)), -1, 0, 0, 0, 0, error=f"{type(exc).__name__}: {exc}"
            )
        report.tables.append(result)
        if log is not None:
            log(_describe(result, dry_run))
    return report


def _describe(t: TableReport, dry_run: bool) -> str:
    if t.error:
        return f"{t.table}: not maintained — {t.error}"
    verb = "would remove" if dry_run else "removed"
    text = (
        f"{t.table} v{t.version}: {t.files_before} data files, {t.referenced} in the current "
        f"version; {verb} {t.removed} ({t.removed_bytes / 1e6:.1f} MB)"
    )
    if t.compacted:
        text += f"; compacted {t.compacted} files into {t.compacted_into}"
    return text + (f"; {t.note}" if t.note else "")
