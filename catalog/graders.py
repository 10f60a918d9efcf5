"""Graders of this deployment: rule and embedding graders, LLM judges, composite judges and
user-defined graders registered by name. Evals in catalog/evals.py refer to them by name.

LLM judges run on MALLARD_JUDGE_ENDPOINT (default: SmolLM2, the only local model installed by
default, so the demo fits its time budget) and score from their verdict tokens' probabilities.
`faithfulness` and `reference_agreement` are composite judges: MiniLM similarities, number,
negation and overlap features and (on a capable endpoint) the LLM judge's P(yes), combined by a
model fitted on the human labels (`mallard evals align`, or the judge_calibration asset); their
κ is cross-validated and they gate only when its interval's lower end reaches `min_kappa`.
SmolLM2's P(yes) carries no signal (docs/EVALS.md, composite judges: κ alone +0.10 for
faithfulness, and the composite is no better with it), so on SmolLM2 the composites leave it out
and make no LLM call at all.
"""

import re

from catalog.llm import DEMO_ENDPOINT
from mallard.config import get_settings
from mallard.evals.graders import (
    CompositeJudge,
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
LLM_SIGNAL = JUDGE != DEMO_ENDPOINT
"""Whether the composite judges use the LLM's P(yes): not on SmolLM2, whose P(yes) is noise."""

faithfulness_llm = FaithfulnessJudge(
    "faithfulness_llm",
    endpoint=JUDGE,
    min_kappa=0.4,
    description="LLM judge: is every fact in the answer supported by the retrieved articles? P(yes).",
)
reference_agreement_llm = ReferenceAgreementJudge(
    "reference_agreement_llm",
    endpoint=JUDGE,
    min_kappa=0.4,
    description="LLM judge: does the answer agree with the gold answer? P(yes).",
)
faithfulness = CompositeJudge(
    "faithfulness",
    task="faithfulness",
    llm=FaithfulnessJudge("faithfulness_verdict", endpoint=JUDGE, reasoning=False)
    if LLM_SIGNAL
    else None,
    min_kappa=0.4,
    labels=("support_faithfulness",),
    holdout=("support_calibration",),
    description="Every sentence supported by a retrieved passage: MiniLM, overlap, numbers, "
    "negation (and the LLM's P(yes)), fitted on the faithfulness labels.",
)
reference_agreement = CompositeJudge(
    "reference_agreement",
    task="reference_agreement",
    llm=ReferenceAgreementJudge("reference_agreement_verdict", endpoint=JUDGE, reasoning=False)
    if LLM_SIGNAL
    else None,
    min_kappa=0.4,
    labels=("support_calibration",),
    description="Agrees with the gold answer: MiniLM, containment, numbers, polarity (and the "
    "LLM's P(yes)), fitted on the calibration labels.",
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
    faithfulness_llm,
    reference_agreement_llm,
    rubric,
    context_relevance,
    pairwise,
    correctness_panel,
    cites_retrieved_article,
    concise,
]
