"""Rule graders: exact and normalised match, contains, regex, JSON-schema validity, numeric
tolerance. Pure Python, microseconds per item, no model involved."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from mallard.evals.graders.base import Grade, GradeContext, Grader, Sample
from mallard.specs import DeclarationError

_NON_WORD = re.compile(r"[^\w\s]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_SPACES = re.compile(r"\s+")
_ASCII_PUNCTUATION = str.maketrans({c: " " for c in "!\"#$%&'()*+,-./:;<=>?@[\\]^`{|}~"})
_ARTICLE_WORDS = frozenset(("a", "an", "the"))
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")
TARGETS = ("reference", "label", "score")


@lru_cache(maxsize=65536)
def normalize_text(text: str) -> str:
    """Unicode-folded, lower-case, punctuation and articles removed, whitespace collapsed."""
    if text.isascii():  # the common case, without regular expressions
        words = text.casefold().translate(_ASCII_PUNCTUATION).split()
        return " ".join(w for w in words if w not in _ARTICLE_WORDS)
    text = _fold(text)
    text = _NON_WORD.sub(" ", text)
    text = _ARTICLES.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def _fold(text: str) -> str:
    # NFKC changes nothing in ASCII text, and skipping it there halves the cost of folding
    return text.casefold() if text.isascii() else unicodedata.normalize("NFKC", text).casefold()


def _target(grader: Grader, sample: Sample, target: str) -> Any:
    if target == "reference":
        return sample.reference
    if target == "label":
        return sample.expected_label
    return sample.expected_score


def _check_target(grader: str, target: str) -> None:
    if target not in TARGETS:
        raise DeclarationError(f"grader {grader!r}: target={target!r} must be one of {TARGETS}")


class ExactMatch(Grader):
    """The answer equals the reference (or expected label); with `normalize`, after folding case,
    punctuation, articles and whitespace."""

    def __init__(
        self,
        name: str = "exact_match",
        *,
        normalize: bool = False,
        target: str = "reference",
        threshold: float = 1.0,
        description: str = "",
    ):
        super().__init__(name, threshold=threshold, description=description)
        _check_target(name, target)
        self.normalize = normalize
        self.target = target

    def config(self) -> dict[str, Any]:
        return {"normalize": self.normalize, "target": self.target}

    def grade(self, sample: Sample, ctx: GradeContext | None = None) -> Grade:
        expected = _target(self, sample, self.target)
        if expected is None:
            return Grade.failed(f"item has no {self.target} to compare with", "missing_target")
        expected, got = str(expected), sample.output
        if self.normalize:
            same = normalize_text(got) == normalize_text(expected)
        else:
            same = got.strip() == expected.strip()
        how = "normalised " if self.normalize else ""
        return self._grade(
            1.0 if same else 0.0,
            f"{how}match" if same else f"{how}mismatch: expected {expected[:80]!r}",
        )


class Contains(Grader):
    """The answer contains the given strings: any of them, or all of them (score = the fraction
    found); with `forbid`, none of them may appear."""

    def __init__(
        self,
        name: str = "contains",
        *,
        values: Sequence[str] = (),
        values_field: str | None = None,
        mode: str = "any",
        case_sensitive: bool = False,
        forbid: bool = False,
        threshold: float = 1.0,
        description: str = "",
    ):
        super().__init__(name, threshold=threshold, description=description)
        if mode not in ("any", "all"):
            raise DeclarationError(f"grader {name!r}: mode={mode!r} must be 'any' or 'all'")
        if not values and not values_field:
            raise DeclarationError(
                f"grader {name!r}: give values=… or values_field=… (an item metadata field)"
            )
        self.values = tuple(values)
        self.values_field = values_field
        self.mode = mode
        self.case_sensitive = case_sensitive
        self.forbid = forbid
        self._folded = tuple(v if case_sensitive else v.casefold() for v in self.values)

    def config(self) -> dict[str, Any]:
        return {
            "values": list(self.values),
            "values_field": self.values_field,
            "mode": self.mode,
            "case_sensitive": self.case_sensitive,
            "forbid": self.forbid,
        }

    def grade(self, sample: Sample, ctx: GradeContext | None = None) -> Grade:
        values = self._folded
        if self.values_field:
            extra = sample.metadata.get(self.values_field)
            extra = [extra] if isinstance(extra, str) else list(extra or [])
            values = values + tuple(
                str(v) if self.case_sensitive else str(v).casefold() for v in extra
            )
        if not values:
            return Grade.failed(f"item has no values in {self.values_field!r}", "missing_target")
        text = sample.output if self.case_sensitive else sample.output.casefold()
        found = [v for v in values if v in text]
        if self.forbid:
            return self._grade(
                0.0 if found else 1.0,
                f"forbidden text present: {found[:3]}" if found else "none present",
            )
        if self.mode == "any":
            return self._grade(
                1.0 if found else 0.0,
                f"found {found[0]!r}" if found else f"none of {list(values)[:5]}",
            )
        missing = [v for v in values if v not in found]
        return self._grade(
            len(found) / len(values), "all present" if not missing else f"missing {missing[:5]}"
        )


class Regex(Grader):
    """The answer matches a regular expression (or, with `must_match=False`, does not)."""

    def __init__(
        self,
        name: str = "regex",
        *,
        pattern: str,
        flags: str = "",
        must_match: bool = True,
        threshold: float = 1.0,
        description: str = "",
    ):
        super().__init__(name, threshold=threshold, description=description)
        bits = 0
        for flag in flags:
            if flag not in "imsx":
                raise DeclarationError(
                    f"grader {name!r}: unknown regex flag {flag!r} (use i, m, s, x)"
                )
            bits |= {"i": re.I, "m": re.M, "s": re.S, "x": re.X}[flag]
        try:
            self._regex = re.compile(pattern, bits)
        except re.error as exc:
            raise DeclarationError(
                f"grader {name!r}: pattern {pattern!r} is not a valid regex: {exc}"
            ) from None
        self.pattern = pattern
        self.flags = flags
        self.must_match = must_match

    def config(self) -> dict[str, Any]:
        return {"pattern": self.pattern, "flags": self.flags, "must_match": self.must_match}

    def grade(self, sample: Sample, ctx: GradeContext | None = None) -> Grade:
        match = self._regex.search(sample.output)
        ok = bool(match) == self.must_match
        reason = f"matched {match.group(0)[:60]!r}" if match else f"no match for /{self.pattern}/"
        return self._grade(1.0 if ok else 0.0, reason)


class JsonSchemaValid(Grader):
    """The answer is JSON (a code fence or prose around one object is tolerated unless `strict`)
    that validates against a JSON schema. Parsing and validation are the LLM layer's."""

    def __init__(
        self,
        name: str = "json_schema",
        *,
        schema: dict[str, Any],
        strict: bool = False,
        threshold: float = 1.0,
        description: str = "",
    ):
        super().__init__(name, threshold=threshold, description=description)
        import jsonschema

        from mallard.llm.structured import OutputSpec

        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise DeclarationError(
                f"grader {name!r}: the schema is not a valid JSON schema: {exc.message}"
            ) from None
        self.schema = schema
        self.strict = strict
        self._spec = OutputSpec(schema)

    def config(self) -> dict[str, Any]:
        return {"schema": self.schema, "strict": self.strict}

    def grade(self, sample: Sample, ctx: GradeContext | None = None) -> Grade:
        text = sample.output
        if self.strict:
            import json

            try:
                json.loads(text)
            except json.JSONDecodeError as exc:
                return self._grade(0.0, f"not JSON ({exc.msg} at char {exc.pos})")
        _, problems = self._spec.parse(text)
        if problems:
            return self._grade(0.0, "invalid: " + "; ".join(problems[:3]))
        return self._grade(1.0, "valid JSON for the schema")


def first_number(text: str) -> float | None:
    match = _NUMBER.search(text)
    if match is None:
        return None
    return float(match.group(0).replace(",", ""))


_expected_number = lru_cache(maxsize=65536)(first_number)  # references repeat; answers do not


class NumericTolerance(Grader):
    """The first number in the answer is within `abs_tol` or `rel_tol` of the expected number
    (the reference's first number, or the item's expected score)."""

    def __init__(
        self,
        name: str = "numeric",
        *,
        abs_tol: float = 0.0,
        rel_tol: float = 0.0,
        target: str = "reference",
        threshold: float = 1.0,
        description: str = "",
    ):
        super().__init__(name, threshold=threshold, description=description)
        _check_target(name, target)
        if abs_tol < 0 or rel_tol < 0:
            raise DeclarationError(f"grader {name!r}: tolerances must be >= 0")
        self.abs_tol = abs_tol
        self.rel_tol = rel_tol
        self.target = target

    def config(self) -> dict[str, Any]:
        return {"abs_tol": self.abs_tol, "rel_tol": self.rel_tol, "target": self.target}

    def grade(self, sample: Sample, ctx: GradeContext | None = None) -> Grade:
        expected_raw = _target(self, sample, self.target)
        expected = (
            expected_raw
            if isinstance(expected_raw, int | float)
            else (_expected_number(str(expected_raw)) if expected_raw is not None else None)
        )
        if expected is None:
            return Grade.failed(f"item has no expected number ({self.target})", "missing_target")
        got = first_number(sample.output)
        if got is None:
            return self._grade(0.0, "no number in the answer")
        error = abs(got - expected)
        allowed = max(self.abs_tol, self.rel_tol * abs(expected))
        ok = error <= allowed + 1e-12
        return self._grade(
            1.0 if ok else 0.0,
            f"{got:g} vs {expected:g} (|error| {error:g}, allowed {allowed:g})",
            raw=got,
        )


_TOKEN = re.compile(r"[a-z0-9]+(?:[.'][a-z0-9]+)*")
STOPWORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "also",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "either",
        "else",
        "even",
        "ever",
        "every",
        "few",
        "for",
        "from",
        "further",
        "get",
        "gets",
        "got",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "him",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "let",
        "like",
        "may",
        "me",
        "might",
        "more",
        "most",
        "much",
        "must",
        "my",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "one",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "out",
        "over",
        "own",
        "please",
        "same",
        "shall",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "upon",
        "us",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "whether",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "yes",
        "yet",
        "you",
        "your",
        "yours",
    ]
)


def content_tokens(text: str) -> list[str]:
    """Lower-case words and numbers of a text, without stop words and one-letter tokens."""
    return [
        t for t in _TOKEN.findall(_fold(text)) if t not in STOPWORDS and (len(t) > 1 or t.isdigit())
    ]


@lru_cache(maxsize=4096)
def _context_tokens(text: str) -> frozenset[str]:
    """Retrieved articles repeat across items and runs: tokenise each one once."""
    return frozenset(content_tokens(text))


class Grounding(Grader):
    """Knowledge precision ("K-Precision", Adlakha et al. 2023): the share of the answer's content
    words and numbers that occur in the retrieved articles. No model: an answer written from
    general knowledge instead of the articles scores low. Unsupported numbers are listed first in
    the reason because they are the costly mistakes."""

    def __init__(self, name: str = "grounding", *, threshold: float = 0.7, description: str = ""):
        super().__init__(name, threshold=threshold, description=description)

    def grade(self, sample: Sample, ctx: GradeContext | None = None) -> Grade:
        if not sample.contexts:
            return Grade.failed(
                "no retrieved articles to check the answer against", "missing_input"
            )
        answer = content_tokens(sample.output)
        if not answer:
            return self._grade(0.0, "no content words in the answer", raw=0.0)
        if len(sample.contexts) == 1:
            known = _context_tokens(sample.contexts[0])
        else:
            known = frozenset().union(*(_context_tokens(c) for c in sample.contexts))
        unsupported = [t for t in answer if t not in known]
        precision = 1.0 - len(unsupported) / len(answer)
        numbers = sorted({t for t in unsupported if any(c.isdigit() for c in t)})
        words = list(dict.fromkeys(t for t in unsupported if t not in numbers))
        detail = (f"; numbers not in the articles: {numbers[:5]}" if numbers else "") + (
            f"; words not in the articles: {words[:8]}" if words else ""
        )
        return self._grade(
            precision,
            f"{len(answer) - len(unsupported)}/{len(answer)} content words found in the "
            f"retrieved articles{detail}",
            raw=round(precision, 6),
        )
