"""LLM judges: rubric (reasoning, then 1–5), reference agreement (yes/no), faithfulness and
context relevance for retrieval-augmented answers (yes/no against the retrieved articles),
pairwise (both orders; a tie when the orders disagree) and panels (majority or mean).

Every judge asks its declared endpoint through the LLM layer's client for schema-constrained JSON
(`reasoning` first, so the verdict comes after the model has written it out), with the exact
cache on and the semantic cache off. A judge may declare `min_kappa`: the agreement with human
verdicts (Cohen's κ on the calibration slice) below which evals relying on it are untrusted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from mallard.evals.graders.base import Grade, GradeContext, Grader, Sample
from mallard.specs import DeclarationError

# A reply must fit in max_tokens even when every character of the reasoning is one token (small
# models do degenerate into digit lists): otherwise the JSON is cut off and cannot be parsed.
REASONING_CHARS = 240
DEFAULT_MAX_TOKENS = REASONING_CHARS + 40
DEFAULT_RUBRIC = (
    "Correct and consistent with the reference answer; answers the question that was asked; "
    "invents no facts."
)


def _template(name: str, system: str, user: str, variables: tuple[str, ...]) -> Any:
    from mallard.llm.prompts.template import PromptTemplate

    return PromptTemplate(
        name=name, messages=(("system", system), ("user", user)), variables=variables
    )


def _verdict_schema(field: str, options: Sequence[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "reasoning": {"type": "string", "maxLength": REASONING_CHARS},
            field: {"type": "string", "enum": list(options)},
        },
        "required": ["reasoning", field],
    }


class LLMJudge(Grader):
    """Base of the single-call judges: render a template, call the endpoint, interpret the JSON."""

    kind = "judge"
    system: ClassVar[str] = ""
    user: ClassVar[str] = ""
    variables: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        name: str,
        *,
        endpoint: str,
        min_kappa: float | None = None,
        threshold: float = 0.5,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        temperature: float | None = None,
        description: str = "",
    ):
        super().__init__(name, threshold=threshold, description=description)
        if min_kappa is not None and not -1.0 <= min_kappa <= 1.0:
            raise DeclarationError(f"judge {name!r}: min_kappa={min_kappa} must be within [-1, 1]")
        if not endpoint:
            raise DeclarationError(f"judge {name!r}: endpoint is required")
        self.endpoint = endpoint
        self.min_kappa = min_kappa
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.template = _template(
            f"judge_{type(self).__name__.lower()}", self.system, self.user, self.variables
        )

    # Declaration -------------------------------------------------------------------------------
    @property
    def schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "template": self.template.content_hash[:16],
            "schema": self.schema,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }

    def identity(self, ctx: GradeContext | None) -> dict[str, Any]:
        return (
            ctx.endpoint_identity(self.endpoint) if ctx is not None else {"endpoint": self.endpoint}
        )

    @property
    def judges(self) -> list[Any]:
        return [self]

    # Grading -----------------------------------------------------------------------------------
    def render(self, sample: Sample) -> list[dict[str, str]]:
        from mallard.llm.prompts.template import render_messages

        return render_messages(self.template, 0, self.values(sample))

    def values(self, sample: Sample) -> dict[str, Any]:
        raise NotImplementedError

    def missing(self, sample: Sample) -> str | None:
        """Why this sample cannot be judged (no reference, no contexts), or None."""
        return None

    def interpret(self, parsed: dict[str, Any]) -> Grade:
        raise NotImplementedError

    def _params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"max_tokens": self.max_tokens}
        if self.temperature is not None:
            params["temperature"] = self.temperature
        return params

    def _call(
        self, ctx: GradeContext | None, messages: list[dict[str, str]], repeat: int | None = None
    ) -> Any:
        if ctx is None or ctx.client is None:
            raise DeclarationError(
                f"judge {self.name!r} needs an LLM client (GradeContext(client=…))"
            )
        return ctx.client.complete(
            self.endpoint,
            messages,
            schema=self.schema,
            semantic_cache=False,
            repeat=repeat,
            run_id=ctx.run_id,
            attributes={"grader": self.name},
            **self._params(),
        )

    def _from_reply(self, reply: Any) -> Grade:
        grade = self.interpret(reply.parsed)
        grade.cost_usd += reply.cost_usd
        grade.prompt_tokens += reply.prompt_tokens
        grade.completion_tokens += reply.completion_tokens
        grade.latency_ms += reply.latency_ms
        grade.cached = reply.cache != "miss"
        grade.details.setdefault("model", reply.model)
        return grade

    def grade(self, sample: Sample, ctx: GradeContext | None = None) -> Grade:
        why = self.missing(sample)
        if why:
            return Grade.failed(why, "missing_input")
        started = time.perf_counter()
        try:
            reply = self._call(ctx, self.render(sample))
        except DeclarationError:
            raise
        except Exception as exc:  # noqa: BLE001 - a judge failure is recorded on the item, the run goes on
            grade = Grade.failed(
                f"judge call failed: {type(exc).__name__}: {exc}"[:500], type(exc).__name__
            )
            grade.latency_ms = (time.perf_counter() - started) * 1000
            return grade
        return self._from_reply(reply)

    def grade_repeated(self, sample: Sample, ctx: GradeContext | None, repeat: int) -> list[Grade]:
        """`repeat` fresh calls (the client skips its caches) to measure the judge's own variance."""
        why = self.missing(sample)
        if why:
            return [Grade.failed(why, "missing_input")] * repeat
        try:
            replies = self._call(ctx, self.render(sample), repeat=repeat)
        except Exception as exc:  # noqa: BLE001
            return [
                Grade.failed(
                    f"judge call failed: {type(exc).__name__}: {exc}"[:500], type(exc).__name__
                )
            ] * repeat
        return [self._from_reply(reply) for reply in replies]


class _YesNoJudge(LLMJudge):
    field: ClassVar[str] = "verdict"
    yes_reason: ClassVar[str] = "yes"

    @property
    def schema(self) -> dict[str, Any]:
        return _verdict_schema(self.field, ("yes", "no"))

    def interpret(self, parsed: dict[str, Any]) -> Grade:
        yes = str(parsed.get(self.field, "")).strip().lower() == "yes"
        reasoning = str(parsed.get("reasoning", "")).strip()
        return self._grade(
            1.0 if yes else 0.0,
            f"{self.field}={'yes' if yes else 'no'}: {reasoning}",
            raw=1.0 if yes else 0.0,
        )


def _context_block(sample: Sample) -> str:
    """The contexts as the model saw them; ids are prefixed only when each context is one
    document (a retrieval step's joined block already carries its "[id]" markers)."""
    if len(sample.context_ids) != len(sample.contexts):
        return "\n\n".join(sample.contexts)
    return "\n\n".join(
        text if text.startswith(f"[{i}]") else f"[{i}] {text}"
        for i, text in zip(sample.context_ids, sample.contexts, strict=True)
    )


class RubricJudge(LLMJudge):
    """Rubric text (fixed, or per item from `rubric_field`), reasoning before a 1–5 score.
    Normalised score = (s − 1) / 4; passes at 4 or 5 by default."""

    system = (
        "You are a strict, fair grader of customer-support answers. You compare the answer with the "
        "rubric and the reference answer. Reason briefly first, then give the score."
    )
    user = (
        "Question:\n{{ question }}\n\nReference answer:\n{{ reference }}\n\nRubric:\n{{ rubric }}\n\n"
        "Answer to grade:\n{{ answer }}\n\nScore from 1 to 5: 5 = fully correct and complete by the rubric; "
        "4 = correct with a minor omission; 3 = partly correct; 2 = mostly wrong or off the point; "
        "1 = wrong or contradicts the reference."
    )
    variables = ("question", "reference", "rubric", "answer")

    def __init__(
        self,
        name: str = "rubric",
        *,
        endpoint: str,
        rubric: str | None = None,
        rubric_field: str | None = "rubric",
        min_kappa: float | None = None,
        threshold: float = 0.75,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        temperature: float | None = None,
        description: str = "",
    ):
        super().__init__(
            name,
            endpoint=endpoint,
            min_kappa=min_kappa,
            threshold=threshold,
            max_tokens=max_tokens,
            temperature=temperature,
            description=description,
        )
        self.rubric = rubric
        self.rubric_field = rubric_field

    @property
    def schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                "reasoning": {"type": "string", "maxLength": REASONING_CHARS},
                "score": {"type": "integer", "enum": [1, 2, 3, 4, 5]},
            },
            "required": ["reasoning", "score"],
        }

    def config(self) -> dict[str, Any]:
        return {**super().config(), "rubric": self.rubric, "rubric_field": self.rubric_field}

    def values(self, sample: Sample) -> dict[str, Any]:
        rubric = self.rubric
        if rubric is None and self.rubric_field:
            rubric = sample.metadata.get(self.rubric_field) or sample.inputs.get(self.rubric_field)
        return {
            "question": sample.question,
            "reference": sample.reference or "(none given)",
            "rubric": rubric or DEFAULT_RUBRIC,
            "answer": sample.output,
        }

    def interpret(self, parsed: dict[str, Any]) -> Grade:
        score = int(parsed["score"])
        return self._grade(
            (score - 1) / 4,
            f"{score}/5: {str(parsed.get('reasoning', '')).strip()}",
            raw=float(score),
        )


class ReferenceAgreementJudge(_YesNoJudge):
    """Does the answer agree with the gold reference answer? yes/no."""

    field = "agrees"
    system = (
        "You check customer-support answers against a gold reference answer. An answer agrees when it "
        "gives the reference's main point and states nothing that contradicts it. Reason briefly first."
    )
    user = (
        "Question:\n{{ question }}\n\nReference answer:\n{{ reference }}\n\nAnswer to check:\n{{ answer }}\n\n"
        "Does the answer agree with the reference answer? Reply yes or no."
    )
    variables = ("question", "reference", "answer")

    def __init__(self, name: str = "reference_agreement", **kwargs: Any):
        super().__init__(name, **kwargs)

    def missing(self, sample: Sample) -> str | None:
        return None if sample.reference else "item has no reference answer"

    def values(self, sample: Sample) -> dict[str, Any]:
        return {"question": sample.question, "reference": sample.reference, "answer": sample.output}


class FaithfulnessJudge(_YesNoJudge):
    """Is every claim of the answer supported by the retrieved articles? yes/no. An answer that
    says it does not know is supported."""

    field = "supported"
    system = (
        "You check whether a support answer is grounded in the help-centre articles it was given. "
        "An answer is supported only if every fact in it is stated in the articles; facts from "
        "anywhere else, or facts that contradict the articles, make it unsupported. Saying that the "
        "articles do not cover the question is supported. Reason briefly first."
    )
    user = (
        "Articles:\n{{ context }}\n\nQuestion: {{ question }}\n\nAnswer:\n{{ answer }}\n\n"
        "Is every fact in the answer supported by the articles? Reply yes or no."
    )
    variables = ("context", "question", "answer")

    def __init__(self, name: str = "faithfulness", **kwargs: Any):
        super().__init__(name, **kwargs)

    def missing(self, sample: Sample) -> str | None:
        return None if sample.contexts else "no retrieved articles to check the answer against"

    def values(self, sample: Sample) -> dict[str, Any]:
        return {
            "context": _context_block(sample),
            "question": sample.question,
            "answer": sample.output,
        }


class ContextRelevanceJudge(_YesNoJudge):
    """Do the retrieved articles hold what is needed to answer the question? yes/no (grades the
    retrieval step, not the answer)."""

    field = "relevant"
    system = (
        "You check a search step of a support assistant: given a customer's question and the "
        "help-centre articles retrieved for it, decide whether the articles contain the information "
        "needed to answer the question. Reason briefly first."
    )
    user = (
        "Question: {{ question }}\n\nRetrieved articles:\n{{ context }}\n\n"
        "Do these articles contain what is needed to answer the question? Reply yes or no."
    )
    variables = ("question", "context")

    def __init__(self, name: str = "context_relevance", **kwargs: Any):
        super().__init__(name, **kwargs)

    def missing(self, sample: Sample) -> str | None:
        return None if sample.contexts else "no retrieved articles"

    def values(self, sample: Sample) -> dict[str, Any]:
        return {"question": sample.question, "context": _context_block(sample)}


class PairwiseJudge(LLMJudge):
    """Which of two answers is better? Asked in both orders; the answer under test wins only if
    both orders prefer it, loses only if both prefer the other, and otherwise it is a tie (a
    position-swap disagreement is recorded in `details`). Score: win 1, tie 0.5, loss 0."""

    system = (
        "You compare two answers of a support assistant to the same customer question. The better "
        "answer is correct, grounded in the reference, and helpful. Ignore length and style. Reason "
        "briefly first, then name the better answer, or tie if they are equally good."
    )
    user = (
        "Question:\n{{ question }}\n\nReference answer:\n{{ reference }}\n\nAnswer A:\n{{ first }}\n\n"
        "Answer B:\n{{ second }}\n\nWhich answer is better: A, B, or tie?"
    )
    variables = ("question", "reference", "first", "second")

    def __init__(
        self,
        name: str = "pairwise",
        *,
        endpoint: str,
        min_kappa: float | None = None,
        threshold: float = 0.75,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        temperature: float | None = None,
        description: str = "",
    ):
        super().__init__(
            name,
            endpoint=endpoint,
            min_kappa=min_kappa,
            threshold=threshold,
            max_tokens=max_tokens,
            temperature=temperature,
            description=description,
        )

    @property
    def pairwise(self) -> bool:
        return True

    @property
    def schema(self) -> dict[str, Any]:
        return _verdict_schema("better", ("A", "B", "tie"))

    def missing(self, sample: Sample) -> str | None:
        return None if sample.other_output is not None else "pairwise judge needs a second answer"

    def _messages(self, sample: Sample, first: str, second: str) -> list[dict[str, str]]:
        from mallard.llm.prompts.template import render_messages

        return render_messages(
            self.template,
            0,
            {
                "question": sample.question,
                "reference": sample.reference or "(none given)",
                "first": first,
                "second": second,
            },
        )

    def grade(self, sample: Sample, ctx: GradeContext | None = None) -> Grade:
        why = self.missing(sample)
        if why:
            return Grade.failed(why, "missing_input")
        assert sample.other_output is not None
        replies = []
        try:
            for first, second in (
                (sample.output, sample.other_output),
                (sample.other_output, sample.output),
            ):
                replies.append(self._call(ctx, self._messages(sample, first, second)))
        except DeclarationError:
            raise
        except Exception as exc:  # noqa: BLE001
            return Grade.failed(
                f"judge call failed: {type(exc).__name__}: {exc}"[:500], type(exc).__name__
            )
        forward, backward = (str(r.parsed.get("better", "tie")) for r in replies)
        # In the forward order the answer under test is A; in the backward order it is B.
        mine = (
            {"A": "win", "B": "loss"}.get(forward, "tie"),
            {"B": "win", "A": "loss"}.get(backward, "tie"),
        )
        consistent = mine[0] == mine[1]
        outcome = mine[0] if consistent else "tie"
        score = {"win": 1.0, "tie": 0.5, "loss": 0.0}[outcome]
        reasons = " | ".join(str(r.parsed.get("reasoning", "")).strip() for r in replies)
        note = "" if consistent else " (the two orders disagreed: counted as a tie)"
        grade = self._grade(
            score,
            f"{outcome}{note}: {reasons}",
            raw=score,
            details={
                "forward": forward,
                "backward": backward,
                "position_consistent": consistent,
                "outcome": outcome,
            },
        )
        for reply in replies:
            grade.cost_usd += reply.cost_usd
            grade.prompt_tokens += reply.prompt_tokens
            grade.completion_tokens += reply.completion_tokens
            grade.latency_ms += reply.latency_ms
        grade.cached = all(r.cache != "miss" for r in replies)
        return grade

    def grade_repeated(self, sample: Sample, ctx: GradeContext | None, repeat: int) -> list[Grade]:
        return [self.grade(sample, ctx) for _ in range(repeat)]


class Panel(Grader):
    """Several graders on the same sample: `majority` (passes when most members pass; score = the
    fraction that passed) or `mean` (score = the members' mean score)."""

    kind = "judge"

    def __init__(
        self,
        name: str,
        members: Sequence[Grader],
        *,
        mode: str = "majority",
        threshold: float = 0.5,
        min_kappa: float | None = None,
        description: str = "",
    ):
        super().__init__(name, threshold=threshold, description=description)
        if mode not in ("majority", "mean"):
            raise DeclarationError(f"panel {name!r}: mode={mode!r} must be 'majority' or 'mean'")
        if len(members) < 2:
            raise DeclarationError(f"panel {name!r}: needs at least two members")
        if any(m.pairwise for m in members):
            raise DeclarationError(f"panel {name!r}: pairwise judges cannot be panel members")
        self.members = list(members)
        self.mode = mode
        self.min_kappa = min_kappa

    def config(self) -> dict[str, Any]:
        return {"mode": self.mode, "members": [m.name for m in self.members]}

    def identity(self, ctx: GradeContext | None) -> dict[str, Any]:
        return {m.name: m.fingerprint(ctx) for m in self.members}

    @property
    def judges(self) -> list[Any]:
        own = [self] if self.min_kappa is not None else []
        return own + [j for m in self.members for j in m.judges]

    def combine(self, grades: Sequence[Grade]) -> Grade:
        ok = [g for g in grades if not g.error]
        if not ok:
            return Grade.failed(
                "every panel member failed: " + "; ".join(g.reason for g in grades), "panel_failed"
            )
        votes = sum(g.passed for g in ok)
        if self.mode == "majority":
            score = votes / len(ok)
            passed = votes * 2 > len(ok)
            reason = f"{votes}/{len(ok)} members passed"
        else:
            score = sum(g.score for g in ok) / len(ok)
            passed = score >= self.threshold
            reason = f"mean {score:.2f} of {len(ok)} members"
        members = "; ".join(
            f"{m.name}: {'pass' if g.passed else 'fail'}"
            for m, g in zip(self.members, grades, strict=True)
        )
        grade = Grade(
            score=score,
            passed=passed,
            reason=f"{reason} ({members})",
            raw=score,
            details={
                "members": {m.name: g.score for m, g in zip(self.members, grades, strict=True)}
            },
        )
        grade.cost_usd = sum(g.cost_usd for g in grades)
        grade.prompt_tokens = sum(g.prompt_tokens for g in grades)
        grade.completion_tokens = sum(g.completion_tokens for g in grades)
        grade.latency_ms = sum(g.latency_ms for g in grades)
        grade.cached = all(g.cached for g in grades)
        return grade

    def grade(self, sample: Sample, ctx: GradeContext | None = None) -> Grade:
        return self.combine([m.grade(sample, ctx) for m in self.members])

    def grade_many(
        self,
        samples: Sequence[Sample],
        ctx: GradeContext | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[Grade]:
        per_member = [m.grade_many(samples, ctx) for m in self.members]
        out = [self.combine([grades[i] for grades in per_member]) for i in range(len(samples))]
        if progress is not None:
            progress(len(samples))
        return out

    def grade_repeated(self, sample: Sample, ctx: GradeContext | None, repeat: int) -> list[Grade]:
        runs = [
            m.grade_repeated(sample, ctx, repeat)
            if hasattr(m, "grade_repeated")
            else [m.grade(sample, ctx)] * repeat
            for m in self.members
        ]
        return [self.combine([grades[i] for grades in runs]) for i in range(repeat)]
