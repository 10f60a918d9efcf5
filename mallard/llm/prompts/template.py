"""Prompt templates: chat messages with `{{ variable }}` placeholders, declared variables and the
model configuration they were written for. Rendering is strict: a missing or unexpected variable
is an error, never an empty string."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mallard.llm.errors import PromptError, PromptRenderError

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class PromptTemplate:
    """What a prompt file declares. The content hash covers messages, variables and model config."""

    name: str
    messages: tuple[tuple[str, str], ...]
    variables: tuple[str, ...]
    model: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    labels: tuple[str, ...] = ()
    source: str = ""

    def __post_init__(self) -> None:
        where = f"prompt {self.name!r}" + (f" ({self.source})" if self.source else "")
        if not _NAME.match(self.name or ""):
            raise PromptError(f"{where}: name must be lower-case letters, digits and '_'")
        if not self.messages:
            raise PromptError(f"{where}: has no messages")
        for role, content in self.messages:
            if role not in ROLES:
                raise PromptError(f"{where}: message role {role!r} is not one of {ROLES}")
            if not isinstance(content, str):
                raise PromptError(f"{where}: message content must be text")
        if len(set(self.variables)) != len(self.variables):
            raise PromptError(f"{where}: a variable is declared twice")
        undeclared = sorted(self.placeholders() - set(self.variables))
        if undeclared:
            raise PromptError(
                f"{where}: template uses undeclared variable(s) {', '.join(undeclared)}; "
                "add them to `variables`"
            )

    def placeholders(self) -> set[str]:
        return {m for _, content in self.messages for m in PLACEHOLDER.findall(content)}

    @property
    def endpoint(self) -> str | None:
        return self.model.get("endpoint")

    @property
    def params(self) -> dict[str, Any]:
        return {k: v for k, v in self.model.items() if k != "endpoint"}

    def content(self) -> dict[str, Any]:
        """The versioned content: what the hash covers."""
        return {
            "messages": [list(m) for m in self.messages],
            "variables": list(self.variables),
            "model": dict(sorted(self.model.items())),
        }

    @property
    def content_hash(self) -> str:
        blob = json.dumps(self.content(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    @classmethod
    def from_content(cls, name: str, content: Mapping[str, Any], **extra: Any) -> PromptTemplate:
        return cls(
            name=name,
            messages=tuple((r, c) for r, c in content["messages"]),
            variables=tuple(content["variables"]),
            model=dict(content.get("model") or {}),
            **extra,
        )

    @classmethod
    def from_file(cls, path: Path | str) -> PromptTemplate:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise PromptError(f"{path}: not valid TOML: {exc}") from None
        unknown = set(data) - {"name", "description", "variables", "labels", "model", "messages"}
        if unknown:
            raise PromptError(f"{path}: unknown key(s) {sorted(unknown)}")
        try:
            messages = tuple((m["role"], m["content"]) for m in data["messages"])
            return cls(
                name=data["name"],
                messages=messages,
                variables=tuple(data.get("variables", ())),
                model=dict(data.get("model") or {}),
                description=data.get("description", "").strip(),
                labels=tuple(data.get("labels", ())),
                source=str(path),
            )
        except KeyError as exc:
            raise PromptError(f"{path}: missing key {exc}") from None


def format_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, indent=1, default=str)


def render_messages(
    template: PromptTemplate, version: int, variables: Mapping[str, Any]
) -> list[dict[str, str]]:
    declared = set(template.variables)
    missing = sorted(declared - set(variables))
    unexpected = sorted(set(variables) - declared)
    if missing or unexpected:
        raise PromptRenderError(template.name, version, missing, unexpected)
    values = {k: format_value(v) for k, v in variables.items()}
    return [
        {"role": role, "content": PLACEHOLDER.sub(lambda m: values[m.group(1)], content)}
        for role, content in template.messages
    ]
