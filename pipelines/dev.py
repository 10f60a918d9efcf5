"""`make dev`: the Dagster webserver and daemon (`dg dev`) over the demo's instance, stopped within
10 seconds of Ctrl-C or SIGTERM.

`dg dev` shuts its webserver, daemon and code servers down on SIGINT or SIGTERM, but waits up to
a minute for each before killing it, and a loaded machine took 8–9 s for a clean stop. This
supervisor prepares MALLARD_HOME (and the instance's dagster.yaml), runs `dg dev` in a process
group of its own, hands it one interrupt, and kills whatever of the group still runs after
`GRACE_SECONDS`: nothing it started outlives it.

    python -m pipelines.dev --host 127.0.0.1 --port 3000   # arguments go to `dg dev`
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

GRACE_SECONDS = 7.0
"""How long `dg dev` has for a clean stop before its process group is killed (total ≤ 10 s)."""


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs (zombies waiting for a reaper do not count)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def _reap(proc: subprocess.Popen, deadline: float) -> None:
    """Wait for `dg dev` and its group until `deadline`: once it has exited, what of its group
    remains (its code servers) is asked to stop; at the deadline the group is killed."""
    pgid, asked = proc.pid, False
    while time.monotonic() < deadline:
        proc.poll()
        if proc.returncode is not None:
            if not _group_alive(pgid):
                return
            if not asked:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGTERM)
                asked = True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    proc.wait()


def main(argv: list[str] | None = None) -> int:
    from mallard.config import ConfigError, get_settings

    try:
        settings = get_settings().ensure_home()
    except ConfigError as exc:
        print(f"make dev: {exc}", file=sys.stderr)
        return 2
    os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home))
    dg = Path(sys.executable).with_name("dg")
    command = [str(dg), "dev", *(sys.argv[1:] if argv is None else argv)]
    proc = subprocess.Popen(command, process_group=0)
    stopping: list[float] = []

    def stop(signum: int, _frame: object) -> None:
        if stopping:  # a second Ctrl-C: no more waiting
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            return
        stopping.append(time.monotonic())
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGINT)  # dg dev stops its services on an interrupt

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while proc.poll() is None and not stopping:
        time.sleep(0.2)
    started = stopping[0] if stopping else time.monotonic()
    # dg dev is done or stopping: whatever of its group still runs gets the rest of the grace.
    _reap(proc, started + GRACE_SECONDS)
    return 0 if stopping else (proc.returncode or 0)


if __name__ == "__main__":
    raise SystemExit(main())
