"""Per-endpoint resilience primitives shared by the sync and the async call path.

Every primitive is thread-safe and usable from threads and event loops at the same time: the
decision (may I go? how long must I wait?) is taken under a lock, the waiting is done by the caller
with `time.sleep` or `asyncio.sleep`, so the two paths share one state per endpoint.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from email.utils import parsedate_to_datetime

from mallard.llm.endpoints import BreakerPolicy, RetryPolicy

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
BREAKER_STATE_VALUE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


def backoff_delay(
    policy: RetryPolicy, attempt: int, retry_after: float | None, rng: random.Random | None = None
) -> float:
    """Full-jitter exponential backoff for retry number `attempt` (0-based), honouring Retry-After."""
    ceiling = min(policy.max_delay_s, policy.base_delay_s * (2**attempt))
    delay = (rng or random).uniform(0.0, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, policy.max_retry_after_s))
    return delay


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class CircuitBreaker:
    """closed → (N consecutive failures) → open → (reset timeout) → half-open: one probe;
    its success closes the breaker, its failure opens it again."""

    def __init__(
        self,
        policy: BreakerPolicy,
        on_change: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.policy = policy
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        self.transitions: list[tuple[str, str]] = []

    @property
    def state(self) -> str:
        with self._lock:
            self._maybe_half_open()
            return self._state

    def _set(self, state: str) -> None:
        if state != self._state:
            self.transitions.append((self._state, state))
            self._state = state
            if self._on_change is not None:
                self._on_change(state)

    def _maybe_half_open(self) -> None:
        if self._state == OPEN and self._clock() - self._opened_at >= self.policy.reset_timeout_s:
            self._set(HALF_OPEN)
            self._probe_in_flight = False

    def allow(self) -> bool:
        """May a call go through now? In half-open state only one probe is let through."""
        with self._lock:
            self._maybe_half_open()
            if self._state == CLOSED:
                return True
            if self._state == HALF_OPEN and not self._probe_in_flight:
                self._probe_in_flight = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._probe_in_flight = False
            self._set(CLOSED)

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._probe_in_flight = False
            if self._state == HALF_OPEN or self._failures >= self.policy.failure_threshold:
                self._opened_at = self._clock()
                self._set(OPEN)

    def release_probe(self) -> None:
        """A let-through call ended without a verdict (e.g. a non-retryable client error)."""
        with self._lock:
            self._probe_in_flight = False


class TokenBucket:
    """Rate limit: `rate` tokens per second, `burst` capacity. `reserve()` takes a token now and
    returns how long the caller must wait before using it (0 when one was available)."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate = float(rate)
        self.capacity = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def acquire(self) -> None:
        delay = self.reserve()
        if delay > 0:
            time.sleep(delay)

    async def aacquire(self) -> None:
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)


class ConcurrencyLimiter:
    """At most `limit` calls in flight per endpoint, counted across threads and event loops, FIFO."""

    def __init__(self, limit: int):
        self.limit = limit
        self._lock = threading.Lock()
        self._active = 0
        self._waiters: deque[
            threading.Event | tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]
        ] = deque()
        self.peak = 0

    @property
    def active(self) -> int:
        return self._active

    def _take(self) -> bool:
        if self._active < self.limit and not self._waiters:
            self._active += 1
            self.peak = max(self.peak, self._active)
            return True
        return False

    def acquire(self, timeout: float | None = None) -> bool:
        with self._lock:
            if self._take():
                return True
            event = threading.Event()
            self._waiters.append(event)
        if event.wait(timeout):
            return True
        with self._lock:
            if event in self._waiters:
                self._waiters.remove(event)
                return False
        return True  # handed over between the timeout and the lock

    async def aacquire(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._take():
                return
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, future))
        try:
            await future
        except asyncio.CancelledError:
            with self._lock:
                if (loop, future) in self._waiters:
                    self._waiters.remove((loop, future))
                    raise
            if future.done() and not future.cancelled():
                self.release()  # the slot was handed to us just before the cancellation
            # otherwise _hand_over sees the cancelled future and passes the slot on
            raise

    def release(self) -> None:
        with self._lock:
            while self._waiters:
                waiter = self._waiters.popleft()
                if isinstance(waiter, threading.Event):
                    waiter.set()
                    return
                loop, future = waiter
                if future.done() or loop.is_closed():
                    continue
                loop.call_soon_threadsafe(self._hand_over, future)
                return
            self._active -= 1

    def _hand_over(self, future: asyncio.Future[None]) -> None:
        if future.done():  # cancelled after the slot was handed over: pass it on
            self.release()
        else:
            future.set_result(None)
