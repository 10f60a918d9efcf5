"""Shadow against live on the same traces: the statistics, the recommendation and the rule that
combines it with the offline gate.

A shadow run grades a candidate prompt version's answers to sampled live traces with the live
eval's graders, so each trace gives a pair (live score, shadow score) per grader. For one
grader, `compare` gives:

- the paired bootstrap interval of the mean difference (shadow − live), `mallard.evals.stats`;
- an exact two-sided sign test over the pairs that differ;
- the power the comparison had: the chance, at this many pairs and the observed spread of the
  differences, of detecting a true difference of `min_effect` (normal approximation);
- a recommendation:
  - **promote**: the interval lies above 0 and the sign test rejects at `alpha`;
  - **keep**: the interval lies below 0 and the sign test rejects (the shadow is worse), or no
    difference was found with power ≥ `power_target` (nothing to gain);
  - **needs more traffic**: fewer than `min_pairs` pairs, or no difference found with too
    little power to rule out one of `min_effect`.

Requiring both tests keeps false promotions on identical versions at most `alpha / 2`
(each one-sided), which `tests/online_evals/test_online_shadow.py` checks over 400 null trials.

`promotion_rule` is the gate's rule for offline and online evidence together: a promotion needs
the offline gate passed and, where shadow traffic exists, no significant loss on any trusted
grader. An untrusted judge's comparison is shown, but it never blocks or allows anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mallard.evals.stats import Interval, paired_bootstrap

RECOMMENDATIONS = ("promote", "keep", "needs more traffic")
REPLAY_VARIABLES = {"question": "input", "input": "input", "context": "retrieved_text"}
"""What a shadow prompt's variables are filled with, from the live trace's gradeable row."""


@dataclass(frozen=True)
class ShadowComparison:
    """Shadow against live for one grader on the traces both were graded on."""

    grader: str
    pairs: int
    interval: Interval
    wins: int
    losses: int
    ties: int
    sign_p: float
    power: float
    recommendation: str
    reason: str
    trusted: bool = True
    deciding: bool = True
    """False for a grader the online eval shows but does not decide on (`shadow_graders`)."""

    @property
    def decides(self) -> bool:
        """Whether this comparison may block or allow anything: a trusted, deciding grader."""
        return self.trusted and self.deciding

    def as_dict(self) -> dict[str, object]:
        return {
            "grader": self.grader,
            "pairs": self.pairs,
            "difference": self.interval.estimate,
            "ci_low": self.interval.low,
            "ci_high": self.interval.high,
            "confidence": self.interval.confidence,
            "wins": self.wins,
            "losses": self.losses,
            "ties": self.ties,
            "sign_p": self.sign_p,
            "power": self.power,
            "recommendation": self.recommendation,
            "reason": self.reason,
            "trusted": self.trusted,
            "deciding": self.deciding,
        }

    @property
    def significant_loss(self) -> bool:
        return self.recommendation == "keep" and self.interval.high < 0


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided binomial p-value of `wins` against `losses` (ties left out)."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def _power(diffs: Sequence[float], effect: float, alpha: float) -> float:
    """Power of a two-sided z test on the mean difference to detect `effect` at `alpha`."""
    from statistics import NormalDist, pstdev

    n = len(diffs)
    spread = pstdev(diffs) if n > 1 else 0.0
    if n < 2:
        return 0.0
    if spread == 0:
        return 1.0
    z = NormalDist().inv_cdf(1 - alpha / 2)
    shift = effect * math.sqrt(n) / spread
    return NormalDist().cdf(shift - z) + NormalDist().cdf(-shift - z)


def compare(
    grader: str,
    live: Mapping[str, float],
    shadow: Mapping[str, float],
    *,
    alpha: float = 0.05,
    min_effect: float = 0.05,
    min_pairs: int = 30,
    power_target: float = 0.8,
    resamples: int = 2000,
    seed: int = 0,
    trusted: bool = True,
    deciding: bool = True,
) -> ShadowComparison:
    """Compare shadow against live scores (trace id → score in [0, 1]) on their common traces."""
    common = sorted(set(live) & set(shadow))
    base = [float(live[t]) for t in common]
    cand = [float(shadow[t]) for t in common]
    diffs = [c - b for b, c in zip(base, cand, strict=True)]
    interval = paired_bootstrap(base, cand, resamples=resamples, confidence=1 - alpha, seed=seed)
    wins = sum(d > 0 for d in diffs)
    losses = sum(d < 0 for d in diffs)
    ties = len(diffs) - wins - losses
    p = sign_test(wins, losses)
    power = _power(diffs, min_effect, alpha)
    n = len(common)
    if n < min_pairs:
        verdict, why = "needs more traffic", f"{n} paired traces < {min_pairs}"
    elif interval.low > 0 and p < alpha:
        verdict, why = "promote", f"shadow better: {interval}, sign test p={p:.3g}"
    elif interval.high < 0 and p < alpha:
        verdict, why = "keep", f"shadow worse: {interval}, sign test p={p:.3g}"
    elif power < power_target:
        verdict, why = (
            "needs more traffic",
            f"no difference found ({interval}, p={p:.3g}) with power {power:.2f} < "
            f"{power_target:.2f} to detect ±{min_effect:g}",
        )
    else:
        verdict, why = (
            "keep",
            f"no difference found ({interval}, p={p:.3g}) with power {power:.2f} to detect "
            f"±{min_effect:g}: nothing to gain",
        )
    return ShadowComparison(
        grader, n, interval, wins, losses, ties, p, power, verdict, why, trusted, deciding
    )


def recommend(comparisons: Sequence[ShadowComparison]) -> tuple[str, str]:
    """One recommendation over the trusted, deciding graders' comparisons: keep on any
    significant loss, then needs more traffic if any grader does, promote if any grader gains,
    else keep."""
    decisive = [c for c in comparisons if c.decides]
    if not decisive:
        return "needs more traffic", "no trusted, deciding grader compared shadow and live"
    for c in decisive:
        if c.significant_loss:
            return "keep", f"{c.grader}: {c.reason}"
    waiting = [c for c in decisive if c.recommendation == "needs more traffic"]
    if waiting:
        return "needs more traffic", "; ".join(f"{c.grader}: {c.reason}" for c in waiting)
    gains = [c for c in decisive if c.recommendation == "promote"]
    if gains:
        return "promote", "; ".join(f"{c.grader}: {c.reason}" for c in gains)
    return "keep", "no trusted grader shows a gain"


@dataclass(frozen=True)
class PromotionVerdict:
    """Whether the candidate may become live, and why."""

    promote: bool
    reasons: list[str] = field(default_factory=list)


def promotion_rule(
    offline_passed: bool,
    offline_reasons: Sequence[str] = (),
    shadow: Sequence[ShadowComparison] | None = None,
) -> PromotionVerdict:
    """The offline gate and the shadow evidence together: the offline gate must pass; where
    shadow traffic exists, no trusted grader may show a significant loss. Untrusted graders'
    comparisons never decide; too little shadow traffic does not block."""
    if not offline_passed:
        return PromotionVerdict(False, ["offline gate refused", *offline_reasons])
    reasons = ["offline gate passed", *offline_reasons]
    compared = [c for c in shadow or () if c.pairs > 0]
    if not compared:
        return PromotionVerdict(True, [*reasons, "no shadow traffic: the offline gate decides"])
    ignored = [c.grader for c in compared if not c.trusted]
    if ignored:
        reasons.append(f"untrusted, shown but not deciding: {ignored}")
    shown = [c.grader for c in compared if c.trusted and not c.deciding]
    if shown:
        reasons.append(f"not among the eval's shadow_graders, shown but not deciding: {shown}")
    losses = [c for c in compared if c.decides and c.significant_loss]
    if losses:
        return PromotionVerdict(
            False, [*reasons, *(f"shadow loses on {c.grader}: {c.reason}" for c in losses)]
        )
    return PromotionVerdict(
        True,
        [
            *reasons,
            *(f"shadow on {c.grader}: {c.recommendation} ({c.reason})" for c in compared),
        ],
    )


def replay(
    rows: Sequence[Mapping[str, Any]],
    version: Any,
    client: Any,
    *,
    run_id: str,
    endpoint: str | None = None,
) -> list[dict[str, Any]]:
    """The shadow's answers to live traces: `version` (a PromptVersion) rendered with each
    trace's question and retrieved context (`REPLAY_VARIABLES`), sent to the trace's endpoint
    (or `endpoint`) with `run_id` set, so the call is recorded as Mallard's own and never graded
    as production. Each answer is a copy of the live row with the shadow's output, version,
    tokens, cost, latency and status; a failed call is an error row."""
    unknown = [v for v in version.variables if v not in REPLAY_VARIABLES]
    if unknown:
        raise ValueError(
            f"prompt {version.name!r} v{version.version} has variables {unknown} a replay "
            f"cannot fill; a shadow prompt may use {sorted(REPLAY_VARIABLES)}"
        )
    out = []
    for row in rows:
        values = {v: row.get(REPLAY_VARIABLES[v]) or "" for v in version.variables}
        shadow = {
            **row,
            "prompt_name": version.name,
            "prompt_version": version.version,
            "run_id": run_id,
        }
        try:
            answer = client.complete(
                endpoint or row["endpoint"],
                version.render(values),
                run_id=run_id,
                user_id=row.get("user_id") or "",
                prompt_name=version.name,
                prompt_version=version.version,
                retrieved_ids=list(row.get("retrieved_ids") or ()),
                retrieved_text=row.get("retrieved_text") or "",
                trace_input=row.get("input") or "",
                attributes={"shadow_of": row["trace_id"]},
                **dict(version.params),
            )
        except Exception as exc:  # noqa: BLE001 - one failed replay is an error row, not a failed run
            shadow.update(output="", status="error", error=f"{type(exc).__name__}: {exc}")
        else:
            shadow.update(
                output=answer.text,
                status="ok",
                error="",
                endpoint=answer.endpoint,
                model=answer.model,
                latency_ms=answer.latency_ms,
                cost_usd=answer.cost_usd,
                prompt_tokens=getattr(answer, "prompt_tokens", 0),
                completion_tokens=getattr(answer, "completion_tokens", 0),
            )
        out.append(shadow)
    return out


@dataclass(frozen=True)
class ShadowRun:
    """A shadow run's outcome: the candidate, what was replayed, each grader's comparison and
    the overall recommendation."""

    eval_name: str
    prompt: str
    candidate_version: int
    live_versions: list[int]
    replayed: int
    errors: int
    comparisons: list[ShadowComparison]
    recommendation: str
    reason: str
    cost_usd: float = 0.0
    run_id: str = ""
    at: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "eval_name": self.eval_name,
            "prompt": self.prompt,
            "candidate_version": self.candidate_version,
            "live_versions": list(self.live_versions),
            "replayed": self.replayed,
            "errors": self.errors,
            "comparisons": [c.as_dict() for c in self.comparisons],
            "recommendation": self.recommendation,
            "reason": self.reason,
            "cost_usd": self.cost_usd,
            "run_id": self.run_id,
            "at": self.at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShadowRun:
        comparisons = [
            ShadowComparison(
                grader=c["grader"],
                pairs=int(c["pairs"]),
                interval=Interval(
                    c["difference"],
                    c["ci_low"],
                    c["ci_high"],
                    int(c["pairs"]),
                    float(c.get("confidence", 0.95)),
                ),
                wins=int(c["wins"]),
                losses=int(c["losses"]),
                ties=int(c["ties"]),
                sign_p=float(c["sign_p"]),
                power=float(c["power"]),
                recommendation=c["recommendation"],
                reason=c["reason"],
                trusted=bool(c["trusted"]),
                deciding=bool(c.get("deciding", True)),
            )
            for c in data["comparisons"]
        ]
        fields = {k: v for k, v in data.items() if k != "comparisons"}
        return cls(**fields, comparisons=comparisons)


def shadow_live_pairs(
    live_scores: Any,
    candidate_version: int,
    limit: int,
    endpoints: Sequence[str] = (),
) -> tuple[list[str], list[int]]:
    """The live traces a shadow run replays: the newest `limit` traces graded without error
    (online_scores rows, current) whose prompt version is not the candidate's and, if
    `endpoints` are given, that one of them answered; and their versions."""
    ok = live_scores[
        (live_scores["error"] == "") & (live_scores["prompt_version"] != candidate_version)
    ]
    if endpoints:
        ok = ok[ok["endpoint"].isin(list(endpoints))]
    newest = ok.sort_values(["trace_timestamp", "trace_id"]).drop_duplicates("trace_id").tail(limit)
    return list(newest["trace_id"]), sorted(int(v) for v in newest["prompt_version"].unique())


def compare_graded(
    live_scores: Any,
    shadow_scores: Sequence[Mapping[str, Any]],
    *,
    min_pairs: int = 30,
    seed: int = 0,
    deciding: Callable[[str], bool] = lambda grader: True,
) -> list[ShadowComparison]:
    """Per grader version of the shadow's grades (online_scores-shaped rows): the comparison
    with the live grades of the same traces by the same grader version. A grader is trusted
    only if both its live and shadow grades are; it decides if `deciding(grader)`."""
    out = []
    keys = sorted({(str(r["grader"]), str(r["grader_fingerprint"])) for r in shadow_scores})
    for grader, fingerprint in keys:
        mine = [
            r
            for r in shadow_scores
            if r["grader"] == grader and r["grader_fingerprint"] == fingerprint and not r["error"]
        ]
        live = live_scores[
            (live_scores["grader"] == grader)
            & (live_scores["grader_fingerprint"] == fingerprint)
            & (live_scores["error"] == "")
        ]
        trusted = bool(live["trusted"].all()) and all(bool(r["trusted"]) for r in mine)
        out.append(
            compare(
                grader,
                dict(zip(live["trace_id"], live["score"].astype(float), strict=True)),
                {str(r["trace_id"]): float(r["score"]) for r in mine},
                min_pairs=min_pairs,
                seed=seed,
                trusted=trusted,
                deciding=deciding(grader),
            )
        )
    return out


def shadow_path(settings: Any, eval_name: str) -> Any:
    """Where the latest shadow run of an online eval is kept (JSON), for the promotion gate."""
    return settings.monitoring_dir / "shadow" / f"{eval_name}.json"


def save_run(settings: Any, run: ShadowRun) -> Any:
    """Keep `run` as its eval's latest shadow run."""
    import json

    path = shadow_path(settings, run.eval_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(run.as_dict(), indent=1, default=str))
    tmp.replace(path)
    return path


def latest_runs(settings: Any, prompt: str, candidate_version: int) -> list[ShadowRun]:
    """The latest shadow run of each online eval that replayed `candidate_version` of
    `prompt`."""
    import json

    folder = settings.monitoring_dir / "shadow"
    if not folder.exists():
        return []
    runs = [ShadowRun.from_dict(json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))]
    return [r for r in runs if r.prompt == prompt and r.candidate_version == candidate_version]


def shadow_evidence(
    settings: Any, prompt: str, candidate_version: int | None
) -> list[ShadowComparison]:
    """The comparisons of the latest shadow runs of `candidate_version` (every online eval that
    replayed it), for `promotion_rule`."""
    if candidate_version is None:
        return []
    return [c for run in latest_runs(settings, prompt, candidate_version) for c in run.comparisons]
