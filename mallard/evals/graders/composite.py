"""Composite judges: several signals combined by a small model fitted on human labels.

    CompositeJudge("faithfulness", task="faithfulness", llm=FaithfulnessJudge(...), min_kappa=0.4,
                   labels=("support_faithfulness",))

Signals (each a number per instance; an instance is one answer sentence for faithfulness, the
whole answer for reference agreement):

| signal | what it measures |
| --- | --- |
| `llm` | the LLM judge's P(yes) from its verdict token's probabilities (one call per item) |
| `sim_context` | MiniLM cosine of the sentence (answer) to its closest retrieved sentence |
| `overlap` | share of the sentence's content words found in the retrieved passages |
| `numbers` | share of the sentence's numbers (units normalised) found in the passages |
| `negation` | 1 when the sentence negates and its closest passage sentence does not, or back |
| `grounding` | K-precision of the whole answer against the passages |
| `sim_reference` | MiniLM cosine of the answer to the gold answer |
| `contains_reference` | share of the gold answer's content words found in the answer |
| `number_recall` / `number_precision` | the gold answer's numbers in the answer / the answer's in the gold answer |
| `polarity` | 1 when the answer opens with yes and the gold answer with no, or back |

The model (`mallard.evals.judgemodels`) is fitted by `mallard.evals.alignment.align` and stored
as a versioned JSON artifact under MALLARD_HOME; the judge loads the latest fit made for its
configuration, and the fit's version and hash are part of its fingerprint, so cached grades of
two fits never mix. An item's probability is its weakest instance's: the grade names the answer
sentences below the threshold. Without a fit the judge cannot grade (the error says how to fit).
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from mallard.evals.graders import textfeatures as tf
from mallard.evals.graders.base import Grade, GradeContext, Grader, Sample
from mallard.specs import DeclarationError

TASKS = {
    "faithfulness": ("llm", "sim_context", "overlap", "numbers", "negation", "grounding"),
    "reference_agreement": (
        "llm",
        "sim_reference",
        "contains_reference",
        "number_recall",
        "number_precision",
        "number_conflict",
        "polarity",
        "negation",
    ),
}
OPTIONAL = {"reference_agreement": ("sim_context", "grounding")}
"""Signals a judge may declare but does not use by default (reference agreement is judged
against the gold answer, not the articles)."""
PER_SENTENCE = {"faithfulness"}


def _context_sentences(sample: Sample) -> list[str]:
    out: list[str] = []
    for text in sample.contexts:
        for sentence in tf.sentences(text):
            if len(sentence) > 3:
                out.append(sentence)
    return out


_VECTORS: OrderedDict[tuple[int, str], Any] = OrderedDict()
_VECTORS_MAX = 20_000
"""Vectors of texts embedded in this process (1.5 kB each), least recently used dropped: the
help-centre articles' sentences are embedded once, not once per alignment or eval run."""


class _Embeddings:
    """Embeds each distinct text once (MiniLM vectors are unit length: a dot is a cosine)."""

    def __init__(self, embedder: Any):
        self.embedder = embedder
        self.vectors: dict[str, Any] = {}

    def add(self, texts: Sequence[str]) -> None:
        owner = id(self.embedder)
        todo = []
        for text in dict.fromkeys(texts):
            cached = _VECTORS.get((owner, text))
            if cached is None:
                todo.append(text)
            else:
                _VECTORS.move_to_end((owner, text))
                self.vectors[text] = cached
        if todo:
            for text, vector in zip(todo, self.embedder.embed(todo), strict=True):
                self.vectors[text] = vector
                _VECTORS[(owner, text)] = vector
            while len(_VECTORS) > _VECTORS_MAX:
                _VECTORS.popitem(last=False)

    def best(self, text: str, candidates: Sequence[str]) -> tuple[float, int]:
        if not candidates:
            return 0.0, -1
        import numpy as np

        sims = np.asarray([self.vectors[c] for c in candidates]) @ self.vectors[text]
        index = int(np.argmax(sims))
        return float(sims[index]), index

    def cosine(self, a: str, b: str) -> float:
        return float(self.vectors[a] @ self.vectors[b])


class CompositeJudge(Grader):
    kind = "judge"

    def __init__(
        self,
        name: str,
        *,
        task: str,
        llm: Grader | None = None,
        signals: Sequence[str] | None = None,
        min_kappa: float | None = None,
        labels: Sequence[str] = (),
        holdout: Sequence[str] = (),
        method: str = "auto",
        fit_version: int | None = None,
        description: str = "",
    ):
        super().__init__(name, threshold=0.5, description=description)
        if task not in TASKS:
            raise DeclarationError(f"composite judge {name!r}: task={task!r} not in {list(TASKS)}")
        chosen = tuple(signals) if signals is not None else TASKS[task]
        if llm is None:
            chosen = tuple(s for s in chosen if s != "llm")
        unknown = set(chosen) - set(TASKS[task]) - set(OPTIONAL.get(task, ()))
        if unknown or not chosen:
            raise DeclarationError(
                f"composite judge {name!r}: signals {sorted(unknown) or '()'} unknown for "
                f"{task}; choose from {list(TASKS[task])}"
            )
        if "llm" in chosen and llm is None:
            raise DeclarationError(f"composite judge {name!r}: the llm signal needs llm=…")
        if min_kappa is not None and not -1.0 <= min_kappa <= 1.0:
            raise DeclarationError(f"judge {name!r}: min_kappa={min_kappa} must be within [-1, 1]")
        if method not in ("auto", "logistic", "isotonic"):
            raise DeclarationError(f"composite judge {name!r}: method={method!r}")
        self.task = task
        self.llm = llm
        self.signals = chosen
        self.min_kappa = min_kappa
        self.labels = tuple(labels)
        self.holdout = tuple(holdout)
        self.method = method
        self.fit_version = fit_version

    # Declaration -------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return str(getattr(self.llm, "endpoint", "")) if self.llm is not None else ""

    def config(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "signals": list(self.signals),
            "method": self.method,
            "llm": self.llm.name if self.llm is not None else None,
        }

    def base_identity(self, ctx: GradeContext | None) -> dict[str, Any]:
        from mallard.llm.embeddings import MODEL_ID

        return {
            "llm": self.llm.fingerprint(ctx) if self.llm is not None else None,
            "embedder": MODEL_ID,
            "endpoint": self.endpoint,
        }

    def base_fingerprint(self, ctx: GradeContext | None = None) -> str:
        """What a fit is made for: everything of the fingerprint but the fit itself."""
        blob = json.dumps(
            {
                "class": type(self).__name__,
                "name": self.name,
                "config": self.config(),
                "identity": self.base_identity(ctx),
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def fit(self, ctx: GradeContext | None) -> dict[str, Any] | None:
        from mallard.evals.judgemodels import load_fit

        return load_fit(
            _settings(ctx), self.name, self.base_fingerprint(ctx), version=self.fit_version
        )

    def identity(self, ctx: GradeContext | None) -> dict[str, Any]:
        fit = self.fit(ctx)
        return {
            **self.base_identity(ctx),
            "fit": f"v{fit['version']}:{fit['fit_id']}" if fit else None,
        }

    @property
    def judges(self) -> list[Any]:
        return [self]

    # Signals -----------------------------------------------------------------------------------
    def _embedder(self, ctx: GradeContext | None) -> Any:
        if ctx is not None and ctx.embedder is not None:
            return ctx.embedder
        from mallard.llm.embeddings import default_embedder

        return default_embedder()

    def missing(self, sample: Sample) -> str | None:
        if not sample.output.strip():
            return "empty answer"
        if self.task == "faithfulness" and not sample.contexts:
            return "no retrieved articles to check the answer against"
        if self.task == "reference_agreement" and not sample.reference:
            return "item has no reference answer"
        return None

    def llm_grades(self, samples: Sequence[Sample], ctx: GradeContext | None) -> list[Grade | None]:
        if self.llm is None or "llm" not in self.signals:
            return [None] * len(samples)
        return [self.llm.grade(s, ctx) for s in samples]

    def instances(
        self,
        samples: Sequence[Sample],
        ctx: GradeContext | None,
        llm: Sequence[Grade | None] | None = None,
    ) -> list[tuple[list[list[float]], list[str]]]:
        """Per sample: its instance vectors (in `self.signals` order) and the text of each
        instance (a sentence, or the answer)."""
        llm = list(llm) if llm is not None else self.llm_grades(samples, ctx)
        per_sentence = self.task in PER_SENTENCE
        # what is embedded: answer sentences against the passages' (sim_context, and the
        # closest passage sentence of the negation cue), whole answers against gold answers
        with_context = "sim_context" in self.signals or (
            per_sentence and "negation" in self.signals
        )
        with_reference = "sim_reference" in self.signals
        embeddings = _Embeddings(self._embedder(ctx)) if with_context or with_reference else None
        parts = []
        for sample in samples:
            answer_sentences = list(tf.sentences(sample.output)) or [sample.output]
            parts.append((answer_sentences, _context_sentences(sample)))
        if embeddings is not None:
            texts: list[str] = []
            if with_context:
                texts += [t for sentences, context in parts for t in (*sentences, *context)]
            if with_reference:
                texts += [s.output for s in samples] + [
                    str(s.reference) for s in samples if s.reference
                ]
            embeddings.add(texts)
        out = []
        for sample, grade, (answer_sentences, context) in zip(samples, llm, parts, strict=True):
            joined = "\n".join(sample.contexts)
            p_llm = 0.5 if grade is None or grade.error else float(grade.score)
            grounding = tf.token_precision(sample.output, joined) if sample.contexts else 0.0
            if per_sentence:
                texts, vectors = answer_sentences, []
                for sentence in answer_sentences:
                    sim, index = (
                        embeddings.best(sentence, context)
                        if embeddings and with_context
                        else (0.0, -1)
                    )
                    closest = context[index] if index >= 0 else ""
                    values = {
                        "llm": p_llm,
                        "sim_context": sim,
                        "overlap": tf.token_precision(sentence, joined),
                        "numbers": tf.number_support(sentence, joined)[0],
                        "negation": float(
                            (tf.negations(sentence) > 0) != (tf.negations(closest) > 0)
                        ),
                        "grounding": grounding,
                    }
                    vectors.append([values[s] for s in self.signals])
            else:
                reference = str(sample.reference or "")
                sims = [
                    embeddings.best(sentence, context)[0]
                    if embeddings is not None and with_context and context
                    else 0.0
                    for sentence in answer_sentences
                ]
                values = {
                    "llm": p_llm,
                    "sim_reference": embeddings.cosine(sample.output, reference)
                    if embeddings and with_reference and reference
                    else 0.0,
                    "contains_reference": tf.token_recall(reference, sample.output),
                    "number_recall": tf.number_support(reference, sample.output)[0],
                    "number_precision": tf.number_support(sample.output, reference)[0],
                    "number_conflict": float(bool(tf.number_conflicts(sample.output, reference))),
                    "polarity": float(tf.polarity(sample.output) * tf.polarity(reference) < 0),
                    "negation": min(abs(tf.negations(sample.output) - tf.negations(reference)), 3)
                    / 3,
                    "sim_context": min(sims) if sims else 0.0,
                    "grounding": grounding,
                }
                texts, vectors = [sample.output], [[values[s] for s in self.signals]]
            out.append((vectors, texts))
        return out

    # Grading -----------------------------------------------------------------------------------
    def grade(self, sample: Sample, ctx: GradeContext | None = None) -> Grade:
        return self.grade_many([sample], ctx)[0]

    def grade_many(
        self,
        samples: Sequence[Sample],
        ctx: GradeContext | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[Grade]:
        from mallard.evals.judgemodels import FittedModel

        fit = self.fit(ctx)
        out: list[Grade | None] = [None] * len(samples)
        todo = []
        for i, sample in enumerate(samples):
            why = self.missing(sample)
            if why:
                out[i] = Grade.failed(why, "missing_input")
            elif fit is None:
                out[i] = Grade.failed(
                    f"composite judge {self.name!r} has no fitted model for its configuration: "
                    f"run `mallard evals align {self.name}`",
                    "not_fitted",
                )
            else:
                todo.append(i)
        if todo and fit is not None:
            model = FittedModel.from_json(fit["model"])
            chosen = [samples[i] for i in todo]
            llm = self.llm_grades(chosen, ctx)
            for i, grade_llm, (vectors, texts) in zip(
                todo, llm, self.instances(chosen, ctx, llm), strict=True
            ):
                out[i] = self._decide(model, fit, vectors, texts, grade_llm)
        if progress is not None:
            progress(len(samples))
        return [g for g in out if g is not None]

    def _decide(
        self,
        model: Any,
        fit: dict[str, Any],
        vectors: list[list[float]],
        texts: list[str],
        llm: Grade | None,
    ) -> Grade:
        p, each = model.probability(vectors)
        t = model.threshold
        # a monotone rescale that puts the fitted threshold at 0.5: `passed` is score >= 0.5
        score = 0.5 * p / t if p < t else 0.5 + 0.5 * (p - t) / max(1 - t, 1e-9)
        score = min(1.0, max(0.0, score))
        weak = [(text, q) for text, q in zip(texts, each, strict=True) if q < t]
        verdict = "pass" if p >= t else "fail"
        if self.task in PER_SENTENCE:
            named = "; ".join(f"«{text[:160]}» ({q:.2f})" for text, q in weak)
            detail = f"unsupported: {named}" if weak else "every sentence supported"
        else:
            detail = (
                f"signals {dict(zip(self.signals, (round(v, 2) for v in vectors[0]), strict=True))}"
            )
        grade = Grade(
            score=score,
            passed=score >= self.threshold,
            reason=f"{verdict}: P {p:.2f} vs threshold {t:.2f} (fit v{fit['version']}); {detail}",
            raw=round(p, 6),
            details={
                "p": p,
                "fit_version": fit["version"],
                "signals": {
                    name: [round(v[k], 4) for v in vectors] for k, name in enumerate(self.signals)
                },
                "instance_p": [round(q, 4) for q in each],
                "unsupported_sentences": [text for text, _ in weak]
                if self.task in PER_SENTENCE
                else [],
            },
        )
        if llm is not None:
            grade.cost_usd = llm.cost_usd
            grade.prompt_tokens = llm.prompt_tokens
            grade.completion_tokens = llm.completion_tokens
            grade.latency_ms = llm.latency_ms
            grade.cached = llm.cached
            grade.details["verdict_path"] = llm.details.get("verdict_path", "")
            if llm.details.get("model"):
                grade.details["model"] = llm.details["model"]
        return grade


def _settings(ctx: GradeContext | None) -> Any:
    if ctx is not None and getattr(ctx, "settings", None) is not None:
        return ctx.settings
    if ctx is not None and ctx.client is not None and getattr(ctx.client, "settings", None):
        return ctx.client.settings
    from mallard.config import get_settings

    return get_settings()
