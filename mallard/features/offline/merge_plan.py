"""The ``merge`` join plan: a sort-merge as-of join in numpy over columns DuckDB reads.

DuckDB reads the entity rows and the view's candidate rows (with the key and time filters pushed
down to the Delta scan); the join itself is vectorised numpy:

1. Keys become dense integer codes (the entity's distinct keys; feature rows whose key no
   entity row has are dropped), so any key type and compound keys cost the same.
2. Each side gets one int64 sort key, ``code * W + (time - t0)``, that orders by key, then time.
   The entity rows are sorted once per key domain and shared by every view.
3. Without the created-time option the feature rows are sorted by that key, ties broken by
   (created, ingestion sequence); ``searchsorted(side="right") - 1`` then lands on the last row at
   or before each entity time, which is the contract's winner among equal event times.
4. With it, rows are sorted by availability (``max(event, created)``) instead, and a running
   maximum of each row's rank in the contract's order (event, created, sequence) carries the
   winner among everything available so far, as the ASOF plan's window does.

The ttl is checked on the winner afterwards: it is the latest event among the candidates, so if
it is too old, every candidate is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

# Beyond this the combined sort key of (code, time) could overflow int64; times are then
# replaced by their rank among all times in the join.
_SORT_KEY_LIMIT = 2**62


@dataclass
class EntityKeys:
    """The entity rows of one key domain, sorted by (key code, time)."""

    rows: np.ndarray  # entity row numbers, in sorted order
    codes: np.ndarray  # int64 key code per sorted row
    times: np.ndarray  # int64 microseconds per sorted row
    indexes: list[pd.Index]  # per key column (then per combination step): value -> code

    @property
    def distinct(self) -> int:
        return len(self.indexes[-1])


def _values(column: pa.ChunkedArray) -> Any:
    """A key column as something pandas can hash (numpy where possible)."""
    import pyarrow as pa

    if pa.types.is_integer(column.type) and column.null_count == 0:
        return column.to_numpy()
    return column.to_pandas().to_numpy()


def entity_keys(table: pa.Table, key_columns: list[str], row: str, ts: str) -> EntityKeys:
    """Encode and sort the entity rows (`row`, keys, `ts` as epoch microseconds)."""
    import numpy as np
    import pandas as pd

    indexes: list[pd.Index] = []
    codes: np.ndarray | None = None
    for key in key_columns:
        column_codes, uniques = pd.factorize(_values(table.column(key)), sort=True)
        indexes.append(pd.Index(uniques))
        column_codes = column_codes.astype(np.int64)
        if codes is None:
            codes = column_codes
            continue
        combined, uniques = pd.factorize(codes * len(uniques) + column_codes, sort=True)
        indexes.append(pd.Index(uniques))
        codes = combined.astype(np.int64)
    assert codes is not None
    times = table.column(ts).to_numpy()
    order = np.empty(0, dtype=np.int64)
    if len(times):
        width, scaled, _ = _time_scale(times, times, len(indexes[-1]))
        order = np.argsort(codes * width + scaled)
    return EntityKeys(table.column(row).to_numpy()[order], codes[order], times[order], indexes)


def feature_codes(keys: list[Any], entity: EntityKeys) -> np.ndarray:
    """Each feature row's entity key code (from its key columns), -1 where no entity row has it."""
    import numpy as np
    import pandas as pd

    step = iter(entity.indexes)
    codes: np.ndarray | None = None
    for values in keys:
        index = next(step)
        column_codes = index.get_indexer(values).astype(np.int64, copy=False)
        if codes is None:
            codes = column_codes
            continue
        missing = (codes < 0) | (column_codes < 0)
        combined = next(step).get_indexer(pd.Index(codes * len(index) + column_codes))
        combined = combined.astype(np.int64, copy=False)
        combined[missing] = -1
        codes = combined
    assert codes is not None
    return codes


def _time_scale(times: np.ndarray, other: np.ndarray, distinct: int) -> tuple[int, Any, Any]:
    """(width, times, other) on one scale starting at 0, so that `code * width + time` orders by
    (code, time) without overflowing int64 for `distinct` codes (ranks when offsets would)."""
    import numpy as np

    low = min(int(times.min()), int(other.min()))
    width = max(int(times.max()), int(other.max())) - low + 1
    if distinct * width < _SORT_KEY_LIMIT:
        return width, times - low, other - low
    grid = np.unique(np.concatenate([times, other]))
    return len(grid), np.searchsorted(grid, times), np.searchsorted(grid, other)


@dataclass
class Candidates:
    """A view's candidate rows as arrays: key columns, event time, and the tie-breakers.

    Times are int64 epoch microseconds; `created` uses int64 min for null (oldest). `created`
    and `sequence` are needed only when ties on (keys, event time) are possible or with the
    created-time option.
    """

    keys: list[Any]
    event: np.ndarray
    created: np.ndarray | None = None
    sequence: np.ndarray | None = None

    @classmethod
    def concat(cls, parts: list[Candidates]) -> Candidates:
        """One set of candidates from several (in order); empty arrays for none."""
        import numpy as np

        if len(parts) == 1:
            return parts[0]
        if not parts:
            return cls([], np.empty(0, dtype=np.int64))

        join = np.concatenate
        return cls(
            [join([p.keys[i] for p in parts]) for i in range(len(parts[0].keys))],
            join([p.event for p in parts]),
            None if parts[0].created is None else join([p.created for p in parts]),
            None if parts[0].sequence is None else join([p.sequence for p in parts]),
        )

    @classmethod
    def from_arrow(cls, table: Any, key_columns: list[str], tiebreak: bool) -> Candidates:
        import numpy as np

        created = sequence = None
        if tiebreak:
            created = table.column("__cr").fill_null(np.iinfo(np.int64).min).to_numpy()
            sequence = table.column("__seq").to_numpy()
        return cls(
            [_values(table.column(k)) for k in key_columns],
            table.column("__ev").to_numpy(),
            created,
            sequence,
        )


def merge_join(
    candidates: Candidates,
    entity: EntityKeys,
    ttl_us: int | None,
    exclude_created_after: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """(entity row numbers, candidate indexes) of every entity row that has a winner.

    Without `candidates.created` the candidates must be unique on (keys, event time).
    """
    import numpy as np

    empty = np.empty(0, dtype=np.int64)
    if len(candidates.event) == 0 or len(entity.rows) == 0:
        return empty, empty
    codes = feature_codes(candidates.keys, entity)
    candidates.keys = []  # the codes stand for them from here on; free the memory
    event, created, sequence = candidates.event, candidates.created, candidates.sequence
    kept = None
    if codes.min() < 0:  # rows with keys no entity row has
        kept = np.flatnonzero(codes >= 0)
        if len(kept) == 0:
            return empty, empty
        codes, event = codes[kept], event[kept]
        if created is not None and sequence is not None:
            created, sequence = created[kept], sequence[kept]
    if not exclude_created_after:
        width, scaled, entity_scaled = _time_scale(event, entity.times, entity.distinct)
        sort_key = codes * width
        sort_key += scaled
        del scaled, codes  # the sort key holds both (code = key // width); free the memory
        if created is not None and sequence is not None:
            order = np.lexsort((sequence, created, sort_key))
        else:
            order = np.argsort(sort_key, kind="stable")  # runs: the projection is sorted by file
        sort_key = sort_key[order]
        position = np.searchsorted(sort_key, entity.codes * width + entity_scaled, side="right")
        position -= 1
        found = position >= 0
        np.maximum(position, 0, out=position)
        found &= sort_key[position] // width == entity.codes
        del sort_key
        winner = order[position]
    else:
        assert created is not None and sequence is not None
        available = np.maximum(event, created)
        width, scaled, entity_scaled = _time_scale(available, entity.times, entity.distinct)
        del available
        sort_key = codes * width + scaled
        by_contract = np.lexsort((sequence, created, event))
        rank = np.empty(len(by_contract), dtype=np.int64)
        rank[by_contract] = np.arange(len(by_contract), dtype=np.int64)
        order = np.argsort(sort_key, kind="stable")
        ranks = len(rank)
        sorted_codes = codes[order]
        # Codes ascend along `order`, so code * ranks + rank keeps the running maximum per key.
        best = np.maximum.accumulate(sorted_codes * ranks + rank[order])
        position = np.searchsorted(sort_key[order], entity.codes * width + entity_scaled, "right")
        position -= 1
        found = position >= 0
        np.maximum(position, 0, out=position)
        found &= sorted_codes[position] == entity.codes
        winner = by_contract[best[position] - sorted_codes[position] * ranks]
    if ttl_us is not None:
        found &= event[winner] >= entity.times - ttl_us
    winners = winner[found]
    return entity.rows[found], winners if kept is None else kept[winners]
