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
from mallard.evals.graders.verdicts import TOP_LOGPROBS, option_distribution
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


def _verdict_schema(field: str, options: Sequence[str], reasoning: bool = True) -> dict[str, Any]:
    properties: dict[str, Any] = {field: {"type": "string", "enum": list(options)}}
    if reasoning:
        properties = {
            "reasoning": {"type": "string", "maxLength": REASONING_CHARS},
            **properties,
        }
    return {"type": "object", "properties": properties, "required": list(properties)}


VERDICT_ONLY_MAX_TOKENS = 16
"""Enough for `{"verdict": "yes"}` and the like: a judge without reasoning generates a few tokens."""


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
        max_tokens: int | None = None,
        temperature: float | None = None,
        description: str = "",
        logprobs: bool = True,
        reasoning: bool = True,
    ):
        super().__init__(name, threshold=threshold, description=description)
        if min_kappa is not None and not -1.0 <= min_kappa <= 1.0:
            raise DeclarationError(f"judge {name!r}: min_kappa={min_kappa} must be within [-1, 1]")
        if not endpoint:
            raise DeclarationError(f"judge {name!r}: endpoint is required")
        self.endpoint = endpoint
        self.min_kappa = min_kappa
        self.logprobs = logprobs
        self.reasoning = reasoning
        self.max_tokens = max_tokens or (
            DEFAULT_MAX_TOKENS if reasoning else VERDICT_ONLY_MAX_TOKENS
        )
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
            "logprobs": TOP_LOGPROBS if self.logprobs else None,
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

    def interpret(self, parsed: dict[str, Any], logprobs: Any = None) -> Grade:
        """The grade of a parsed reply; with the reply's log-probabilities, from the verdict
        token's distribution (`details["verdict_path"]` says which was used)."""
        raise NotImplementedError

    def _params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"max_tokens": self.max_tokens}
        if self.temperature is not None:
            params["temperature"] = self.temperature
        if self.logprobs:
            params["logprobs"] = TOP_LOGPROBS
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
        grade = self.interpret(reply.parsed, getattr(reply, "logprobs", None))
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
        return _verdict_schema(self.field, ("yes", "no"), self.reasoning)

    def interpret(self, parsed: dict[str, Any], logprobs: Any = None) -> Grade:
        said = str(parsed.get(self.field, "")).strip().lower()
        reasoning = str(parsed.get("reasoning", "")).strip()
        dist = option_distribution(logprobs, self.field, ("yes", "no")) if logprobs else None
        if dist is not None:
            p_yes, path = dist.p("yes"), "logprobs"
            shown = f" [P(yes) {p_yes:.2f}]"
        else:
            p_yes, path = (1.0 if said == "yes" else 0.0), "parsed"
            shown = " [parsed verdict]"
        return self._grade(
            p_yes,
            f"{self.field}={said or '?'}: {reasoning}{shown}",
            raw=p_yes,
            details={"verdict_path": path, "p_yes": p_yes, "said": said},
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
        max_tokens: int | None = None,
        temperature: float | None = None,
        description: str = "",
        logprobs: bool = True,
        reasoning: bool = True,
    ):
        super().__init__(
            name,
            endpoint=endpoint,
            min_kappa=min_kappa,
            threshold=threshold,
            max_tokens=max_tokens,
            temperature=temperature,
            description=description,
            logprobs=logprobs,
            reasoning=reasoning,
        )
        self.rubric = rubric
        self.rubric_field = rubric_field

    @property
    def schema(self) -> dict[str, Any]:
        properties: dict[str, Any] = {"score": {"type": "integer", "enum": [1, 2, 3, 4, 5]}}
        if self.reasoning:
            properties = {
                "reasoning": {"type": "string", "maxLength": REASONING_CHARS},
                **properties,
            }
        return {"type": "object", "properties": properties, "required": list(properties)}

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

    def interpret(self, parsed: dict[str, Any], logprobs: Any = None) -> Grade:
        score = int(parsed["score"])
        levels = ("1", "2", "3", "4", "5")
        dist = option_distribution(logprobs, "score", levels) if logprobs else None
        expected, path = (
            (dist.expected({s: float(s) for s in levels}), "logprobs")
            if dist is not None
            else (float(score), "parsed")
        )
        return self._grade(
            (expected - 1) / 4,
            f"{score}/5 (expected {expected:.2f}): {str(parsed.get('reasoning', '')).strip()}",
            raw=expected,
            details={"verdict_path": path, "said": score},
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
    """Which of two answers is better? Asked in both orders and compared by probability.

    In each order the preference for the answer under test is a margin in [−1, 1]: P(it is
    better) − P(the other is better), read from the verdict token's log-probabilities (or ±1 / 0
    from the parsed verdict when the endpoint gives none). A judge that favours a position adds
    the same bias to answer A in both orders; `position_bias` (measured on labelled pairs by
    `mallard.evals.alignment.measure_position_bias`, 0 by default) is subtracted from A's side.
    Each order then prefers the answer under test (margin > `tie_band`), the other one
    (< −`tie_band`) or neither; the answer wins or loses only when both orders agree, otherwise
    it is a tie. `details` records both margins, whether the orders agreed before the tie rule,
    and whether the sampled verdicts alone agreed. Score: win 1, tie 0.5, loss 0."""

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
        max_tokens: int | None = None,
        temperature: float | None = None,
        description: str = "",
        logprobs: bool = True,
        reasoning: bool = True,
        position_bias: float = 0.0,
        tie_band: float = 0.1,
    ):
        super().__init__(
            name,
            endpoint=endpoint,
            min_kappa=min_kappa,
            threshold=threshold,
            max_tokens=max_tokens,
            temperature=temperature,
            description=description,
            logprobs=logprobs,
            reasoning=reasoning,
        )
        if not 0.0 <= tie_band < 1.0:
            raise DeclarationError(f"pairwise judge {name!r}: tie_band must be within [0, 1)")
        self.position_bias = position_bias
        self.tie_band = tie_band

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "position_bias": round(self.position_bias, 6),
            "tie_band": self.tie_band,
        }

    @property
    def pairwise(self) -> bool:
        return True

    @property
    def schema(self) -> dict[str, Any]:
        return _verdict_schema("better", ("A", "B", "tie"), self.reasoning)

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

    @staticmethod
    def margin_of(reply: Any) -> tuple[float, str]:
        """P(A better) − P(B better) of one reply, and the path it was read from."""
        said = str((reply.parsed or {}).get("better", "tie"))
        dist = option_distribution(getattr(reply, "logprobs", None), "better", ("A", "B", "tie"))
        if dist is not None:
            return dist.p("A") - dist.p("B"), "logprobs"
        return {"A": 1.0, "B": -1.0}.get(said, 0.0), "parsed"

    def _prefers(self, margin: float) -> str:
        return "win" if margin > self.tie_band else "loss" if margin < -self.tie_band else "tie"

    def decide(self, forward_a: float, backward_a: float) -> dict[str, Any]:
        """From the A-minus-B margins of the forward order (answer under test as A) and the
        backward order (it is B): the outcome and whether the orders agreed."""
        mine_forward = forward_a - self.position_bias
        mine_backward = -(backward_a - self.position_bias)
        first, second = self._prefers(mine_forward), self._prefers(mine_backward)
        consistent = first == second
        return {
            "margin_forward": mine_forward,
            "margin_backward": mine_backward,
            "margin": (mine_forward + mine_backward) / 2,
            "position_consistent": consistent,
            "outcome": first if consistent else "tie",
        }

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
        forward, backward = (str((r.parsed or {}).get("better", "tie")) for r in replies)
        (fa, path_f), (ba, path_b) = (self.margin_of(r) for r in replies)
        decision = self.decide(fa, ba)
        # The sampled verdicts alone: in the forward order the answer under test is A, then B.
        sampled = (
            {"A": "win", "B": "loss"}.get(forward, "tie"),
            {"B": "win", "A": "loss"}.get(backward, "tie"),
        )
        outcome = decision["outcome"]
        score = {"win": 1.0, "tie": 0.5, "loss": 0.0}[outcome]
        reasons = " | ".join(
            str((r.parsed or {}).get("reasoning", "")).strip() for r in replies
        ).strip(" |")
        note = "" if decision["position_consistent"] else " (the two orders disagreed: a tie)"
        grade = self._grade(
            score,
            f"{outcome}{note}; margins {decision['margin_forward']:+.2f} / "
            f"{decision['margin_backward']:+.2f}" + (f": {reasons}" if reasons else ""),
            raw=score,
            details={
                "forward": forward,
                "backward": backward,
                "forward_a_margin": fa,
                "backward_a_margin": ba,
                "verdict_path": path_f if path_f == path_b else "mixed",
                "sampled_consistent": sampled[0] == sampled[1],
                **decision,
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
