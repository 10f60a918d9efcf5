"""Deterministic text features of the composite judges: sentences, numbers with their units
normalised, negation and yes/no polarity, containment of one text's facts in another.

Pure Python and microseconds per text; no model."""

from __future__ import annotations

import re
from functools import lru_cache

from mallard.evals.graders.deterministic import content_tokens

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])|\n+")
_NUMBER = re.compile(r"(?<![\w.])[$€£]?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?:\s*([a-zA-Z%]+))?")
_WORD_NUMBERS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "fifteen": 15,
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "hundred": 100,
    "single": 1,
    "once": 1,
    "twice": 2,
}
_PHRASES = (
    (re.compile(r"\bhalf an hour\b"), "30 minutes"),
    (re.compile(r"\ban hour\b"), "1 hour"),
    (re.compile(r"\ba day\b"), "1 day"),
    (re.compile(r"\ba week\b"), "1 week"),
    (re.compile(r"\ba year\b"), "1 year"),
    (re.compile(r"\bfortnight\b"), "14 days"),
    (re.compile(r"\btwo years\b"), "24 months"),
    (re.compile(r"\bfull hd\b"), "1080p"),
)
UNITS = {
    "min": "min",
    "mins": "min",
    "minute": "min",
    "minutes": "min",
    "h": "h",
    "hr": "h",
    "hrs": "h",
    "hour": "h",
    "hours": "h",
    "day": "d",
    "days": "d",
    "week": "wk",
    "weeks": "wk",
    "month": "mo",
    "months": "mo",
    "year": "yr",
    "years": "yr",
    "gb": "gb",
    "mb": "mb",
    "mbps": "mbps",
    "%": "%",
    "percent": "%",
    "p": "p",
    "k": "k",
    "character": "char",
    "characters": "char",
    "digit": "digit",
    "digits": "digit",
}
NEGATIONS = frozenset(
    {
        "no",
        "not",
        "never",
        "cannot",
        "can't",
        "cant",
        "don't",
        "dont",
        "doesn't",
        "won't",
        "isn't",
        "aren't",
        "wasn't",
        "without",
        "nothing",
        "nobody",
        "none",
        "neither",
        "nor",
        "unable",
    }
)
_YES = ("yes", "yeah", "yep", "sure", "it does", "you do", "you can", "of course", "correct")
_NO = ("no", "nope", "not ", "never", "you can't", "you cannot", "it doesn't", "you don't")
_WORD = re.compile(r"[a-z']+")


@lru_cache(maxsize=8192)
def sentences(text: str) -> tuple[str, ...]:
    """The sentences of a text (list items and lines count as sentences); empty ones dropped."""
    parts = [p.strip(" -•*\t") for p in _SENTENCE.split(text or "")]
    return tuple(p for p in parts if p)


def _spelled(text: str) -> str:
    text = text.lower()
    for pattern, replacement in _PHRASES:
        text = pattern.sub(replacement, text)
    return text


@lru_cache(maxsize=8192)
def numbers(text: str) -> frozenset[str]:
    """Numbers of a text as canonical values ("12.99", "30"), with "value unit" forms too
    ("30 min", "1080 p") when a unit follows; spelled-out small numbers count."""
    text = _spelled(text)
    out: set[str] = set()
    for match in _NUMBER.finditer(text):
        whole, fraction, unit = match.groups()
        value = whole.replace(",", "")
        if fraction and fraction.strip("0"):
            value = f"{value}.{fraction.rstrip('0')}"
        value = value.lstrip("0") or "0"
        out.add(value)
        canonical = "usd" if match.group(0)[0] in "$€£" else UNITS.get((unit or "").lower())
        if canonical:
            out.add(f"{value} {canonical}")
    for word in _WORD.findall(text):
        if word in _WORD_NUMBERS:
            out.add(str(_WORD_NUMBERS[word]))
    return frozenset(out)


def values(found: frozenset[str]) -> frozenset[str]:
    """Only the bare values of `numbers(...)` (no unit forms)."""
    return frozenset(v for v in found if " " not in v)


def number_conflicts(claim: str, source: str) -> list[str]:
    """The claim's quantities that contradict the source: the source states the same unit (a
    price, minutes, days, …) with other values and never this one ("24 h" against "30 min" is
    not a conflict — different units; "$139.90" against "$129.90" is)."""
    mine = [v for v in numbers(claim) if " " in v]
    theirs = [v for v in numbers(source) if " " in v]
    by_unit: dict[str, set[str]] = {}
    for v in theirs:
        value, unit = v.split(" ", 1)
        by_unit.setdefault(unit, set()).add(value)
    out = []
    for v in mine:
        value, unit = v.split(" ", 1)
        if unit in by_unit and value not in by_unit[unit]:
            out.append(v)
    return sorted(out)


def negations(text: str) -> int:
    return sum(w in NEGATIONS or w.endswith("n't") for w in _WORD.findall(text.lower()))


def polarity(text: str) -> int:
    """+1 when a text opens with a yes, −1 with a no, 0 otherwise."""
    head = text.strip().lower()[:40]
    if any(head.startswith(y) for y in _YES):
        return 1
    if any(head.startswith(n) for n in _NO):
        return -1
    return 0


def number_support(claim: str, source: str) -> tuple[float, list[str]]:
    """Share of the claim's numbers (bare values) found in the source (1.0 when the claim has
    none), and the numbers that are not."""
    found = values(numbers(claim))
    if not found:
        return 1.0, []
    known = values(numbers(source))
    missing = sorted(found - known)
    return 1.0 - len(missing) / len(found), missing


def token_recall(needle: str, haystack: str) -> float:
    """Share of `needle`'s content words found in `haystack` (1.0 when it has none)."""
    wanted = set(content_tokens(needle))
    if not wanted:
        return 1.0
    return len(wanted & set(content_tokens(haystack))) / len(wanted)


def token_precision(claim: str, source: str) -> float:
    """Share of the claim's content words (with repeats) found in the source (K-precision)."""
    words = content_tokens(claim)
    if not words:
        return 1.0
    known = set(content_tokens(source))
    return sum(w in known for w in words) / len(words)
