"""Token-bucket rate limits, per key and per client address, shared by every worker.

A bucket holds up to `burst` tokens and refills at `rate` tokens a second; a request takes one.
An empty bucket answers how long until the next token (the 429's Retry-After). The buckets live
where every worker sees them: an SQLite file under MALLARD_HOME locally (one UPSERT per take, no
durability needed: `synchronous=OFF`), Redis in prod (one Lua script per take, on the Redis
server's clock).
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mallard.serving.keys import SqliteFile


@dataclass(frozen=True)
class Limit:
    rate: float  # tokens per second
    burst: int  # bucket size

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)) or self.burst < 1:
            raise ValueError("a rate limit needs rate > 0 and burst ≥ 1")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    remaining: float  # tokens left
    retry_after: float  # seconds until a token is available (0 when allowed)

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after)))


class RateLimiter(ABC):
    @abstractmethod
    def take(self, bucket: str, limit: Limit) -> Decision: ...

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None


def _decision(allowed: bool, tokens: float, limit: Limit) -> Decision:
    wait = 0.0 if allowed else max(0.0, (1.0 - tokens) / limit.rate)
    return Decision(allowed, tokens, wait)


_BUCKETS_SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (
    name TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    updated REAL NOT NULL,
    allowed INTEGER NOT NULL
) WITHOUT ROWID;
"""

# One statement, so one atomic step whichever worker runs it: refill by the time since the last
# take, then take a token if there is one.
_TAKE = """
INSERT INTO buckets (name, tokens, updated, allowed) VALUES (:name, :burst - 1, :now, 1)
ON CONFLICT (name) DO UPDATE SET
    tokens = CASE
        WHEN min(:burst, tokens + max(0, :now - updated) * :rate) >= 1
        THEN min(:burst, tokens + max(0, :now - updated) * :rate) - 1
        ELSE min(:burst, tokens + max(0, :now - updated) * :rate) END,
    allowed = min(:burst, tokens + max(0, :now - updated) * :rate) >= 1,
    updated = :now
RETURNING tokens, allowed
"""


class SqliteRateLimiter(RateLimiter):
    def __init__(self, path: Path) -> None:
        self.db = SqliteFile(path, _BUCKETS_SCHEMA, synchronous="OFF")

    def take(self, bucket: str, limit: Limit) -> Decision:
        row = (
            self.db.con()
            .execute(
                _TAKE,
                {"name": bucket, "burst": limit.burst, "rate": limit.rate, "now": time.time()},
            )
            .fetchone()
        )
        return _decision(bool(row[1]), float(row[0]), limit)

    def ping(self) -> None:
        self.db.con().execute("SELECT 1 FROM buckets LIMIT 1").fetchall()

    def close(self) -> None:
        self.db.close()


_LUA_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local stored = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(stored[1])
local updated = tonumber(stored[2])
if tokens == nil or updated == nil then
  tokens = burst
  updated = now
end
tokens = math.min(burst, tokens + math.max(0, now - updated) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
return {allowed, tostring(tokens)}
"""


class RedisRateLimiter(RateLimiter):
    def __init__(self, client: Any, namespace: str = "mallard") -> None:
        self.r = client
        self.ns = namespace
        self._script = client.register_script(_LUA_TAKE)

    def take(self, bucket: str, limit: Limit) -> Decision:
        allowed, tokens = self._script(
            keys=[f"{self.ns}:bucket:{bucket}"], args=[limit.rate, limit.burst]
        )
        return _decision(bool(int(allowed)), float(tokens), limit)

    def ping(self) -> None:
        self.r.ping()
