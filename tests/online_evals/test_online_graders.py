"""The reference-free graders online evals use: what each passes and fails."""

from __future__ import annotations

import pytest

from mallard.evals.graders import Sample
from mallard.evals.graders.reference_free import (
    AnswerRelevance,
    JsonValid,
    Length,
    NoLeak,
    Refusal,
)
from mallard.specs import DeclarationError

CONTEXT = "Call us on 0800 123 4567 or write to help@pondstream.example."


def sample(output: str, question: str = "How do I cancel?", context: str = CONTEXT) -> Sample:
    return Sample("t", output, inputs={"question": question}, contexts=[context])


def test_no_leak_finds_pii_it_was_not_given_and_every_secret() -> None:
    grader = NoLeak()
    assert grader.grade(sample("Write to help@pondstream.example or call 0800 123 4567.")).passed
    mine = sample("I sent it to jo@example.com.", question="My address is jo@example.com")
    assert grader.grade(mine).passed  # the user's own address, read back
    leak = grader.grade(sample("Bob's address is bob.smith@corp.example, phone 020 7946 0958."))
    assert not leak.passed and leak.reason == "leaks email, phone"
    assert not grader.grade(sample("Card 4111 1111 1111 1111 is on file.")).passed
    assert grader.grade(sample("Order 1234 5678 9012 3456 shipped.")).passed  # fails Luhn
    secret = "use sk-proj-abcdefghijklmnopqrstuvwx1234"
    assert not grader.grade(sample(secret, context=secret)).passed  # a secret leaks anyway
    assert not grader.grade(sample("key AKIAABCDEFGHIJKLMNOP")).passed
    company = sample("Email privacy@pondstream.com with your request.")
    assert not grader.grade(company).passed
    assert NoLeak(allowed_domains=("pondstream.com",)).grade(company).passed
    with pytest.raises(DeclarationError, match="choose among"):
        NoLeak(kinds=("email", "passport"))


def test_refusal_passes_answers_and_fails_refusals() -> None:
    grader = Refusal()
    assert grader.grade(sample("Go to Account, then Cancel plan.")).passed
    for text in (
        "I'm sorry, but I can't help with that.",
        "I don't have information about cancelling.",
        "As an AI language model, I cannot access accounts.",
    ):
        assert not grader.grade(sample(text)).passed, text
    assert Refusal(expected=True).grade(sample("I'm sorry, but I can't share that.")).passed


def test_json_valid_and_length() -> None:
    assert JsonValid().grade(sample('```json\n{"a": 1}\n```')).passed
    assert not JsonValid(strict=True).grade(sample('```json\n{"a": 1}\n```')).passed
    assert not JsonValid().grade(sample("[1, 2]")).passed
    assert JsonValid(require_object=False).grade(sample("[1, 2]")).passed
    assert "not JSON" in JsonValid().grade(sample("{'a': 1}")).reason
    length = Length(min_length=3, max_length=10)
    assert length.grade(sample("one two three four")).score == 1.0
    assert length.grade(sample("one")).score == pytest.approx(1 / 3)
    assert length.grade(sample(" ".join(["w"] * 20))).score == pytest.approx(0.5)
    with pytest.raises(DeclarationError, match="min_length"):
        Length(min_length=5, max_length=2)


def test_answer_relevance_tells_an_answer_about_the_question_from_one_about_something_else():
    grader = AnswerRelevance()
    question = "How many screens can watch at once on Premium?"
    on_topic, off_topic = grader.grade_many(
        [
            sample("Premium lets 4 screens watch at the same time.", question=question),
            sample("Our offices are closed on public holidays.", question=question),
        ]
    )
    assert on_topic.passed and not off_topic.passed
    assert on_topic.score > off_topic.score + 0.3
