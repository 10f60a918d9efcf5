"""A MALLARD_HOME on a read-only disk (a restored backup, a shared snapshot) serves reads: the
`mallard` commands that only read work; writes fail with a message, not a traceback."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def read_only_home(mallard_home: Path, sample_world, tmp_path: Path):
    """A home with one loaded feature view and registered prompts, bind-mounted read-only."""
    from catalog.features import REGISTRY
    from mallard.config import load_settings
    from mallard.features.compute import compute_partition, open_sources
    from mallard.features.materialize import materialize_online
    from mallard.features.offline.store import write_view_partitions
    from mallard.features.online import open_online_store
    from mallard.features.versions import register_version
    from mallard.lake import connect
    from mallard.llm.prompts import PromptRegistry, sync_prompt_files

    _, world, _ = sample_world
    shutil.copytree(world, mallard_home / "sample")
    settings = load_settings().ensure_home()
    view = REGISTRY.views["usage_7d"]
    con = open_sources(view, settings, connect(settings=settings))
    day = dt.date(2026, 6, 29)
    version = register_version(settings, view)
    rows = compute_partition(view, settings, day, con)
    write_view_partitions(version.table_path, {day: rows}, join_keys=list(view.join_keys))
    customer = rows.column("customer_id")[0].as_py()
    with open_online_store("sqlite", path=str(settings.online_store_path)) as store:
        materialize_online(REGISTRY, settings, store, ["usage_7d"])
    sync_prompt_files(PromptRegistry.default(settings), ROOT / "catalog" / "prompts")
    mount = tmp_path / "read-only"
    mount.mkdir()
    for command in (
        ["mount", "--bind", str(mallard_home), str(mount)],
        ["mount", "-o", "remount,bind,ro", str(mount)],
    ):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            subprocess.run(["umount", str(mount)], capture_output=True)
            pytest.fail(f"a read-only bind mount needs root: {' '.join(command)}: {done.stderr}")
    try:
        yield mount, customer
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


def _mallard(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MALLARD_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_reads_work_on_a_read_only_home(read_only_home) -> None:
    read_only_home, customer = read_only_home
    assert not os.access(read_only_home, os.W_OK)
    online = _mallard(
        read_only_home,
        "features",
        "online",
        "--key",
        f"customer_id={customer}",
        "--features",
        "usage_7d:minutes_7d",
        "--at",
        "2026-06-30T00:00",
    )
    assert online.returncode == 0, online.stderr[-2000:]
    assert '"_status": {"usage_7d": "present"}' in online.stdout
    for command in (("features", "list"), ("prompts", "list"), ("alerts", "list")):
        done = _mallard(read_only_home, *command)
        assert done.returncode == 0, f"{command}: {done.stderr[-2000:]}"
    assert "support_assistant" in _mallard(read_only_home, "prompts", "list").stdout


def test_a_write_to_a_read_only_online_store_says_why(read_only_home) -> None:
    from mallard.features.online import OnlineStoreError, open_online_store

    read_only_home, _ = read_only_home
    with (
        open_online_store(
            "sqlite", path=str(read_only_home / "online" / "online_store.sqlite")
        ) as store,
        pytest.raises(OnlineStoreError, match="read-only disk"),
    ):
        store.delete_view("usage_7d")
