"""`make dev`: the Dagster webserver and daemon as the code location `mallard`, stopped within 10 s."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_the_code_location_is_mallard_wherever_the_clone_lives() -> None:
    """`dg dev` names the location from pyproject, the webserver from workspace.yaml, and the
    demo's runs and instigator states by LOCATION_NAME: all three agree, none is a directory."""
    from pipelines.launch import LOCATION_NAME, MODULE

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dg"]["project"]
    assert project["code_location_name"] == LOCATION_NAME == "mallard"
    assert project["code_location_target_module"] == MODULE
    (entry,) = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"]
    assert entry["python_module"]["location_name"] == LOCATION_NAME
    assert entry["python_module"]["module_name"] == MODULE


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _session_alive(sid: int) -> list[int]:
    """The live processes of a session (`make dev` puts `dg dev` in a process group of its own,
    but not in another session), zombies aside."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[3] == str(sid) and fields[0] not in ("Z", "X"):
            alive.append(int(stat.parent.name))
    return alive


def test_make_dev_stops_within_ten_seconds_of_sigterm(tmp_path: Path) -> None:
    """pipelines.dev (what `make dev` runs) serves the UI, and on SIGTERM it and every process
    it started (webserver, daemon, code servers) are gone within 10 s."""
    port = _free_port()
    home = tmp_path / "home"
    env = {
        **os.environ,
        "MALLARD_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.dev", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own session: the test finds (and cleans up) all of it
    )
    try:
        deadline = time.monotonic() + 120
        answered = False
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                answered = httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=5).is_success
            if answered:
                break
            time.sleep(0.5)
        assert answered, "the Dagster webserver never answered"
        assert (home / "dagster").is_dir()  # the instance's home was prepared
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        while _session_alive(proc.pid) and time.monotonic() - sent < 15:
            time.sleep(0.1)
        stopped = time.monotonic() - sent
        assert not _session_alive(proc.pid), "a process make dev started outlived it"
        assert stopped <= 10, f"stopped in {stopped:.1f} s"
        assert proc.returncode == 0
    finally:
        for pid in _session_alive(proc.pid):
            os.kill(pid, signal.SIGKILL)
