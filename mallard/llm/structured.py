"""Structured output: a JSON schema (or a pydantic model) → a validated object."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


class OutputSpec:
    """What the caller asked for: a JSON schema dict or a pydantic model class."""

    def __init__(self, spec: Any):
        self.model: Any = None
        if isinstance(spec, dict):
            self.schema = spec
        elif hasattr(spec, "model_json_schema") and hasattr(spec, "model_validate"):
            self.model = spec
            self.schema = spec.model_json_schema()
        else:
            raise TypeError(
                f"schema must be a JSON schema dict or a pydantic model class, got {spec!r}"
            )
        self.key = json.dumps(self.schema, sort_keys=True)

    def parse(self, text: str) -> tuple[Any, list[str]]:
        """(value, []) when the text is valid, else (None, problems)."""
        value, problem = extract_json(text)
        if problem:
            return None, [problem]
        if self.model is not None:
            from pydantic import ValidationError

            try:
                return self.model.model_validate(value), []
            except ValidationError as exc:
                return None, [
                    f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()
                ]
        problems = [
            f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
            for error in _validator(self.key).iter_errors(value)
        ]
        return (value, []) if not problems else (None, problems)


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    import jsonschema

    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def extract_json(text: str) -> tuple[Any, str]:
    """Parse JSON from a model reply, tolerating a code fence or prose around one object."""
    candidates = [text]
    fenced = _FENCE.match(text)
    if fenced:
        candidates.append(fenced.group(1))
    for opener, closer in (("{", "}"), ("[", "]")):
        start, end = text.find(opener), text.rfind(closer)
        if 0 <= start < end:
            candidates.append(text[start : end + 1])
    error = ""
    for candidate in candidates:
        try:
            # strict=False: llama.cpp's JSON grammar lets raw newlines into strings.
            return json.loads(candidate, strict=False), ""
        except json.JSONDecodeError as exc:
            error = error or f"not JSON ({exc.msg} at char {exc.pos})"
    return None, error


def repair_messages(
    messages: list[dict[str, Any]], reply: str, problems: list[str]
) -> list[dict[str, Any]]:
    return [
        *messages,
        {"role": "assistant", "content": reply},
        {
            "role": "user",
            "content": "Your reply was not valid: "
            + "; ".join(problems[:5])
            + ". Reply again with only the corrected JSON, which must validate against the schema.",
        },
    ]


REPAIR_OVERHEAD_TOKENS = 80
