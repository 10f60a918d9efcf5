"""Declarations of offline evals: which chain and prompt, on which dataset, graded how, and the
gate a candidate prompt version must pass to become `live`.

    OfflineEval(name="support_assistant", chain="support_assistant", prompt="support_assistant",
                dataset="support_questions", slice="support_demo",
                graders=("grounding", "faithfulness"), pairwise="pairwise",
                gate=Gate(graders=("grounding", "faithfulness"), tolerance=0.05))

An `EvalCatalog` holds one deployment's datasets, slices, graders, evals and calibration and
checks that every reference between them resolves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mallard.evals.datasets import DatasetSlice, EvalDataset
from mallard.evals.graders.base import Grader
from mallard.specs import DeclarationError, check_identifier


@dataclass(frozen=True)
class Gate:
    """A candidate may replace `label` (live) only if, for every gating grader, the lower end of
    the paired bootstrap interval of (candidate − live) is at least −tolerance, on at least
    `min_items` paired items, and every judge those graders rely on is trusted."""

    graders: tuple[str, ...]
    tolerance: float = 0.05
    tolerances: Mapping[str, float] = field(default_factory=dict)
    confidence: float = 0.95
    resamples: int = 2000
    min_items: int = 5
    label: str = "live"
    candidate_label: str = "staging"
    require_trusted_judges: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "graders", tuple(self.graders))
        object.__setattr__(self, "tolerances", dict(self.tolerances))
        if not self.graders:
            raise DeclarationError(
                "Gate: graders is empty; name the graders that decide a promotion"
            )
        for name, value in {"tolerance": self.tolerance, **self.tolerances}.items():
            if not 0 <= value < 1 or math.isnan(value):
                raise DeclarationError(
                    f"Gate: tolerance for {name!r} = {value} must be within [0, 1) "
                    "(scores are normalised to [0, 1])"
                )
        if not 0.5 <= self.confidence < 1:
            raise DeclarationError(f"Gate: confidence={self.confidence} must be within [0.5, 1)")
        if self.min_items < 2 or self.resamples < 100:
            raise DeclarationError("Gate: min_items must be >= 2 and resamples >= 100")

    def tolerance_for(self, grader: str) -> float:
        return self.tolerances.get(grader, self.tolerance)


@dataclass(frozen=True)
class OfflineEval:
    """Run `chain` on `dataset` (or its `slice`) with one version of `prompt` pinned in `step`,
    then grade every answer with `graders`. Contexts for RAG judges come from `retrieval_step`."""

    name: str
    chain: str
    prompt: str
    dataset: str
    graders: tuple[str | Grader, ...]
    step: str = "answer"
    retrieval_step: str | None = "retrieve"
    slice: str | None = None
    pairwise: str | None = None
    gate: Gate | None = None
    concurrency: int = 2
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "graders", tuple(self.graders))
        check_identifier("OfflineEval", self.name)
        if not self.graders:
            raise DeclarationError(f"OfflineEval {self.name!r}: graders is empty")
        if self.concurrency < 1:
            raise DeclarationError(f"OfflineEval {self.name!r}: concurrency must be >= 1")
        if self.gate is not None:
            names = {g if isinstance(g, str) else g.name for g in self.graders}
            unknown = [g for g in self.gate.graders if g not in names]
            if unknown:
                raise DeclarationError(
                    f"OfflineEval {self.name!r}: gate grader(s) {unknown} are not among the "
                    f"eval's graders {sorted(names)}"
                )

    @property
    def grader_names(self) -> list[str]:
        return [g if isinstance(g, str) else g.name for g in self.graders]


@dataclass(frozen=True)
class JudgeCalibration:
    """Run judges on a human-labelled dataset: inputs hold the question and the `answer_field`;
    `expected_label` is the human verdict (`pass_label` = pass) and `expected_score` the human
    score. `context_field` names the metadata field (an article id) whose article the RAG judges
    see as the retrieved context."""

    dataset: str
    judges: tuple[str, ...]
    answer_field: str = "answer"
    pass_label: str = "pass"
    context_field: str | None = "article_id"
    slice: str | None = None
    repeat: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "judges", tuple(self.judges))
        if self.repeat < 1:
            raise DeclarationError(f"JudgeCalibration: repeat={self.repeat} must be >= 1")


@dataclass
class EvalCatalog:
    """One deployment's eval declarations, cross-checked."""

    datasets: Sequence[EvalDataset] = ()
    slices: Sequence[DatasetSlice] = ()
    graders: Sequence[Grader] = ()
    evals: Sequence[OfflineEval] = ()
    calibration: JudgeCalibration | None = None
    chains: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dataset_by_name = self._unique("EvalDataset", self.datasets)
        self.slice_by_name = self._unique("DatasetSlice", self.slices)
        self.grader_by_name = self._unique("grader", self.graders)
        self.eval_by_name = self._unique("OfflineEval", self.evals)
        for item in self.slices:
            if item.dataset not in self.dataset_by_name:
                raise DeclarationError(
                    f"DatasetSlice {item.name!r}: dataset {item.dataset!r} is not declared"
                )
        for ev in self.evals:
            self._check_eval(ev)
        if self.calibration is not None:
            cal = self.calibration
            if cal.dataset not in self.dataset_by_name:
                raise DeclarationError(f"JudgeCalibration: dataset {cal.dataset!r} is not declared")
            self._check_slice("JudgeCalibration", cal.slice, cal.dataset)
            for name in cal.judges:
                grader = self.grader(name)
                if not grader.judges or grader.pairwise:
                    raise DeclarationError(
                        f"JudgeCalibration: {name!r} is not a (non-pairwise) LLM judge or panel"
                    )

    @staticmethod
    def _unique(kind: str, items: Sequence[Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for item in items:
            if item.name in out:
                raise DeclarationError(f"{kind} {item.name!r} is declared twice")
            out[item.name] = item
        return out

    def _check_slice(self, where: str, name: str | None, dataset: str) -> None:
        if name is None:
            return
        if name not in self.slice_by_name:
            raise DeclarationError(f"{where}: slice {name!r} is not declared")
        if self.slice_by_name[name].dataset != dataset:
            raise DeclarationError(
                f"{where}: slice {name!r} belongs to dataset "
                f"{self.slice_by_name[name].dataset!r}, not {dataset!r}"
            )

    def _check_eval(self, ev: OfflineEval) -> None:
        where = f"OfflineEval {ev.name!r}"
        dataset = self.dataset_by_name.get(ev.dataset)
        if dataset is None:
            raise DeclarationError(f"{where}: dataset {ev.dataset!r} is not declared")
        if not dataset.usable_by(prompt=ev.prompt, chain=ev.chain):
            raise DeclarationError(
                f"{where}: dataset {ev.dataset!r} is owned by {dataset.owner!r}; it is not global "
                f"and not owned by prompt {ev.prompt!r} or chain {ev.chain!r}"
            )
        self._check_slice(where, ev.slice, ev.dataset)
        graders = [self.grader(g) if isinstance(g, str) else g for g in ev.graders]
        if any(g.pairwise for g in graders):
            raise DeclarationError(
                f"{where}: pairwise judges compare two versions; declare them as pairwise=…"
            )
        if ev.pairwise is not None and not self.grader(ev.pairwise).pairwise:
            raise DeclarationError(f"{where}: pairwise={ev.pairwise!r} is not a pairwise judge")
        if self.chains:
            chain = self.chains.get(ev.chain)
            if chain is None:
                raise DeclarationError(
                    f"{where}: chain {ev.chain!r} is not declared; known: {sorted(self.chains)}"
                )
            steps = {s.name: s for s in chain.flat_steps()}
            step = steps.get(ev.step)
            if step is None or getattr(step, "prompt", None) != ev.prompt:
                raise DeclarationError(
                    f"{where}: chain {ev.chain!r} has no step {ev.step!r} using prompt {ev.prompt!r}"
                )
            if ev.retrieval_step is not None and ev.retrieval_step not in steps:
                raise DeclarationError(
                    f"{where}: chain {ev.chain!r} has no step {ev.retrieval_step!r}"
                )
            missing = [f for f in chain.inputs if f not in dataset.input_fields]
            if missing:
                raise DeclarationError(
                    f"{where}: chain input(s) {missing} are not input fields of dataset "
                    f"{dataset.name!r} ({list(dataset.input_fields)})"
                )

    def grader(self, name: str | Grader) -> Grader:
        if isinstance(name, Grader):
            return name
        if name in self.grader_by_name:
            return self.grader_by_name[name]
        from mallard.evals.graders.registry import get

        return get(name)

    def graders_of(self, ev: OfflineEval, only: Sequence[str] | None = None) -> list[Grader]:
        graders = [self.grader(g) for g in ev.graders]
        if only:
            unknown = [n for n in only if n not in {g.name for g in graders}]
            if unknown:
                raise DeclarationError(
                    f"OfflineEval {ev.name!r} has no grader(s) {unknown}; "
                    f"its graders: {[g.name for g in graders]}"
                )
            graders = [g for g in graders if g.name in only]
        return graders

    def eval(self, name: str) -> OfflineEval:
        try:
            return self.eval_by_name[name]
        except KeyError:
            raise DeclarationError(
                f"no offline eval named {name!r}; declared: {sorted(self.eval_by_name)}"
            ) from None

    def dataset(self, name: str) -> EvalDataset:
        try:
            return self.dataset_by_name[name]
        except KeyError:
            raise DeclarationError(
                f"no eval dataset named {name!r}; declared: {sorted(self.dataset_by_name)}"
            ) from None

    def slice(self, name: str | None) -> DatasetSlice | None:
        if name is None:
            return None
        try:
            return self.slice_by_name[name]
        except KeyError:
            raise DeclarationError(
                f"no dataset slice named {name!r}; declared: {sorted(self.slice_by_name)}"
            ) from None
