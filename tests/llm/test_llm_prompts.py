"""Prompt registry: immutable versions, labels moved only by recorded promote/rollback, strict
rendering, and last-known-good fallback when the store is unreadable."""

from __future__ import annotations

import sqlite3

import pytest
from tests_paths import CATALOG_PROMPTS  # noqa: E402

from mallard.llm.errors import (
    PromptError,
    PromptNotFoundError,
    PromptRenderError,
    PromptStoreUnavailableError,
)
from mallard.llm.prompts import PromptRegistry, PromptTemplate, sync_prompt_files


def template(
    text: str = "Answer {{ question }} using {{ context }}", **overrides
) -> PromptTemplate:
    options = {
        "name": "helper",
        "messages": (("system", "Be brief."), ("user", text)),
        "variables": ("question", "context"),
        "model": {"endpoint": "smollm2-local", "temperature": 0.0},
    }
    options.update(overrides)
    return PromptTemplate(**options)


@pytest.fixture
def registry(tmp_path) -> PromptRegistry:
    return PromptRegistry(
        tmp_path / "lake" / "prompt_registry.sqlite", cache_dir=tmp_path / "cache", cache_ttl_s=0
    )


def test_versions_are_numbered_hashed_and_idempotent(registry):
    v1, created1 = registry.register(template())
    again, created_again = registry.register(template())
    v2, created2 = registry.register(template("Reply to {{ question }}. Context: {{ context }}"))
    assert (v1.version, created1, again.version, created_again, v2.version, created2) == (
        1,
        True,
        1,
        False,
        2,
        True,
    )
    assert v1.content_hash == again.content_hash != v2.content_hash and len(v1.content_hash) == 64
    assert (
        registry.register(template(model={"endpoint": "smollm2-local", "temperature": 0.5}))[
            0
        ].version
        == 3
    )


def test_versions_are_immutable_in_the_store(registry):
    registry.register(template())
    db = sqlite3.connect(registry.path)
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        db.execute("UPDATE prompt_versions SET content = '{}' WHERE version = 1")
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        db.execute("DELETE FROM prompt_versions")
    with pytest.raises(sqlite3.IntegrityError):  # same name and content hash twice
        db.execute(
            "INSERT INTO prompt_versions SELECT name, 9, content_hash, content, description, source, "
            "created_at, created_by FROM prompt_versions"
        )


def test_labels_move_only_by_recorded_promote_and_rollback(registry):
    registry.register(template())
    registry.register(template("v2 {{ question }} {{ context }}"))
    registry.register(template("v3 {{ question }} {{ context }}"))
    registry.promote("helper", 1, label="live", reason="first release", actor="ana")
    registry.promote("helper", 2, label="staging", reason="candidate", actor="ci")
    registry.promote(
        "helper", label="live", from_label="staging", reason="eval gate passed", actor="ci"
    )
    assert registry.labels("helper") == {"live": 2, "staging": 2}
    assert (
        registry.promote("helper", 2, label="live", reason="again") is None
    )  # already there: nothing recorded
    registry.promote("helper", 3, label="live", reason="hotfix", actor="bo")
    event = registry.rollback("helper", label="live", reason="hotfix broke answers", actor="ana")
    assert (event.action, event.from_version, event.to_version) == ("rollback", 3, 2)
    assert registry.get("helper", "live").version == 2
    history = registry.history("helper", "live")
    assert [(e.action, e.from_version, e.to_version, e.actor, e.reason) for e in history] == [
        ("promote", None, 1, "ana", "first release"),
        ("promote", 1, 2, "ci", "eval gate passed"),
        ("promote", 2, 3, "bo", "hotfix"),
        ("rollback", 3, 2, "ana", "hotfix broke answers"),
    ]
    assert all(e.at for e in history)
    registry.rollback("helper", label="live", to_version=1, reason="back to the first", actor="ana")
    assert registry.labels("helper")["live"] == 1
    db = sqlite3.connect(registry.path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE prompt_label_events SET to_version = 3")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM prompt_label_events")


def test_promote_and_rollback_refuse_bad_moves(registry):
    registry.register(template())
    with pytest.raises(PromptNotFoundError, match="no version 7"):
        registry.promote("helper", 7, reason="x")
    with pytest.raises(PromptError, match="needs a reason"):
        registry.promote("helper", 1, reason=" ")
    registry.promote("helper", 1, reason="first")
    with pytest.raises(PromptError, match="no earlier version"):
        registry.rollback("helper", reason="nothing to go back to")
    registry.register(template("v2 {{ question }} {{ context }}"))
    with pytest.raises(PromptError, match="never pointed at v2 before"):
        registry.rollback("helper", to_version=2, reason="not a rollback")
    with pytest.raises(PromptError, match="moved meanwhile"):
        registry.promote("helper", 2, reason="cas", expect_version=2)
    assert registry.promote("helper", 2, reason="cas", expect_version=1).to_version == 2


def test_rendering_is_strict(registry):
    version, _ = registry.register(template())
    messages = version.render(question="How do I cancel?", context=["HC-014"])
    assert messages[1]["content"] == 'Answer How do I cancel? using [\n "HC-014"\n]'
    with pytest.raises(
        PromptRenderError, match=r"prompt 'helper' v1: missing variable\(s\) context"
    ):
        version.render(question="q")
    with pytest.raises(PromptRenderError, match=r"unexpected variable\(s\) tone"):
        version.render(question="q", context="c", tone="warm")


def test_undeclared_placeholder_is_refused_at_declaration():
    with pytest.raises(PromptError, match="undeclared variable"):
        template("Hello {{ name }}")


def test_get_falls_back_to_last_known_good(registry, tmp_path, caplog):
    registry.register(template())
    registry.promote("helper", 1, reason="first")
    assert registry.get("helper").version == 1  # read once: last-known-good saved
    registry.path.write_bytes(b"this is not a database" * 100)  # the store becomes unreadable
    fresh = PromptRegistry(
        registry.path, cache_dir=tmp_path / "cache"
    )  # a new process: empty memory cache
    served = fresh.get("helper", "live")
    assert served.version == 1 and served.from_fallback
    assert served.render(question="q", context="c")[1]["content"] == "Answer q using c"
    assert "unreadable" in caplog.text
    with pytest.raises(
        PromptStoreUnavailableError, match="no last-known-good copy of helper@staging"
    ):
        fresh.get("helper", "staging")


def test_get_uses_memory_cache(tmp_path):
    registry = PromptRegistry(tmp_path / "r.sqlite", cache_dir=tmp_path / "c", cache_ttl_s=60)
    registry.register(template())
    registry.promote("helper", 1, reason="first")
    first = registry.get("helper")
    registry.path.unlink()
    assert registry.get("helper") is first  # served from memory within the TTL


def test_unknown_label_is_not_found_not_fallback(registry):
    registry.register(template())
    with pytest.raises(PromptNotFoundError, match="no label 'live'"):
        registry.get("helper", "live")


def test_diff(registry):
    registry.register(template())
    registry.register(template("Reply to {{ question }}. Context: {{ context }}"))
    diff = registry.diff("helper", 1, 2)
    assert (
        "-Answer {{ question }} using {{ context }}" in diff and "+Reply to {{ question }}." in diff
    )


def test_catalog_prompt_files_register_with_initial_labels(registry):
    results = sync_prompt_files(registry, CATALOG_PROMPTS)
    assert {(r["name"], r["version"]) for r in results} >= {
        ("support_assistant", 1),
        ("support_assistant", 2),
    }
    assert registry.labels("support_assistant") == {"live": 1, "staging": 2}
    live = registry.get("support_assistant", "live")
    assert (
        "only the help-centre articles" in live.template.messages[0][1]
        and live.endpoint == "smollm2-local"
    )
    rendered = registry.get("support_assistant", "staging").render(
        question="q", context="[HC-001] Plans"
    )
    assert "HC-001" not in " ".join(
        m["content"] for m in rendered
    )  # the regressed version ignores the articles
    # a second sync changes nothing, and never moves labels
    registry.promote("support_assistant", 2, label="live", reason="experiment")
    again = sync_prompt_files(registry, CATALOG_PROMPTS)
    assert not any(r["created"] or r["labels_set"] for r in again)
    assert registry.labels("support_assistant")["live"] == 2
    table = registry.versions_table()
    assert {(r["version"], r["labels"]) for r in table if r["name"] == "support_assistant"} == {
        (1, ""),
        (2, "live,staging"),
    }


def test_changed_file_becomes_a_new_version(registry, tmp_path):
    folder = tmp_path / "prompts"
    folder.mkdir()
    path = folder / "greet.toml"
    path.write_text(
        'name = "greet"\nvariables = ["who"]\nlabels = ["live"]\n'
        '[[messages]]\nrole = "user"\ncontent = "Say hello to {{ who }}."\n'
    )
    assert sync_prompt_files(registry, folder)[0]["created"]
    path.write_text(path.read_text().replace("Say hello", "Greet"))
    result = sync_prompt_files(registry, folder)[0]
    assert result["created"] and result["version"] == 2 and result["labels_set"] == []
    assert registry.labels("greet") == {"live": 1}  # the new version waits for a promotion


def test_cli(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from cli.prompts import prompts

    monkeypatch.setenv("MALLARD_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    assert (
        "support_assistant v1 (new, labels set: live)"
        in runner.invoke(prompts, ["sync", str(CATALOG_PROMPTS)]).output
    )
    listing = runner.invoke(prompts, ["list"]).output
    assert "support_assistant" in listing and "live" in listing and "staging" in listing
    assert "Grounded" in runner.invoke(prompts, ["show", "support_assistant"]).output
    assert (
        "+Do not mention articles"
        in runner.invoke(prompts, ["diff", "support_assistant", "1", "2"]).output
    )
    out = runner.invoke(
        prompts,
        [
            "promote",
            "support_assistant",
            "--from-label",
            "staging",
            "--reason",
            "try",
            "--actor",
            "me",
        ],
    )
    assert "live v1 → v2 (by me)" in out.output
    out = runner.invoke(
        prompts, ["rollback", "support_assistant", "--reason", "worse answers", "--actor", "me"]
    )
    assert "live v2 → v1" in out.output
    out = runner.invoke(
        prompts, ["promote", "support_assistant", "--version", "9", "--reason", "x"]
    )
    assert out.exit_code != 0 and "no version 9" in out.output
    assert "rollback" in runner.invoke(prompts, ["show", "support_assistant"]).output
