"""Chain declarations: small typed steps that reference prompts by name and label.

    Chain(
        name="support_assistant",
        inputs=("question",),
        steps=(
            RetrieveStep("retrieve", corpus="helpcentre", query="{{ inputs.question }}", k=2),
            PromptStep("answer", prompt="support_assistant", label="live",
                       variables={"question": "{{ inputs.question }}",
                                  "context": "{{ steps.retrieve.output.context }}"},
                       retrieval="retrieve"),
        ),
    )

Values are expressions: `{{ inputs.x }}` and `{{ steps.<step>.output[.path] }}`; a value that is
exactly one reference keeps its type (a list stays a list), otherwise references are formatted
into the text. A step may only reference chain inputs and steps that finish before it starts.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from mallard.llm.errors import ChainError

REFERENCE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)*)\s*\}\}")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class StepPolicy:
    """Per-step timeout (whole step, all attempts of the client included) and step-level retries
    with full-jitter exponential backoff (on top of the client's transport retries)."""

    timeout_s: float | None = None
    max_attempts: int = 1
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ChainError(f"StepPolicy.max_attempts must be >= 1, got {self.max_attempts}")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ChainError(f"StepPolicy.timeout_s must be > 0, got {self.timeout_s}")


@dataclass(frozen=True)
class Corpus:
    """Documents to retrieve from: a JSONL file with an id, a title and a text field per line."""

    name: str
    path: Path
    id_field: str = "id"
    title_field: str | None = "title"
    text_field: str = "text"


def package_file(package: str, relative: str) -> Path:
    """A data file inside an installed package, located without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ChainError(f"package {package!r} not found")
    return Path(next(iter(spec.submodule_search_locations))) / relative


@dataclass(frozen=True)
class RetrieveStep:
    """Embedding search: output = {"docs": [{id, title, text, score}], "ids": [...], "context": "..."}."""

    name: str
    corpus: str
    query: str = "{{ inputs.question }}"
    k: int = 3
    max_chars: int = 900
    policy: StepPolicy = field(default_factory=StepPolicy)

    def expressions(self) -> list[str]:
        return [self.query]


@dataclass(frozen=True)
class PromptStep:
    """Render a registered prompt (by name and label) with `variables` and call its endpoint.
    With `output_schema` the output is the validated JSON value, else the reply text."""

    name: str
    prompt: str
    variables: Mapping[str, Any] = field(default_factory=dict)
    label: str = "live"
    endpoint: str | None = None
    output_schema: Mapping[str, Any] | None = None
    retrieval: str | None = None
    trace_input: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    policy: StepPolicy = field(default_factory=StepPolicy)

    def expressions(self) -> list[str]:
        values = [v for v in self.variables.values() if isinstance(v, str)]
        return values + ([self.trace_input] if self.trace_input else [])


@dataclass(frozen=True)
class FunctionStep:
    """Plain Python (sync or async) over resolved `arguments`: for glue between LLM steps."""

    name: str
    fn: Callable[..., Any | Awaitable[Any]]
    arguments: Mapping[str, Any] = field(default_factory=dict)
    policy: StepPolicy = field(default_factory=StepPolicy)

    def expressions(self) -> list[str]:
        return [v for v in self.arguments.values() if isinstance(v, str)]


@dataclass(frozen=True)
class Parallel:
    """Steps that run concurrently (asyncio); none may reference another in the same group."""

    name: str
    steps: tuple[Step, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))


Step = Union[RetrieveStep, PromptStep, FunctionStep]  # noqa: UP007 - used at runtime in isinstance checks
StepOrGroup = Union[RetrieveStep, PromptStep, FunctionStep, Parallel]  # noqa: UP007


def references(expression: str) -> list[tuple[str, ...]]:
    return [tuple(ref.split(".")) for ref in REFERENCE.findall(expression)]


@dataclass(frozen=True)
class Chain:
    name: str
    steps: tuple[StepOrGroup, ...]
    inputs: tuple[str, ...] = ("question",)
    output: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        where = f"chain {self.name!r}"
        if not _NAME.match(self.name or ""):
            raise ChainError(f"{where}: name must be lower-case letters, digits and '_'")
        if not self.steps:
            raise ChainError(f"{where}: has no steps")
        done: set[str] = set()
        for entry in self.steps:
            group = entry.steps if isinstance(entry, Parallel) else (entry,)
            if isinstance(entry, Parallel):
                if not group:
                    raise ChainError(f"{where}: parallel group {entry.name!r} is empty")
                if entry.name in done:
                    raise ChainError(f"{where}: step name {entry.name!r} is used twice")
            names = [s.name for s in group]
            for step in group:
                if isinstance(step, Parallel):
                    raise ChainError(f"{where}: parallel groups cannot be nested ({step.name!r})")
                if not _NAME.match(step.name or ""):
                    raise ChainError(
                        f"{where}: step name {step.name!r} must be lower-case letters, digits and '_'"
                    )
                if step.name in done or names.count(step.name) > 1:
                    raise ChainError(f"{where}: step name {step.name!r} is used twice")
                for expression in step.expressions():
                    for ref in references(expression):
                        self._check_reference(where, step.name, ref, done)
                if isinstance(step, PromptStep) and step.retrieval and step.retrieval not in done:
                    raise ChainError(
                        f"{where}: step {step.name!r} names retrieval step {step.retrieval!r}, "
                        "which does not run before it"
                    )
            done.update(names)
            if isinstance(entry, Parallel):
                done.add(entry.name)
        if self.output:
            for ref in references(self.output):
                self._check_reference(where, "output", ref, done)

    def _check_reference(self, where: str, step: str, ref: tuple[str, ...], done: set[str]) -> None:
        text = ".".join(ref)
        if ref[0] == "inputs":
            if len(ref) < 2 or ref[1] not in self.inputs:
                raise ChainError(
                    f"{where}: step {step!r} references {text!r}, but the chain's inputs are {list(self.inputs)}"
                )
        elif ref[0] == "steps":
            if len(ref) < 3 or ref[2] != "output":
                raise ChainError(
                    f"{where}: step {step!r} reference {text!r} must look like steps.<step>.output[.path]"
                )
            if ref[1] not in done:
                raise ChainError(
                    f"{where}: step {step!r} references {text!r}, but step {ref[1]!r} does not run before it"
                )
        else:
            raise ChainError(
                f"{where}: step {step!r} reference {text!r} must start with inputs. or steps."
            )

    def flat_steps(self) -> list[Step]:
        return [
            s
            for entry in self.steps
            for s in (entry.steps if isinstance(entry, Parallel) else (entry,))
        ]

    @property
    def output_expression(self) -> str:
        return self.output or f"{{{{ steps.{self.flat_steps()[-1].name}.output }}}}"


def resolve(value: Any, scope: Mapping[str, Any], *, step: str) -> Any:
    """Substitute references in a value (strings; lists and dicts recursively)."""
    from mallard.llm.prompts.template import format_value

    if isinstance(value, Mapping):
        return {k: resolve(v, scope, step=step) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [resolve(v, scope, step=step) for v in value]
    if not isinstance(value, str):
        return value
    whole = REFERENCE.fullmatch(value.strip())
    if whole:
        return lookup(whole.group(1), scope, step=step)
    return REFERENCE.sub(lambda m: format_value(lookup(m.group(1), scope, step=step)), value)


def lookup(path: str, scope: Mapping[str, Any], *, step: str) -> Any:
    current: Any = scope
    walked = []
    for part in path.split("."):
        walked.append(part)
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif (
            isinstance(current, list | tuple)
            and part.lstrip("-").isdigit()
            and -len(current) <= int(part) < len(current)
        ):
            current = current[int(part)]
        elif hasattr(current, part) and not part.startswith("_"):
            current = getattr(current, part)
        else:
            raise ChainError(
                f"step {step!r}: reference {path!r} has nothing at {'.'.join(walked)!r}", step=step
            )
    return current
