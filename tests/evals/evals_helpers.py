"""Helpers of the eval tests: a scripted judge server (the real OpenAI client against a local
HTTP server) and small constructors."""

from __future__ import annotations

import json
import re
from typing import Any

from mallard.llm.endpoints import BreakerPolicy, Endpoint, RetryPolicy


def endpoint(name: str, server: Any, **overrides: Any) -> Endpoint:
    options: dict[str, Any] = {
        "provider": "openai-compatible",
        "model": f"{name}-model",
        "base_url": server.base_url,
        "timeout_s": 5,
        "retry": RetryPolicy(max_retries=1, base_delay_s=0.01, max_delay_s=0.02),
        "breaker": BreakerPolicy(failure_threshold=50, reset_timeout_s=0.2),
        "params": {"max_tokens": 200},
        "max_concurrency": 4,
    }
    options.update(overrides)
    return Endpoint(name=name, **options)


def text_of(body: dict[str, Any]) -> str:
    return "\n".join(str(m.get("content") or "") for m in body.get("messages", []))


def scripted_reply(body: dict[str, Any]) -> str:
    """A deterministic 'model': support answers and judge verdicts decided by simple rules, so
    the tests know what every grade must be.

    - support answers: grounded prompts (they contain "help-centre articles") answer with the
      first article's first sentence and cite it; ungrounded ones answer from "general knowledge".
    - faithfulness: supported when every sentence of the answer occurs in the articles.
    - reference agreement / rubric: agrees when the answer has the reference's first number (else
      shares a word of 6+ letters with it).
    - pairwise: prefers the answer that cites an article; A when both/neither (position bias).
    """
    text = text_of(body)
    fmt = body.get("response_format") or {}
    if fmt.get("type") not in ("json_object", "json_schema"):
        if "help-centre articles" in text:
            match = re.search(r"\[(HC-\d{3})\] [^\n]*\n([^.\n]+\.)", text)
            return (
                f"{match.group(2)} [{match.group(1)}]"
                if match
                else "I don't know; please contact support."
            )
        return "Streaming services usually let you do that from the settings menu of any device."
    if "grounded in the help-centre articles" in text:
        articles = text.split("Articles:\n", 1)[1].split("\n\nQuestion:", 1)[0]
        answer = text.split("Answer:\n", 1)[1].split("\n\nIs every fact", 1)[0]
        sentences = [s.strip() for s in re.sub(r"\[HC-\d{3}\]", "", answer).split(".") if s.strip()]
        ok = all(s in articles for s in sentences)
        return json.dumps(
            {"reasoning": "checked each sentence", "supported": "yes" if ok else "no"}
        )
    if "Answer A:" in text:
        first = text.split("Answer A:\n", 1)[1].split("\n\nAnswer B:", 1)[0]
        second = text.split("Answer B:\n", 1)[1].split("\n\nWhich answer", 1)[0]
        cites = [bool(re.search(r"\[HC-\d{3}\]", a)) for a in (first, second)]
        better = "A" if cites[0] and not cites[1] else "B" if cites[1] and not cites[0] else "A"
        return json.dumps({"reasoning": "prefers a cited answer", "better": better})
    reference = (
        text.split("Reference answer:\n", 1)[1].split("\n\n", 1)[0]
        if "Reference answer:\n" in text
        else ""
    )
    answer = text.rsplit("\n\n", 2)[-2] if "Answer to" in text else ""
    numbers = re.findall(r"\d+(?:\.\d+)?", reference)
    if numbers:
        agrees = numbers[0] in answer
    else:
        long_words = {w.lower() for w in re.findall(r"[A-Za-z]{6,}", reference)}
        agrees = any(
            w.lower() in long_words for w in re.findall(r"[A-Za-z]{6,}", answer.split(":", 1)[-1])
        )
    if '"score"' in json.dumps(fmt):
        return json.dumps({"reasoning": "compared with the rubric", "score": 5 if agrees else 1})
    return json.dumps(
        {
            "reasoning": "compared with the reference",
            "agrees": "yes" if agrees else "no",
            "relevant": "yes",
        }
    )
