"""The sample world: deterministic, whole, and with a shift a model can feel."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable

from mallard.sample_world.generate import WorldSpec, generate_world
from mallard.sample_world.shift import measure_shift, trailing_features

BYTE_IDENTICAL = [
    "customers.csv",
    "usage_events.parquet",
    "support_tickets.parquet",
    "churn_labels.parquet",
    "traces.parquet",
    "helpcentre/articles.jsonl",
    "helpcentre/eval_questions.jsonl",
    "helpcentre/calibration.jsonl",
]


def _billing(path: Path) -> pd.DataFrame:
    frame = DeltaTable(str(path / "billing_events")).to_pandas()
    return frame.sort_values(["event_id", "created_timestamp"]).reset_index(drop=True)


def test_same_seed_and_end_date_give_identical_files(sample_world, tmp_path: Path) -> None:
    spec, first, _ = sample_world
    second = tmp_path / "again"
    generate_world(spec, second)
    for name in BYTE_IDENTICAL:
        assert filecmp.cmp(first / name, second / name, shallow=False), name
    # Delta names its data files with fresh UUIDs; the table contents must match exactly.
    pd.testing.assert_frame_equal(_billing(first), _billing(second))


def test_another_seed_gives_another_world(sample_world, tmp_path: Path) -> None:
    spec, first, _ = sample_world
    other = WorldSpec(end_date=spec.end_date, customers=spec.customers, seed=spec.seed + 1)
    generate_world(other, tmp_path / "other")
    assert not filecmp.cmp(
        first / "usage_events.parquet", tmp_path / "other" / "usage_events.parquet", shallow=False
    )


def test_regenerating_replaces_the_world_whole(sample_world, tmp_path: Path) -> None:
    spec, _, _ = sample_world
    target = tmp_path / "sample"
    generate_world(spec, target)
    (target / "stale-file").write_text("from an older world")
    generate_world(spec, target)
    assert not (target / "stale-file").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["sample"]  # no staging folders left behind


def test_world_covers_the_time_window(sample_world) -> None:
    spec, path, summary = sample_world
    usage = pd.read_parquet(path / "usage_events.parquet")
    assert usage["event_timestamp"].min().date() == spec.start_date
    assert usage["event_timestamp"].max().date() == spec.end_date
    labels = pd.read_parquet(path / "churn_labels.parquet")
    assert (labels["known_at"] - labels["label_timestamp"]).eq(pd.Timedelta(days=14)).all()
    assert labels["known_at"].max().date() <= spec.end_date
    manifest = json.loads((path / "world.json").read_text())
    assert manifest["rows"] == summary.rows


def test_billing_has_late_corrections(sample_world) -> None:
    _, path, _ = sample_world
    billing = _billing(path)
    repeated = billing[billing.duplicated("event_id", keep=False)]
    assert len(repeated) > 0
    for _, group in repeated.groupby("event_id"):
        assert group["event_timestamp"].nunique() == 1
        assert group["created_timestamp"].nunique() == len(group)


def test_shift_is_visible_in_the_statistics(sample_world) -> None:
    _, _, summary = sample_world
    before, after = summary.shift["before_shift"], summary.shift["after_shift"]
    assert after["errors_per_session"] > 2 * before["errors_per_session"]
    assert after["minutes_per_session"] < before["minutes_per_session"]  # crashed sessions end
    assert after["churn_rate_14d"] > 1.5 * before["churn_rate_14d"]


def test_churn_follows_the_story(sample_world) -> None:
    """Before the shift churners have stopped watching; after it they are the ones crashing."""
    _, path, _ = sample_world
    data = trailing_features(path)
    data = data[data["day"] >= 7]
    before, after = data[data["day"] < 46], data[data["day"] >= 74]
    by_label = before.groupby("churned_14d")[["minutes_7d", "active_days_7d", "errors_7d"]].mean()
    assert by_label.loc[1, "active_days_7d"] < 0.6 * by_label.loc[0, "active_days_7d"]
    assert by_label.loc[1, "minutes_7d"] < 0.6 * by_label.loc[0, "minutes_7d"]
    assert by_label.loc[1, "errors_7d"] < 1.5 * by_label.loc[0, "errors_7d"]  # errors are benign
    by_label = after.groupby("churned_14d")[["errors_7d", "payment_failures_30d"]].mean()
    assert by_label.loc[1, "errors_7d"] > 2 * by_label.loc[0, "errors_7d"]
    # a failed payment nobody sorted out ends a subscription, before and after
    for rows in (before, after):
        failed = rows["payment_failures_30d"] >= 2
        assert rows.loc[failed, "churned_14d"].mean() > 2 * rows["churned_14d"].mean()


def test_model_trained_before_the_shift_loses_auc_after_it(sample_world) -> None:
    """The features see churn before the shift, a pre-shift model decays after it, and a model
    retrained on post-shift days recovers: the loss is the world changing, not noise."""
    _, path, _ = sample_world
    measured = measure_shift(path)
    assert measured.auc_before > 0.7, measured
    assert measured.auc_loss >= 0.08, measured
    assert measured.auc_retrained >= max(0.75, measured.auc_after + 0.1), measured


@pytest.fixture(scope="module")
def helpcentre(sample_world):
    _, path, _ = sample_world

    def read(name: str) -> list[dict]:
        with (path / "helpcentre" / name).open() as handle:
            return [json.loads(line) for line in handle if line.strip()]

    return read("articles.jsonl"), read("eval_questions.jsonl"), read("calibration.jsonl")


def test_helpcentre_corpus(helpcentre) -> None:
    articles, _, _ = helpcentre
    assert len({a["article_id"] for a in articles}) == len(articles) >= 30
    assert len({a["title"] for a in articles}) == len(articles)
    assert min(len(a["body"].split()) for a in articles) >= 120
    assert {a["category"] for a in articles} == {
        "plans",
        "billing",
        "devices",
        "playback",
        "account",
        "privacy",
    }


def test_eval_questions_point_at_real_articles(helpcentre) -> None:
    articles, questions, _ = helpcentre
    ids = {a["article_id"] for a in articles}
    assert len(questions) >= 60
    for q in questions:
        assert q["article_id"] in ids, q["question_id"]
        assert q["question"] and q["reference_answer"] and q["rubric"] and q["category"]


def test_calibration_slice_has_both_verdicts(helpcentre) -> None:
    _, _, calibration = helpcentre
    verdicts = [c["human_verdict"] for c in calibration]
    assert len(calibration) >= 40
    assert set(verdicts) == {"pass", "fail"}
    assert min(verdicts.count("pass"), verdicts.count("fail")) >= 15


def test_traces_regress_from_day_ten(sample_world) -> None:
    spec, path, _ = sample_world
    traces = pd.read_parquet(path / "traces.parquet")
    assert len(traces) >= 2000
    day = (
        traces["timestamp"] - pd.Timestamp(spec.day_start(spec.days - spec.trace_days))
    ) // pd.Timedelta(days=1)
    assert day.min() == 0 and day.max() == spec.trace_days - 1
    versions = traces.groupby(day >= spec.trace_regression_day)["prompt_version"].unique()
    assert list(versions[False]) == [1] and list(versions[True]) == [2]
    ok = traces[traces["status"] == "ok"]
    assert (ok["output"].str.len() > 0).all()
    assert ok["retrieved_ids"].map(len).eq(3).all()
    assert set(traces["status"]) == {"ok", "error"}
