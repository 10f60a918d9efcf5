"""The Redis online store (production): a hash per entity key per view generation.

Keys, under `prefix` (default `mallard`):

- `<prefix>:__schema__:<view>`: the view's keys, types and live `generation` (JSON): the pointer
  readers follow.
- `<prefix>:<view>:<generation>:<json of the key values>`: a hash with `_ts` and `_cr` (event
  and created time in UTC microseconds) and one field per non-null feature.
- `<prefix>:__generation__:<view>`: a counter; every full load takes the next generation.

An incremental `write` is prepared and encoded in full first, then sent as one MULTI/EXEC that
WATCHes the pointer: DELs of the keys to delete, Lua calls that apply a row only when it is at
least as new as the stored one, and the schema. A write that fails on our side sends nothing,
Redis applies the block at once, and if a full load switched the generation meanwhile the block
is refused and the write redone on the new generation.

A full load (`replace_view`) writes the next generation's keys, which nobody reads yet, in
pipelined chunks; then one Lua call switches the pointer (refused if a load that started later
has switched already); then the keys of the generations before it (the one it replaced and any
left by loads killed midway) are found with SCAN and UNLINKed. A load killed before the switch
leaves the old view as it was.

A read is one pipeline (one round trip) for all its views: an HMGET per key under the generation
the reader knows, then a GET of each view's pointer. A generation's keys are deleted only after
the pointer has left it, for good, so if the pointer still names that generation at the end,
every HMGET read it whole; if it moved, that view is read again on the new generation: a reader
never mixes generations.
Views written before generations existed (keys `<prefix>:<view>:<json>`, no generation in the
schema) are read and written as they are; their next full load moves them to a generation.
Single-instance Redis (the keys of one write are not in one cluster slot).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mallard.features.online.base import (
    CREATED_TS,
    EVENT_TS,
    OnlineStore,
    OnlineStoreError,
    ViewNotLoaded,
    ViewSchema,
    WriteStats,
    decoders,
    prepare_batch,
    prepare_keys,
)

CHUNK = 1_000  # keys per Lua call, HSETs per round trip of a full load, keys per DEL
SCAN_COUNT = 10_000
RETRIES = 10

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

# KEYS[1]: the pointer; ARGV: the new schema, its generation. Returns the generation it replaced
# (-1: none; 0: a view from before generations), or -2 when a newer generation is live already.
_SWITCH = """
local cur = redis.call('GET', KEYS[1])
local old = -1
if cur then
  local ok, decoded = pcall(cjson.decode, cur)
  old = 0
  if ok and type(decoded) == 'table' and tonumber(decoded['generation']) then
    old = tonumber(decoded['generation'])
  end
end
if old > tonumber(ARGV[2]) then return -2 end
redis.call('SET', KEYS[1], ARGV[1])
return old
"""


def _encode_key(parts: Sequence[Any]) -> str:
    return json.dumps(list(parts), separators=(",", ":"), ensure_ascii=False)


def _encode_value(value: Any, typ: str) -> str:
    if typ == "float":
        return repr(float(value))
    if typ == "str":
        return value
    return str(int(value))


def _glob(text: str) -> str:
    """`text` escaped for a SCAN MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


_PARSE = {"int": int, "float": float, "bool": int, "timestamp": int, "date": int, "str": None}


@dataclass(frozen=True)
class _Schema(ViewSchema):
    generation: int | None = None  # None: a view written before generations
    raw: str = ""  # the pointer as read: a read compares it to see whether it moved


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
        self._switch = self._client.register_script(_SWITCH)
        self._schemas: dict[str, _Schema] = {}

    def _schema_key(self, view: str) -> str:
        return f"{self.prefix}:__schema__:{view}"

    def _counter_key(self, view: str) -> str:
        return f"{self.prefix}:__generation__:{view}"

    def _key_prefix(self, view: str, generation: int | None) -> str:
        if generation is None:
            return f"{self.prefix}:{view}:"
        return f"{self.prefix}:{view}:{generation}:"

    def close(self) -> None:
        self._client.close()

    # -- schema -------------------------------------------------------------------------------
    def schema(self, view_name: str) -> ViewSchema | None:
        cached = self._schemas.get(view_name)
        if cached is not None:
            return cached
        return self._refresh_schema(view_name)

    def _refresh_schema(self, view_name: str) -> ViewSchema | None:
        return self._remember(view_name, self._client.get(self._schema_key(view_name)))

    def _remember(self, view_name: str, raw: Any) -> _Schema | None:
        schema = _parse(view_name, raw)
        if schema is None:
            self._schemas.pop(view_name, None)
        else:
            self._schemas[view_name] = schema
        return schema

    def views(self) -> list[str]:
        start = len(self._schema_key(""))
        pattern = _glob(self._schema_key("")) + "*"
        return sorted(k[start:] for k in self._client.scan_iter(match=pattern, count=SCAN_COUNT))

    def delete_view(self, view_name: str) -> None:
        # Every generation, live or left by a killed load, and keys from before generations.
        self._unlink_generations(view_name, below=None)
        self._client.delete(self._schema_key(view_name), self._counter_key(view_name))
        self._schemas.pop(view_name, None)

    def _unlink_generations(self, view_name: str, below: int | None) -> None:
        """UNLINK the view's keys of generations before `below` (None: all of them)."""
        start = len(self._key_prefix(view_name, None))
        pattern = _glob(self._key_prefix(view_name, None)) + "*"
        batch: list[str] = []
        for key in self._client.scan_iter(match=pattern, count=SCAN_COUNT):
            generation = key[start:].partition(":")[0]
            if below is not None and generation.isdigit() and int(generation) >= below:
                continue  # the live generation, or a newer load's
            batch.append(key)
            if len(batch) >= CHUNK:
                self._client.unlink(*batch)
                batch = []
        if batch:
            self._client.unlink(*batch)

    def _scripts_loaded(self) -> None:
        for script, source in ((self._upsert, _UPSERT), (self._switch, _SWITCH)):
            if not self._client.script_exists(script.sha)[0]:
                self._client.script_load(source)

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
        delete_keys: Any = None,
    ) -> WriteStats:
        import redis

        started = time.perf_counter()
        batch = prepare_batch(
            view_name, join_keys, features, rows, event_timestamp_column, created_timestamp_column
        )
        doomed = [] if delete_keys is None else prepare_keys(view_name, join_keys, delete_keys)
        pointer = self._schema_key(view_name)
        self._scripts_loaded()
        for _ in range(RETRIES):
            with self._client.pipeline(transaction=True) as pipe:
                pipe.watch(pointer)
                raw = pipe.get(pointer)
                stored = _parse(view_name, raw)
                types = _merge(view_name, stored, batch)
                if stored is not None:
                    generation = stored.generation
                elif raw is None:  # a new view: its first generation
                    generation = int(self._client.incr(self._counter_key(view_name)))
                else:
                    raise OnlineStoreError(f"view {view_name}: unreadable schema {raw!r}")
                prefix = self._key_prefix(view_name, generation)
                # Encode everything before sending anything: a bad value fails here.
                calls = self._upsert_calls(batch, types, prefix)
                written = {tuple(k) for k in batch.key_tuples()}
                gone = [prefix + _encode_key(k) for k in doomed if k not in written]
                replaced = [prefix + _encode_key(k) for k in doomed if k in written]
                schema = _schema_json(batch.join_keys, types, generation)
                pipe.multi()
                for start in range(0, len(gone), CHUNK):
                    pipe.delete(*gone[start : start + CHUNK])
                for start in range(0, len(replaced), CHUNK):
                    pipe.delete(*replaced[start : start + CHUNK])
                for keys, args in calls:
                    pipe.evalsha(self._upsert.sha, len(keys), *keys, *args)
                pipe.set(pointer, schema)
                try:
                    results = pipe.execute()
                except redis.WatchError:
                    continue  # a full load or another write moved the pointer: redo on it
            break
        else:
            raise OnlineStoreError(f"view {view_name}: the pointer kept moving during the write")
        self._remember(view_name, schema)
        n_gone = -(-len(gone) // CHUNK)
        first_call = n_gone + -(-len(replaced) // CHUNK)
        deleted = sum(int(r) for r in results[:n_gone])
        applied = sum(int(r) for r in results[first_call : first_call + len(calls)])
        return WriteStats(
            view_name,
            batch.rows,
            batch.rejected,
            len(written),
            min(applied, len(written)),
            time.perf_counter() - started,
            deleted,
        )

    def _upsert_calls(
        self, batch: Any, types: dict[str, str], prefix: str
    ) -> list[tuple[list[str], list[str]]]:
        calls: list[tuple[list[str], list[str]]] = []
        keys_chunk: list[str] = []
        args_chunk: list[str] = []
        feats = batch.features
        value_types = [types[f] for f in feats]
        for i in range(batch.size):
            fields: list[str] = []
            for name, typ, col in zip(feats, value_types, batch.values, strict=True):
                value = col[i]
                if value is not None:
                    fields.append(name)
                    fields.append(_encode_value(value, typ))
            created = batch.created[i]
            keys_chunk.append(prefix + _encode_key([col[i] for col in batch.keys]))
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
        return calls

    def replace_view(
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
        self._scripts_loaded()
        types = dict(batch.types)
        generation = int(self._client.incr(self._counter_key(view_name)))
        prefix = self._key_prefix(view_name, generation)
        schema = _schema_json(batch.join_keys, types, generation)
        value_types = [types[f] for f in batch.features]
        try:
            # Nobody reads this generation yet: plain HSETs (one row per key), in chunks.
            pipe = self._client.pipeline(transaction=False)
            for i in range(batch.size):
                mapping: dict[Any, Any] = {"_ts": str(batch.event[i])}
                if batch.created[i] is not None:
                    mapping["_cr"] = str(batch.created[i])
                for name, typ, col in zip(batch.features, value_types, batch.values, strict=True):
                    value = col[i]
                    if value is not None:
                        mapping[name] = _encode_value(value, typ)
                pipe.hset(prefix + _encode_key([col[i] for col in batch.keys]), mapping=mapping)
                if (i + 1) % CHUNK == 0:
                    pipe.execute()
            pipe.execute()
            replaced = int(
                self._switch(keys=[self._schema_key(view_name)], args=[schema, generation])
            )
        except BaseException:
            self._unlink_generation(view_name, generation)
            raise
        if replaced == -2:  # a load that started after this one is live already
            self._unlink_generation(view_name, generation)
            self._refresh_schema(view_name)
            return WriteStats(view_name, batch.rows, batch.rejected, batch.size, 0, 0.0)
        self._remember(view_name, schema)
        if replaced != -1 or generation > 1:  # there may be older keys: the replaced view's
            self._unlink_generations(view_name, below=generation)  # or a killed load's
        return WriteStats(
            view_name,
            batch.rows,
            batch.rejected,
            batch.size,
            batch.size,
            time.perf_counter() - started,
        )

    def _unlink_generation(self, view_name: str, generation: int) -> None:
        prefix = self._key_prefix(view_name, generation)
        batch: list[str] = []
        for key in self._client.scan_iter(match=_glob(prefix) + "*", count=SCAN_COUNT):
            batch.append(key)
            if len(batch) >= CHUNK:
                self._client.unlink(*batch)
                batch = []
        if batch:
            self._client.unlink(*batch)

    # -- read ---------------------------------------------------------------------------------
    def _fetch_views(
        self, lookups: list[tuple[ViewSchema, Sequence[str], list[tuple]]]
    ) -> list[dict[tuple, tuple[int, list[Any]]] | None]:
        """Every view in one round trip: all the HMGETs, then every view's pointer."""
        pipe = self._client.pipeline(transaction=False)
        views = []
        for schema, features, keys in lookups:
            if not keys:
                continue
            assert isinstance(schema, _Schema)
            prefix = self._key_prefix(schema.view, schema.generation)
            fields = ["_ts", *features]
            for key in keys:
                pipe.hmget(prefix + _encode_key(key), fields)
            views.append(schema.view)
        for view in views:
            pipe.get(self._schema_key(view))
        replies = pipe.execute() if views else []
        pointers = dict(zip(views, replies[len(replies) - len(views) :], strict=True))
        out: list[dict[tuple, tuple[int, list[Any]]] | None] = []
        at = 0
        for schema, features, keys in lookups:
            if not keys:
                out.append({})
                continue
            view_replies = replies[at : at + len(keys)]
            at += len(keys)
            assert isinstance(schema, _Schema)
            if pointers[schema.view] == schema.raw:
                out.append(self._decode(schema, features, keys, view_replies))
                continue
            try:  # the pointer moved (a full load, new features): read this view again
                out.append(self._fetch(schema, features, keys))
            except ViewNotLoaded:
                out.append(None)
        return out

    def _fetch(
        self, schema: ViewSchema, features: Sequence[str], keys: list[tuple]
    ) -> dict[tuple, tuple[int, list[Any]]]:
        assert isinstance(schema, _Schema)
        fields = ["_ts", *features]
        encoded = [_encode_key(key) for key in keys]
        pointer = self._schema_key(schema.view)
        for _ in range(RETRIES):
            prefix = self._key_prefix(schema.view, schema.generation)
            pipe = self._client.pipeline(transaction=False)
            for key in encoded:
                pipe.hmget(prefix + key, fields)
            pipe.get(pointer)
            replies = pipe.execute()
            raw = replies.pop()
            if raw == schema.raw:
                return self._decode(schema, features, keys, replies)
            fresh = self._remember(schema.view, raw)
            if fresh is None:
                raise ViewNotLoaded(schema.view)
            unknown = [f for f in features if f not in fresh.types or f in fresh.join_keys]
            if unknown or fresh.join_keys != schema.join_keys:
                raise OnlineStoreError(
                    f"view {schema.view}: was reloaded without feature(s) {unknown}"
                    if unknown
                    else f"view {schema.view}: now keyed by {list(fresh.join_keys)}"
                )
            if fresh.generation == schema.generation:  # a write added features: same data
                return self._decode(fresh, features, keys, replies)
            schema = fresh
        raise OnlineStoreError(f"view {schema.view}: reloaded {RETRIES} times during one read")

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


def _parse(view: str, raw: Any) -> _Schema | None:
    if raw is None:
        return None
    data = json.loads(raw)
    generation = data.get("generation")
    return _Schema(
        view,
        tuple(data["join_keys"]),
        data["types"],
        None if generation is None else int(generation),
        raw,
    )


def _schema_json(join_keys: Sequence[str], types: dict[str, str], generation: int | None) -> str:
    data: dict[str, Any] = {"join_keys": list(join_keys), "types": types}
    if generation is not None:
        data["generation"] = generation
    return json.dumps(data)


def _merge(view: str, stored: _Schema | None, batch: Any) -> dict[str, str]:
    """The view's types after this write: new features are added, nothing changes type."""
    if stored is None:
        return dict(batch.types)
    if list(stored.join_keys) != batch.join_keys:
        raise OnlineStoreError(
            f"view {view}: keyed by {list(stored.join_keys)} in the online store, not {batch.join_keys}"
        )
    for name, typ in batch.types.items():
        old = stored.types.get(name)
        if old is not None and old != typ and not (old == "float" and typ == "int"):
            raise OnlineStoreError(f"view {view}: column {name} holds {old}, not {typ}")
    return {**stored.types, **{k: v for k, v in batch.types.items() if k not in stored.types}}
