"""The demo run tests/test_demo.py asserts on, started in the background as soon as those tests are
collected (tests/conftest.py), so that its subprocess runs beside the rest of the suite instead of
after it: the suite's wall time is about the larger of the two, not their sum, on 2 cores.

The demo runs in its own process on a temporary MALLARD_HOME (a 1,000-customer world, the LLM
half on 6 items per step); `wait()` gives its home once it has finished, or fails the test that
asked with the demo's output.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO_END = "2026-06-30"  # the demo world's last day
TIMEOUT_S = 1500


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class DemoRun:
    home: Path
    process: subprocess.Popen
    started: float

    @property
    def stdout(self) -> Path:
        return self.home.parent / "demo-stdout.txt"

    @property
    def stderr(self) -> Path:
        return self.home.parent / "demo-stderr.txt"

    def wait(self) -> Path:
        """The demo's home once it has finished successfully (AssertionError otherwise)."""
        remaining = max(1.0, TIMEOUT_S - (time.monotonic() - self.started))
        try:
            code = self.process.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"the demo did not finish within {TIMEOUT_S} s") from None
        out = self.stdout.read_text(errors="replace")
        err = self.stderr.read_text(errors="replace")
        assert code == 0, out[-4000:] + err[-4000:]
        assert "Mallard demo — done" in out
        assert "run time" in out
        return self.home

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def start_demo() -> DemoRun:
    """Start `python -m pipelines.demo` on a fresh temporary home (not waited for)."""
    root = Path(tempfile.mkdtemp(prefix="mallard-test-demo-"))
    home = root / "home"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MALLARD_")},
        "MALLARD_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "MALLARD_END_DATE": DEMO_END,
        "MALLARD_SAMPLE_SCALE": "0.05",
        # The reports server's port, baked into the plots' and reports' URLs (default 8000).
        "MALLARD_SERVE_PORT": str(_free_port()),
    }
    with (root / "demo-stdout.txt").open("w") as out, (root / "demo-stderr.txt").open("w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.demo", "--llm-items", "6"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=err,
            text=True,
            start_new_session=True,
        )
    return DemoRun(home, process, time.monotonic())


def remove(run: DemoRun) -> None:
    run.stop()
    shutil.rmtree(run.home.parent, ignore_errors=True)
