"""Jobs that the recovery tests run in a real run worker process and kill with SIGKILL.

Each op writes what the test needs to `RECOVERY_MARKER` once it is well under way, then waits to be
killed. Loaded by file path (`ReconstructableJob.for_file`), in the test and in the run worker.
"""

from __future__ import annotations

import json
import os
import time

import dagster as dg


def _mark(**what: object) -> None:
    path = os.environ["RECOVERY_MARKER"]
    with open(f"{path}.tmp", "w") as handle:
        json.dump({"pid": os.getpid(), **what}, handle)
    os.replace(f"{path}.tmp", path)


@dg.op
def wait_to_be_killed() -> None:
    _mark()
    time.sleep(600)


@dg.job
def sleepy() -> None:
    wait_to_be_killed()
