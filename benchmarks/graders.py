"""Grader throughput, and judge agreement with people.

1. Items graded per second by each rule grader (one process, unique answers so no memo helps),
   and by all of them together per item. Goal: ≥ 10,000 items/s for the non-LLM graders
   (embedding similarity excluded).
2. Embedding similarity (MiniLM on onnxruntime, batched) items/s.
3. A local LLM judge (faithfulness) on SmolLM2: items/s with the caches cold, with the LLM
   layer's exact cache warm, and with the eval grade cache warm.
4. Judge agreement on the calibration slice (accuracy and Cohen's κ vs the human verdicts,
   Spearman's ρ for the rubric) and the pairwise judge's position-swap disagreement rate, for
   each endpoint in --calibrate (default qwen-1.5b-local: "not measured" when its model package
   is not installed).

    uv run python benchmarks/graders.py [--items 20000] [--judge-items 6] [--calibrate qwen-1.5b-local smollm2-local]

Runs in a temporary MALLARD_HOME; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
HELPCENTRE = ROOT / "mallard" / "sample_world" / "helpcentre"


def _samples(n: int, seed: int = 0, tag: str = "") -> list:
    from mallard.evals.graders import Sample

    rng = random.Random(seed)
    questions = [
        json.loads(line) for line in (HELPCENTRE / "questions.jsonl").read_text().splitlines()
    ]
    articles = {
        a["article_id"]: a
        for a in map(json.loads, (HELPCENTRE / "articles.jsonl").read_text().splitlines())
    }
    out = []
    for i in range(n):
        q = questions[i % len(questions)]
        article = articles[q["article_id"]]
        words = q["reference_answer"].split()
        rng.shuffle(words)
        answer = f"{' '.join(words[: rng.randint(8, len(words))])} [{q['article_id']}] #{tag}{i}"
        out.append(
            Sample(
                item_id=f"{q['question_id']}-{i}",
                output=answer,
                inputs={"question": q["question"]},
                reference=q["reference_answer"],
                expected_label="pass",
                expected_score=4.0,
                category=q["category"],
                metadata={"must_mention": [q["article_id"]]},
                contexts=[f"[{article['article_id']}] {article['title']}\n{article['body'][:900]}"],
                context_ids=[q["article_id"]],
            )
        )
    return out


def rule_graders() -> list:
    from catalog.graders import cites_retrieved_article, concise, grounding
    from mallard.evals.graders import Contains, ExactMatch, JsonSchemaValid, NumericTolerance, Regex

    return [
        ExactMatch("exact"),
        ExactMatch("normalized", normalize=True),
        Contains("contains_any", values=("refund", "premium", "stream")),
        Contains("contains_field", values_field="must_mention"),
        Regex("regex_citation", pattern=r"\[HC-\d{3}\]"),
        JsonSchemaValid(
            "json_schema", schema={"type": "object", "properties": {"a": {"type": "integer"}}}
        ),
        NumericTolerance("numeric", abs_tol=0.5),
        grounding,
        cites_retrieved_article,
        concise,
    ]


def bench_rules(n: int, repeats: int = 3) -> None:
    # fresh answers for every run: no memo of an earlier run's answers can help
    runs = [_samples(n, seed=r, tag=f"r{r}-") for r in range(repeats)]
    print(f"rule graders, {n:,} items each (unique answers; best of {repeats} runs)")
    total = 0.0
    rates = {}
    for grader in rule_graders():
        best = math.inf
        for samples in runs:
            started = time.perf_counter()
            grades = grader.grade_many(samples)
            best = min(best, time.perf_counter() - started)
        assert len(grades) == n
        total += best
        rates[grader.name] = n / best
        print(f"  {grader.name:24} {n / best:>12,.0f} items/s")
    print(f"  {'all ten on each item':24} {n / total:>12,.0f} items/s")
    slowest = min(rates, key=rates.get)
    print(
        f"  goal ≥ 10,000 items/s per rule grader: {'met' if rates[slowest] >= 10_000 else 'MISSED'} "
        f"(slowest: {slowest}, {rates[slowest]:,.0f} items/s)"
    )


def bench_embedding(n: int) -> None:
    from mallard.evals.graders import EmbeddingSimilarity
    from mallard.llm.embeddings import default_embedder

    samples = _samples(n, seed=1)
    default_embedder().embed(["warm up"])
    started = time.perf_counter()
    EmbeddingSimilarity().grade_many(samples)
    elapsed = time.perf_counter() - started
    print(
        f"embedding similarity (MiniLM int8, onnxruntime, {os.environ.get('MALLARD_LLM_THREADS', '2')} threads), "
        f"{n:,} items: {n / elapsed:,.0f} items/s ({elapsed:.1f} s; two texts embedded per item)"
    )


def _client(settings):
    from catalog.llm import ENDPOINTS
    from mallard.llm.client import LLMClient

    return LLMClient(ENDPOINTS, settings=settings, semantic_cache=False, traces=False)


def bench_judge(n: int, settings) -> None:
    from mallard.evals.graders import FaithfulnessJudge, GradeContext
    from mallard.evals.runs import GradeCache, grade_samples

    samples = _samples(n, seed=2)
    client = _client(settings)
    judge = FaithfulnessJudge(endpoint="smollm2-local")
    ctx = GradeContext(client=client)
    client.complete(
        "smollm2-local", "Say hi.", max_tokens=4, cache=False
    )  # load the model outside the timing
    cache = GradeCache(Path(settings.home) / "bench_grades.sqlite")
    rows = []
    for label in ("cold (no cache)", "LLM exact cache warm", "grade cache warm"):
        use = cache if label != "LLM exact cache warm" else None
        started = time.perf_counter()
        grades, _ = grade_samples(judge, samples, ctx, use)
        elapsed = time.perf_counter() - started
        rows.append((label, n / elapsed, sum(g.completion_tokens for g in grades)))
    client.close()
    print(
        f"faithfulness judge on SmolLM2-135M (llama.cpp, {settings.llm_threads} threads), {n} items"
    )
    for label, rate, tokens in rows:
        print(f"  {label:22} {rate:>10,.2f} items/s   ({tokens} tokens generated)")


def _seed(home: Path) -> None:
    """The help-centre files where the catalog's datasets expect them."""
    import shutil

    target = home / "sample" / "helpcentre"
    target.mkdir(parents=True, exist_ok=True)
    for name, source in (
        ("articles.jsonl", "articles.jsonl"),
        ("eval_questions.jsonl", "questions.jsonl"),
        ("calibration.jsonl", "calibration.jsonl"),
    ):
        shutil.copyfile(HELPCENTRE / source, target / name)


def _installed(endpoint: str, settings) -> bool:
    from catalog.llm import ENDPOINTS
    from mallard.llm.errors import ModelFileError

    declared = ENDPOINTS[endpoint]
    if declared.is_local:
        try:
            declared.gguf.locate(Path(settings.models_dir))
        except ModelFileError as exc:
            print(f"{endpoint}: not measured ({exc})")
            return False
    return True


def calibrate(endpoint: str, settings, limit: int | None) -> None:
    from catalog.chains import HELPCENTRE as CORPUS
    from catalog.llm import ENDPOINTS
    from mallard.evals.calibration import CorpusContexts, calibrate_judge
    from mallard.evals.datasets import read_items
    from mallard.evals.graders import (
        FaithfulnessJudge,
        GradeContext,
        PairwiseJudge,
        ReferenceAgreementJudge,
        RubricJudge,
        Sample,
    )
    from mallard.llm.errors import ModelFileError

    declared = ENDPOINTS[endpoint]
    if declared.is_local:
        try:
            declared.gguf.locate(Path(settings.models_dir))
        except ModelFileError as exc:
            print(f"judge agreement on {endpoint}: not measured ({exc})")
            return
    from catalog.evals import support_calibration

    items = read_items(support_calibration, HELPCENTRE / "calibration.jsonl")[:limit]
    client = _client(settings)
    ctx = GradeContext(client=client)
    contexts = CorpusContexts.for_corpus(CORPUS)
    print(
        f"judge agreement with the human verdicts on {endpoint} ({declared.model}), {len(items)} calibration items"
    )
    for judge in (
        FaithfulnessJudge(endpoint=endpoint),
        ReferenceAgreementJudge(endpoint=endpoint),
        RubricJudge(endpoint=endpoint, rubric=None),
    ):
        started = time.perf_counter()
        report = calibrate_judge(judge, items, ctx, contexts=contexts)
        print(
            f"  {judge.name:20} accuracy {report.accuracy:.2f}  κ {report.kappa:+.2f}  Spearman {report.spearman:+.2f}"
            f"  (n={report.items}, errors {report.errors}, {time.perf_counter() - started:.0f} s)"
        )
    pairwise = PairwiseJudge(endpoint=endpoint)
    disagreements = errors = 0
    for item in items:
        sample = Sample.from_item(
            item, str(item["inputs"]["answer"]), other_output=item["reference"]
        )
        grade = pairwise.grade(sample, ctx)
        errors += bool(grade.error)
        disagreements += not grade.error and not grade.details["position_consistent"]
    judged = len(items) - errors
    print(
        f"  pairwise (answer vs gold answer, both orders): position-swap disagreement "
        f"{disagreements}/{judged} = {disagreements / max(judged, 1):.0%}"
    )
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--embedding-items", type=int, default=1_000)
    parser.add_argument("--judge-items", type=int, default=6)
    parser.add_argument("--calibrate", nargs="*", default=["qwen-1.5b-local"])
    parser.add_argument("--calibration-limit", type=int, default=None)
    parser.add_argument(
        "--align",
        nargs="*",
        default=["none", "smollm2-local", "qwen-1.5b-local"],
        help="fit the composite judges with the LLM signal on these endpoints ('none': without)",
    )
    parser.add_argument("--pairwise", nargs="*", default=["smollm2-local", "qwen-1.5b-local"])
    parser.add_argument(
        "--home", default=None, help="MALLARD_HOME to use (keeps the LLM cache between runs)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mallard-bench-graders-") as tmp:
        home = args.home or tmp
        os.environ["MALLARD_HOME"] = home
        from mallard.config import get_settings

        settings = get_settings()
        _seed(Path(home))
        if args.items:
            bench_rules(args.items)
        if args.embedding_items:
            bench_embedding(args.embedding_items)
        if args.judge_items:
            bench_judge(args.judge_items, settings)
        for endpoint in args.calibrate:
            calibrate(endpoint, settings, args.calibration_limit)
        for endpoint in args.align:
            if endpoint == "none" or _installed(endpoint, settings):
                bench_alignment(None if endpoint == "none" else endpoint, settings)
        for endpoint in args.pairwise:
            if _installed(endpoint, settings):
                bench_pairwise(endpoint, settings, args.calibration_limit)


# Composite judges ------------------------------------------------------------------------------
def composite_judges(endpoint: str | None) -> tuple:
    """The catalog's composite judges with the LLM signal on `endpoint` (None: no LLM signal)."""
    from mallard.evals.graders import CompositeJudge, FaithfulnessJudge, ReferenceAgreementJudge

    faithfulness = CompositeJudge(
        "faithfulness",
        task="faithfulness",
        llm=FaithfulnessJudge("faithfulness_verdict", endpoint=endpoint, reasoning=False)
        if endpoint
        else None,
        min_kappa=0.4,
        labels=("support_faithfulness",),
        holdout=("support_calibration",),
    )
    reference = CompositeJudge(
        "reference_agreement",
        task="reference_agreement",
        llm=ReferenceAgreementJudge(
            "reference_agreement_verdict", endpoint=endpoint, reasoning=False
        )
        if endpoint
        else None,
        min_kappa=0.4,
        labels=("support_calibration",),
    )
    return faithfulness, reference


def bench_alignment(endpoint: str | None, settings) -> None:
    """Cross-validated κ (with CI), accuracy, each signal alone, held-out κ, latency and cost
    per item of both composite judges, fitted with the LLM signal on `endpoint`."""
    from catalog.chains import CHAINS
    from catalog.evals import CALIBRATION, CORPORA, DATASETS, SLICES
    from mallard.evals.alignment import align
    from mallard.evals.spec import EvalCatalog

    catalog = EvalCatalog(
        datasets=DATASETS,
        slices=SLICES,
        graders=list(composite_judges(endpoint)),
        calibration=CALIBRATION,
        chains=CHAINS,
    )
    client = _client(settings)
    label = endpoint or "no LLM signal"
    try:
        for name in ("faithfulness", "reference_agreement"):
            started = time.perf_counter()
            report = align(catalog, name, client=client, settings=settings, corpora=CORPORA)
            best, best_kappa = report.best_single
            print(
                f"composite judge {name}, LLM signal: {label} ({time.perf_counter() - started:.0f} s)"
            )
            print("  " + report.summary().replace("\n", "\n  "))
            print(
                f"  composite κ {report.kappa:+.2f} vs best single signal {best} {best_kappa:+.2f}: "
                f"{'beats it' if report.kappa > best_kappa else 'does NOT beat it'}"
            )
    finally:
        client.close()


def bench_pairwise(endpoint: str, settings, limit: int | None = None) -> None:
    """The pairwise judge (verdict only, by probability) on each calibration answer vs its gold
    answer, both orders: position-swap disagreement of the sampled verdicts, of the probability
    margins, and of the margins with the position bias (estimated on the other folds) removed;
    the tie rate after the tie rule."""
    from catalog.chains import HELPCENTRE as CORPUS
    from catalog.evals import support_calibration
    from mallard.evals.calibration import CorpusContexts
    from mallard.evals.datasets import read_items
    from mallard.evals.graders import GradeContext, PairwiseJudge, Sample
    from mallard.evals.judgemodels import fold_assignment

    items = read_items(support_calibration, HELPCENTRE / "calibration.jsonl")[:limit]
    client = _client(settings)
    ctx = GradeContext(client=client, settings=settings)
    contexts = CorpusContexts.for_corpus(CORPUS)
    judge = PairwiseJudge(endpoint=endpoint, reasoning=False)
    margins, sampled = [], []
    started = time.perf_counter()
    for item in items:
        texts, ids = contexts(item)
        sample = Sample.from_item(
            item, str(item["inputs"]["answer"]), other_output=item["reference"], contexts=texts
        )
        grade = judge.grade(sample, ctx)
        if grade.error:
            continue
        margins.append((grade.details["forward_a_margin"], grade.details["backward_a_margin"]))
        sampled.append(grade.details["sampled_consistent"])
    elapsed = time.perf_counter() - started
    client.close()
    n = len(margins)
    if not n:
        print(f"pairwise on {endpoint}: no item judged")
        return

    def rates(bias_of: list[float]) -> tuple[float, float]:
        disagree = ties = 0
        for (fa, ba), bias in zip(margins, bias_of, strict=True):
            decision = PairwiseJudge(endpoint=endpoint, position_bias=bias).decide(fa, ba)
            disagree += not decision["position_consistent"]
            ties += decision["outcome"] == "tie"
        return disagree / n, ties / n

    folds = fold_assignment([True] * n, 5)
    cv_bias = []
    for i in range(n):
        train = [(fa + ba) / 2 for j, (fa, ba) in enumerate(margins) if folds[j] != folds[i]]
        cv_bias.append(sum(train) / len(train))
    overall = sum((fa + ba) / 2 for fa, ba in margins) / n
    raw_d, raw_t = rates([0.0] * n)
    cor_d, cor_t = rates(cv_bias)
    print(
        f"pairwise on {endpoint} (verdict only, answer vs gold answer, both orders), {n} items, "
        f"{elapsed * 1000 / n:.0f} ms per item (two calls):"
    )
    print(f"  sampled verdicts: position-swap disagreement {1 - sum(sampled) / n:.0%}")
    print(f"  by probability: disagreement {raw_d:.0%} before the tie rule, tie rate {raw_t:.0%}")
    print(
        f"  by probability, position bias {overall:+.2f} (A's margin) removed, estimated out of fold: "
        f"disagreement {cor_d:.0%} before the tie rule, tie rate {cor_t:.0%}"
    )


if __name__ == "__main__":
    main()
