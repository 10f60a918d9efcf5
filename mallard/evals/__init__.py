"""Offline evaluation: versioned eval datasets, graders (rules, embeddings, LLM judges), judge
calibration against human verdicts, offline eval runs of a chain per prompt version, comparison
with paired bootstrap intervals and the prompt promotion gate.

Importing this package is cheap: numpy, pyarrow, deltalake and the LLM client load on first use.
"""

from mallard.evals.datasets import DatasetSlice, DatasetValidationError, EvalDataset
from mallard.evals.graders.base import Grade, Grader, Sample
from mallard.evals.spec import Gate, JudgeCalibration, OfflineEval

__all__ = [
    "DatasetSlice",
    "DatasetValidationError",
    "EvalDataset",
    "Gate",
    "Grade",
    "Grader",
    "JudgeCalibration",
    "OfflineEval",
    "Sample",
]
