"""Trace ingestion: Mallard's OTLP route against Arize Phoenix's and a bare append-to-file ceiling.

    python benchmarks/traces_ingest.py                   # 1,000 spans/s in batches of 100 for 60 s
    python benchmarks/traces_ingest.py --seconds 10 --skip-max --skip-phoenix   # a quick look

Side by side in one run, each server alone on the machine in its turn, one uvicorn worker each,
all on 127.0.0.1:

- mallard: `mallard serve`'s app (cli.serve.build_app, no model served) with its default trace
  buffer (flush every 2 s or 5,000 spans, full at 100,000): API key, rate limits, the OTLP
  mapping, each batch fsynced to the write-ahead log before the 200, one Delta commit per flush,
  each (trace_id, span_id) stored once. `mallard-no-dedupe`: the same without the duplicate
  lookup at flush, to show what idempotency costs.
- phoenix: `arize-phoenix` from PyPI (pinned below) on its SQLite default, in its own venv under
  MALLARD_HOME/bench/phoenix-venv (python -m venv + pip, built here on first use), OTLP/HTTP at
  /v1/traces. Phoenix answers once the spans are queued in memory and inserts them later: its
  200 is not durable, which is why its losses are counted after it has drained.
- ceiling: a bare ASGI app on the same uvicorn that appends each body (length-prefixed) to a
  file and fsyncs it, then answers 200: what an HTTP server that only makes the bytes durable
  costs.

The payload: traces of an instrumented RAG application, 4 spans each (the request as an
OpenInference chain, a retrieval with 3 documents, a GenAI chat call with its messages and
tokens, a tool call), 25 traces (100 spans, ~60 KB) per OTLP protobuf batch; every batch is new
(fresh ids), so nothing is deduplicated away. The load is open-loop: batch i leaves at
t0 + i / rate whatever the answers (latency counted from then: no coordinated omission), on at
most 64 keep-alive connections. Acknowledged: a 2xx. Lost: acknowledged spans whose span id is
not in the server's store once it has drained (Mallard: the Delta table; Phoenix: its SQLite
`spans` table; the ceiling: its file). The max run steps the rate up (×1.5) while p99 stays
under 500 ms with no error and ≥ 97 % sent on time. Bounded: at most `--seconds` per fixed run,
12 steps of 6 s per max run, everything to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (str(ROOT), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

PHOENIX_REQUIREMENTS = HERE / "phoenix" / "requirements.txt"
OTLP_MALLARD = "/v1/otlp/v1/traces"
OTLP_PHOENIX = "/v1/traces"
P99_LIMIT_MS = 500.0
MAX_STEPS = 12


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the payload -------------------------------------------------------------------------------------
QUESTION = "How do I change my plan from Standard to Premium without losing my watch history?"
SYSTEM = (
    "You are Pondstream's support assistant. Answer only from the help-centre articles given; "
    "say so when they do not cover the question. Be brief and name the steps."
)
DOCUMENT = (
    "Changing your plan: open Account, choose Plan, pick the new plan and confirm. The change "
    "takes effect at once; you pay the difference for the rest of the billing period. Your "
    "profiles, watch history and downloads stay as they are."
)
ANSWER = (
    "Open Account → Plan, choose Premium and confirm. It applies at once and you pay the "
    "difference for the rest of this billing period; your watch history and profiles stay."
)


def batch(seed: int, traces: int = 25) -> tuple[bytes, list[str]]:
    """One OTLP protobuf batch of `traces` × 4 spans with fresh ids, and its span ids (hex)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from mallard.traces.replay import set_attributes

    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    set_attributes(
        resource_spans.resource,
        {
            "service.name": "support-app",
            "telemetry.sdk.name": "opentelemetry",
            "deployment.environment": "bench",
        },
    )
    scope = resource_spans.scope_spans.add()
    scope.scope.name = "support-app"
    now = time.time_ns()
    ids: list[str] = []
    for t in range(traces):
        trace_id = os.urandom(16)
        root_id, retrieval_id, llm_id, tool_id = (os.urandom(8) for _ in range(4))
        start = now - 2_000_000_000 + t * 1_000_000
        specs: list[tuple[bytes, bytes, str, int, int, dict[str, Any]]] = [
            (
                root_id,
                b"",
                "POST /ask",
                start,
                start + 1_400_000_000,
                {
                    "openinference.span.kind": "CHAIN",
                    "input.value": QUESTION,
                    "output.value": ANSWER,
                    "user.id": f"cust-{(seed * traces + t) % 20000}",
                    "session.id": f"s-{seed}",
                },
            ),
            (
                retrieval_id,
                root_id,
                "retrieve",
                start + 5_000_000,
                start + 45_000_000,
                {
                    "openinference.span.kind": "RETRIEVER",
                    "input.value": QUESTION,
                    **{
                        f"retrieval.documents.{i}.document.{k}": v
                        for i in range(3)
                        for k, v in (
                            ("id", f"kb-{(seed + i) % 97}"),
                            ("content", DOCUMENT),
                            ("score", 0.9 - i / 10),
                        )
                    },
                },
            ),
            (
                llm_id,
                root_id,
                "chat gpt-4o-mini",
                start + 50_000_000,
                start + 1_350_000_000,
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                    "gen_ai.usage.input_tokens": 412,
                    "gen_ai.usage.output_tokens": 58,
                    "gen_ai.response.finish_reasons": ["stop"],
                    "gen_ai.input.messages": json.dumps(
                        [
                            {"role": "system", "parts": [{"type": "text", "content": SYSTEM}]},
                            {"role": "user", "parts": [{"type": "text", "content": QUESTION}]},
                        ]
                    ),
                    "gen_ai.output.messages": json.dumps(
                        [
                            {
                                "role": "assistant",
                                "parts": [{"type": "text", "content": ANSWER}],
                                "finish_reason": "stop",
                            }
                        ]
                    ),
                },
            ),
            (
                tool_id,
                root_id,
                "format_answer",
                start + 1_355_000_000,
                start + 1_360_000_000,
                {
                    "openinference.span.kind": "TOOL",
                    "tool.name": "format_answer",
                    "input.value": ANSWER,
                },
            ),
        ]
        for span_id, parent, name, begin, end, attributes in specs:
            span = scope.spans.add()
            span.trace_id, span.span_id, span.name = trace_id, span_id, name
            if parent:
                span.parent_span_id = parent
            span.start_time_unix_nano, span.end_time_unix_nano = begin, end
            span.kind = 3 if name.startswith("chat") else 1
            set_attributes(span, attributes)
            ids.append(span_id.hex())
    return request.SerializeToString(), ids


# -- the load ------------------------------------------------------------------------------------------
@dataclass
class Run:
    name: str
    rate_spans: float
    seconds: float
    batches: int
    spans_per_batch: int
    elapsed: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    acknowledged: list[str] = field(default_factory=list)
    late: int = 0
    stored: int | None = None
    lost: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("inf")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, max(0, int(q / 100 * len(ordered) + 0.999999) - 1))]

    @property
    def errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if not s.startswith("2"))

    @property
    def sustained(self) -> float:
        return len(self.acknowledged) / self.elapsed if self.elapsed else 0.0

    def holds(self) -> bool:
        return (
            self.errors == 0
            and self.late <= max(3, 0.03 * self.batches)
            and self.percentile(99) < P99_LIMIT_MS
        )

    def summary(self) -> dict[str, Any]:
        return {
            "server": self.name,
            "offered_spans_per_s": round(self.rate_spans, 1),
            "seconds": self.seconds,
            "batches": self.batches,
            "acknowledged_spans": len(self.acknowledged),
            "sustained_spans_per_s": round(self.sustained, 1),
            "p50_ms": round(self.percentile(50), 2),
            "p99_ms": round(self.percentile(99), 2),
            "max_ms": round(max(self.latencies_ms), 2) if self.latencies_ms else None,
            "statuses": self.statuses,
            "late_starts": self.late,
            "stored": self.stored,
            "lost": self.lost,
            **self.extra,
        }


async def open_loop(
    name: str,
    url: str,
    path: str,
    headers: dict[str, str],
    payloads: list[tuple[bytes, list[str]]],
    rate_batches: float,
    *,
    max_in_flight: int = 64,
    timeout_s: float = 15.0,
) -> Run:
    """Batch i leaves at t0 + i / rate_batches on a bounded pool of keep-alive connections."""
    from http_load import RawPool, Request, check_local, raw_request

    check_local(url)
    run = Run(
        name,
        rate_batches * len(payloads[0][1]),
        len(payloads) / rate_batches,
        len(payloads),
        len(payloads[0][1]),
    )
    wire = [raw_request(url, Request("POST", path, body, headers)) for body, _ in payloads]
    pool = RawPool(url, max_in_flight)
    done_at: list[float] = []

    async def send(index: int, due: float) -> None:
        try:
            connection = await pool.take()
        except OSError as exc:
            key = f"connect {type(exc).__name__}"
            run.statuses[key] = run.statuses.get(key, 0) + 1
            return
        if connection is None:
            run.statuses["no connection free"] = run.statuses.get("no connection free", 0) + 1
            return
        if time.perf_counter() - due > 0.005:
            run.late += 1
        try:
            status = await asyncio.wait_for(connection.exchange(wire[index]), timeout_s)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            pool.drop(connection)
            key = type(exc).__name__
            run.statuses[key] = run.statuses.get(key, 0) + 1
            return
        pool.give(connection)
        run.statuses[str(status)] = run.statuses.get(str(status), 0) + 1
        if 200 <= status < 300:
            run.latencies_ms.append((time.perf_counter() - due) * 1000)
            run.acknowledged.extend(payloads[index][1])
            done_at.append(time.perf_counter())

    tasks = []
    start = time.perf_counter() + 0.05
    for index in range(len(payloads)):
        due = start + index / rate_batches
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(send(index, due)))
    await asyncio.wait(tasks, timeout=timeout_s + 5)
    pool.close()
    run.elapsed = (max(done_at) if done_at else time.perf_counter()) - start
    return run


def payloads(count: int, seed: int, spans: int) -> list[tuple[bytes, list[str]]]:
    return [batch(seed * 1_000_000 + i, spans // 4) for i in range(count)]


# -- the servers ---------------------------------------------------------------------------------------
@dataclass
class Server:
    name: str
    process: subprocess.Popen
    url: str
    path: str
    headers: dict[str, str]
    log_path: Path

    def wait(self, probe: str, timeout: float = 180.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + probe, timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise RuntimeError(
            f"{self.name} not up after {timeout} s:\n{self.log_path.read_text()[-3000:]}"
        )

    def stop(self, timeout: float = 60.0) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _spawn(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    handle = log_path.open("w")
    try:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        handle.close()


def mallard_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLARD_")}
    env.update(
        {
            "MALLARD_HOME": str(home),
            "DAGSTER_HOME": str(home / "dagster"),
            "MALLARD_SERVE_MODELS": "",
            "MALLARD_RATE_LIMIT_KEY_PER_S": "100000",
            "MALLARD_RATE_LIMIT_KEY_BURST": "100000",
            "MALLARD_RATE_LIMIT_ADDRESS_PER_S": "100000",
            "MALLARD_RATE_LIMIT_ADDRESS_BURST": "100000",
            "MALLARD_SERVE_MAX_BODY_BYTES": str(4 * 1024 * 1024),
        }
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def start_mallard(workdir: Path, name: str, dedupe: bool) -> Server:
    from mallard.config import load_settings
    from mallard.serving.state import open_server_state

    home = workdir / name
    shutil.rmtree(home, ignore_errors=True)
    settings = load_settings(home=home)
    settings.ensure_home()
    state = open_server_state(settings)
    try:
        key = state.create_key("bench-app", "developer", scope="ingest").key
        viewer = state.create_key("bench-viewer", "viewer").key
    finally:
        state.close()
    port = free_port()
    command = [sys.executable, __file__, "--worker", "mallard", "--port", str(port)]
    if not dedupe:
        command.append("--no-dedupe")
    process = _spawn(command, mallard_env(home), workdir / f"{name}.log")
    server = Server(
        name,
        process,
        f"http://127.0.0.1:{port}",
        OTLP_MALLARD,
        {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {key}"},
        workdir / f"{name}.log",
    )
    server.wait("/readyz")
    server.headers_viewer = {"Authorization": f"Bearer {viewer}"}  # type: ignore[attr-defined]
    server.home = home  # type: ignore[attr-defined]
    return server


def mallard_worker(port: int, dedupe: bool) -> None:
    """`mallard serve`'s app, its trace buffer as the resource builds it (dedupe switchable)."""
    import uvicorn

    from cli.serve import build_app
    from mallard.serving.logs import log_config

    app = build_app(models=[])
    buffer = app.state.services.clients.traces
    buffer.sink.dedupe = dedupe
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_config=log_config("info"),
        access_log=False,
        server_header=False,
    )


def mallard_count(server: Server, wanted: set[str]) -> int:
    """How many of `wanted` span ids the traces table holds."""
    from deltalake import DeltaTable

    table_path = server.home / "lake" / "traces"  # type: ignore[attr-defined]
    if not DeltaTable.is_deltatable(str(table_path)):
        return 0
    table = DeltaTable(str(table_path)).to_pyarrow_table(columns=["span_id"])
    return len(wanted & set(table.column("span_id").to_pylist()))


def mallard_figures(server: Server) -> dict[str, Any]:
    """The flush figures from /metrics, and the Delta commits."""
    import httpx
    from deltalake import DeltaTable

    figures: dict[str, Any] = {}
    text = httpx.get(server.url + "/metrics", headers=server.headers_viewer, timeout=10).text  # type: ignore[attr-defined]
    wanted = (
        "mallard_trace_flush_seconds_total",
        "mallard_trace_flushes_total",
        "mallard_trace_spans_stored_total",
        "mallard_trace_duplicate_spans_total",
        "mallard_trace_batches_refused_total",
    )
    for line in text.splitlines():
        if line.startswith(wanted):
            name, _, value = line.rpartition(" ")
            figures[name] = float(value)
    table_path = server.home / "lake" / "traces"  # type: ignore[attr-defined]
    if DeltaTable.is_deltatable(str(table_path)):
        figures["delta_commits"] = DeltaTable(str(table_path)).version() + 1
    return figures


def ensure_phoenix_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    stamp = venv / ".requirements"
    wanted = PHOENIX_REQUIREMENTS.read_text()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    log(
        f"building the Phoenix venv at {venv} (python -m venv + pip install -r {PHOENIX_REQUIREMENTS.name})"
    )
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-r", str(PHOENIX_REQUIREMENTS)], check=True
    )
    stamp.write_text(wanted)
    return python


def start_phoenix(workdir: Path, python: Path) -> Server:
    home = workdir / "phoenix-home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    port, grpc = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PHOENIX_", "MALLARD_"))},
        "PHOENIX_WORKING_DIR": str(home),
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(grpc),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_TELEMETRY_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    process = _spawn([str(python.parent / "phoenix"), "serve"], env, workdir / "phoenix.log")
    server = Server(
        "phoenix",
        process,
        f"http://127.0.0.1:{port}",
        OTLP_PHOENIX,
        {"Content-Type": "application/x-protobuf"},
        workdir / "phoenix.log",
    )
    server.wait("/healthz")
    server.home = home  # type: ignore[attr-defined]
    return server


def phoenix_count(server: Server, wanted: set[str]) -> int:
    """How many of `wanted` span ids Phoenix's SQLite `spans` table holds."""
    database = server.home / "phoenix.db"  # type: ignore[attr-defined]
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as con:
        ids = {row[0] for row in con.execute("SELECT span_id FROM spans")}
    return len(wanted & ids)


def ceiling_worker(port: int, path: str, fsync: bool) -> None:
    """The ceiling: an ASGI app that appends each body, length-prefixed, to one file (fsynced),
    then answers 200 with an empty ExportTraceServiceResponse."""
    import threading

    import uvicorn

    handle = open(path, "ab", buffering=0)  # noqa: SIM115 - open for the server's life
    lock = threading.Lock()

    def append(body: bytes) -> None:
        with lock:
            handle.write(struct.pack(">I", len(body)) + body)
            if fsync:
                os.fdatasync(handle.fileno())

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["path"] == "/healthz":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"2")],
                }
            )
            await send({"type": "http.response.body", "body": b"ok"})
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        import anyio

        await anyio.to_thread.run_sync(append, b"".join(chunks))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/x-protobuf"),
                    (b"content-length", b"0"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    uvicorn.run(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, server_header=False
    )


def start_ceiling(workdir: Path, fsync: bool) -> Server:
    target = workdir / "ceiling.bin"
    target.unlink(missing_ok=True)
    port = free_port()
    command = [
        sys.executable,
        __file__,
        "--worker",
        "ceiling",
        "--port",
        str(port),
        "--out",
        str(target),
    ]
    if not fsync:
        command.append("--no-fsync")
    name = "ceiling" if fsync else "ceiling-no-fsync"
    process = _spawn(command, {**os.environ}, workdir / f"{name}.log")
    server = Server(
        name,
        process,
        f"http://127.0.0.1:{port}",
        OTLP_MALLARD,
        {"Content-Type": "application/x-protobuf"},
        workdir / f"{name}.log",
    )
    server.wait("/healthz")
    server.home = target  # type: ignore[attr-defined]
    return server


def ceiling_count(server: Server, wanted: set[str]) -> int:
    """How many of `wanted` span ids the ceiling's file holds."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    data = Path(server.home).read_bytes()  # type: ignore[attr-defined]
    ids: set[str] = set()
    offset = 0
    while offset + 4 <= len(data):
        (size,) = struct.unpack(">I", data[offset : offset + 4])
        request = ExportTraceServiceRequest.FromString(data[offset + 4 : offset + 4 + size])
        offset += 4 + size
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                ids.update(span.span_id.hex() for span in scope_spans.spans)
    return len(wanted & ids)


# -- one server's runs ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Kind:
    """How to start one kind of server, count what it stored, and read its own figures."""

    start: Any
    count: Any
    figures: Any = None
    max_run: bool = True
    drain_s: float = 30.0


def _fixed(server: Server, kind: Kind, args: argparse.Namespace, seed: int) -> Run:
    from http_load import run as run_loop

    batches_per_s = args.rate / args.batch
    count = int(batches_per_s * args.seconds)
    log(f"  {server.name}: {count} batches of {args.batch} spans at {args.rate:g} spans/s")
    run = run_loop(
        open_loop(
            server.name,
            server.url,
            server.path,
            server.headers,
            payloads(count, seed, args.batch),
            batches_per_s,
        )
    )
    wanted = set(run.acknowledged)
    ended = time.monotonic()
    deadline = ended + kind.drain_s
    found = kind.count(server, wanted)
    while found < len(wanted) and time.monotonic() < deadline:
        time.sleep(0.5)
        found = kind.count(server, wanted)
    run.extra["stored_while_running"] = found
    run.extra["drained_after_s"] = (
        round(time.monotonic() - ended, 1) if found == len(wanted) else None
    )
    if kind.figures is not None:
        run.extra.update(kind.figures(server))
    server.stop()  # a graceful stop: what the server still holds is written, or lost
    run.stored = kind.count(server, wanted)
    run.lost = len(wanted) - run.stored
    log(
        f"    sustained {run.sustained:,.0f} spans/s, p50 {run.percentile(50):.1f} ms, "
        f"p99 {run.percentile(99):.1f} ms, acknowledged {len(run.acknowledged):,}, "
        f"stored {run.stored:,} (lost {run.lost}), {run.statuses}"
    )
    return run


def _step_up(server: Server, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    from http_load import run as run_loop

    steps = []
    rate = args.max_start
    for step in range(MAX_STEPS):
        per_s = rate / args.batch
        count = max(1, int(per_s * args.step_seconds))
        run = run_loop(
            open_loop(
                server.name,
                server.url,
                server.path,
                server.headers,
                payloads(count, seed + 1 + step, args.batch),
                per_s,
            )
        )
        verdict = run.holds()
        steps.append({**run.summary(), "holds": verdict})
        log(
            f"    step {rate:8,.0f} spans/s: sustained {run.sustained:8,.0f}, p99 "
            f"{run.percentile(99):8.1f} ms, errors {run.errors}, late {run.late} → "
            f"{'holds' if verdict else 'fails'}"
        )
        if not verdict:
            break
        rate *= 1.5
        time.sleep(1.0)
    held = [s for s in steps if s["holds"]]
    return {
        "steps": steps,
        "max_sustained_spans_per_s": max((s["sustained_spans_per_s"] for s in held), default=0.0),
        "at_offered": held[-1]["offered_spans_per_s"] if held else 0.0,
    }


def measure(kind: Kind, args: argparse.Namespace, seed: int, *, max_run: bool) -> dict[str, Any]:
    """The fixed run on a fresh server (stopped and counted after it), then the step-up on
    another fresh one."""
    server = kind.start()
    try:
        fixed = _fixed(server, kind, args, seed)
    finally:
        server.stop()
    result: dict[str, Any] = {"server": server.name, "fixed": fixed.summary()}
    if max_run:
        server = kind.start()
        try:
            log(f"  {server.name}: stepping up from {args.max_start:g} spans/s")
            result["max"] = _step_up(server, args, seed)
        finally:
            server.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rate", type=float, default=1000.0, help="spans per second (default 1,000)"
    )
    parser.add_argument(
        "--batch", type=int, default=100, help="spans per OTLP request (default 100)"
    )
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--skip-phoenix", action="store_true")
    parser.add_argument("--skip-max", action="store_true", help="no step-up run")
    parser.add_argument("--max-start", type=float, default=2000.0, help="first step, spans/s")
    parser.add_argument("--step-seconds", type=float, default=6.0)
    parser.add_argument(
        "--phoenix-drain",
        type=float,
        default=120.0,
        help="seconds Phoenix is given after the load to insert what it acknowledged",
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="default MALLARD_HOME/bench/traces"
    )
    parser.add_argument(
        "--phoenix-venv", type=Path, default=None, help="default MALLARD_HOME/bench/phoenix-venv"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--worker", choices=["mallard", "ceiling"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--no-dedupe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-fsync", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "mallard":
        return mallard_worker(args.port, not args.no_dedupe)
    if args.worker == "ceiling":
        return ceiling_worker(args.port, args.out, not args.no_fsync)
    if args.batch % 4:
        parser.error("--batch must be a multiple of 4 (traces of 4 spans)")

    from mallard.config import get_settings

    home = get_settings().home
    workdir = args.workdir or home / "bench" / "traces"
    workdir.mkdir(parents=True, exist_ok=True)
    sample, _ = batch(0, args.batch // 4)
    log(f"payload: {args.batch} spans per batch, {len(sample):,} bytes of OTLP protobuf")
    phoenix_python = None
    if not args.skip_phoenix:
        phoenix_python = ensure_phoenix_venv(args.phoenix_venv or home / "bench" / "phoenix-venv")
    report: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "rate_spans_per_s": args.rate,
        "batch": args.batch,
        "seconds": args.seconds,
        "batch_bytes": len(sample),
        "results": [],
    }
    plan = [
        Kind(lambda: start_mallard(workdir, "mallard", True), mallard_count, mallard_figures),
        Kind(
            lambda: start_mallard(workdir, "mallard-no-dedupe", False),
            mallard_count,
            mallard_figures,
            max_run=False,
        ),
        Kind(lambda: start_ceiling(workdir, True), ceiling_count),
        Kind(lambda: start_ceiling(workdir, False), ceiling_count, max_run=False),
    ]
    if phoenix_python is not None:
        plan.insert(
            2,
            Kind(
                lambda: start_phoenix(workdir, phoenix_python),
                phoenix_count,
                drain_s=args.phoenix_drain,
            ),
        )
    for seed, kind in enumerate(plan, 1):
        report["results"].append(
            measure(kind, args, seed * 100, max_run=kind.max_run and not args.skip_max)
        )
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


def print_report(report: dict[str, Any]) -> None:
    print()
    print(
        f"Trace ingestion: {report['rate_spans_per_s']:g} spans/s offered as OTLP protobuf batches of "
        f"{report['batch']} ({report['batch_bytes']:,} bytes) for {report['seconds']:g} s"
    )
    print(
        f"{'server':18} {'sustained/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'acked':>8} "
        f"{'stored':>8} {'lost':>6} {'drain s':>8} {'max/s':>9}"
    )
    by = {}
    for result in report["results"]:
        fixed = result["fixed"]
        top = result.get("max", {}).get("max_sustained_spans_per_s")
        drained = fixed.get("drained_after_s")
        by[result["server"]] = result
        print(
            f"{result['server']:18} {fixed['sustained_spans_per_s']:>12,.0f} {fixed['p50_ms']:>8.1f} "
            f"{fixed['p99_ms']:>8.1f} {fixed['acknowledged_spans']:>8,} {fixed['stored']:>8,} "
            f"{fixed['lost']:>6,} {'-' if drained is None else f'{drained:.1f}':>8} "
            f"{'' if top is None else f'{top:,.0f}':>9}"
        )
    mallard = by.get("mallard")
    if mallard is None:
        return
    for other in ("phoenix", "ceiling"):
        if other in by:
            m, o = mallard["fixed"], by[other]["fixed"]
            line = f"p99 Mallard / {other}: {m['p99_ms'] / o['p99_ms']:.2f}×"
            top_m = mallard.get("max", {}).get("max_sustained_spans_per_s")
            top_o = by[other].get("max", {}).get("max_sustained_spans_per_s")
            if top_m and top_o:
                line += f"; max sustained Mallard / {other}: {top_m / top_o:.2f}×"
            print(line)
    figures = mallard["fixed"]
    phases = {
        phase: figures.get(f'mallard_trace_flush_seconds_total{{phase="{phase}"}}')
        for phase in ("prepare", "check", "write")
    }
    flushes = figures.get("mallard_trace_flushes_total")
    if flushes and None not in phases.values():
        per = ", ".join(f"{p} {1000 * v / flushes:.1f} ms" for p, v in phases.items())
        print(
            f"flushes: {flushes:.0f} ({figures['acknowledged_spans'] / flushes:,.0f} spans each), "
            f"per flush: {per}; the duplicate lookup (check) is "
            f"{100 * phases['check'] / sum(phases.values()):.0f} % of flush time"
        )


if __name__ == "__main__":
    main()
