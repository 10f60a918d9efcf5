"""Helpers of the API tests: real uvicorn servers on 127.0.0.1 (started and stopped by the tests),
their environment, auth headers and a Prometheus text reader."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLARD_")}
    env.update(
        {
            "MALLARD_HOME": str(home),
            "DAGSTER_HOME": str(home / "dagster"),
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
    )
    if os.environ.get("MALLARD_END_DATE"):
        env["MALLARD_END_DATE"] = os.environ["MALLARD_END_DATE"]
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


@dataclass
class Server:
    """A server process and where it answers; its stdout (JSON log lines) goes to `log`."""

    process: subprocess.Popen
    url: str
    log: Path

    def wait(self, path: str = "/readyz", timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited ({self.process.returncode}):\n{self.tail()}")
            try:
                response = httpx.get(self.url + path, timeout=5)
                if response.status_code == 200:
                    return
                last = response.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise RuntimeError(f"{self.url}{path} not ready after {timeout} s: {last}\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start(command: list[str], env: dict[str, str], port: int, log: Path) -> Server:
    handle = log.open("w")
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )
    handle.close()
    return Server(process, f"http://127.0.0.1:{port}", log)


SERVER_SETTINGS = {
    # The fuzzer and the matrix come from one address: per-address limits are tested on the
    # two-worker server instead.
    "MALLARD_RATE_LIMIT_ADDRESS_PER_S": "100000",
    "MALLARD_RATE_LIMIT_ADDRESS_BURST": "100000",
    "MALLARD_RATE_LIMIT_KEY_PER_S": "1000",
    "MALLARD_RATE_LIMIT_KEY_BURST": "1000",
    "MALLARD_PREDICTION_LOG_FLUSH_S": "0.3",
    "MALLARD_SERVE_MAX_BODY_BYTES": "262144",
}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def metric_samples(text: str):
    """A lookup over Prometheus text: `found(name, **labels)` sums the matching samples (None
    when there is none)."""
    from prometheus_client.parser import text_string_to_metric_families

    samples = [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]

    def found(name: str, **labels: str) -> float | None:
        values = [
            value
            for sample_name, sample_labels, value in samples
            if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items())
        ]
        return sum(values) if values else None

    return found
