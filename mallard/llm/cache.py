"""Response caches under MALLARD_HOME: exact (SQLite, keyed by endpoint, model, parameters and
messages) and semantic (MiniLM embeddings of the last user message, cosine ≥ threshold, within a
scope that fixes everything else about the request)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from mallard.llm.embeddings import MiniLMEmbedder


def canonical_key(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, timeout=30, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


class ExactCache:
    """Responses keyed by a hash of (endpoint, model, parameters, schema, messages)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._db = _connect(self.path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS exact_cache (key TEXT PRIMARY KEY, endpoint TEXT, model TEXT, "
            "response TEXT NOT NULL, created_at REAL NOT NULL)"
        )
        self._lock = threading.Lock()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT response FROM exact_cache WHERE key = ?", (key,)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, endpoint: str, model: str, response: dict[str, Any]) -> None:
        blob = json.dumps(response, default=str)
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO exact_cache VALUES (?, ?, ?, ?, ?)",
                (key, endpoint, model, blob, time.time()),
            )

    def clear(self, endpoint: str | None = None) -> int:
        with self._lock:
            if endpoint is None:
                return self._db.execute("DELETE FROM exact_cache").rowcount
            return self._db.execute(
                "DELETE FROM exact_cache WHERE endpoint = ?", (endpoint,)
            ).rowcount

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM exact_cache").fetchone()[0]


class SemanticCache:
    """Nearest earlier question in the same scope; a hit when cosine similarity ≥ threshold.

    Vectors persist in SQLite and are searched in memory (one matrix product per lookup)."""

    def __init__(
        self, path: Path | str, embedder: MiniLMEmbedder | None = None, threshold: float = 0.95
    ):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"semantic cache threshold must be in (0, 1], got {threshold}")
        self.path = Path(path)
        self.threshold = threshold
        self._embedder = embedder
        self._db = _connect(self.path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS semantic_cache (id INTEGER PRIMARY KEY, scope TEXT NOT NULL, "
            "text TEXT NOT NULL, vector BLOB NOT NULL, response TEXT NOT NULL, created_at REAL NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS semantic_scope ON semantic_cache(scope)")
        self._lock = threading.Lock()
        self._index: dict[str, tuple[np.ndarray, list[int]]] = {}

    @property
    def embedder(self) -> MiniLMEmbedder:
        if self._embedder is None:
            from mallard.llm.embeddings import default_embedder

            self._embedder = default_embedder()
        return self._embedder

    def _scope_index(self, scope: str) -> tuple[np.ndarray, list[int]]:
        import numpy as np

        if scope not in self._index:
            rows = self._db.execute(
                "SELECT id, vector FROM semantic_cache WHERE scope = ? ORDER BY id", (scope,)
            ).fetchall()
            if rows:
                matrix = np.vstack([np.frombuffer(v, dtype=np.float32) for _, v in rows])
            else:
                matrix = np.zeros((0, 0), dtype=np.float32)
            self._index[scope] = (matrix, [i for i, _ in rows])
        return self._index[scope]

    def has_scope(self, scope: str) -> bool:
        with self._lock:
            matrix, _ = self._scope_index(scope)
            return len(matrix) > 0

    def embed(self, text: str) -> np.ndarray:
        return self.embedder.embed([text])[0]

    def lookup(
        self, scope: str, text: str, vector: np.ndarray | None = None
    ) -> tuple[dict[str, Any], float] | None:
        """(response, similarity) of the best match at or above the threshold, else None."""
        with self._lock:
            matrix, ids = self._scope_index(scope)
        if not len(ids):
            return None
        if vector is None:
            vector = self.embed(text)
        scores = matrix @ vector
        best = int(scores.argmax())
        if float(scores[best]) < self.threshold:
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT response FROM semantic_cache WHERE id = ?", (ids[best],)
            ).fetchone()
        return (json.loads(row[0]), float(scores[best])) if row else None

    def add(
        self, scope: str, text: str, response: dict[str, Any], vector: np.ndarray | None = None
    ) -> None:
        import numpy as np

        if vector is None:
            vector = self.embed(text)
        vector = np.asarray(vector, dtype=np.float32)
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO semantic_cache (scope, text, vector, response, created_at) VALUES (?, ?, ?, ?, ?)",
                (scope, text, vector.tobytes(), json.dumps(response, default=str), time.time()),
            )
            matrix, ids = self._scope_index(scope)
            stacked = vector[None, :] if not len(ids) else np.vstack([matrix, vector[None, :]])
            self._index[scope] = (stacked, [*ids, int(cursor.lastrowid or 0)])

    def clear(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM semantic_cache")
            self._index.clear()
