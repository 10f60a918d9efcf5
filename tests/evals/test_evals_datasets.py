"""Eval datasets: import into versioned Delta tables, pinned reads, whole-file validation that
names the line and field, CSV and Parquet, slices, ownership."""

from __future__ import annotations

import json

import pytest

from mallard.evals.datasets import (
    DatasetSlice,
    DatasetValidationError,
    EvalDataset,
    dataset_versions,
    import_dataset,
    load_dataset,
    read_items,
    table_path,
)
from mallard.evals.spec import EvalCatalog, OfflineEval
from mallard.specs import DeclarationError


def spec(path, **overrides):
    options = dict(
        name="qs",
        source=str(path),
        id_field="id",
        input_fields=("question",),
        reference_field="answer",
        label_field="label",
        labels=("pass", "fail"),
        score_field="score",
        score_range=(1, 5),
        category_field="category",
    )
    options.update(overrides)
    return EvalDataset(**options)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ROWS = [
    {
        "id": "a",
        "question": "Q1?",
        "answer": "A1",
        "label": "pass",
        "score": 5,
        "category": "billing",
        "extra": 1,
    },
    {
        "id": "b",
        "question": "Q2?",
        "answer": "A2",
        "label": "fail",
        "score": 1,
        "category": "devices",
    },
    {"id": "c", "question": "Q3?", "category": "billing"},
]


def test_import_versions_and_pinned_reads(tmp_path, settings):
    path = write_jsonl(tmp_path / "qs.jsonl", ROWS)
    first = import_dataset(spec(path), settings=settings)
    assert (first.version, first.created, first.items) == (0, True, 3)
    assert first.by_category == {"billing": 2, "devices": 1}
    again = import_dataset(spec(path), settings=settings)
    assert (again.version, again.created) == (0, False)  # unchanged content: no new version
    write_jsonl(path, [*ROWS[:2], {**ROWS[2], "question": "Q3, reworded?"}])
    second = import_dataset(spec(path), settings=settings)
    assert (second.version, second.created) == (1, True)
    assert load_dataset("qs", 0, settings=settings).item("c")["inputs"] == {"question": "Q3?"}
    latest = load_dataset("qs", settings=settings)
    assert latest.version == 1 and latest.item("c")["inputs"] == {"question": "Q3, reworded?"}
    item = latest.item("a")
    assert (
        item["reference"] == "A1"
        and item["expected_label"] == "pass"
        and item["expected_score"] == 5.0
    )
    assert item["metadata"] == {"extra": 1} and latest.item("c")["reference"] is None
    assert [i["item_id"] for i in latest.items] == ["a", "b", "c"]  # file order kept
    assert [v["version"] for v in dataset_versions("qs", settings=settings)] == [1, 0]
    with pytest.raises(LookupError, match="no version 7"):
        load_dataset("qs", 7, settings=settings)


def test_bad_file_rejected_whole_naming_line_and_field(tmp_path, settings):
    path = write_jsonl(tmp_path / "qs.jsonl", ROWS)
    import_dataset(spec(path), settings=settings)
    lines = [
        json.dumps(ROWS[0]),
        json.dumps({"id": "x", "category": "billing"}),
        "",
        json.dumps(
            {"id": "y", "question": "Q?", "label": "maybe", "score": 9, "category": "plans"}
        ),
        "{not json",
        json.dumps({"id": "a", "question": "again", "category": "plans"}),
        json.dumps({"id": "z", "question": "Q?", "score": "high", "category": "plans"}),
        "[1, 2]",
    ]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetValidationError) as info:
        import_dataset(spec(path), settings=settings)
    message = str(info.value)
    assert "nothing was imported" in message
    assert "line 2, field 'question': missing" in message
    assert "line 4, field 'label': 'maybe' is not one of ['pass', 'fail']" in message
    assert "line 4, field 'score': 9 is outside 1–5" in message
    assert "line 5: not valid JSON" in message
    assert "line 6, field 'id': duplicate id 'a' (first on line 1)" in message
    assert "line 7, field 'score': 'high' is not a number" in message
    assert "line 8: is a list, not an object" in message
    assert len(info.value.problems) == 7
    assert load_dataset("qs", settings=settings).version == 0  # the table did not change


def test_nothing_written_when_first_import_is_bad(tmp_path, settings):
    path = write_jsonl(tmp_path / "qs.jsonl", [{"id": "a", "category": "x"}])
    with pytest.raises(DatasetValidationError, match="line 1, field 'question'"):
        import_dataset(spec(path), settings=settings)
    assert not table_path("qs", settings).exists()


def test_an_oversized_field_is_refused(tmp_path, settings):
    huge = {**ROWS[0], "answer": "x" * 10_000_001}
    path = write_jsonl(tmp_path / "qs.jsonl", [ROWS[1], huge])
    with pytest.raises(DatasetValidationError) as info:
        import_dataset(spec(path), settings=settings)
    assert "line 2, field 'answer': is 10,000,001 characters; the limit is 100,000" in str(
        info.value
    )
    assert not table_path("qs", settings).exists()
    assert read_items(spec(path, max_field_chars=20_000_000), path)[1]["reference"]


def test_csv_and_parquet(tmp_path, settings):
    csv_path = tmp_path / "qs.csv"
    csv_path.write_text(
        "id,question,answer,label,score,category\n"
        'a,"multi\nline question?",A1,pass,4,billing\n'
        "b,Q2?,,fail,,devices\n"
        "c,,A3,pass,3,plans\n"
    )
    with pytest.raises(
        DatasetValidationError, match=r"line 5, field 'question'"
    ):  # the record ends on line 5
        read_items(spec(csv_path))
    csv_path.write_text(csv_path.read_text().replace("c,,A3", "c,Q3?,A3"))
    items = read_items(spec(csv_path))
    assert (
        items[0]["inputs"]["question"] == "multi\nline question?"
        and items[0]["expected_score"] == 4.0
    )
    assert items[1]["reference"] is None and items[1]["expected_score"] is None

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq_path = tmp_path / "qs.parquet"
    pq.write_table(
        pa.table({"id": ["a", "b"], "question": ["Q1?", None], "category": ["x", "y"]}), pq_path
    )
    with pytest.raises(DatasetValidationError, match="row 2, field 'question'"):
        read_items(
            spec(pq_path, reference_field=None, label_field=None, labels=(), score_field=None)
        )
    pq.write_table(
        pa.table({"id": ["a", "b"], "question": ["Q1?", "Q2?"], "category": ["x", "y"]}), pq_path
    )
    result = import_dataset(
        spec(
            pq_path, name="pq", reference_field=None, label_field=None, labels=(), score_field=None
        ),
        settings=settings,
    )
    assert result.items == 2 and result.by_category == {"x": 1, "y": 1}


def test_sample_world_datasets_import(settings):
    from catalog.evals import CATALOG

    questions = import_dataset(CATALOG.dataset("support_questions"), settings=settings)
    calibration = import_dataset(CATALOG.dataset("support_calibration"), settings=settings)
    assert questions.items == 82 and calibration.items == 49
    snapshot = load_dataset("support_questions", settings=settings)
    assert set(snapshot.item("Q-001")["metadata"]) == {"article_id", "rubric"}
    demo = CATALOG.slice("support_demo").apply(snapshot.items)
    assert len(demo) == 10 and len({i["category"] for i in demo}) == 6
    cal = CATALOG.slice("calibration_demo").apply(
        load_dataset("support_calibration", settings=settings).items
    )
    assert [i["expected_label"] for i in cal].count("pass") == 6 and len(cal) == 12


def test_slices():
    items = [{"item_id": f"i{n}", "category": "ab"[n % 2]} for n in range(10)]
    assert [i["item_id"] for i in DatasetSlice("s", "d", per_category=2).apply(items)] == [
        "i0",
        "i1",
        "i2",
        "i3",
    ]
    assert [
        i["item_id"] for i in DatasetSlice("s", "d", categories=("b",), limit=2).apply(items)
    ] == ["i1", "i3"]
    assert [i["item_id"] for i in DatasetSlice("s", "d", item_ids=("i7", "i2")).apply(items)] == [
        "i2",
        "i7",
    ]
    with pytest.raises(DeclarationError, match=r"\['nope'\] are not in dataset 'd'"):
        DatasetSlice("s", "d", item_ids=("nope",)).apply(items)


def test_declaration_errors(tmp_path):
    with pytest.raises(DeclarationError, match="owner="):
        spec(tmp_path / "x.jsonl", owner="team:support")
    with pytest.raises(DeclarationError, match="format="):
        spec(tmp_path / "x.xlsx")
    with pytest.raises(DeclarationError, match="two roles"):
        spec(tmp_path / "x.jsonl", reference_field="question")
    with pytest.raises(DeclarationError, match="not a safe identifier"):
        spec(tmp_path / "x.jsonl", name="Bad Name")


def test_global_and_owned_datasets(tmp_path):
    from catalog.graders import grounding

    owned = spec(tmp_path / "x.jsonl", name="owned", owner="prompt:other_prompt")
    assert owned.usable_by(prompt="other_prompt") and not owned.usable_by(
        prompt="support_assistant"
    )
    assert spec(tmp_path / "x.jsonl").usable_by(prompt="anything")
    ev = OfflineEval(
        name="e", chain="c", prompt="support_assistant", dataset="owned", graders=(grounding,)
    )
    with pytest.raises(DeclarationError, match="owned by 'prompt:other_prompt'"):
        EvalCatalog(datasets=[owned], evals=[ev])
    mine = spec(tmp_path / "x.jsonl", name="owned", owner="chain:c")
    EvalCatalog(datasets=[mine], evals=[ev])  # owned by the eval's chain: fine
