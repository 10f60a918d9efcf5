"""Prompt chains: declared steps (retrieve, prompt, function; sequential or parallel), run with
the LLM client over batches, with per-step timeouts and retries, a dead-letter table and a run
summary."""

from mallard.llm.chains.spec import (
    Chain,
    Corpus,
    FunctionStep,
    Parallel,
    PromptStep,
    RetrieveStep,
    StepPolicy,
    package_file,
)

__all__ = [
    "Chain",
    "ChainRunner",
    "Corpus",
    "FunctionStep",
    "Parallel",
    "PromptStep",
    "RetrieveStep",
    "StepPolicy",
    "package_file",
]


def __getattr__(name: str):
    if name == "ChainRunner":
        from mallard.llm.chains.runner import ChainRunner

        return ChainRunner
    raise AttributeError(f"module 'mallard.llm.chains' has no attribute {name!r}")
