"""Embedding search over a small corpus (help-centre articles): MiniLM vectors, cosine top-k.

Document vectors are cached under MALLARD_HOME keyed by the corpus content, so a process embeds
the corpus once (39 articles: about a second) and later processes load the cached matrix."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mallard.llm.chains.spec import Corpus
from mallard.llm.errors import ChainError

if TYPE_CHECKING:
    import numpy as np

    from mallard.llm.embeddings import MiniLMEmbedder


class EmbeddingRetriever:
    def __init__(
        self,
        corpus: Corpus,
        *,
        embedder: MiniLMEmbedder | None = None,
        cache_dir: Path | None = None,
    ):
        self.corpus = corpus
        self._embedder = embedder
        self.cache_dir = cache_dir
        self._docs: list[dict[str, Any]] | None = None
        self._matrix: np.ndarray | None = None
        self._lock = threading.Lock()

    @property
    def embedder(self) -> MiniLMEmbedder:
        if self._embedder is None:
            from mallard.llm.embeddings import default_embedder

            self._embedder = default_embedder()
        return self._embedder

    def _load(self) -> tuple[list[dict[str, Any]], np.ndarray]:
        """Documents with their paragraphs; one vector per document (title + text, truncated by the
        model at 256 tokens) followed by one per passage (title + paragraph)."""
        with self._lock:
            if self._docs is None or self._matrix is None:
                import numpy as np

                docs = self._read()
                passages = [f"{d['title']}\n{d['text']}".strip() for d in docs]
                passages += [f"{d['title']}\n{p}".strip() for d in docs for p in d["paragraphs"]]
                digest = hashlib.sha256(
                    ("\x1e".join(passages) + self.embedder.model_id).encode()
                ).hexdigest()[:16]
                cached = (
                    self.cache_dir / f"{self.corpus.name}-{digest}.npy" if self.cache_dir else None
                )
                if cached is not None and cached.is_file():
                    matrix = np.load(cached)
                else:
                    matrix = self.embedder.embed(passages)
                    if cached is not None:
                        cached.parent.mkdir(parents=True, exist_ok=True)
                        tmp = cached.with_suffix(".tmp.npy")
                        np.save(tmp, matrix)
                        tmp.replace(cached)
                self._docs, self._matrix = docs, matrix
            return self._docs, self._matrix

    def _read(self) -> list[dict[str, Any]]:
        c = self.corpus
        try:
            raw = Path(c.path).read_text()
        except OSError as exc:
            raise ChainError(f"corpus {c.name!r}: cannot read {c.path}: {exc}") from exc
        docs = []
        for number, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            try:
                text = str(record[c.text_field])
                docs.append(
                    {
                        "id": str(record[c.id_field]),
                        "title": str(record.get(c.title_field or "", "") or ""),
                        "text": text,
                        "paragraphs": [p.strip() for p in text.split("\n\n") if p.strip()]
                        or [text],
                    }
                )
            except KeyError as exc:
                raise ChainError(
                    f"corpus {c.name!r}: line {number} of {c.path} has no field {exc}"
                ) from None
        return docs

    def search(self, query: str, k: int = 3) -> list[dict[str, Any]]:
        """The k documents closest to the query, best first. A document's score is the mean of the
        cosine to the whole document and to its best passage (on the help-centre questions and
        their paraphrases: recall@2 0.86, against 0.85 for whole documents and 0.83 for passages)."""
        docs, matrix = self._load()
        scores = matrix @ self.embedder.embed([query])[0]
        found, offset = [], len(docs)
        for index, doc in enumerate(docs):
            passage_scores = [float(x) for x in scores[offset : offset + len(doc["paragraphs"])]]
            offset += len(doc["paragraphs"])
            found.append(((float(scores[index]) + max(passage_scores)) / 2, doc, passage_scores))
        found.sort(key=lambda item: -item[0])
        return [
            {
                "id": d["id"],
                "title": d["title"],
                "text": d["text"],
                "score": round(best, 4),
                "paragraphs": d["paragraphs"],
                "paragraph_scores": ps,
            }
            for best, d, ps in found[:k]
        ]

    def retrieve(self, query: str, k: int = 3, max_chars: int = 900) -> dict[str, Any]:
        """The RetrieveStep output: docs, their ids, and a context block for a prompt. A document
        longer than `max_chars` contributes its best-matching paragraphs, in their original order."""
        docs = self.search(query, k)
        blocks = []
        for d in docs:
            if len(d["text"]) <= max_chars:
                text = d["text"]
            else:
                chosen: list[int] = []
                used = 0
                for i in sorted(
                    range(len(d["paragraphs"])), key=lambda i: -d["paragraph_scores"][i]
                ):
                    paragraph = d["paragraphs"][i]
                    if chosen and used + len(paragraph) > max_chars:
                        continue
                    chosen.append(i)
                    used += len(paragraph) + 2
                text = "\n\n".join(d["paragraphs"][i] for i in sorted(chosen))
                if len(text) > max_chars:
                    text = text[:max_chars].rsplit(" ", 1)[0] + " …"
            blocks.append(f"[{d['id']}] {d['title']}\n{text}")
        slim = [{key: d[key] for key in ("id", "title", "text", "score")} for d in docs]
        return {"docs": slim, "ids": [d["id"] for d in docs], "context": "\n\n".join(blocks)}
