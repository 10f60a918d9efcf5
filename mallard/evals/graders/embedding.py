"""Embedding similarity to the reference: cosine of all-MiniLM-L6-v2 vectors (the LLM layer's
onnxruntime embedder), batched over all samples of a run."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mallard.evals.graders.base import Grade, GradeContext, Grader, Sample


class EmbeddingSimilarity(Grader):
    """Cosine similarity between the answer and the reference (clipped to [0, 1])."""

    kind = "embedding"

    def __init__(
        self,
        name: str = "embedding_similarity",
        *,
        threshold: float = 0.7,
        batch_size: int = 64,
        description: str = "",
    ):
        super().__init__(name, threshold=threshold, description=description)
        self.batch_size = batch_size

    def config(self) -> dict[str, Any]:
        from mallard.llm.embeddings import MODEL_ID

        return {"model": MODEL_ID}

    @staticmethod
    def _embedder(ctx: GradeContext | None) -> Any:
        if ctx is not None and ctx.embedder is not None:
            return ctx.embedder
        from mallard.llm.embeddings import default_embedder

        return default_embedder()

    def grade(self, sample: Sample, ctx: GradeContext | None = None) -> Grade:
        return self.grade_many([sample], ctx)[0]

    def grade_many(
        self,
        samples: Sequence[Sample],
        ctx: GradeContext | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[Grade]:
        out: list[Grade | None] = [None] * len(samples)
        todo = []
        for index, sample in enumerate(samples):
            if not sample.reference:
                out[index] = Grade.failed("item has no reference answer", "missing_target")
            elif not sample.output.strip():
                out[index] = self._grade(0.0, "empty answer", raw=0.0)
            else:
                todo.append(index)
        if todo:
            embedder = self._embedder(ctx)
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start : start + self.batch_size]
                answers = embedder.embed([samples[i].output for i in chunk])
                references = embedder.embed([str(samples[i].reference) for i in chunk])
                cosines = (answers * references).sum(axis=1)
                for i, cosine in zip(chunk, cosines, strict=True):
                    value = float(cosine)
                    out[i] = self._grade(
                        value,
                        f"cosine {value:.3f} to the reference "
                        f"({'≥' if value >= self.threshold else '<'} {self.threshold:g})",
                        raw=round(value, 6),
                    )
                if progress is not None:
                    progress(len(chunk))
        if progress is not None:
            progress(len(samples) - len(todo))
        return [g for g in out if g is not None]
