"""Aligning composite judges with people: fit on the latest human labels, report κ out of sample.

`align(catalog, "faithfulness", …)` gathers the judge's labelled items (its declared label
datasets, each item's verdict overridden by the latest human label for it, plus answers people
labelled through the annotation queue), computes every signal once, and then:

1. cross-validates the composite (5 stratified folds: every item is scored by a model fitted
   without it) and bootstraps the κ and accuracy of those out-of-fold decisions;
2. does the same for each signal alone (isotonic regression on it): the ablation;
3. fits the final model on every item, with its threshold chosen on them, and stores it as the
   next version of the judge's artifact (`MALLARD_HOME/evals/judges/<judge>/vNNNN.json`);
4. scores the judge's held-out datasets (labelled items it was not fitted on) with that model;
5. records a `judge_calibration` row under the judge's new fingerprint: κ is the cross-validated
   one, with its interval, which is what trust and the promotion gate read.

`annotation_queue` orders what people should label next: items where the judge disagrees with a
label first (the surest disagreement first), then the judge's least confident items.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mallard.evals import store
from mallard.evals.graders.base import GradeContext, Sample
from mallard.evals.graders.composite import CompositeJudge
from mallard.evals.judgemodels import (
    FittedModel,
    accuracy_interval,
    cross_validate,
    fit,
    kappa_interval,
    save_fit,
)
from mallard.evals.progress import no_progress


@dataclass
class Labelled:
    key: str
    """dataset:item_id"""
    sample: Sample
    passed: bool
    source: str
    """the dataset, or "human" for a label from the queue"""
    author: str = ""
    version: int = 0
    label_id: str = ""


@dataclass
class AlignmentReport:
    judge: str
    fingerprint: str
    fit_version: int
    fit_id: str
    endpoint: str
    model: str
    items: int
    cv: dict[str, Any]
    ablation: dict[str, dict[str, Any]]
    holdout: dict[str, dict[str, Any]]
    labels: dict[str, Any]
    min_kappa: float | None
    latency_ms_per_item: float
    cost_usd_per_item: float
    threshold: float
    rows: list[dict[str, Any]] = field(default_factory=list)
    llm_verdict: dict[str, Any] | None = None
    """The LLM judge alone at its own verdict (P(yes) ≥ 0.5, nothing fitted) on the labelled
    items, when the judge has the LLM signal: the plain judge the composite replaces."""

    @property
    def kappa(self) -> float:
        return float(self.cv["kappa"])

    @property
    def trusted(self) -> bool:
        low = self.cv.get("kappa_low", math.nan)
        return self.min_kappa is None or (not math.isnan(low) and low >= self.min_kappa)

    @property
    def best_single(self) -> tuple[str, float]:
        if not self.ablation:
            return "", math.nan
        name = max(
            self.ablation,
            key=lambda s: (
                -2.0 if math.isnan(self.ablation[s]["kappa"]) else self.ablation[s]["kappa"]
            ),
        )
        return name, float(self.ablation[name]["kappa"])

    def summary(self) -> str:
        cv = self.cv
        lines = [
            f"{self.judge} fit v{self.fit_version} ({self.model or 'no LLM'}) on {self.items} labelled "
            f"items: cross-validated κ {cv['kappa']:+.2f} [{cv['kappa_low']:+.2f}, "
            f"{cv['kappa_high']:+.2f}], accuracy {cv['accuracy']:.2f} [{cv['accuracy_low']:.2f}, "
            f"{cv['accuracy_high']:.2f}]; threshold {self.threshold:.2f}; "
            f"{self.latency_ms_per_item:.0f} ms and ${self.cost_usd_per_item:.6f} per item",
        ]
        for name, row in self.ablation.items():
            lines.append(
                f"  signal {name:20} κ alone {row['kappa']:+.2f} [{row['kappa_low']:+.2f}, "
                f"{row['kappa_high']:+.2f}]  accuracy {row['accuracy']:.2f}"
            )
        if self.llm_verdict is not None:
            row = self.llm_verdict
            lines.append(
                f"  the LLM judge alone (its own verdict, nothing fitted): κ {row['kappa']:+.2f} "
                f"[{row['kappa_low']:+.2f}, {row['kappa_high']:+.2f}], accuracy {row['accuracy']:.2f}"
            )
        for name, row in self.holdout.items():
            lines.append(
                f"  held out: {name} ({row['items']} items) κ {row['kappa']:+.2f} "
                f"[{row['kappa_low']:+.2f}, {row['kappa_high']:+.2f}], accuracy {row['accuracy']:.2f}"
            )
        minimum = "none" if self.min_kappa is None else f"{self.min_kappa:.2f}"
        lines.append(
            f"  {'trusted' if self.trusted else 'untrusted'}: the interval's lower end "
            f"{cv['kappa_low']:+.2f} vs the declared minimum {minimum}"
        )
        return "\n".join(lines)

    def calibration_row(self, **extra: Any) -> dict[str, Any]:
        cv = self.cv
        return {
            "judge": self.judge,
            "fingerprint": self.fingerprint,
            "endpoint": self.endpoint,
            "model": self.model,
            "items": self.items,
            "errors": 0,
            "accuracy": cv["accuracy"],
            "kappa": cv["kappa"],
            "kappa_low": cv["kappa_low"],
            "kappa_high": cv["kappa_high"],
            "kappa_method": "cross-validated",
            "fit_version": self.fit_version,
            "spearman": math.nan,
            "repeat": 1,
            "flip_rate": 0.0,
            "score_std": 0.0,
            "min_kappa": math.nan if self.min_kappa is None else self.min_kappa,
            "trusted": self.trusted,
            "cost_usd": self.cost_usd_per_item * self.items,
            **extra,
        }


def _samples_of(
    items: Sequence[Mapping[str, Any]],
    answer_field: str,
    contexts: Callable[[Mapping[str, Any]], tuple[list[str], list[str]]] | None,
) -> list[Sample]:
    out = []
    for item in items:
        inputs = dict(item["inputs"])
        answer = str(inputs.pop(answer_field, ""))
        texts, ids = contexts(item) if contexts is not None else ([], [])
        out.append(
            Sample.from_item({**item, "inputs": inputs}, answer, contexts=texts, context_ids=ids)
        )
    return out


def sample_json(sample: Sample) -> dict[str, Any]:
    return {
        "item_id": sample.item_id,
        "question": sample.question,
        "inputs": dict(sample.inputs),
        "answer": sample.output,
        "reference": sample.reference,
        "contexts": list(sample.contexts),
        "context_ids": list(sample.context_ids),
    }


def sample_from_json(data: Mapping[str, Any]) -> Sample:
    inputs = dict(data.get("inputs") or {"question": data.get("question", "")})
    return Sample(
        item_id=str(data.get("item_id", "")),
        output=str(data.get("answer", "")),
        inputs=inputs,
        reference=data.get("reference"),
        contexts=list(data.get("contexts") or []),
        context_ids=list(data.get("context_ids") or []),
    )


def _contexts_for(catalog: Any, corpora: Sequence[Any]) -> Any:
    from mallard.evals.calibration import CorpusContexts

    cal = catalog.calibration
    if cal is None or not cal.context_field or not corpora:
        return None
    return CorpusContexts.for_corpus(corpora[0], field=cal.context_field)


def dataset_samples(
    catalog: Any, dataset: str, *, settings: Any, corpora: Sequence[Any] = ()
) -> tuple[list[Labelled], int]:
    """A labelled dataset's items as samples with their verdicts, and its version."""
    from mallard.evals.datasets import snapshot_for

    cal = catalog.calibration
    answer_field = cal.answer_field if cal is not None else "answer"
    pass_label = cal.pass_label if cal is not None else "pass"
    snapshot = snapshot_for(catalog, dataset, version=None, settings=settings, import_latest=True)
    items = [i for i in snapshot.items if i.get("expected_label") is not None]
    samples = _samples_of(items, answer_field, _contexts_for(catalog, corpora))
    return [
        Labelled(f"{dataset}:{i['item_id']}", s, i["expected_label"] == pass_label, dataset)
        for i, s in zip(items, samples, strict=True)
    ], snapshot.version


def labelled_items(
    catalog: Any,
    judge: CompositeJudge,
    *,
    settings: Any,
    corpora: Sequence[Any] = (),
    datasets: Sequence[str] | None = None,
) -> tuple[list[Labelled], dict[str, Any]]:
    """The judge's labelled items: its label datasets, overridden and extended by the latest
    human labels given for it."""
    from mallard.evals.labels import latest_labels

    out: dict[str, Labelled] = {}
    versions = {}
    for name in datasets if datasets is not None else judge.labels:
        found, versions[name] = dataset_samples(catalog, name, settings=settings, corpora=corpora)
        out.update((x.key, x) for x in found)
    human = latest_labels(settings, judge.name)
    overridden = added = 0
    for (dataset, item_id), label in sorted(human.items()):
        key = f"{dataset}:{item_id}"
        if key in out:
            out[key].passed, out[key].source = label.passed, "human"
            out[key].author, out[key].version = label.author, label.version
            out[key].label_id = label.label_id
            overridden += 1
        elif label.sample:
            out[key] = Labelled(
                key,
                sample_from_json(label.sample),
                label.passed,
                "human",
                label.author,
                label.version,
                label.label_id,
            )
            added += 1
    info = {
        "dataset_versions": versions,
        "human_labels": len(human),
        "human_overrides": overridden,
        "human_added": added,
        "human": [
            {
                "item": x.key,
                "verdict": "pass" if x.passed else "fail",
                "author": x.author,
                "version": x.version,
                "label_id": x.label_id,
            }
            for x in out.values()
            if x.source == "human"
        ],
        "labels_hash": hashlib.sha256(
            json.dumps(
                sorted((k, x.passed) for k, x in out.items()), separators=(",", ":")
            ).encode()
        ).hexdigest()[:16],
    }
    return list(out.values()), info


def _column(items: Sequence[list[list[float]]], k: int) -> list[list[list[float]]]:
    return [[[v[k]] for v in inst] for inst in items]


def align(
    catalog: Any,
    judge_name: str,
    *,
    client: Any,
    settings: Any,
    corpora: Sequence[Any] = (),
    folds: int = 5,
    resamples: int = 2000,
    record: bool = True,
    progress: Any = None,
    run_id: str | None = None,
) -> AlignmentReport:
    """Refit a composite judge from the latest labels (see the module docstring)."""
    judge = catalog.grader(judge_name)
    if not isinstance(judge, CompositeJudge):
        raise LookupError(f"{judge_name!r} is not a composite judge; only those can be aligned")
    run_id = run_id or f"align-{uuid.uuid4().hex[:8]}"
    ctx = GradeContext(client=client, run_id=run_id, settings=settings)
    labelled, info = labelled_items(catalog, judge, settings=settings, corpora=corpora)
    labelled = [x for x in labelled if judge.missing(x.sample) is None]
    if len(labelled) < 10 or len({x.passed for x in labelled}) < 2:
        raise LookupError(
            f"judge {judge_name!r}: {len(labelled)} usable labelled items; alignment needs at "
            "least 10, with both verdicts"
        )
    holdout_sets = {}
    for name in getattr(judge, "holdout", ()):
        found, _ = dataset_samples(catalog, name, settings=settings, corpora=corpora)
        holdout_sets[name] = [x for x in found if judge.missing(x.sample) is None]
    every = labelled + [x for rows in holdout_sets.values() for x in rows]
    bar = (progress or no_progress)(f"signals {judge_name}", len(every))
    started = time.perf_counter()
    try:
        samples = [x.sample for x in every]
        llm = []
        for sample in samples:
            llm.extend(judge.llm_grades([sample], ctx))
            bar.update(1)
        instances = judge.instances(samples, ctx, llm)
    finally:
        bar.close()
    elapsed = time.perf_counter() - started
    cost = sum(g.cost_usd for g in llm[: len(labelled)] if g is not None)
    vectors = [v for v, _ in instances]
    train = vectors[: len(labelled)]
    labels = [x.passed for x in labelled]

    def fitter(items: Any, ys: Any) -> FittedModel:
        return fit(items, ys, judge.signals, method=judge.method)

    cv = cross_validate(train, labels, fitter, folds=folds, resamples=resamples)
    ablation = {}
    for k, name in enumerate(judge.signals):

        def single_fitter(items: Any, ys: Any, name: str = name) -> FittedModel:
            return fit(items, ys, [name], method="isotonic")

        single = cross_validate(
            _column(train, k), labels, single_fitter, folds=folds, resamples=resamples
        )
        ablation[name] = single.summary()
    final = fitter(train, labels)
    llm_verdict = None
    verdicts = [(g.passed, y) for g, y in zip(llm, labels, strict=False) if g and not g.error]
    if verdicts:
        decided, truth = [d for d, _ in verdicts], [y for _, y in verdicts]
        kappa, low, high = kappa_interval(decided, truth, resamples=resamples)
        acc, a_low, a_high = accuracy_interval(decided, truth, resamples=resamples)
        llm_verdict = {
            "items": len(verdicts),
            "kappa": kappa,
            "kappa_low": low,
            "kappa_high": high,
            "accuracy": acc,
            "accuracy_low": a_low,
            "accuracy_high": a_high,
        }
    holdout = {}
    offset = len(labelled)
    for name, rows in holdout_sets.items():
        chunk = vectors[offset : offset + len(rows)]
        offset += len(rows)
        decisions = [final.probability(v)[0] >= final.threshold for v in chunk]
        truth = [x.passed for x in rows]
        kappa, low, high = kappa_interval(decisions, truth, resamples=resamples)
        acc, a_low, a_high = accuracy_interval(decisions, truth, resamples=resamples)
        holdout[name] = {
            "items": len(rows),
            "kappa": kappa,
            "kappa_low": low,
            "kappa_high": high,
            "accuracy": acc,
            "accuracy_low": a_low,
            "accuracy_high": a_high,
        }
    model_name = next(
        (g.details.get("model", "") for g in llm if g is not None and g.details.get("model")), ""
    )
    payload = save_fit(
        settings,
        judge.name,
        {
            "created": store.now().isoformat(),
            "base_fingerprint": judge.base_fingerprint(ctx),
            "task": judge.task,
            "signals": list(judge.signals),
            "endpoint": judge.endpoint,
            "llm_model": model_name,
            "model": final.to_json(),
            "cv": cv.summary(),
            "ablation": ablation,
            "llm_verdict": llm_verdict,
            "holdout": holdout,
            "labels": {
                "items": len(labelled),
                "pass": sum(labels),
                "fail": len(labels) - sum(labels),
                **info,
            },
            "out_of_fold": {
                x.key: round(p, 4) for x, p in zip(labelled, cv.probabilities, strict=True)
            },
            "latency_ms_per_item": elapsed * 1000 / max(len(every), 1),
            "cost_usd_per_item": cost / max(len(every), 1),
        },
    )
    identity = judge.identity(ctx)
    report = AlignmentReport(
        judge=judge.name,
        fingerprint=judge.fingerprint(ctx),
        fit_version=payload["version"],
        fit_id=payload["fit_id"],
        endpoint=str(identity.get("endpoint", "")),
        model=model_name,
        items=len(labelled),
        cv=cv.summary(),
        ablation=ablation,
        holdout=holdout,
        labels=payload["labels"],
        min_kappa=judge.min_kappa,
        latency_ms_per_item=payload["latency_ms_per_item"],
        cost_usd_per_item=payload["cost_usd_per_item"],
        threshold=final.threshold,
        llm_verdict=llm_verdict,
        rows=[
            {
                "item_id": x.key,
                "human": "pass" if x.passed else "fail",
                "judge": "pass" if d else "fail",
                "p_out_of_fold": p,
                "source": x.source,
                "author": x.author,
                "label_version": x.version,
            }
            for x, p, d in zip(labelled, cv.probabilities, cv.decisions, strict=True)
        ],
    )
    if record:
        store.append(
            "judge_calibration",
            [
                report.calibration_row(
                    run_id=run_id,
                    timestamp=store.now(),
                    dataset=",".join(judge.labels) or "human_labels",
                    dataset_version=max(info["dataset_versions"].values(), default=0),
                    slice="",
                )
            ],
            settings=settings,
        )
    return report


# The annotation queue ----------------------------------------------------------------------------
@dataclass
class QueueItem:
    judge: str
    dataset: str
    item_id: str
    sample: Sample
    judge_p: float | None
    """the judge's probability (out of fold for a labelled item), None when unknown"""
    label: str | None
    """the current human verdict, if any"""
    why: str

    @property
    def confidence(self) -> float:
        return 0.0 if self.judge_p is None else abs(self.judge_p - 0.5) * 2

    def to_json(self) -> dict[str, Any]:
        return {
            "judge": self.judge,
            "dataset": self.dataset,
            "item_id": self.item_id,
            "judge_p": self.judge_p,
            "label": self.label,
            "why": self.why,
            "confidence": self.confidence,
            "sample": sample_json(self.sample),
        }


def annotation_queue(
    catalog: Any,
    judge_name: str,
    *,
    settings: Any,
    corpora: Sequence[Any] = (),
    limit: int = 20,
    author: str | None = None,
) -> list[QueueItem]:
    """What to label next for a judge: labelled items the latest fit gets wrong out of fold
    (disagreeing, the surest first), then the least confident ones, then eval answers the judge graded with
    the least confidence; items `author` already labelled for this judge are left out."""
    from mallard.evals.judgemodels import list_fits
    from mallard.evals.labels import all_labels

    judge = catalog.grader(judge_name)
    if not isinstance(judge, CompositeJudge):
        raise LookupError(f"{judge_name!r} is not a composite judge")
    fits = list_fits(settings, judge.name)
    oof = fits[-1].get("out_of_fold", {}) if fits else {}
    threshold = fits[-1]["model"]["threshold"] if fits else 0.5
    done = {
        (lb.dataset, lb.item_id)
        for lb in all_labels(settings, judge.name)
        if author is not None and lb.author == author
    }
    labelled, _ = labelled_items(catalog, judge, settings=settings, corpora=corpora)
    queue = []
    for x in labelled:
        dataset, _, item_id = x.key.partition(":")
        if (dataset, item_id) in done:
            continue
        p = oof.get(x.key)
        label = "pass" if x.passed else "fail"
        disagrees = p is not None and (p >= threshold) != x.passed
        why = (
            f"the judge says {'pass' if p is not None and p >= threshold else 'fail'} "
            f"(P {p:.2f}), the label says {label}"
            if disagrees
            else (f"low confidence (P {p:.2f})" if p is not None else "not scored by a fit yet")
        )
        item = QueueItem(judge.name, dataset, item_id, x.sample, p, label, why)
        # the surest disagreements first (a wrong label, or the judge's blind spot), then the
        # least confident agreements
        queue.append((0, -item.confidence, item) if disagrees else (1, item.confidence, item))
    for row in _recent_grades(judge.name, settings, catalog, corpora):
        key = (row["eval_name"], f"{row['item_id']}@{row['answer_hash']}")
        if key in done or row.get("error"):
            continue
        raw = row.get("raw_score")
        p = float(raw) if raw is not None else None
        item = QueueItem(
            judge.name,
            key[0],
            key[1],
            row["sample"],
            p,
            None,
            f"eval answer graded with P {p:.2f}" if p is not None else "eval answer",
        )
        queue.append((1, item.confidence, item))
    queue.sort(key=lambda entry: (entry[0], entry[1]))
    return [item for _, _, item in queue[:limit]]


def _recent_grades(
    judge: str, settings: Any, catalog: Any, corpora: Sequence[Any]
) -> list[dict[str, Any]]:
    """The judge's grades of eval answers (latest per item and answer), with their samples
    (question and reference from the dataset version the run used, the retrieved articles)."""
    from mallard.evals.datasets import load_dataset

    rows = store.read("judge_scores", settings=settings, filters={"grader": judge})
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        if row.get("answer_status") != "ok" or row.get("baseline_prompt_version") is not None:
            continue
        answer_hash = hashlib.sha256(str(row["answer"]).encode()).hexdigest()[:10]
        key = (row["item_id"], answer_hash)
        if key not in latest or row["timestamp"] > latest[key]["timestamp"]:
            latest[key] = {**row, "answer_hash": answer_hash}
    contexts = _contexts_for(catalog, corpora)
    snapshots: dict[tuple[str, int], Any] = {}
    out = []
    for row in latest.values():
        version_key = (str(row["dataset"]), int(row["dataset_version"]))
        if version_key not in snapshots:
            try:
                snapshots[version_key] = load_dataset(
                    version_key[0], version_key[1], settings=settings
                )
            except Exception:  # noqa: BLE001 - a dataset version that is gone: skip its rows
                snapshots[version_key] = None
        snapshot = snapshots[version_key]
        if snapshot is None:
            continue
        ids = list(row.get("retrieved_ids") or [])
        texts, found = contexts({"metadata": {"article_id": ids}}) if contexts else ([], [])
        row["sample"] = Sample.from_item(
            snapshot.item(row["item_id"]), str(row["answer"]), contexts=texts, context_ids=found
        )
        out.append(row)
    return out
