"""Verdicts from token probabilities.

A judge asked for JSON such as `{"reasoning": "…", "supported": "yes"}` writes its verdict as
one or two tokens. With the reply's log-probabilities (`LLMClient.complete(..., logprobs=k)`,
the OpenAI `logprobs`/`top_logprobs`), the distribution at the token where the verdict's value
begins says how sure the model was: the score is P(yes), or the expected score of a 1–5 scale,
rather than the one token greedy decoding happened to pick.

The alternatives at that position are matched to the options by prefix ("y", "ye", "Yes" all
count for "yes"; a token that could begin two options counts for neither), their probabilities
summed per option and renormalised over the options. An option absent from the top-k list is
given the smallest listed probability (it is at most that likely), so a missing "no" never
reads as certainty.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TOP_LOGPROBS = 20
"""Alternatives asked for per token: enough that both verdicts are listed at the verdict."""


@dataclass(frozen=True)
class VerdictDistribution:
    probabilities: dict[str, float]
    """Option → probability (sums to 1)."""
    mass: float
    """Probability the model gave the options at that position before renormalising."""
    token: str
    """The token it chose there."""

    def p(self, option: str) -> float:
        return self.probabilities.get(option, 0.0)

    def expected(self, values: Mapping[str, float]) -> float:
        return sum(self.probabilities[o] * values[o] for o in self.probabilities)


def _value_start(text: str, field: str) -> int | None:
    # the last occurrence: a verdict comes after the reasoning
    matches = list(re.finditer('"' + re.escape(field) + r'"\s*:\s*"?', text))
    return matches[-1].end() if matches else None


def _clean(token: str) -> str:
    return token.strip().strip('"').strip().lower()


def option_distribution(
    logprobs: Sequence[Mapping[str, Any]] | None, field: str, options: Sequence[str]
) -> VerdictDistribution | None:
    """The distribution over `options` at the token where the JSON value of `field` begins, or
    None when the reply has no log-probabilities or they cannot be matched."""
    if not logprobs:
        return None
    tokens = [str(t.get("token", "")) for t in logprobs]
    joined = "".join(tokens)
    start = _value_start(joined, field)
    if start is None or start >= len(joined):
        return None
    offset = 0
    index = None
    for i, token in enumerate(tokens):
        if offset <= start < offset + len(token):
            index = i
            break
        offset += len(token)
    if index is None:
        return None
    prefix = joined[offset:start]  # e.g. the opening quote when a token is '"yes'
    lowered = [o.lower() for o in options]
    entry = logprobs[index]
    alternatives = list(entry.get("top_logprobs") or [])
    if not any(str(a.get("token", "")) == tokens[index] for a in alternatives):
        alternatives.append({"token": tokens[index], "logprob": entry.get("logprob")})
    sums = dict.fromkeys(options, 0.0)
    listed = []
    for alt in alternatives:
        text = str(alt.get("token", ""))
        logprob = alt.get("logprob")
        if logprob is None or not math.isfinite(float(logprob)):
            continue
        p = math.exp(float(logprob))
        listed.append(p)
        if prefix and not text.startswith(prefix):
            continue
        rest = _clean(text[len(prefix) :])
        if not rest:
            continue
        hits = [o for o, low in zip(options, lowered, strict=True) if low.startswith(rest)]
        if len(hits) == 1:
            sums[hits[0]] += p
    mass = sum(sums.values())
    if mass <= 0:
        return None
    # an unlisted option is at most as likely as the least likely listed token, and at most
    # what the listed tokens leave over
    floor = min(min(listed), max(0.0, 1.0 - sum(listed))) if listed else 0.0
    for option in options:
        if sums[option] == 0.0:
            sums[option] = floor
    total = sum(sums.values())
    return VerdictDistribution(
        {o: v / total for o, v in sums.items()}, min(1.0, mass), tokens[index]
    )
