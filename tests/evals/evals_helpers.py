"""Helpers of the eval tests: a scripted judge server (the real OpenAI client against a local
HTTP server) and small constructors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from mallard.llm.endpoints import BreakerPolicy, Endpoint, RetryPolicy

HELPCENTRE = Path(__file__).resolve().parents[2] / "mallard" / "sample_world" / "helpcentre"


def seed_home(home: Path) -> None:
    target = home / "sample" / "helpcentre"
    target.mkdir(parents=True, exist_ok=True)
    for name, source in (
        ("articles.jsonl", "articles.jsonl"),
        ("eval_questions.jsonl", "questions.jsonl"),
        ("calibration.jsonl", "calibration.jsonl"),
    ):
        shutil.copyfile(HELPCENTRE / source, target / name)


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


class ArticleRetriever:
    """A deterministic stand-in for the embedding retriever: the question's own article first
    (from the eval questions), then the next article; same output shape as EmbeddingRetriever."""

    def __init__(self, helpcentre_dir: Any):
        from pathlib import Path

        folder = Path(helpcentre_dir)
        self.articles = {}
        for line in (folder / "articles.jsonl").read_text().splitlines():
            record = json.loads(line)
            self.articles[record["article_id"]] = record
        self.by_question = {}
        for line in (folder / "questions.jsonl").read_text().splitlines():
            record = json.loads(line)
            self.by_question[record["question"]] = record["article_id"]
        self.calls = 0

    def retrieve(self, query: str, k: int = 2, max_chars: int = 900) -> dict[str, Any]:
        self.calls += 1
        ids = list(self.articles)
        first = self.by_question.get(query, ids[0])
        chosen = [first, *[i for i in ids if i != first][: k - 1]]
        docs = [
            {
                "id": i,
                "title": self.articles[i]["title"],
                "text": self.articles[i]["body"][:max_chars],
                "score": 1.0,
            }
            for i in chosen
        ]
        context = "\n\n".join(f"[{d['id']}] {d['title']}\n{d['text']}" for d in docs)
        return {"docs": docs, "ids": chosen, "context": context}


def register_support_prompts(registry: Any, endpoint: str, extra: str = "") -> dict[str, int]:
    """The catalog's support-assistant prompt files, re-pointed at `endpoint`; v1 live, v2 staging.
    `extra` adds a grounded v3 whose system message ends with that text."""
    from dataclasses import replace
    from pathlib import Path

    from mallard.llm.prompts import PromptTemplate

    folder = Path(__file__).resolve().parents[2] / "catalog" / "prompts" / "support_assistant"
    versions = {}
    for path in sorted(folder.glob("*.toml")):
        template = PromptTemplate.from_file(path)
        template = replace(template, model={**template.model, "endpoint": endpoint})
        version, _ = registry.register(template)
        versions[path.stem] = version.version
        for label in template.labels:
            if label not in registry.labels(template.name):
                registry.promote(template.name, version.version, label=label, reason="test setup")
    if extra:
        grounded = replace(PromptTemplate.from_file(folder / "v1_grounded.toml"), labels=())
        (role, content), *rest = grounded.messages
        grounded = replace(
            grounded,
            messages=((role, content + extra), *rest),
            model={**grounded.model, "endpoint": endpoint},
        )
        versions["v3"] = registry.register(grounded)[0].version
    return versions
