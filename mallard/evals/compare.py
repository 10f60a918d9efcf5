"""Comparing two prompt versions and the promotion gate.

A comparison pairs the latest runs of two versions on the same dataset version item by item:
per grader, the mean of (candidate − baseline) with a paired bootstrap interval and the items
won, tied and lost; optionally the pairwise judge's verdicts (both orders, ties on disagreement).

The gate (`decide`) lets a candidate replace `live` only if, for every gating grader, the lower
end of that interval is at least −tolerance, enough items were paired, and every judge the
gating graders rely on is trusted. Anything else is a refusal with its reasons.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from mallard.evals import store
from mallard.evals.calibration import Trust, judge_trust
from mallard.evals.graders.base import GradeContext, Sample
from mallard.evals.progress import no_progress
from mallard.evals.runs import GradeCache, grade_samples, latest_run
from mallard.evals.spec import EvalCatalog, Gate
from mallard.evals.stats import paired_bootstrap


class ComparisonError(LookupError):
    """Two versions cannot be compared (no runs, or no common dataset version)."""


@dataclass
class GraderComparison:
    grader: str
    kind: str
    items: int
    baseline_mean: float
    candidate_mean: float
    diff: float
    ci_low: float
    ci_high: float
    wins: int
    ties: int
    losses: int
    excluded: int = 0

    def __str__(self) -> str:
        return (
            f"{self.grader}: {self.candidate_mean:.3f} vs {self.baseline_mean:.3f}, "
            f"Δ {self.diff:+.3f} [{self.ci_low:+.3f}, {self.ci_high:+.3f}] "
            f"(W/T/L {self.wins}/{self.ties}/{self.losses}, n={self.items})"
        )


@dataclass
class PairwiseResult:
    judge: str
    items: int
    wins: int
    ties: int
    losses: int
    position_disagreements: int
    errors: int = 0
    cost_usd: float = 0.0

    @property
    def disagreement_rate(self) -> float:
        return self.position_disagreements / self.items if self.items else math.nan


@dataclass
class Comparison:
    eval_name: str
    prompt_name: str
    baseline_version: int
    candidate_version: int
    dataset: str
    dataset_version: int
    baseline_run: str
    candidate_run: str
    items: int
    confidence: float
    graders: dict[str, GraderComparison] = field(default_factory=dict)
    pairwise: PairwiseResult | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["graders"] = {k: asdict(v) for k, v in self.graders.items()}
        return out

    def markdown(self) -> str:
        lines = [
            f"| grader | v{self.baseline_version} | v{self.candidate_version} | Δ | {self.confidence:.0%} CI | W/T/L | n |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in self.graders.values():
            lines.append(
                f"| {c.grader} | {c.baseline_mean:.3f} | {c.candidate_mean:.3f} | {c.diff:+.3f} | "
                f"[{c.ci_low:+.3f}, {c.ci_high:+.3f}] | {c.wins}/{c.ties}/{c.losses} | {c.items} |"
            )
        if self.pairwise is not None:
            p = self.pairwise
            lines.append(
                f"| {p.judge} (pairwise) | | | | | {p.wins}/{p.ties}/{p.losses} | {p.items} |"
            )
        return "\n".join(lines)


def compare_rows(
    baseline: Sequence[Mapping[str, Any]],
    candidate: Sequence[Mapping[str, Any]],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, GraderComparison]:
    """Per grader, over items graded without error in both runs."""

    def index(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Mapping[str, Any]]]:
        out: dict[str, dict[str, Mapping[str, Any]]] = {}
        for row in rows:
            out.setdefault(row["grader"], {})[row["item_id"]] = row
        return out

    base, cand = index(baseline), index(candidate)
    result = {}
    for grader in [g for g in cand if g in base]:
        common = sorted(set(base[grader]) & set(cand[grader]))
        pairs = [
            (base[grader][i]["score"], cand[grader][i]["score"])
            for i in common
            if not base[grader][i]["error"] and not cand[grader][i]["error"]
        ]
        a = [p[0] for p in pairs]
        b = [p[1] for p in pairs]
        interval = paired_bootstrap(a, b, resamples=resamples, confidence=confidence, seed=seed)
        result[grader] = GraderComparison(
            grader=grader,
            kind=cand[grader][common[0]]["grader_kind"] if common else "",
            items=len(pairs),
            baseline_mean=sum(a) / len(a) if a else math.nan,
            candidate_mean=sum(b) / len(b) if b else math.nan,
            diff=interval.estimate,
            ci_low=interval.low,
            ci_high=interval.high,
            wins=sum(y > x for x, y in pairs),
            ties=sum(y == x for x, y in pairs),
            losses=sum(y < x for x, y in pairs),
            excluded=len(common) - len(pairs),
        )
    return result


def paired_runs(
    eval_name: str,
    baseline_version: int,
    candidate_version: int,
    *,
    settings: Any = None,
    dataset_version: int | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The latest runs of both versions on one dataset version (the newest both have)."""
    rows = store.read(
        "judge_scores",
        settings=settings,
        filters={"eval_name": eval_name, "prompt_version": [baseline_version, candidate_version]},
    )
    plain = [r for r in rows if r["baseline_prompt_version"] is None]
    versions = {
        v: {r["dataset_version"] for r in plain if r["prompt_version"] == v}
        for v in (baseline_version, candidate_version)
    }
    for v, found in versions.items():
        if not found:
            raise ComparisonError(
                f"eval {eval_name!r} has no run of prompt v{v}: run `mallard evals run {eval_name} "
                f"--version {v}` or materialize its partition v{v}"
            )
    common = versions[baseline_version] & versions[candidate_version]
    if dataset_version is not None:
        common &= {dataset_version}
    if not common:
        raise ComparisonError(
            f"eval {eval_name!r}: v{baseline_version} was run on dataset version(s) "
            f"{sorted(versions[baseline_version])} and v{candidate_version} on "
            f"{sorted(versions[candidate_version])}; rerun both on the same version"
        )
    chosen = max(common)
    return (
        latest_run(eval_name, baseline_version, dataset_version=chosen, rows=plain),
        latest_run(eval_name, candidate_version, dataset_version=chosen, rows=plain),
    )


def run_pairwise(
    catalog: EvalCatalog,
    eval_name: str,
    baseline: Sequence[Mapping[str, Any]],
    candidate: Sequence[Mapping[str, Any]],
    *,
    ctx: GradeContext,
    settings: Any,
    cache: GradeCache | None = None,
    progress: Any = None,
) -> tuple[PairwiseResult, list[dict[str, Any]]]:
    """The eval's pairwise judge on every item both runs answered: candidate vs baseline."""
    from mallard.evals.datasets import load_dataset

    ev = catalog.eval(eval_name)
    assert ev.pairwise is not None
    judge = catalog.grader(ev.pairwise)
    first = {r["item_id"]: r for r in baseline}
    second = {r["item_id"]: r for r in candidate}
    common = sorted(
        i
        for i in set(first) & set(second)
        if first[i]["answer_status"] == "ok" and second[i]["answer_status"] == "ok"
    )
    version = candidate[0]["dataset_version"]
    snapshot = load_dataset(candidate[0]["dataset"], version, settings=settings)
    samples = [
        Sample.from_item(snapshot.item(i), second[i]["answer"], other_output=first[i]["answer"])
        for i in common
    ]
    bar = (progress or no_progress)(f"judge {judge.name}", len(samples))
    try:
        grades, keys = grade_samples(judge, samples, ctx, cache, bar)
    finally:
        bar.close()
    outcomes = [g.details.get("outcome", "tie") for g in grades if not g.error]
    result = PairwiseResult(
        judge.name,
        len(outcomes),
        outcomes.count("win"),
        outcomes.count("tie"),
        outcomes.count("loss"),
        sum(not g.details.get("position_consistent", True) for g in grades if not g.error),
        errors=sum(bool(g.error) for g in grades),
        cost_usd=sum(g.cost_usd for g in grades),
    )
    identity = judge.identity(ctx)
    timestamp = store.now()
    rows = []
    for item_id, grade, key in zip(common, grades, keys, strict=True):
        row = dict(second[item_id])
        row.update(
            {
                "run_id": ctx.run_id,
                "timestamp": timestamp,
                "baseline_prompt_version": first[item_id]["prompt_version"],
                "grader": judge.name,
                "grader_kind": judge.kind,
                "grader_fingerprint": judge.fingerprint(ctx)[:16],
                "judge_endpoint": str(identity.get("endpoint", "")),
                "judge_model": str(identity.get("model", "")),
                "score": grade.score,
                "raw_score": grade.raw,
                "passed": grade.passed,
                "threshold": judge.threshold,
                "reason": grade.reason[:2000],
                "error": grade.error[:500],
                "cost_usd": grade.cost_usd,
                "latency_ms": grade.latency_ms,
                "cached": grade.cached,
                "cache_key": key,
                "answer_cost_usd": 0.0,
                "answer_latency_ms": 0.0,
            }
        )
        rows.append(row)
    return result, rows


def compare_versions(
    catalog: EvalCatalog,
    eval_name: str,
    baseline_version: int,
    candidate_version: int,
    *,
    settings: Any,
    client: Any = None,
    pairwise: bool = True,
    dataset_version: int | None = None,
    seed: int = 0,
    cache: GradeCache | bool = True,
    progress: Any = None,
) -> Comparison:
    """Compare the latest runs of two versions; with `pairwise` and a client, also run the eval's
    pairwise judge (its rows are appended to judge_scores)."""
    ev = catalog.eval(eval_name)
    gate = ev.gate or Gate(graders=tuple(ev.grader_names[:1]))
    baseline, candidate = paired_runs(
        eval_name,
        baseline_version,
        candidate_version,
        settings=settings,
        dataset_version=dataset_version,
    )
    graders = compare_rows(
        baseline, candidate, confidence=gate.confidence, resamples=gate.resamples, seed=seed
    )
    comparison = Comparison(
        eval_name=eval_name,
        prompt_name=ev.prompt,
        baseline_version=baseline_version,
        candidate_version=candidate_version,
        dataset=candidate[0]["dataset"],
        dataset_version=candidate[0]["dataset_version"],
        baseline_run=baseline[0]["run_id"],
        candidate_run=candidate[0]["run_id"],
        items=len({r["item_id"] for r in baseline} & {r["item_id"] for r in candidate}),
        confidence=gate.confidence,
        graders=graders,
    )
    if pairwise and ev.pairwise and client is not None:
        run_id = f"{eval_name}-v{candidate_version}-vs-v{baseline_version}-{uuid.uuid4().hex[:8]}"
        ctx = GradeContext(client=client, run_id=run_id)
        grade_cache = GradeCache.default(settings) if cache is True else (cache or None)
        comparison.pairwise, rows = run_pairwise(
            catalog,
            eval_name,
            baseline,
            candidate,
            ctx=ctx,
            settings=settings,
            cache=grade_cache,
            progress=progress,
        )
        store.append("judge_scores", rows, settings=settings)
    return comparison


@dataclass
class Decision:
    promote: bool
    reasons: list[str]
    candidate_version: int
    live_version: int | None
    label: str
    checks: list[dict[str, Any]] = field(default_factory=list)
    trust: list[Trust] = field(default_factory=list)
    comparison: Comparison | None = None
    moved: bool = False

    @property
    def verdict(self) -> str:
        if self.moved:
            return "promoted"
        return "approved (not moved)" if self.promote else "refused"

    def __str__(self) -> str:
        head = f"v{self.candidate_version} vs {self.label} v{self.live_version}: {self.verdict}"
        return head + "".join(f"\n  - {r}" for r in self.reasons)


def decide(
    comparison: Comparison | None,
    gate: Gate,
    trust: Sequence[Trust],
    *,
    candidate_version: int,
    live_version: int | None,
) -> Decision:
    """The gate on a comparison (None when there is no live version yet: the first version may
    only need trusted judges)."""
    reasons: list[str] = []
    checks: list[dict[str, Any]] = []
    if live_version is not None and candidate_version == live_version:
        return Decision(
            False,
            [f"v{candidate_version} is already {gate.label}"],
            candidate_version,
            live_version,
            gate.label,
            comparison=comparison,
        )
    if comparison is not None:
        if comparison.items < gate.min_items:
            reasons.append(
                f"only {comparison.items} paired items; the gate needs at least {gate.min_items}"
            )
        for name in gate.graders:
            tolerance = gate.tolerance_for(name)
            result = comparison.graders.get(name)
            if result is None or result.items == 0:
                reasons.append(f"{name}: no paired scores for both versions")
                checks.append({"grader": name, "ok": False, "tolerance": tolerance})
                continue
            ok = result.items >= gate.min_items and result.ci_low >= -tolerance - 1e-12
            checks.append(
                {
                    "grader": name,
                    "ok": ok,
                    "diff": result.diff,
                    "ci_low": result.ci_low,
                    "ci_high": result.ci_high,
                    "tolerance": tolerance,
                    "items": result.items,
                }
            )
            if result.items < gate.min_items:
                reasons.append(
                    f"{name}: only {result.items} items graded on both versions (needs {gate.min_items})"
                )
            elif not ok:
                reasons.append(
                    f"{name}: v{candidate_version} − v{live_version} = {result.diff:+.3f}, "
                    f"{gate.confidence:.0%} CI [{result.ci_low:+.3f}, {result.ci_high:+.3f}]: may be worse "
                    f"than {gate.label} by more than the tolerance {tolerance:.3f}"
                )
    untrusted = [t for t in trust if not t.trusted]
    if gate.require_trusted_judges:
        reasons.extend(t.reason + " — it cannot gate a promotion" for t in untrusted)
    promote = not reasons
    if promote:
        passed = [
            f"{c['grader']}: Δ {c['diff']:+.3f}, CI low {c['ci_low']:+.3f} ≥ −{c['tolerance']:.3f}"
            for c in checks
        ] or ["no live version yet"]
        reasons = [
            "not worse than "
            + gate.label
            + " beyond tolerance on every gating grader; judges trusted",
            *passed,
        ]
    return Decision(
        promote,
        reasons,
        candidate_version,
        live_version,
        gate.label,
        checks,
        list(trust),
        comparison,
    )


def gate_trust(
    catalog: EvalCatalog, eval_name: str, ctx: GradeContext, settings: Any
) -> list[Trust]:
    from mallard.evals.calibration import latest_calibrations

    ev = catalog.eval(eval_name)
    assert ev.gate is not None
    calibrations = latest_calibrations(settings)
    out: list[Trust] = []
    for name in ev.gate.graders:
        out.extend(judge_trust(catalog.grader(name), ctx, calibrations=calibrations))
    return out


def promote_prompt(
    catalog: EvalCatalog,
    eval_name: str,
    *,
    client: Any,
    registry: Any,
    settings: Any,
    candidate_version: int | None = None,
    actor: str | None = None,
    dry_run: bool = False,
    pairwise: bool = True,
    progress: Any = None,
) -> Decision:
    """Decide on a candidate (default: the version the gate's candidate label points at) against
    the live version, move the label when the gate allows it (compare-and-set against the live
    version that was compared), and record the decision either way."""
    ev = catalog.eval(eval_name)
    gate = ev.gate
    if gate is None:
        raise ComparisonError(f"eval {eval_name!r} declares no gate")
    labels = registry.labels(ev.prompt)
    if candidate_version is None:
        if gate.candidate_label not in labels:
            raise ComparisonError(
                f"prompt {ev.prompt!r} has no {gate.candidate_label!r} label; name a version"
            )
        candidate_version = labels[gate.candidate_label]
    live = labels.get(gate.label)
    ctx = GradeContext(client=client, run_id=f"gate-{eval_name}-{uuid.uuid4().hex[:8]}")
    trust = gate_trust(catalog, eval_name, ctx, settings)
    comparison = None
    if live is not None and live != candidate_version:
        try:
            comparison = compare_versions(
                catalog,
                eval_name,
                live,
                candidate_version,
                settings=settings,
                client=client,
                pairwise=pairwise,
                progress=progress,
            )
        except ComparisonError as exc:
            decision = Decision(False, [str(exc)], candidate_version, live, gate.label, trust=trust)
            _record(decision, ev, settings, actor, None)
            return decision
    decision = decide(
        comparison, gate, trust, candidate_version=candidate_version, live_version=live
    )
    if decision.promote and not dry_run:
        reason = f"gate of eval {eval_name}: " + "; ".join(decision.reasons[1:] or decision.reasons)
        event = registry.promote(
            ev.prompt,
            candidate_version,
            label=gate.label,
            reason=reason[:1000],
            actor=actor,
            expect_version=live,
        )
        decision.moved = event is not None
    _record(decision, ev, settings, actor, comparison)
    return decision


def _record(
    decision: Decision, ev: Any, settings: Any, actor: str | None, comparison: Comparison | None
) -> None:
    from mallard.llm.prompts.registry import default_actor

    store.append(
        "eval_gate_decisions",
        [
            store.decision_row(
                eval_name=ev.name,
                prompt_name=ev.prompt,
                candidate_version=decision.candidate_version,
                live_version=decision.live_version,
                label=decision.label,
                promoted=decision.moved,
                reasons=decision.reasons,
                comparison=comparison.to_json() if comparison else None,
                dataset_version=comparison.dataset_version if comparison else None,
                actor=actor or default_actor(),
            )
        ],
        settings=settings,
    )
