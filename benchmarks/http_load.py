"""A bounded HTTP load generator (asyncio + httpx) for the serving benchmarks.

Two modes, both bounded in requests and seconds, both sending only to 127.0.0.1:

- `closed_loop`: one request at a time on one keep-alive connection; each latency is the
  request's round trip. Gives p50/p99 of an unloaded server.
- `open_loop`: requests leave on a fixed schedule (request i at t0 + i / rate), whatever the
  server's answers, each on a keep-alive connection of a bounded pool (a minimal HTTP/1.1
  client on asyncio streams, so the generator is cheap per request); latency is counted from
  the moment it was due to leave, so a server that falls behind shows the queueing (no
  coordinated omission). A request that cannot leave because `max_in_flight` are in flight
  counts as failed.
- `step_up`: open-loop steps at rising rates (×`factor` while the step holds, then bisection
  between the last rate that held and the first that did not): the highest rate whose p99 stays
  under the limit with no errors and at least 97 % of the scheduled requests sent on time.

    requests = [Request("POST", "/v1/features/online", body=b"...", headers={...})]
    result = asyncio.run(step_up("http://127.0.0.1:8000", requests, p99_limit_ms=20))
"""

from __future__ import annotations

import asyncio
import gc
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

ALLOWED_HOSTS = ("127.0.0.1",)
IDLE_S = 3.0  # a pooled connection idle longer is closed, not reused


def run(coroutine):
    """Run a load coroutine on uvloop when it is installed (a cheaper event loop)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class StepResult:
    """One open-loop step (or a closed loop: rate 0)."""

    rate: float
    seconds: float
    scheduled: int
    completed: int
    errors: int
    dropped: int
    latencies_ms: list[float]
    statuses: dict[int, int] = field(default_factory=dict)
    late_starts: int = 0  # requests that left more than 5 ms after they were due (client-bound)
    failures: dict[str, int] = field(default_factory=dict)  # transport errors by kind

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return math.inf
        ordered = sorted(self.latencies_ms)
        index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
        return ordered[index]

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p99(self) -> float:
        return self.percentile(99)

    @property
    def achieved(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0

    def holds(self, p99_limit_ms: float) -> bool:
        return (
            self.errors == 0
            and self.dropped == 0
            and self.completed >= 0.97 * self.scheduled
            and self.p99 < p99_limit_ms
        )

    def summary(self) -> dict[str, Any]:
        return {
            "rate": round(self.rate, 1),
            "achieved": round(self.achieved, 1),
            "scheduled": self.scheduled,
            "completed": self.completed,
            "errors": self.errors,
            "dropped": self.dropped,
            "late_starts": self.late_starts,
            "p50_ms": round(self.p50, 3),
            "p99_ms": round(self.p99, 3),
            "statuses": dict(self.statuses),
            "failures": dict(self.failures),
        }


class RawConnection:
    """One keep-alive HTTP/1.1 connection over asyncio streams: a request is bytes prepared
    once, a response is read by its Content-Length (what both servers send). Much cheaper per
    request than a general client, so that the load generator is not what saturates first."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.last_used = time.monotonic()

    @classmethod
    async def open(cls, url: str) -> RawConnection:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
        return cls(reader, writer)

    async def exchange(self, payload: bytes) -> int:
        self.writer.write(payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
                raise ValueError("chunked responses are not supported by the raw client")
        if length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


def raw_request(url: str, r: Request) -> bytes:
    """The bytes of `r` as an HTTP/1.1 keep-alive request to `url`."""
    parts = urlsplit(url)
    lines = [f"{r.method} {r.path} HTTP/1.1", f"Host: {parts.hostname}:{parts.port}"]
    lines += [f"{k}: {v}" for k, v in r.headers.items()]
    body = r.body or b""
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def check_local(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in ALLOWED_HOSTS:
        raise ValueError(f"the load generator sends only to {ALLOWED_HOSTS}; not to {host!r}")


def _client(url: str, connections: int, timeout_s: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url,
        timeout=timeout_s,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


async def closed_loop(
    url: str, requests: Sequence[Request], n: int, *, warmup: int = 50, timeout_s: float = 10.0
) -> StepResult:
    """`n` requests one after another (cycling through `requests`), after `warmup` untimed."""
    check_local(url)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    async with _client(url, 1, timeout_s) as client:
        for i in range(warmup):
            r = requests[i % len(requests)]
            await client.request(r.method, r.path, content=r.body, headers=r.headers)
        started = time.perf_counter()
        for i in range(n):
            r = requests[i % len(requests)]
            t0 = time.perf_counter()
            try:
                response = await client.request(r.method, r.path, content=r.body, headers=r.headers)
                await response.aread()
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code >= 400:
                    errors += 1
            except httpx.HTTPError:
                errors += 1
            latencies.append((time.perf_counter() - t0) * 1000)
        seconds = time.perf_counter() - started
    return StepResult(0.0, seconds, n, n - errors, errors, 0, latencies, statuses)


class RawPool:
    """Up to `size` keep-alive connections to one server, opened as needed."""

    def __init__(self, url: str, size: int) -> None:
        check_local(url)
        self.url, self.size = url, size
        self.free: list[RawConnection] = []
        self.opened = 0

    async def take(self) -> RawConnection | None:
        while self.free:
            connection = self.free.pop()
            # Servers close idle keep-alive connections (uvicorn after 5 s): never reuse one
            # idle that long, as HTTP clients do.
            if time.monotonic() - connection.last_used < IDLE_S:
                return connection
            self.drop(connection)
        if self.opened >= self.size:
            return None
        self.opened += 1
        try:
            return await RawConnection.open(self.url)
        except OSError:
            self.opened -= 1
            raise

    def give(self, connection: RawConnection) -> None:
        connection.last_used = time.monotonic()
        self.free.append(connection)

    def drop(self, connection: RawConnection) -> None:
        connection.close()
        self.opened -= 1

    def close(self) -> None:
        for connection in self.free:
            connection.close()
        self.free.clear()
        self.opened = 0


async def open_loop(
    url: str,
    requests: Sequence[Request],
    rate: float,
    seconds: float,
    *,
    max_in_flight: int = 256,
    timeout_s: float = 5.0,
    pool: RawPool | None = None,
) -> StepResult:
    """`rate` requests a second for `seconds`, on schedule (see the module docstring)."""
    check_local(url)
    total = max(1, int(rate * seconds))
    payloads = [raw_request(url, r) for r in requests]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counts = {"errors": 0, "dropped": 0, "late": 0}
    failures: dict[str, int] = {}
    own = pool is None
    connections = pool or RawPool(url, max_in_flight)

    async def send(payload: bytes, due: float) -> None:
        try:
            connection = await connections.take()
        except OSError as exc:
            counts["errors"] += 1
            kind = f"connect: {type(exc).__name__}"
            failures[kind] = failures.get(kind, 0) + 1
            return
        if connection is None:
            counts["dropped"] += 1
            return
        if time.perf_counter() - due > 0.005:
            counts["late"] += 1
        try:
            status = await connection.exchange(payload)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            connections.drop(connection)
            counts["errors"] += 1
            kind = type(exc).__name__
            failures[kind] = failures.get(kind, 0) + 1
            return
        except asyncio.CancelledError:  # still unanswered when the step ended
            connections.drop(connection)
            raise
        connections.give(connection)
        statuses[status] = statuses.get(status, 0) + 1
        if status >= 400:
            counts["errors"] += 1
        else:
            latencies.append((time.perf_counter() - due) * 1000)

    tasks = []
    pending: set = set()
    collecting = gc.isenabled()
    gc.disable()  # the generator's own collections must not stall the schedule
    start = time.perf_counter() + 0.05
    try:
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(send(payloads[i % len(payloads)], due)))
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                failures["unanswered"] = len(pending)
                await asyncio.wait(pending)
        elapsed = time.perf_counter() - start
    finally:
        if collecting:
            gc.enable()
        if own:
            connections.close()
    return StepResult(
        rate,
        max(elapsed, seconds),
        total,
        len(latencies),
        counts["errors"] + len(pending),
        counts["dropped"],
        latencies,
        statuses,
        counts["late"],
        failures,
    )


@dataclass
class StepUp:
    limit_ms: float
    steps: list[StepResult]

    @property
    def best(self) -> StepResult | None:
        held = [s for s in self.steps if s.holds(self.limit_ms)]
        return max(held, key=lambda s: s.rate) if held else None

    @property
    def sustained_rate(self) -> float:
        best = self.best
        return best.rate if best else 0.0


async def step_up(
    url: str,
    requests: Sequence[Request],
    *,
    p99_limit_ms: float = 20.0,
    start_rate: float = 50.0,
    factor: float = 1.5,
    refine: int = 3,
    step_seconds: float = 4.0,
    max_requests: int = 150_000,
    max_seconds: float = 240.0,
    max_in_flight: int = 256,
    retries: int = 1,
    log=None,
) -> StepUp:
    """The highest open-loop rate that holds p99 < `p99_limit_ms` (bounded: at most
    `max_requests` requests and `max_seconds` seconds in all)."""
    check_local(url)
    log = log or (lambda message: None)
    steps: list[StepResult] = []
    sent = 0
    began = time.perf_counter()

    pool = RawPool(url, max_in_flight)
    try:

        async def run(rate: float) -> StepResult | None:
            nonlocal sent
            if sent + rate * step_seconds > max_requests or (
                time.perf_counter() - began + step_seconds > max_seconds
            ):
                log(f"    budget reached ({sent:,} requests, {time.perf_counter() - began:.0f} s)")
                return None
            # A short settle at the new rate, then the measured step; a step that fails is run
            # once more (a stall of the shared machine must not end the search), and the rate
            # holds if either run held.
            result = None
            for attempt in range(1 + retries):
                await open_loop(url, requests, rate, 0.5, max_in_flight=max_in_flight, pool=pool)
                result = await open_loop(
                    url, requests, rate, step_seconds, max_in_flight=max_in_flight, pool=pool
                )
                sent += int(rate * (step_seconds + 0.5))
                steps.append(result)
                verdict = "holds" if result.holds(p99_limit_ms) else "fails"
                log(
                    f"    {rate:8.1f}/s: achieved {result.achieved:8.1f}/s, p50 {result.p50:7.2f} "
                    f"ms, p99 {result.p99:8.2f} ms, errors {result.errors}, dropped "
                    f"{result.dropped}, late {result.late_starts} → {verdict}"
                    + (f" {result.failures or result.statuses}" if result.errors else "")
                    + (" (second run)" if attempt else "")
                )
                if result.holds(p99_limit_ms) or sent + rate * step_seconds > max_requests:
                    break
            return result

        low, high = 0.0, math.inf
        rate = start_rate
        while True:
            result = await run(rate)
            if result is None:
                break
            if result.holds(p99_limit_ms):
                low = rate
                if math.isfinite(high):
                    break
                rate *= factor
            else:
                high = rate
                if low > 0 or rate < 2:
                    break
                rate /= factor  # the first rate failed: look lower
        for _ in range(refine):
            if low == 0.0 or not math.isfinite(high):
                break
            rate = (low + high) / 2
            result = await run(rate)
            if result is None:
                break
            if result.holds(p99_limit_ms):
                low = rate
            else:
                high = rate
    finally:
        pool.close()
    return StepUp(p99_limit_ms, steps)
