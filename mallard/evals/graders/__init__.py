"""Graders: one interface (`Grader.grade(sample, ctx) -> Grade`) for rules, embeddings and LLM judges."""

from mallard.evals.graders.base import Grade, GradeContext, Grader, Sample
from mallard.evals.graders.composite import CompositeJudge
from mallard.evals.graders.deterministic import (
    Contains,
    ExactMatch,
    Grounding,
    JsonSchemaValid,
    NumericTolerance,
    Regex,
    normalize_text,
)
from mallard.evals.graders.embedding import EmbeddingSimilarity
from mallard.evals.graders.judges import (
    ContextRelevanceJudge,
    FaithfulnessJudge,
    LLMJudge,
    PairwiseJudge,
    Panel,
    ReferenceAgreementJudge,
    RubricJudge,
)
from mallard.evals.graders.registry import FunctionGrader, grader, register, registered, resolve

__all__ = [
    "CompositeJudge",
    "Contains",
    "ContextRelevanceJudge",
    "EmbeddingSimilarity",
    "ExactMatch",
    "FaithfulnessJudge",
    "FunctionGrader",
    "Grade",
    "GradeContext",
    "Grader",
    "Grounding",
    "JsonSchemaValid",
    "LLMJudge",
    "NumericTolerance",
    "PairwiseJudge",
    "Panel",
    "ReferenceAgreementJudge",
    "Regex",
    "RubricJudge",
    "Sample",
    "grader",
    "normalize_text",
    "register",
    "registered",
    "resolve",
]
