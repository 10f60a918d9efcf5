"""Shared fixtures: a temporary MALLARD_HOME and a small, fixed sample world."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from sample_dates import TEST_END_DATE, TEST_SCALE

DEMO_RUN = pytest.StashKey()


def pytest_configure(config: pytest.Config) -> None:
    # The daily partitions are fixed when assets/ is first imported: make the session's "today"
    # the test world's last day, whichever test imports the definitions first.
    os.environ["MALLARD_END_DATE"] = TEST_END_DATE.isoformat()


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items) -> None:
    """When tests that use the demo run are selected: start the demo now, in the background, and
    run those tests last, so the rest of the suite runs while it does (tests/demo_run.py)."""
    demo = [item for item in items if "demo_run" in getattr(item, "fixturenames", ())]
    if not demo or config.option.collectonly:
        return
    from demo_run import start_demo

    config.stash[DEMO_RUN] = start_demo()
    items[:] = [item for item in items if item not in demo] + demo


def pytest_unconfigure(config: pytest.Config) -> None:
    run = config.stash.get(DEMO_RUN, None)
    if run is not None:
        from demo_run import remove

        remove(run)


@pytest.fixture(scope="session")
def demo_run(request: pytest.FixtureRequest):
    """The background demo run (started at collection): `.wait()` gives its home."""
    run = request.config.stash.get(DEMO_RUN, None)
    if run is None:  # collected some other way: start it now
        from demo_run import start_demo

        run = request.config.stash[DEMO_RUN] = start_demo()
    return run


@pytest.fixture
def mallard_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh MALLARD_HOME (and DAGSTER_HOME inside it) for one test."""
    home = tmp_path / "mallard-home"
    monkeypatch.setenv("MALLARD_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.setenv("MALLARD_END_DATE", TEST_END_DATE.isoformat())
    monkeypatch.setenv("MALLARD_SAMPLE_SCALE", str(TEST_SCALE))
    monkeypatch.delenv("MALLARD_ENV", raising=False)
    return home


@pytest.fixture(scope="session")
def sample_world(tmp_path_factory: pytest.TempPathFactory):
    """The sample world at test size, generated once per session: (spec, directory, summary)."""
    from mallard.sample_world.generate import WorldSpec, generate_world

    spec = WorldSpec(end_date=TEST_END_DATE, customers=round(20_000 * TEST_SCALE))
    target = tmp_path_factory.mktemp("world") / "sample"
    summary = generate_world(spec, target)
    return spec, target, summary


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_dsn():
    """A real PostgreSQL server (Debian's package) on 127.0.0.1, started and stopped here."""
    import glob
    import os
    import shutil
    import subprocess
    import tempfile

    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not bins:
        pytest.fail("PostgreSQL is not installed: run `make services` (Debian package postgresql)")
    bin_dir = Path(bins[-1]).parent
    # Not under pytest's temp root: that is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="mallard-pg-"))
    root.chmod(0o755)
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    subprocess.run(
        [
            *as_user,
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [
            *as_user,
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(root / "log"),
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
    finally:
        subprocess.run(
            [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A throw-away redis-server (no persistence) on a free local port, stopped afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not installed: run `make services` (Debian package redis-server)"
        )
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(workdir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 15
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"redis-server did not start on port {port}: {output}")
            time.sleep(0.05)
    client.close()
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
