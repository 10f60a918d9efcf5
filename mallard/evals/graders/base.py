"""The grader interface: every grader turns a Sample (an item and the answer under test) into a
Grade (score in [0, 1], pass/fail against its threshold, a reason).

Scores are normalised to [0, 1] so that differences and tolerances mean the same for every
grader; `raw` keeps the grader's own scale (a rubric's 1–5, a cosine, a parsed number).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mallard.specs import DeclarationError, check_identifier

KINDS = ("deterministic", "embedding", "judge", "custom")


@dataclass
class Sample:
    """What a grader sees: the item, the answer under test and, for RAG answers, the retrieved
    passages. `other_output` is the second answer of a pairwise comparison."""

    item_id: str
    output: str
    inputs: Mapping[str, Any] = field(default_factory=dict)
    reference: str | None = None
    expected_label: str | None = None
    expected_score: float | None = None
    category: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    contexts: Sequence[str] = ()
    context_ids: Sequence[str] = ()
    other_output: str | None = None

    @property
    def question(self) -> str:
        for key in ("question", "input", "query", "prompt"):
            if key in self.inputs:
                return str(self.inputs[key])
        return "\n".join(f"{k}: {v}" for k, v in self.inputs.items())

    def content_key(self) -> str:
        """A hash of everything about the sample a grade can depend on."""
        blob = json.dumps(
            [
                self.item_id,
                dict(self.inputs),
                self.output,
                self.reference,
                self.expected_label,
                self.expected_score,
                dict(self.metadata),
                list(self.contexts),
                list(self.context_ids),
                self.other_output,
            ],
            sort_keys=True,
            default=str,
            ensure_ascii=False,
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    @classmethod
    def from_item(cls, item: Mapping[str, Any], output: str, **extra: Any) -> Sample:
        return cls(
            item_id=item["item_id"],
            output=output,
            inputs=item.get("inputs") or {},
            reference=item.get("reference"),
            expected_label=item.get("expected_label"),
            expected_score=item.get("expected_score"),
            category=item.get("category") or "",
            metadata=item.get("metadata") or {},
            **extra,
        )


@dataclass(slots=True)
class Grade:
    score: float
    passed: bool
    reason: str = ""
    raw: float | None = None
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    error: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Grade:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @classmethod
    def failed(cls, reason: str, error: str = "") -> Grade:
        return cls(score=0.0, passed=False, reason=reason, error=error or reason)


@dataclass
class GradeContext:
    """What graders may need from the outside: the LLM client (judges) and the run they grade for."""

    client: Any = None
    run_id: str = ""
    embedder: Any = None
    settings: Any = None
    """Where fitted judge models are stored (default: the client's settings, or the process's)."""

    def endpoint_identity(self, endpoint: str) -> dict[str, Any]:
        """The model and default parameters behind a declared endpoint (part of a judge's fingerprint)."""
        if self.client is None:
            return {"endpoint": endpoint}
        declared = self.client.endpoints[endpoint]
        return {
            "endpoint": endpoint,
            "model": declared.model,
            "params": dict(declared.params),
            "fallbacks": list(declared.fallbacks),
        }


class Grader:
    """Base class: subclasses set `kind`, implement `grade` and describe themselves in `config`."""

    kind: ClassVar[str] = "deterministic"

    def __init__(self, name: str, *, threshold: float = 0.5, description: str = ""):
        check_identifier(type(self).__name__, name)
        if not 0.0 <= threshold <= 1.0:
            raise DeclarationError(
                f"{type(self).__name__} {name!r}: threshold={threshold} must be within [0, 1] "
                "(scores are normalised to [0, 1])"
            )
        self.name = name
        self.threshold = threshold
        self.description = description

    # What determines a grade (hashed into the fingerprint and the result cache key).
    def config(self) -> dict[str, Any]:
        return {}

    def fingerprint(self, ctx: GradeContext | None = None) -> str:
        blob = json.dumps(
            {
                "class": type(self).__name__,
                "name": self.name,
                "threshold": self.threshold,
                "config": self.config(),
                "identity": self.identity(ctx),
            },
            sort_keys=True,
            default=str,
            ensure_ascii=False,
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def identity(self, ctx: GradeContext | None) -> dict[str, Any]:
        """Outside facts a grade depends on (a judge's model and parameters)."""
        return {}

    @property
    def judges(self) -> list[Any]:
        """The LLM judges this grader relies on (itself, or a panel's members)."""
        return []

    @property
    def pairwise(self) -> bool:
        return False

    def grade(self, sample: Sample, ctx: GradeContext | None = None) -> Grade:
        raise NotImplementedError

    def grade_many(
        self,
        samples: Sequence[Sample],
        ctx: GradeContext | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[Grade]:
        out = []
        for sample in samples:
            out.append(self.grade(sample, ctx))
            if progress is not None:
                progress(1)
        return out

    def _grade(self, score: float, reason: str, raw: float | None = None, **extra: Any) -> Grade:
        score = min(1.0, max(0.0, float(score)))
        return Grade(score=score, passed=score >= self.threshold, reason=reason, raw=raw, **extra)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
