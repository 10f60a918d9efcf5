"""The Redis online store (production): a hash per entity key per view.

Key `<prefix>:<view>:<json of the key values>` holds the fields `_ts` and `_cr` (event and
created time in UTC microseconds) and one field per non-null feature. The view's keys and types
live at `<prefix>:__schema__:<view>`. A write is prepared and encoded in full first, then sent
as one MULTI/EXEC transaction of Lua calls that apply a row only when it is at least as new as the
stored one, so a write that fails on our side sends nothing, and Redis applies the rest as one
block that no reader sees half-done. Reads send one pipelined HMGET per key and view.
Single-instance Redis (the keys of one write are not in one cluster slot).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from mallard.features.online.base import (
    CREATED_TS,
    EVENT_TS,
    OnlineStore,
    OnlineStoreError,
    ViewSchema,
    WriteStats,
    decoders,
    prepare_batch,
)

CHUNK = 1_000  # keys per Lua call

_UPSERT = """
local pos = 1
local applied = 0
for i, key in ipairs(KEYS) do
  local ts = tonumber(ARGV[pos])
  local cr = ARGV[pos + 1]
  local nf = tonumber(ARGV[pos + 2])
  local cur = redis.call('HMGET', key, '_ts', '_cr')
  local newer = true
  if cur[1] then
    local cts = tonumber(cur[1])
    if ts < cts then
      newer = false
    elseif ts == cts and cur[2] then
      if cr == '' or tonumber(cr) < tonumber(cur[2]) then newer = false end
    end
  end
  if newer then
    redis.call('DEL', key)
    local args = {'_ts', ARGV[pos]}
    if cr ~= '' then
      args[#args + 1] = '_cr'
      args[#args + 1] = cr
    end
    for j = 0, nf - 1 do
      args[#args + 1] = ARGV[pos + 3 + 2 * j]
      args[#args + 1] = ARGV[pos + 4 + 2 * j]
    end
    redis.call('HSET', key, unpack(args))
    applied = applied + 1
  end
  pos = pos + 3 + 2 * nf
end
return applied
"""


def _encode_key(parts: Sequence[Any]) -> str:
    return json.dumps(list(parts), separators=(",", ":"), ensure_ascii=False)


def _encode_value(value: Any, typ: str) -> str:
    if typ == "float":
        return repr(float(value))
    if typ == "str":
        return value
    return str(int(value))


_PARSE = {"int": int, "float": float, "bool": int, "timestamp": int, "date": int, "str": None}


class RedisOnlineStore(OnlineStore):
    """Online store in Redis (redis-py); `url` like redis://127.0.0.1:6379/0."""

    kind = "redis"

    def __init__(
        self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "mallard", client: Any = None
    ) -> None:
        import redis

        self.url = url
        self.prefix = prefix
        self._client = client or redis.Redis.from_url(url, decode_responses=True)
        self._upsert = self._client.register_script(_UPSERT)
        self._schemas: dict[str, ViewSchema] = {}

    def _schema_key(self, view: str) -> str:
        return f"{self.prefix}:__schema__:{view}"

    def _key(self, view: str, parts: Sequence[Any]) -> str:
        return f"{self.prefix}:{view}:{_encode_key(parts)}"

    def close(self) -> None:
        self._client.close()

    # -- schema -------------------------------------------------------------------------------
    def schema(self, view_name: str) -> ViewSchema | None:
        cached = self._schemas.get(view_name)
        if cached is not None:
            return cached
        return self._refresh_schema(view_name)

    def _refresh_schema(self, view_name: str) -> ViewSchema | None:
        raw = self._client.get(self._schema_key(view_name))
        if raw is None:
            self._schemas.pop(view_name, None)
            return None
        data = json.loads(raw)
        schema = ViewSchema(view_name, tuple(data["join_keys"]), data["types"])
        self._schemas[view_name] = schema
        return schema

    def views(self) -> list[str]:
        start = len(self._schema_key(""))
        return sorted(
            k[start:] for k in self._client.scan_iter(match=self._schema_key("*"), count=1000)
        )

    def delete_view(self, view_name: str) -> None:
        pattern = f"{self.prefix}:{view_name}:*"
        batch: list[str] = []
        for key in self._client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                self._client.delete(*batch)
                batch = []
        if batch:
            self._client.delete(*batch)
        self._client.delete(self._schema_key(view_name))
        self._schemas.pop(view_name, None)

    # -- write --------------------------------------------------------------------------------
    def write(
        self,
        view_name: str,
        join_keys: Sequence[str],
        features: Sequence[str],
        rows: Any,
        *,
        event_timestamp_column: str = EVENT_TS,
        created_timestamp_column: str | None = CREATED_TS,
    ) -> WriteStats:
        started = time.perf_counter()
        batch = prepare_batch(
            view_name, join_keys, features, rows, event_timestamp_column, created_timestamp_column
        )
        stored = self._refresh_schema(view_name)
        types = dict(batch.types)
        if stored is not None:
            if list(stored.join_keys) != batch.join_keys:
                raise OnlineStoreError(
                    f"view {view_name}: keyed by {list(stored.join_keys)} in the online store, not {batch.join_keys}"
                )
            for name, typ in batch.types.items():
                old = stored.types.get(name)
                if old is not None and old != typ and not (old == "float" and typ == "int"):
                    raise OnlineStoreError(
                        f"view {view_name}: column {name} holds {old}, not {typ}"
                    )
            types = {
                **stored.types,
                **{k: v for k, v in batch.types.items() if k not in stored.types},
            }
        # Encode everything before sending anything: a bad value fails here, with nothing written.
        calls: list[tuple[list[str], list[str]]] = []
        keys_chunk: list[str] = []
        args_chunk: list[str] = []
        feats = batch.features
        value_types = [types[f] for f in feats]
        distinct = set()
        for i in range(batch.size):
            parts = tuple(col[i] for col in batch.keys)
            distinct.add(parts)
            fields: list[str] = []
            for name, typ, col in zip(feats, value_types, batch.values, strict=True):
                value = col[i]
                if value is not None:
                    fields.append(name)
                    fields.append(_encode_value(value, typ))
            created = batch.created[i]
            keys_chunk.append(self._key(view_name, parts))
            args_chunk += [
                str(batch.event[i]),
                "" if created is None else str(created),
                str(len(fields) // 2),
                *fields,
            ]
            if len(keys_chunk) >= CHUNK:
                calls.append((keys_chunk, args_chunk))
                keys_chunk, args_chunk = [], []
        if keys_chunk:
            calls.append((keys_chunk, args_chunk))
        schema_json = json.dumps({"join_keys": batch.join_keys, "types": types})
        self._upsert_script_loaded()
        pipe = self._client.pipeline(transaction=True)
        for keys, args in calls:
            pipe.evalsha(self._upsert.sha, len(keys), *keys, *args)
        pipe.set(self._schema_key(view_name), schema_json)
        results = pipe.execute()
        applied = sum(int(r) for r in results[:-1])
        self._schemas[view_name] = ViewSchema(view_name, tuple(batch.join_keys), types)
        return WriteStats(
            view_name,
            batch.rows,
            batch.rejected,
            len(distinct),
            min(applied, len(distinct)),
            time.perf_counter() - started,
        )

    def _upsert_script_loaded(self) -> None:
        if not self._client.script_exists(self._upsert.sha)[0]:
            self._client.script_load(_UPSERT)

    # -- read ---------------------------------------------------------------------------------
    def _fetch(
        self, schema: ViewSchema, features: Sequence[str], keys: list[tuple]
    ) -> dict[tuple, tuple[int, list[Any]]]:
        fields = ["_ts", *features]
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(self._key(schema.view, key), fields)
        replies = pipe.execute()
        return self._decode(schema, features, keys, replies)

    def _decode(
        self, schema: ViewSchema, features: Sequence[str], keys: list[tuple], replies: list[Any]
    ) -> dict[tuple, tuple[int, list[Any]]]:
        parse = [_PARSE[schema.types[f]] for f in features]
        decode = decoders(schema, features)
        out: dict[tuple, tuple[int, list[Any]]] = {}
        for key, reply in zip(keys, replies, strict=True):
            if reply[0] is None:
                continue
            values: list[Any] = []
            for raw, p, d in zip(reply[1:], parse, decode, strict=True):
                if raw is None:
                    values.append(None)
                    continue
                v = raw if p is None else p(raw)
                values.append(v if d is None else d(v))
            out[key] = (int(reply[0]), values)
        return out
