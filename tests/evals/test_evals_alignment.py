"""Composite judges fitted on human labels: κ only out of fold, versioned fits in the judge's
fingerprint, human labels from the CLI and the API server reaching the next `evals align`, the
interval's lower end deciding trust, and the calibration table of an older schema still read.

The fast tests use a composite judge of deterministic text signals (overlap, numbers, grounding)
on part of the committed faithfulness labels; the end-to-end test runs the catalog's judge
(MiniLM included) through `mallard evals align` / `annotate` and `mallard serve`."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from evals_helpers import HELPCENTRE

from mallard.evals import store

LABELS = HELPCENTRE / "faithfulness.jsonl"
PLANTED = "F-PLANT"
# HC-001, word for word: every text signal is at its maximum, so a model not fitted on the
# planted (mislabelled) item cannot call it unsupported
PLANTED_ANSWER = "Every plan includes the full catalogue available in your region, up to 5 profiles and up to 10 registered devices."
TEXT_SIGNALS = ("overlap", "numbers", "grounding")


def _small_catalog(tmp_path: Path, *, min_kappa: float = 0.2, items: int = 40):
    """A catalog with one composite judge on `items` faithfulness labels plus the planted item."""
    from catalog.chains import CHAINS
    from catalog.evals import DATASETS, SLICES
    from mallard.evals import EvalDataset, JudgeCalibration
    from mallard.evals.graders import CompositeJudge
    from mallard.evals.spec import EvalCatalog

    rows = [json.loads(line) for line in LABELS.read_text().splitlines() if line.strip()]
    passing = [r for r in rows if r["human_verdict"] == "pass"][: items // 2]
    failing = [r for r in rows if r["human_verdict"] == "fail"][: items // 2]
    planted = {
        **passing[0],
        "faithfulness_id": PLANTED,
        "question": "What does every plan include?",
        "article_id": "HC-001",
        "answer": PLANTED_ANSWER,
        "human_verdict": "fail",
        "human_score": 1,
    }
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [*passing, *failing, planted]))
    labels = EvalDataset(
        name="small_faithfulness",
        source=str(path),
        id_field="faithfulness_id",
        input_fields=("question", "answer"),
        label_field="human_verdict",
        labels=("pass", "fail"),
        score_field="human_score",
        score_range=(1, 5),
    )
    judge = CompositeJudge(
        "text_faithfulness",
        task="faithfulness",
        signals=TEXT_SIGNALS,
        min_kappa=min_kappa,
        labels=("small_faithfulness",),
    )
    catalog = EvalCatalog(
        datasets=[*DATASETS, labels],
        slices=SLICES,
        graders=[judge],
        calibration=JudgeCalibration(
            dataset="support_calibration",
            judges=(judge.name,),
            answer_field="answer",
            pass_label="pass",
            context_field="article_id",
        ),
        chains=CHAINS,
    )
    return catalog, judge


def _hc001_sample(answer: str, item_id: str = "probe"):
    from mallard.evals.graders import Sample

    article = json.loads((HELPCENTRE / "articles.jsonl").read_text().splitlines()[0])
    assert article["article_id"] == "HC-001"
    return Sample(
        item_id=item_id,
        output=answer,
        inputs={"question": "What do the plans include?"},
        contexts=[f"[HC-001] {article['title']}\n{article['body']}"],
        context_ids=["HC-001"],
    )


def test_cross_validation_never_scores_an_item_with_a_model_fitted_on_it():
    """A fitter that memorises its training items is perfect on them; out of fold it can only
    guess, so the cross-validated accuracy stays at chance and every item is scored by a model
    that never saw it."""
    import numpy as np

    from mallard.evals.judgemodels import cross_validate

    rng = np.random.default_rng(3)
    items = [[[float(v)]] for v in rng.normal(size=60)]
    labels = [bool(v) for v in rng.integers(0, 2, size=60)]

    class Memoriser:
        threshold = 0.5

        def __init__(self, train, ys):
            self.known = {inst[0][0]: y for inst, y in zip(train, ys, strict=True)}

        def probability(self, instances):
            x = instances[0][0]
            p = (1.0 if self.known[x] else 0.0) if x in self.known else 0.0
            return p, [p]

    fitted: list[Memoriser] = []

    def fitter(train, ys):
        fitted.append(Memoriser(train, ys))
        return fitted[-1]

    cv = cross_validate(items, labels, fitter, folds=5, resamples=200)
    assert len(fitted) == 5
    # every item was scored by exactly one model, and that model had not seen it
    scored = {}
    for model in fitted:
        for i in range(60):
            if items[i][0][0] not in model.known:
                scored.setdefault(i, []).append(model)
    assert all(len(models) == 1 for models in scored.values()) and len(scored) == 60
    # in-sample the memoriser is perfect; out of fold it says fail to everything
    assert cv.decisions == [False] * 60
    assert cv.accuracy == pytest.approx(1 - sum(labels) / 60)
    assert cv.kappa == pytest.approx(0.0) and cv.kappa_low <= 0.0 <= cv.kappa_high + 1e-12


def test_alignment_fits_versions_and_the_fit_is_in_the_fingerprint(settings, tmp_path):
    from catalog.evals import CORPORA
    from mallard.evals.alignment import align, annotation_queue
    from mallard.evals.calibration import judge_trust
    from mallard.evals.graders import GradeContext
    from mallard.evals.judgemodels import list_fits
    from mallard.evals.labels import add_label
    from mallard.evals.runs import GradeCache, grade_samples

    catalog, judge = _small_catalog(tmp_path)
    ctx = GradeContext(settings=settings)
    probe = _hc001_sample(
        "Standard costs $12.99/month. Every plan comes with a free games console."
    )
    unfitted = judge.grade(probe, ctx)
    assert (
        unfitted.error == "not_fitted"
        and "mallard evals align text_faithfulness" in unfitted.reason
    )
    before = judge.fingerprint(ctx)

    first = align(
        catalog, judge.name, client=None, settings=settings, corpora=CORPORA, resamples=300
    )
    assert first.fit_version == 1 and first.items == 41
    cv = first.cv
    assert cv["kappa_low"] <= cv["kappa"] <= cv["kappa_high"] and cv["folds"] == 5
    assert set(first.ablation) == set(TEXT_SIGNALS)
    fingerprint_v1 = judge.fingerprint(ctx)
    assert fingerprint_v1 == first.fingerprint != before
    # the planted item is judged out of fold: supported, against its (wrong) label
    planted = next(r for r in first.rows if r["item_id"] == f"small_faithfulness:{PLANTED}")
    assert planted["human"] == "fail" and planted["judge"] == "pass", planted
    queue = annotation_queue(catalog, judge.name, settings=settings, corpora=CORPORA)
    assert queue[0].item_id == PLANTED and "the label says fail" in queue[0].why

    cache = GradeCache.default(settings)
    grades, _ = grade_samples(judge, [probe], ctx, cache)
    assert grades[0].details["fit_version"] == 1 and not grades[0].cached
    again, _ = grade_samples(judge, [probe], ctx, cache)
    assert again[0].cached

    add_label(
        judge=judge.name,
        dataset="small_faithfulness",
        item_id=PLANTED,
        verdict="pass",
        author="carol",
        settings=settings,
    )
    second = align(
        catalog, judge.name, client=None, settings=settings, corpora=CORPORA, resamples=300
    )
    assert second.fit_version == 2 and second.fingerprint != fingerprint_v1
    assert second.labels["human"] == [
        {
            "item": f"small_faithfulness:{PLANTED}",
            "verdict": "pass",
            "author": "carol",
            "version": 1,
            "label_id": second.labels["human"][0]["label_id"],
        }
    ]
    fresh, _ = grade_samples(judge, [probe], ctx, cache)
    assert not fresh[0].cached and fresh[0].details["fit_version"] == 2
    # a judge pinned to the first fit is the first fingerprint again (its cached grades back)
    pinned = type(judge)(
        judge.name,
        task="faithfulness",
        signals=TEXT_SIGNALS,
        min_kappa=judge.min_kappa,
        labels=judge.labels,
        fit_version=1,
    )
    assert pinned.fingerprint(ctx) == fingerprint_v1
    assert grade_samples(pinned, [probe], ctx, cache)[0][0].cached
    assert [f["version"] for f in list_fits(settings, judge.name)] == [1, 2]

    rows = store.read("judge_calibration", settings=settings)
    assert sorted((r["fit_version"], r["kappa_method"]) for r in rows) == [
        (1, "cross-validated"),
        (2, "cross-validated"),
    ]
    (trust,) = judge_trust(judge, ctx, settings=settings)
    assert trust.trusted == (second.cv["kappa_low"] >= judge.min_kappa)
    assert f"CI [{second.cv['kappa_low']:.2f}" in trust.reason


def test_trust_needs_the_lower_end_of_the_interval(settings):
    from mallard.evals.calibration import judge_trust
    from mallard.evals.graders import CompositeJudge, GradeContext

    ctx = GradeContext(settings=settings)
    judge = CompositeJudge("gated", task="faithfulness", signals=TEXT_SIGNALS, min_kappa=0.4)
    (missing,) = judge_trust(judge, ctx, calibrations={})
    assert not missing.trusted and "mallard evals align gated" in missing.reason

    def row(kappa: float, low: float) -> dict:
        return {
            "kappa": kappa,
            "kappa_low": low,
            "kappa_high": kappa + 0.2,
            "kappa_method": "cross-validated",
            "items": 85,
            "model": "",
        }

    fingerprint = judge.fingerprint(ctx)
    (wide,) = judge_trust(judge, ctx, calibrations={fingerprint: row(0.6, 0.3)})
    assert not wide.trusted
    assert "lower end 0.30 < 0.40" in wide.reason and "cross-validated" in wide.reason
    (narrow,) = judge_trust(judge, ctx, calibrations={fingerprint: row(0.6, 0.45)})
    assert narrow.trusted and "lower end ≥ 0.40" in narrow.reason
    # the calibration asset's check says the same
    from mallard.evals.calibration import CalibrationReport

    report = CalibrationReport(
        judge="gated", fingerprint=fingerprint, endpoint="", model="", items=85, errors=0,
        accuracy=0.8, kappa=0.6, spearman=math.nan, repeat=1, flip_rate=0.0, score_std=0.0,
        min_kappa=0.4, kappa_low=0.3, kappa_high=0.8, kappa_method="cross-validated",
    )  # fmt: skip
    assert not report.trusted and not report.trust().trusted
    assert "95% CI [0.30, 0.80]" in report.trust().reason
    assert "lower end vs the minimum 0.40: untrusted" in report.trust().reason
    # a row from before intervals were recorded: κ itself decides
    old = {**row(0.5, 0.0), "kappa_low": None, "kappa_high": None, "kappa_method": None}
    (legacy,) = judge_trust(judge, ctx, calibrations={fingerprint: old})
    assert legacy.trusted and "κ 0.50 ≥ 0.40" in legacy.reason


def test_a_calibration_table_of_the_old_schema_reads_and_takes_new_rows(settings):
    """judge_calibration written before kappa_low, kappa_high, kappa_method and fit_version:
    read as None, appended to with the new columns (the old rows keep None)."""
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    new = ("kappa_low", "kappa_high", "kappa_method", "fit_version")
    schema = store.calibration_schema()
    old_schema = pa.schema([f for f in schema if f.name not in new])
    old_row = {name: None for name in old_schema.names}
    old_row.update(
        run_id="old",
        timestamp=store.now(),
        judge="faithfulness",
        fingerprint="f" * 64,
        items=49,
        kappa=0.22,
        accuracy=0.6,
        trusted=False,
    )
    target = store.table_path("judge_calibration", settings)
    write_deltalake(str(target), pa.Table.from_pylist([old_row], schema=old_schema))

    (before,) = store.read("judge_calibration", settings=settings)
    assert before["kappa"] == 0.22 and all(before[name] is None for name in new)
    store.append(
        "judge_calibration",
        [
            {
                **old_row,
                "run_id": "new",
                "timestamp": store.now(),
                "kappa": 0.67,
                "kappa_low": 0.5,
                "kappa_high": 0.81,
                "kappa_method": "cross-validated",
                "fit_version": 3,
            }
        ],
        settings=settings,
    )
    rows = {r["run_id"]: r for r in store.read("judge_calibration", settings=settings)}
    assert rows["new"]["kappa_low"] == 0.5 and rows["new"]["fit_version"] == 3
    assert rows["old"]["kappa"] == 0.22 and rows["old"]["kappa_low"] is None
    assert set(new) <= {f.name for f in DeltaTable(str(target)).schema().fields}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(home: Path, port: int, log: Path) -> subprocess.Popen:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLARD_")}
    env.update(MALLARD_HOME=str(home), DAGSTER_HOME=str(home / "dagster"))
    with log.open("w") as handle:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "mallard"), "serve", "--port", str(port)],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.terminate()
    raise AssertionError(f"mallard serve did not answer: {log.read_text()[-3000:]}")


def test_labels_from_the_cli_and_the_api_reach_the_next_align(settings, tmp_path):
    """The catalog's faithfulness judge end to end: `mallard evals align`, a label from
    `mallard evals annotate` (by item, and from the queue), one from POST /v1/annotations on
    `mallard serve` (developer role, audited), then the next align is fitted on them, names
    their authors and versions, and the fitted judge names the planted unsupported sentence."""
    from click.testing import CliRunner

    from catalog.evals import CATALOG
    from cli.main import main
    from mallard.evals.graders import GradeContext
    from mallard.evals.judgemodels import list_fits
    from mallard.serving.state import open_server_state

    runner = CliRunner()
    aligned = runner.invoke(main, ["evals", "align", "faithfulness"])
    assert aligned.exit_code == 0, aligned.output
    assert "faithfulness fit v1" in aligned.output and "cross-validated κ" in aligned.output
    assert "held out: support_calibration (49 items)" in aligned.output

    by_item = runner.invoke(
        main,
        ["evals", "annotate", "faithfulness", "--author", "alice", "--item", "F-001"]
        + ["--verdict", "fail", "--reason", "too sure"],
    )
    assert by_item.exit_code == 0, by_item.output
    assert "labelled support_faithfulness F-001 fail for faithfulness (version 1, by alice)" in (
        by_item.output
    )
    queued = runner.invoke(
        main,
        ["evals", "annotate", "faithfulness", "--author", "dora", "--limit", "2"],
        input="f\nchecked\nq\n",
    )
    assert queued.exit_code == 0, queued.output
    assert "1 label(s) given for faithfulness" in queued.output
    first_offered = queued.output.split("[1/2] ", 1)[1].split(" ", 2)[1]

    state = open_server_state(settings)
    try:
        developer = state.create_key("bob", "developer", actor="tests").key
        viewer = state.create_key("vera", "viewer", actor="tests").key
        admin = state.create_key("ada", "admin", actor="tests").key
    finally:
        state.close()
    port = _free_port()
    server = _serve(settings.home, port, tmp_path / "serve.log")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as api:
            body = {
                "judge": "faithfulness",
                "dataset": "support_faithfulness",
                "item_id": "F-001",
                "verdict": "pass",
                "reason": "5 profiles is in HC-001",
            }
            as_viewer = api.post("/v1/annotations", json=body, headers=_auth(viewer))
            assert as_viewer.status_code == 403, as_viewer.text
            made = api.post("/v1/annotations", json=body, headers=_auth(developer))
            assert made.status_code == 201, made.text
            label = made.json()
            assert label["version"] == 2 and label["source"] == "api"
            assert label["author"].endswith(":bob")
            unknown = api.post(
                "/v1/annotations", json={**body, "item_id": "F-999"}, headers=_auth(developer)
            )
            assert unknown.status_code == 422
            assert unknown.json()["error"]["field"] == "body.item_id"
            listed = api.get(
                "/v1/annotations", params={"judge": "faithfulness"}, headers=_auth(viewer)
            )
            assert [x["author"] for x in listed.json()][:1] == [label["author"]]
            audit = api.get("/v1/audit", params={"limit": 50}, headers=_auth(admin)).json()
            events = [e for e in audit if e["action"] == "annotations.create"]
            assert sorted(e["status"] for e in events) == [201, 403, 422]
            event = next(e for e in events if e["status"] == 201)
            assert event["target"] == "faithfulness:support_faithfulness:F-001"
            assert event["after"]["version"] == 2 and event["actor"] == label["author"]
    finally:
        server.terminate()
        server.wait(timeout=30)

    realigned = runner.invoke(main, ["evals", "align", "faithfulness"])
    assert realigned.exit_code == 0, realigned.output
    assert "faithfulness fit v2" in realigned.output
    assert "human labels 2 (2 overriding a dataset verdict" in realigned.output
    fit = list_fits(settings, "faithfulness")[-1]
    human = {h["item"]: h for h in fit["labels"]["human"]}
    assert human["support_faithfulness:F-001"]["author"] == label["author"]
    assert human["support_faithfulness:F-001"]["version"] == 2
    assert human["support_faithfulness:F-001"]["verdict"] == "pass"
    assert human[f"support_faithfulness:{first_offered}"]["author"] == "dora"

    judge = CATALOG.grader("faithfulness")
    supported = "Standard – $12.99/month: 2 simultaneous streams, up to 1080p, downloads on 2 devices, no ads."
    extra = "Premium costs $24.99/month."  # HC-001 says $17.99
    grade = judge.grade(_hc001_sample(f"{supported} {extra}"), GradeContext(settings=settings))
    assert not grade.error and not grade.passed, grade.reason
    assert grade.details["unsupported_sentences"] == [extra], grade.reason
    assert grade.details["fit_version"] == 2


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_calibrating_a_composite_judge_is_its_alignment(settings, tmp_path):
    """`judge_calibration` (run_calibration) fits a composite judge on its labels and records
    the cross-validated κ with its interval under the new fit's fingerprint."""
    from catalog.evals import CORPORA
    from mallard.evals.calibration import latest_calibrations, run_calibration
    from mallard.evals.graders import GradeContext

    catalog, judge = _small_catalog(tmp_path, min_kappa=0.99)
    (report,), info = run_calibration(catalog, client=None, settings=settings, corpora=CORPORA)
    assert report.kappa_method == "cross-validated" and report.fit_version == 1
    assert report.items == 41 and report.kappa_low <= report.kappa <= report.kappa_high
    trust = report.trust()
    assert not trust.trusted and "the interval's lower end vs the minimum 0.99" in trust.reason
    row = latest_calibrations(settings)[judge.fingerprint(GradeContext(settings=settings))]
    assert row["run_id"] == info["run_id"] and row["fit_version"] == 1
    assert row["kappa_low"] == pytest.approx(report.kappa_low) and row["trusted"] is False
