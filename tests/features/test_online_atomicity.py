"""A full online load replaces a view atomically: a reader sees the old view or the new one.

A real subprocess runs the load and is killed with SIGKILL midway; the reader (this process)
checks every key before, during and after. The default run kills at one point (the load paused
half way through its rows); the slow run kills at random times during a larger load.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pytest

from mallard.features.offline import write_view_partition
from mallard.features.online import open_online_store
from mallard.features.online.materialize import materialize_view

UTC = dt.UTC
T0 = dt.datetime(2026, 12, 3, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")
FEATURES = ["spend", "visits"]

LOADER = r"""
import importlib, json, sys, time

args = json.loads(sys.argv[1])
from mallard.features.online import open_online_store
from mallard.features.online.materialize import materialize_view

store = open_online_store(args["kind"], **args["options"])
pause_at = args["pause_at"]
if pause_at is not None:
    # Stop half way through the rows the backend stores (the test kills us there).
    module = importlib.import_module(type(store).__module__)
    real = module.prepare_batch

    class Pausing(list):
        def _at(self, i):
            if i == pause_at:
                print("midway", flush=True)
                time.sleep(600)

        def __iter__(self):
            for i, item in enumerate(list.__iter__(self)):
                self._at(i)
                yield item

        def __getitem__(self, i):
            if isinstance(i, int):
                self._at(i)
            elif (i.start or 0) <= pause_at < (len(self) if i.stop is None else i.stop):
                self._at(pause_at)
            return list.__getitem__(self, i)

    def pausing(*a, **k):
        batch = real(*a, **k)
        batch.values[0] = Pausing(batch.values[0])
        return batch

    module.prepare_batch = pausing
print("loading", flush=True)
result = materialize_view(store, args["view"], args["path"], ["customer_id"], args["features"])
print("done", result.rows_read, flush=True)
"""


def rows(customers: range | list[int], spend: float) -> pa.Table:
    n = len(customers)
    return pa.table(
        {
            "customer_id": pa.array(list(customers), pa.int64()),
            "event_timestamp": pa.array([T0] * n, TS),
            "created_timestamp": pa.array([T0 + dt.timedelta(minutes=spend)] * n, TS),
            "spend": pa.array([spend] * n, pa.float64()),
            "visits": pa.array([int(spend)] * n, pa.int64()),
        }
    )


@pytest.fixture(params=["sqlite", "redis"])
def backend(request, tmp_path):
    if request.param == "sqlite":
        options = {"path": str(tmp_path / "online.sqlite")}
    else:
        options = {
            "url": request.getfixturevalue("redis_url"),
            "prefix": f"k{uuid.uuid4().hex[:8]}",
        }
    return request.param, options


def loader(kind: str, options: dict, path: Path, *, pause_at: int | None) -> subprocess.Popen:
    args = {
        "kind": kind,
        "options": options,
        "view": "profile",
        "path": str(path),
        "features": FEATURES,
        "pause_at": pause_at,
    }
    return subprocess.Popen(
        [sys.executable, "-c", LOADER, json.dumps(args)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_for(proc: subprocess.Popen, word: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip().startswith(word):
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"loader exited {proc.returncode} before {word!r}")
    raise AssertionError(f"loader did not print {word!r} in {timeout} s")


def snapshot(store, keys: list[int]) -> list[tuple]:
    got = store.read([{"customer_id": k} for k in keys], [("profile", FEATURES)])
    return list(zip(got.status["profile"], got.values["spend"], got.values["visits"], strict=True))


def expected(keys: list[int], present: set[int], spend: float) -> list[tuple]:
    return [
        ("present", spend, int(spend)) if k in present else ("missing", None, None) for k in keys
    ]


def test_a_full_load_killed_midway_leaves_the_old_view(backend, tmp_path) -> None:
    kind, options = backend
    n = 5_000
    path = tmp_path / "lake" / "profile"
    # The old view: customers 1..n+10 at spend 1. The new offline state: 1..n at spend 2
    # (n+1..n+10 removed), so the new view is not the old one plus updates.
    write_view_partition(path, rows(range(1, n + 11), 1.0), T0.date(), join_keys=["customer_id"])
    keys = list(range(1, n + 12))
    old = expected(keys, set(range(1, n + 11)), 1.0)
    new = expected(keys, set(range(1, n + 1)), 2.0)
    with open_online_store(kind, **options) as store:
        materialize_view(store, "profile", path, ["customer_id"], FEATURES)
        assert snapshot(store, keys) == old
        write_view_partition(path, rows(range(1, n + 1), 2.0), T0.date(), join_keys=["customer_id"])

        proc = loader(kind, options, path, pause_at=n // 2)
        try:
            wait_for(proc, "midway")
            assert snapshot(store, keys) == old  # during the load
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        assert snapshot(store, keys) == old  # after the kill
        assert store.views() == ["profile"]

        proc = loader(kind, options, path, pause_at=None)
        wait_for(proc, "done")
        assert proc.wait(timeout=60) == 0
        assert snapshot(store, keys) == new
    if kind == "redis":
        import redis

        client = redis.Redis.from_url(options["url"], decode_responses=True)
        data = [k for k in client.keys(f"{options['prefix']}:profile:*")]
        client.close()
        generations = {key.split(":")[2] for key in data}
        assert len(generations) == 1, f"keys of the killed load were left: {sorted(generations)}"
        assert len(data) == n


@pytest.mark.slow
def test_full_loads_killed_at_random_times_never_show_a_mix(backend, tmp_path) -> None:
    kind, options = backend
    n = 200_000
    path = tmp_path / "lake" / "profile"
    rng = random.Random(5)
    keys = sorted(rng.sample(range(1, n + 1), 500)) + [n + 1]
    write_view_partition(path, rows(range(1, n + 2), 0.0), T0.date(), join_keys=["customer_id"])
    with open_online_store(kind, **options) as store:
        materialize_view(store, "profile", path, ["customer_id"], FEATURES)
        current = expected(keys, set(range(1, n + 2)), 0.0)
        for round_no in range(1, 6):
            spend = float(round_no)
            present = set(range(1, n + 1 + round_no % 2))
            write_view_partition(
                path, rows(sorted(present), spend), T0.date(), join_keys=["customer_id"]
            )
            target = expected(keys, present, spend)
            proc = loader(kind, options, path, pause_at=None)
            wait_for(proc, "loading")
            deadline = time.monotonic() + rng.uniform(0.0, 4.0)
            while time.monotonic() < deadline and proc.poll() is None:
                assert snapshot(store, keys) in (current, target)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            seen = snapshot(store, keys)
            assert seen in (current, target)
            current = seen
