"""Eval datasets, slices, offline evals and judge calibration of this deployment."""

from pathlib import Path

import mallard.sample_world
from catalog.chains import CHAINS, HELPCENTRE
from catalog.graders import GRADERS
from mallard.evals import DatasetSlice, EvalDataset, Gate, JudgeCalibration, OfflineEval
from mallard.evals.spec import EvalCatalog

support_questions = EvalDataset(
    name="support_questions",
    source="sample/helpcentre/eval_questions.jsonl",
    id_field="question_id",
    input_fields=("question",),
    reference_field="reference_answer",
    category_field="category",
    description="Pondstream customer questions with gold answers, the article that answers them and a rubric.",
)

support_calibration = EvalDataset(
    name="support_calibration",
    source="sample/helpcentre/calibration.jsonl",
    id_field="calibration_id",
    input_fields=("question", "answer"),
    reference_field="reference_answer",
    label_field="human_verdict",
    labels=("pass", "fail"),
    score_field="human_score",
    score_range=(1, 5),
    description="Support answers with human verdicts (pass/fail), scores (1-5) and reasons: judge calibration.",
)

support_faithfulness = EvalDataset(
    name="support_faithfulness",
    # shipped with the package (the sample world's generator does not copy it into MALLARD_HOME)
    source=str(Path(mallard.sample_world.__file__).parent / "helpcentre" / "faithfulness.jsonl"),
    id_field="faithfulness_id",
    input_fields=("question", "answer"),
    label_field="human_verdict",
    labels=("pass", "fail"),
    score_field="human_score",
    score_range=(1, 5),
    description="Support answers labelled supported or not by their help-centre article, the "
    "unsupported sentence named: wrong numbers, extra claims, contradictions, omissions, paraphrases.",
)

support_demo = DatasetSlice(
    name="support_demo",
    dataset="support_questions",
    item_ids=(
        "Q-012",
        "Q-014",
        "Q-029",
        "Q-038",
        "Q-040",
        "Q-058",
        "Q-059",
        "Q-061",
        "Q-063",
        "Q-078",
    ),
    description="Ten questions over all six categories whose article retrieval ranks first: what `make demo` runs.",
)

calibration_demo = DatasetSlice(
    name="calibration_demo",
    dataset="support_calibration",
    limit=12,
    description="The first twelve calibration items (six pass, six fail): what `make demo` calibrates on.",
)

support_assistant_eval = OfflineEval(
    name="support_assistant",
    chain="support_assistant",
    prompt="support_assistant",
    step="answer",
    retrieval_step="retrieve",
    dataset="support_questions",
    slice="support_demo",
    graders=(
        "grounding",
        "cites_retrieved_article",
        "answer_similarity",
        "concise",
        "faithfulness",
    ),
    pairwise="pairwise",
    gate=Gate(graders=("faithfulness", "grounding"), tolerance=0.05, min_items=5),
    description="The support assistant per prompt version: grounded in the articles, close to the gold answers.",
)

CALIBRATION = JudgeCalibration(
    dataset="support_calibration",
    judges=("faithfulness", "reference_agreement"),
    answer_field="answer",
    pass_label="pass",
    context_field="article_id",
    slice="calibration_demo",
)

DATASETS = (support_questions, support_calibration, support_faithfulness)
SLICES = (support_demo, calibration_demo)
EVALS = (support_assistant_eval,)

CATALOG = EvalCatalog(
    datasets=DATASETS,
    slices=SLICES,
    graders=GRADERS,
    evals=EVALS,
    calibration=CALIBRATION,
    chains=CHAINS,
)
CORPORA = (HELPCENTRE,)
