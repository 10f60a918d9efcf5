"""Chains: declarations, references, sequential and parallel steps, JSON outputs, per-step timeout
and retry, dead letters (the batch continues, no item lost) and the run summary."""

from __future__ import annotations

import asyncio
import json

import pytest
from llm_helpers import remote

from mallard.llm.chains import (
    Chain,
    Corpus,
    FunctionStep,
    Parallel,
    PromptStep,
    RetrieveStep,
    StepPolicy,
)
from mallard.llm.chains.dead_letters import dead_letter_schema, read_dead_letters
from mallard.llm.chains.runner import ChainRunner
from mallard.llm.endpoints import Price, RetryPolicy
from mallard.llm.errors import ChainError
from mallard.llm.prompts import PromptRegistry, PromptTemplate
from mallard.llm.testing import FakeOpenAIServer
from mallard.llm.tracing import read_traces


@pytest.fixture
def registry(settings) -> PromptRegistry:
    registry = PromptRegistry.default(settings)
    for name, text, variables in [
        ("summarise", "Summarise: {{ text }}", ("text",)),
        ("classify", "Classify: {{ text }}", ("text",)),
        ("combine", "Combine {{ a }} and {{ b }}", ("a", "b")),
        ("answer", "Q: {{ question }}\nArticles:\n{{ context }}", ("question", "context")),
    ]:
        version, _ = registry.register(
            PromptTemplate(
                name=name,
                messages=(("user", text),),
                variables=variables,
                model={"endpoint": "api", "max_tokens": 30},
            )
        )
        registry.promote(name, version.version, reason="test")
    return registry


class KeywordRetriever:
    """A deterministic stand-in for the embedding retriever."""

    def retrieve(self, query: str, k: int, max_chars: int):
        docs = [
            {"id": f"D{i}", "title": f"doc {i}", "text": f"about {query}", "score": 1.0 - i / 10}
            for i in range(k)
        ]
        return {
            "docs": docs,
            "ids": [d["id"] for d in docs],
            "context": "\n".join(f"[{d['id']}] {d['text']}" for d in docs),
        }


def runner_for(make_client, registry, endpoints, **kwargs):
    client = make_client(endpoints, exact_cache=False, **kwargs)
    return ChainRunner(client, registry, retrievers={"docs": KeywordRetriever()}, seed=1), client


def test_declaration_checks_references():
    with pytest.raises(ChainError, match="step 'b' does not run before it"):
        Chain(
            name="c",
            steps=(
                PromptStep("a", prompt="p", variables={"x": "{{ steps.b.output }}"}),
                PromptStep("b", prompt="p"),
            ),
        )
    with pytest.raises(ChainError, match=r"chain's inputs are \['question'\]"):
        Chain(name="c", steps=(PromptStep("a", prompt="p", variables={"x": "{{ inputs.query }}"}),))
    with pytest.raises(ChainError, match="used twice"):
        Chain(name="c", steps=(PromptStep("a", prompt="p"), PromptStep("a", prompt="p")))
    with pytest.raises(
        ChainError, match="does not run before it"
    ):  # no references inside one parallel group
        Chain(
            name="c",
            steps=(
                Parallel(
                    "g",
                    (
                        PromptStep("a", prompt="p"),
                        PromptStep("b", prompt="p", variables={"x": "{{ steps.a.output }}"}),
                    ),
                ),
            ),
        )
    with pytest.raises(ChainError, match="must look like steps"):
        Chain(
            name="c",
            steps=(
                PromptStep("a", prompt="p"),
                PromptStep("b", prompt="p", variables={"x": "{{ steps.a }}"}),
            ),
        )


def test_sequential_chain_with_output_references(server, make_client, registry, settings):
    chain = Chain(
        name="qa",
        steps=(
            RetrieveStep("retrieve", corpus="docs", k=2),
            PromptStep(
                "answer",
                prompt="answer",
                retrieval="retrieve",
                trace_input="{{ inputs.question }}",
                variables={
                    "question": "{{ inputs.question }}",
                    "context": "{{ steps.retrieve.output.context }}",
                },
            ),
            FunctionStep(
                "shout",
                fn=lambda text, ids: f"{text.upper()} {ids}",
                arguments={
                    "text": "{{ steps.answer.output }}",
                    "ids": "{{ steps.retrieve.output.ids }}",
                },
            ),
        ),
    )
    runner, client = runner_for(make_client, registry, [remote("api", server)])
    result = runner.run(
        chain, {"question": "how to cancel", "id": "Q-1"}, run_id="r1", user_id="u1"
    )
    assert result.status == "ok"
    sent = server.requests[0].body["messages"][0]["content"]
    assert sent == "Q: how to cancel\nArticles:\n[D0] about how to cancel\n[D1] about how to cancel"
    assert (
        result.output == "ECHO: " + sent.upper() + " ['D0', 'D1']"
    )  # the list kept its type until formatted
    client.flush()
    (trace,) = read_traces(settings.lake_dir / "traces")
    assert (
        trace["prompt_name"],
        trace["prompt_version"],
        trace["run_id"],
        trace["session_id"],
    ) == ("answer", 1, "r1", "Q-1")
    assert trace["retrieved_ids"] == ["D0", "D1"] and trace["input"] == "how to cancel"
    assert json.loads(trace["attributes"])["step"] == "answer"


def test_parallel_steps_run_concurrently(server, make_client, registry):
    server.delay_s = 0.2
    chain = Chain(
        name="fan",
        inputs=("text",),
        steps=(
            Parallel(
                "both",
                (
                    PromptStep(
                        "summary", prompt="summarise", variables={"text": "{{ inputs.text }}"}
                    ),
                    PromptStep("label", prompt="classify", variables={"text": "{{ inputs.text }}"}),
                ),
            ),
            PromptStep(
                "merge",
                prompt="combine",
                variables={"a": "{{ steps.summary.output }}", "b": "{{ steps.both.output.label }}"},
            ),
        ),
    )
    runner, _ = runner_for(make_client, registry, [remote("api", server, timeout_s=2)])
    result = runner.run(chain, {"text": "hello"})
    assert (
        result.status == "ok"
        and result.output == "echo: Combine echo: Summarise: hello and echo: Classify: hello"
    )
    assert server.max_in_flight == 2  # the two first steps were at the server at the same time
    first, second = result.steps["summary"], result.steps["label"]
    assert min(first.latency_ms, second.latency_ms) >= 200


def test_json_output_step_with_schema(make_client, registry):
    schema = {
        "type": "object",
        "properties": {"category": {"type": "string", "enum": ["billing", "devices"]}},
        "required": ["category"],
    }
    chain = Chain(
        name="route",
        inputs=("text",),
        steps=(
            PromptStep(
                "label",
                prompt="classify",
                variables={"text": "{{ inputs.text }}"},
                output_schema=schema,
            ),
            FunctionStep(
                "route",
                fn=lambda category: f"queue:{category}",
                arguments={"category": "{{ steps.label.output.category }}"},
            ),
        ),
    )
    with FakeOpenAIServer(reply=lambda body: '```json\n{"category": "billing"}\n```') as srv:
        runner, _ = runner_for(make_client, registry, [remote("api", srv)])
        assert runner.run(chain, {"text": "refund please"}).output == "queue:billing"


def test_batch_dead_letters_and_continues(make_client, registry, settings):
    flaky = {"n": 0}

    def reply(body):
        text = " ".join(m["content"] for m in body["messages"])
        if "poison" in text:
            return "not json at all"
        return json.dumps({"category": "billing"})

    schema = {
        "type": "object",
        "properties": {"category": {"type": "string"}},
        "required": ["category"],
    }

    def count(category):
        flaky["n"] += 1
        return category

    chain = Chain(
        name="route",
        inputs=("text",),
        steps=(
            PromptStep(
                "label",
                prompt="classify",
                variables={"text": "{{ inputs.text }}"},
                output_schema=schema,
                policy=StepPolicy(max_attempts=2, backoff_s=0.01),
            ),
            FunctionStep(
                "count", fn=count, arguments={"category": "{{ steps.label.output.category }}"}
            ),
        ),
    )
    items = [{"text": f"item {i}" if i % 4 else f"poison {i}", "id": f"I{i}"} for i in range(12)]
    with FakeOpenAIServer(reply=reply) as srv:
        runner, _ = runner_for(make_client, registry, [remote("api", srv)])
        batch = runner.run_batch(chain, items, concurrency=3, run_id="batch-1")
    assert len(batch.items) == 12 and [i.index for i in batch.items] == list(
        range(12)
    )  # no item lost
    assert {i.item_id for i in batch.failed} == {"I0", "I4", "I8"}
    assert flaky["n"] == 9
    assert batch.summary.ok == 9 and batch.summary.failed == 3 and batch.summary.dead_letters == 3
    rows = read_dead_letters(settings.lake_dir / "llm_dead_letters")
    assert sorted(r["item_id"] for r in rows) == ["I0", "I4", "I8"]
    row = rows[0]
    assert (
        row["failed_step"] == "label"
        and row["error_type"] == "StructuredOutputError"
        and row["attempts"] == 2
    )
    assert json.loads(row["inputs"])["text"].startswith("poison") and row["run_id"] == "batch-1"
    from deltalake import DeltaTable

    assert DeltaTable(str(settings.lake_dir / "llm_dead_letters")).schema().to_arrow() is not None
    assert dead_letter_schema().names[0] == "dead_letter_id"


def test_failover_and_dead_endpoint_inside_a_batch(server, backup_server, make_client, registry):
    chain = Chain(
        name="one",
        inputs=("text",),
        steps=(PromptStep("s", prompt="summarise", variables={"text": "{{ inputs.text }}"}),),
    )
    server.push_faults(*["500", "ok", "429", "timeout", "malformed", "ok"] * 4)
    runner, _ = runner_for(
        make_client,
        registry,
        [remote("api", server, fallbacks=["backup"]), remote("backup", backup_server)],
    )
    batch = runner.run_batch(chain, [{"text": f"t{i}"} for i in range(16)], concurrency=4)
    assert batch.summary.ok == 16 and sorted(i.output for i in batch.items) == sorted(
        f"echo: Summarise: t{i}" for i in range(16)
    )


def test_step_timeout_and_retry(make_client, registry):
    calls = {"n": 0}

    async def slow_then_fast(text):
        calls["n"] += 1
        if calls["n"] == 1:
            await asyncio.sleep(1.0)
        return text

    chain = Chain(
        name="t",
        inputs=("text",),
        steps=(
            FunctionStep(
                "f",
                fn=slow_then_fast,
                arguments={"text": "{{ inputs.text }}"},
                policy=StepPolicy(timeout_s=0.1, max_attempts=2, backoff_s=0.01),
            ),
        ),
    )
    runner = ChainRunner(make_client([remote("api", "http://127.0.0.1:9/v1")]), registry, seed=1)
    result = runner.run(chain, {"text": "x"})
    assert result.status == "ok" and result.steps["f"].attempts == 2 and calls["n"] == 2
    only_once = Chain(
        name="t2",
        inputs=("text",),
        steps=(
            FunctionStep(
                "f",
                fn=lambda text: asyncio.sleep(1),
                arguments={"text": "{{ inputs.text }}"},
                policy=StepPolicy(timeout_s=0.05),
            ),
        ),
    )
    failed = runner.run(only_once, {"text": "x"})
    assert failed.status == "failed" and "timed out after 0.05 s" in failed.error


def test_render_errors_are_not_retried(server, make_client, registry):
    chain = Chain(
        name="bad",
        inputs=("text",),
        steps=(
            PromptStep(
                "s",
                prompt="combine",
                variables={"a": "{{ inputs.text }}"},
                policy=StepPolicy(max_attempts=3),
            ),
        ),
    )
    runner, _ = runner_for(make_client, registry, [remote("api", server)])
    result = runner.run(chain, {"text": "x"})
    assert result.status == "failed" and "missing variable(s) b" in result.error
    assert result.steps["s"].attempts == 1 and server.completion_calls == 0


def test_missing_input_is_dead_lettered(server, make_client, registry, settings):
    chain = Chain(
        name="one",
        inputs=("text",),
        steps=(PromptStep("s", prompt="summarise", variables={"text": "{{ inputs.text }}"}),),
    )
    runner, _ = runner_for(make_client, registry, [remote("api", server)])
    batch = runner.run_batch(chain, [{"text": "a"}, {"other": "b"}])
    assert [i.status for i in batch.items] == ["ok", "failed"]
    assert read_dead_letters(settings.lake_dir / "llm_dead_letters")[0]["failed_step"] == "inputs"


def test_label_override_runs_another_version(server, make_client, registry):
    version, _ = registry.register(
        PromptTemplate(
            name="summarise",
            messages=(("user", "TL;DR {{ text }}"),),
            variables=("text",),
            model={"endpoint": "api"},
        )
    )
    registry.promote("summarise", version.version, label="staging", reason="candidate")
    chain = Chain(
        name="one",
        inputs=("text",),
        steps=(PromptStep("s", prompt="summarise", variables={"text": "{{ inputs.text }}"}),),
    )
    runner, _ = runner_for(make_client, registry, [remote("api", server)])
    assert runner.run(chain, {"text": "x"}).output == "echo: Summarise: x"
    staged = runner.run(chain, {"text": "x"}, labels={"s": "staging"})
    assert staged.output == "echo: TL;DR x" and staged.steps["s"].prompt_version == 2


def test_summary_and_cost_estimate(server, make_client, registry):
    chain = Chain(
        name="qa",
        steps=(
            RetrieveStep("retrieve", corpus="docs", k=2, max_chars=100),
            PromptStep(
                "answer",
                prompt="answer",
                variables={
                    "question": "{{ inputs.question }}",
                    "context": "{{ steps.retrieve.output.context }}",
                },
            ),
        ),
    )
    priced = remote(
        "api",
        server,
        price=Price(input_per_million=1000, output_per_million=2000),
        retry=RetryPolicy(max_retries=0),
    )
    runner, _ = runner_for(make_client, registry, [priced])
    items = [{"question": f"question {i}"} for i in range(5)]
    estimate = runner.estimate_cost(chain, items)
    assert estimate.items == 5 and set(estimate.steps) == {"answer"}
    assert estimate.steps["answer"].max_completion_tokens == 5 * 30
    batch = runner.run_batch(chain, items)
    summary = batch.summary
    assert summary.ok == 5 and [s.step for s in summary.steps] == ["retrieve", "answer"]
    answer = summary.steps[1]
    assert answer.cost_usd > 0 and answer.cost_usd == pytest.approx(
        sum(i.cost_usd for i in batch.items)
    )
    assert summary.cost_usd == pytest.approx(answer.cost_usd)
    assert summary.cost_usd <= estimate.worst_case_usd
    assert answer.latency_p50_ms > 0 and answer.prompt_tokens > 0
    assert "answer" in str(summary) and summary.to_dict()["steps"][1]["step"] == "answer"


def test_retriever_mechanics_on_the_helpcentre(hashed_helpcentre):
    from mallard.llm.chains.retrieval import EmbeddingRetriever

    found = hashed_helpcentre.retrieve("error PS-2001 too many streams", k=2, max_chars=300)
    assert found["ids"][0] == "HC-023" and found["context"].startswith(
        "[HC-023] Error PS-2001: too many streams\n"
    )
    first_block = found["context"].split("\n\n[")[0]
    assert (
        len(first_block) < 300 + 60
    )  # a long article gives its best paragraphs, not its first 300 characters
    assert [d["score"] for d in found["docs"]] == sorted(
        (d["score"] for d in found["docs"]), reverse=True
    )
    assert list(
        hashed_helpcentre.cache_dir.glob("helpcentre-*.npy")
    )  # vectors cached for the next process
    again = EmbeddingRetriever(
        hashed_helpcentre.corpus,
        embedder=hashed_helpcentre.embedder,
        cache_dir=hashed_helpcentre.cache_dir,
    )
    assert again.retrieve("error PS-2001 too many streams", k=1)["ids"] == ["HC-023"]


@pytest.mark.slow
def test_minilm_retrieval_quality(helpcentre_retriever):
    questions = [
        json.loads(line)
        for line in helpcentre_retriever.corpus.path.with_name("questions.jsonl")
        .read_text()
        .splitlines()
    ]
    hits = sum(
        q["article_id"] in helpcentre_retriever.retrieve(q["question"], k=3)["ids"]
        for q in questions
    )
    assert hits / len(questions) >= 0.85, hits / len(questions)  # measured 0.90 recall@3


def test_corpus_errors_are_clear(tmp_path):
    from mallard.llm.chains.retrieval import EmbeddingRetriever

    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "1"}\n')
    with pytest.raises(ChainError, match="line 1 .* has no field 'text'"):
        EmbeddingRetriever(Corpus(name="c", path=path), embedder=object()).retrieve("q")  # type: ignore[arg-type]
