"""Judge calibration: how often does a judge agree with people?

Each judge grades the human-labelled calibration items (a question, an answer, the article it
should be grounded in, a human pass/fail verdict and a 1–5 score). Reported per judge: accuracy
and Cohen's κ of pass/fail, Spearman's ρ of the judge's raw score against the human score, and —
with `repeat=N` (fresh calls, caches skipped) — the judge's own variance: the share of items whose
verdict flips between repeats and the mean per-item standard deviation of the score.

A judge that declares `min_kappa` is trusted only when its latest calibration, with the same
fingerprint (configuration, model and parameters), reaches it. Evals relying on an untrusted
judge are flagged and cannot gate a promotion.
"""

from __future__ import annotations

import json
import math
import statistics
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mallard.evals import store
from mallard.evals.datasets import snapshot_for
from mallard.evals.graders.base import Grade, GradeContext, Grader, Sample
from mallard.evals.progress import no_progress
from mallard.evals.stats import accuracy, cohen_kappa, spearman


class CorpusContexts:
    """The article an item names (by a metadata field), as the context a RAG judge sees: the same
    "[id] title\\ntext" block the retrieval step gives the model."""

    def __init__(
        self,
        path: Path | str,
        *,
        id_field: str = "id",
        title_field: str | None = "title",
        text_field: str = "text",
        field: str = "article_id",
        max_chars: int = 1800,
    ):
        self.path = Path(path)
        self.id_field, self.title_field, self.text_field = id_field, title_field, text_field
        self.field = field
        self.max_chars = max_chars
        self._articles: dict[str, str] | None = None

    @classmethod
    def for_corpus(
        cls, corpus: Any, field: str = "article_id", max_chars: int = 1800
    ) -> CorpusContexts:
        return cls(
            corpus.path,
            id_field=corpus.id_field,
            title_field=corpus.title_field,
            text_field=corpus.text_field,
            field=field,
            max_chars=max_chars,
        )

    def _load(self) -> dict[str, str]:
        if self._articles is None:
            articles = {}
            for line in self.path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    record = json.loads(line)
                    title = str(record.get(self.title_field, "")) if self.title_field else ""
                    text = str(record[self.text_field])[: self.max_chars]
                    articles[str(record[self.id_field])] = (
                        f"[{record[self.id_field]}] {title}\n{text}".strip()
                    )
            self._articles = articles
        return self._articles

    def __call__(self, item: Mapping[str, Any]) -> tuple[list[str], list[str]]:
        ids = item.get("metadata", {}).get(self.field) or item.get("inputs", {}).get(self.field)
        ids = [ids] if isinstance(ids, str) else list(ids or [])
        articles = self._load()
        found = [i for i in ids if i in articles]
        return [articles[i] for i in found], found


@dataclass
class CalibrationReport:
    judge: str
    fingerprint: str
    endpoint: str
    model: str
    items: int
    errors: int
    accuracy: float
    kappa: float
    spearman: float
    repeat: int
    flip_rate: float
    score_std: float
    min_kappa: float | None
    cost_usd: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)
    kappa_low: float = math.nan
    kappa_high: float = math.nan
    kappa_method: str = "held-out"
    """held-out: the judge was not fitted on these labels; cross-validated: a composite judge's κ
    from models fitted without each item."""
    fit_version: int = 0

    @property
    def trusted(self) -> bool:
        """The lower end of κ's interval reaches the declared minimum (κ itself when no interval
        could be computed)."""
        bound = self.kappa if math.isnan(self.kappa_low) else self.kappa_low
        return self.min_kappa is None or (not math.isnan(bound) and bound >= self.min_kappa)

    def trust(self) -> Trust:
        """Whether this calibration lets the judge gate, and why (κ, its interval, the minimum)."""
        minimum = "none" if self.min_kappa is None else f"{self.min_kappa:.2f}"
        interval = (
            ""
            if math.isnan(self.kappa_low)
            else f" ({self.kappa_method}, 95% CI [{self.kappa_low:.2f}, {self.kappa_high:.2f}])"
        )
        bound = "κ" if math.isnan(self.kappa_low) else "the interval's lower end"
        return Trust(
            self.judge,
            self.trusted,
            f"judge {self.judge!r}: κ {self.kappa:.2f}{interval} on {self.items} items; {bound} "
            f"vs the minimum {minimum}: {'trusted' if self.trusted else 'untrusted'}",
            self.kappa,
            self.min_kappa,
            self.items,
        )

    SUMMARY_COLUMNS = (
        "judge",
        "model",
        "items",
        "errors",
        "accuracy",
        "kappa",
        "kappa_low",
        "kappa_high",
        "kappa_method",
        "spearman",
        "min_kappa",
        "trusted",
        "repeat",
        "flip_rate",
        "score_std",
    )
    """The columns a person reads first (the CLI and the asset's metadata show these)."""

    def to_row(self, **extra: Any) -> dict[str, Any]:
        return {
            "judge": self.judge,
            "fingerprint": self.fingerprint,
            "endpoint": self.endpoint,
            "model": self.model,
            "items": self.items,
            "errors": self.errors,
            "accuracy": self.accuracy,
            "kappa": self.kappa,
            "spearman": self.spearman,
            "repeat": self.repeat,
            "flip_rate": self.flip_rate,
            "score_std": self.score_std,
            "min_kappa": math.nan if self.min_kappa is None else self.min_kappa,
            "trusted": self.trusted,
            "cost_usd": self.cost_usd,
            "kappa_low": self.kappa_low,
            "kappa_high": self.kappa_high,
            "kappa_method": self.kappa_method,
            "fit_version": self.fit_version,
            **extra,
        }


def agreement(
    judge_pass: Sequence[bool],
    human_pass: Sequence[bool],
    judge_raw: Sequence[float],
    human_score: Sequence[float | None],
) -> dict[str, float]:
    """Accuracy and κ of pass/fail, and Spearman's ρ over the items that have a human score."""
    scored = [(j, h) for j, h in zip(judge_raw, human_score, strict=True) if h is not None]
    return {
        "accuracy": accuracy(judge_pass, human_pass),
        "kappa": cohen_kappa(judge_pass, human_pass),
        "spearman": spearman([j for j, _ in scored], [h for _, h in scored])
        if len(scored) >= 2
        else math.nan,
    }


def calibrate_judge(
    judge: Grader,
    items: Sequence[Mapping[str, Any]],
    ctx: GradeContext,
    *,
    answer_field: str = "answer",
    pass_label: str = "pass",
    contexts: Callable[[Mapping[str, Any]], tuple[list[str], list[str]]] | None = None,
    repeat: int = 1,
    progress: Callable[[int], None] | None = None,
) -> CalibrationReport:
    """Grade every calibration item with `judge` (`repeat` fresh calls each when > 1) and measure
    agreement with the human verdicts."""
    samples = []
    for item in items:
        inputs = dict(item["inputs"])
        answer = str(inputs.pop(answer_field, ""))
        ctx_texts, ctx_ids = contexts(item) if contexts is not None else ([], [])
        samples.append(
            Sample.from_item(
                {**item, "inputs": inputs}, answer, contexts=ctx_texts, context_ids=ctx_ids
            )
        )
    per_item: list[list[Grade]] = []
    for sample in samples:
        if repeat > 1 and hasattr(judge, "grade_repeated"):
            per_item.append(judge.grade_repeated(sample, ctx, repeat))
        else:
            per_item.append([judge.grade(sample, ctx)])
        if progress is not None:
            progress(1)
    judge_pass, human_pass, judge_raw, human_score = [], [], [], []
    flips, stds, rows, errors = 0, [], [], 0
    cost = 0.0
    for item, grades in zip(items, per_item, strict=True):
        cost += sum(g.cost_usd for g in grades)
        ok = [g for g in grades if not g.error]
        if not ok or item.get("expected_label") is None:
            errors += 1
            continue
        votes = sum(g.passed for g in ok)
        verdict = votes * 2 > len(ok) if len(ok) > 1 else ok[0].passed
        raw = statistics.fmean(g.raw if g.raw is not None else g.score for g in ok)
        judge_pass.append(verdict)
        human_pass.append(item["expected_label"] == pass_label)
        judge_raw.append(raw)
        human_score.append(item.get("expected_score"))
        if len(ok) > 1:
            flips += 0 < votes < len(ok)
            stds.append(statistics.pstdev(g.score for g in ok))
        rows.append(
            {
                "item_id": item["item_id"],
                "human": item["expected_label"],
                "judge": "pass" if verdict else "fail",
                "human_score": item.get("expected_score"),
                "judge_raw": raw,
                "reason": ok[0].reason[:200],
            }
        )
    stats = agreement(judge_pass, human_pass, judge_raw, human_score)
    from mallard.evals.judgemodels import kappa_interval

    _, kappa_low, kappa_high = kappa_interval(judge_pass, human_pass)
    identity = judge.identity(ctx)
    model = ""
    for grades in per_item:
        model = next((g.details.get("model", "") for g in grades if g.details.get("model")), "")
        if model:
            break
    return CalibrationReport(
        judge=judge.name,
        fingerprint=judge.fingerprint(ctx),
        endpoint=str(identity.get("endpoint", "")),
        model=model or str(identity.get("model", "")),
        items=len(judge_pass),
        errors=errors,
        accuracy=stats["accuracy"],
        kappa=stats["kappa"],
        spearman=stats["spearman"],
        repeat=repeat,
        flip_rate=flips / len(judge_pass) if repeat > 1 and judge_pass else 0.0,
        score_std=statistics.fmean(stds) if stds else 0.0,
        min_kappa=getattr(judge, "min_kappa", None),
        cost_usd=cost,
        rows=rows,
        kappa_low=kappa_low,
        kappa_high=kappa_high,
    )


def report_of_alignment(alignment: Any) -> CalibrationReport:
    """A composite judge's alignment as a calibration report: its cross-validated κ."""
    cv = alignment.cv
    return CalibrationReport(
        judge=alignment.judge,
        fingerprint=alignment.fingerprint,
        endpoint=alignment.endpoint,
        model=alignment.model,
        items=alignment.items,
        errors=0,
        accuracy=cv["accuracy"],
        kappa=cv["kappa"],
        spearman=math.nan,
        repeat=1,
        flip_rate=0.0,
        score_std=0.0,
        min_kappa=alignment.min_kappa,
        cost_usd=alignment.cost_usd_per_item * alignment.items,
        rows=alignment.rows,
        kappa_low=cv["kappa_low"],
        kappa_high=cv["kappa_high"],
        kappa_method="cross-validated",
        fit_version=alignment.fit_version,
    )


def record(
    reports: Sequence[CalibrationReport],
    *,
    dataset: str,
    dataset_version: int,
    slice_name: str | None,
    settings: Any = None,
    run_id: str | None = None,
) -> str:
    run_id = run_id or f"calibration-{uuid.uuid4().hex[:8]}"
    timestamp = store.now()
    store.append(
        "judge_calibration",
        [
            r.to_row(
                run_id=run_id,
                timestamp=timestamp,
                dataset=dataset,
                dataset_version=dataset_version,
                slice=slice_name or "",
            )
            for r in reports
        ],
        settings=settings,
    )
    return run_id


@dataclass(frozen=True)
class Trust:
    judge: str
    trusted: bool
    reason: str
    kappa: float | None = None
    min_kappa: float | None = None
    items: int = 0


def latest_calibrations(settings: Any = None) -> dict[str, dict[str, Any]]:
    """The latest calibration row per judge fingerprint."""
    latest: dict[str, dict[str, Any]] = {}
    for row in store.read("judge_calibration", settings=settings):
        current = latest.get(row["fingerprint"])
        if current is None or row["timestamp"] > current["timestamp"]:
            latest[row["fingerprint"]] = row
    return latest


def judge_trust(
    grader: Grader,
    ctx: GradeContext,
    *,
    settings: Any = None,
    calibrations: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Trust]:
    """Trust of every judge a grader relies on (empty for rule graders)."""
    if calibrations is None:
        calibrations = latest_calibrations(settings)
    out = []
    for judge in grader.judges:
        minimum = getattr(judge, "min_kappa", None)
        if minimum is None:
            out.append(Trust(judge.name, True, f"judge {judge.name!r} declares no minimum κ"))
            continue
        row = calibrations.get(judge.fingerprint(ctx))
        if row is None:
            fitted = hasattr(judge, "base_fingerprint")  # a composite judge: fitted on labels
            how = (
                f"run `mallard evals align {judge.name}` or materialize judge_calibration"
                if fitted
                else "materialize judge_calibration"
            )
            out.append(
                Trust(
                    judge.name,
                    False,
                    f"judge {judge.name!r} is not calibrated with its current "
                    f"{'fit' if fitted else 'model'} and configuration (needs the lower end of "
                    f"κ's interval ≥ {minimum:.2f}): {how}",
                    None,
                    minimum,
                )
            )
            continue
        kappa = row["kappa"]
        low = row.get("kappa_low")
        has_interval = low is not None and not math.isnan(low)
        bound = low if has_interval else kappa
        method = row.get("kappa_method") or "held-out"
        defined = kappa is not None and not math.isnan(kappa)
        shown = f"{kappa:.2f}" if defined else "undefined"
        interval = (
            f" ({method}, 95% CI [{low:.2f}, {row['kappa_high']:.2f}])" if has_interval else ""
        )
        model = f" ({row['model']})" if row.get("model") else ""
        if bound is None or math.isnan(bound) or bound < minimum:
            why = (
                f"κ {shown}{interval}: its lower end {low:.2f} < {minimum:.2f}"
                if has_interval and defined
                else f"κ {shown} < {minimum:.2f}"
            )
            out.append(
                Trust(
                    judge.name,
                    False,
                    f"judge {judge.name!r} is untrusted: {why} against human verdicts on "
                    f"{row['items']} items{model}",
                    kappa,
                    minimum,
                    row["items"],
                )
            )
        else:
            why = (
                f"κ {shown}{interval}, lower end ≥ {minimum:.2f}"
                if has_interval
                else f"κ {shown} ≥ {minimum:.2f}"
            )
            out.append(
                Trust(
                    judge.name,
                    True,
                    f"judge {judge.name!r} is trusted: {why} on {row['items']} items",
                    kappa,
                    minimum,
                    row["items"],
                )
            )
    return out


def run_calibration(
    catalog: Any,
    *,
    client: Any,
    settings: Any,
    corpora: Sequence[Any] = (),
    judges: Sequence[str] | None = None,
    slice_name: str | None | bool = True,
    limit: int | None = None,
    repeat: int | None = None,
    dataset_version: int | None = None,
    progress: Any = None,
) -> tuple[list[CalibrationReport], dict[str, Any]]:
    """Calibrate the declared judges (or `judges`) on the calibration dataset (its declared slice
    when `slice_name` is True) and record the reports. Returns (reports, run info)."""

    cal = catalog.calibration
    if cal is None:
        raise LookupError("no JudgeCalibration is declared in the eval catalog")
    snapshot = snapshot_for(catalog, cal.dataset, version=dataset_version, settings=settings)
    chosen_slice = cal.slice if slice_name is True else (slice_name or None)
    chosen = catalog.slice(chosen_slice)
    items = chosen.apply(snapshot.items) if chosen is not None else list(snapshot.items)
    items = items[:limit] if limit is not None else items
    contexts = None
    if cal.context_field and corpora:
        contexts = CorpusContexts.for_corpus(corpora[0], field=cal.context_field)
    run_id = f"calibration-{uuid.uuid4().hex[:8]}"
    ctx = GradeContext(client=client, run_id=run_id, settings=settings)
    reports = []
    progress = progress or no_progress
    from mallard.evals.graders.composite import CompositeJudge

    for name in judges or cal.judges:
        judge = catalog.grader(name)
        if isinstance(judge, CompositeJudge):
            # a composite judge is fitted on its labels: its calibration is its alignment, κ
            # cross-validated on every labelled item (the slice and the limit do not apply)
            from mallard.evals.alignment import align

            reports.append(
                report_of_alignment(
                    align(
                        catalog,
                        name,
                        client=client,
                        settings=settings,
                        corpora=corpora,
                        record=False,
                        progress=progress,
                        run_id=run_id,
                    )
                )
            )
            continue
        bar = progress(f"calibrate {name}", len(items))
        try:
            reports.append(
                calibrate_judge(
                    judge,
                    items,
                    ctx,
                    answer_field=cal.answer_field,
                    pass_label=cal.pass_label,
                    contexts=contexts,
                    repeat=repeat or cal.repeat,
                    progress=bar.update,
                )
            )
        finally:
            bar.close()
    record(
        reports,
        dataset=cal.dataset,
        dataset_version=snapshot.version,
        slice_name=chosen_slice,
        settings=settings,
        run_id=run_id,
    )
    if client is not None:  # composite judges without an LLM signal need none
        client.flush()
    return reports, {
        "run_id": run_id,
        "dataset": cal.dataset,
        "dataset_version": snapshot.version,
        "slice": chosen_slice or "",
        "items": len(items),
    }
