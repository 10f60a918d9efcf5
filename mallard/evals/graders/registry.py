"""User-defined graders, registered by name (from `catalog/graders.py`), and name resolution.

    @grader("cites_an_article", threshold=1.0)
    def cites_an_article(sample):
        return bool(re.search(r"\\[HC-\\d{3}\\]", sample.output)), "cites an article id"

A function may return a Grade, a number (the score), a bool (pass = 1.0), or (score-or-bool, reason).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Iterable
from typing import Any

from mallard.evals.graders.base import Grade, GradeContext, Grader, Sample
from mallard.specs import DeclarationError

_REGISTRY: dict[str, Grader] = {}


class FunctionGrader(Grader):
    """A plain function as a grader. Its source code is part of the fingerprint, so editing the
    function invalidates cached grades."""

    kind = "custom"

    def __init__(
        self,
        name: str,
        fn: Callable[..., Any],
        *,
        threshold: float = 0.5,
        description: str = "",
        config: dict[str, Any] | None = None,
    ):
        super().__init__(
            name, threshold=threshold, description=description or (fn.__doc__ or "").strip()
        )
        self.fn = fn
        self._config = dict(config or {})
        try:
            source = inspect.getsource(fn)
        except (OSError, TypeError):
            source = getattr(fn, "__qualname__", repr(fn))
        self._source_hash = hashlib.sha256(source.encode()).hexdigest()[:16]
        self._takes_ctx = len(inspect.signature(fn).parameters) >= 2

    def config(self) -> dict[str, Any]:
        return {
            **self._config,
            "function": getattr(self.fn, "__qualname__", ""),
            "source": self._source_hash,
        }

    def grade(self, sample: Sample, ctx: GradeContext | None = None) -> Grade:
        try:
            value = self.fn(sample, ctx) if self._takes_ctx else self.fn(sample)
        except Exception as exc:  # noqa: BLE001 - a broken user grader fails its items, not the run
            return Grade.failed(
                f"grader raised {type(exc).__name__}: {exc}", f"{type(exc).__name__}: {exc}"
            )
        return self.coerce(value)

    def coerce(self, value: Any) -> Grade:
        reason = ""
        if isinstance(value, Grade):
            return value
        if isinstance(value, tuple) and len(value) == 2:
            value, reason = value
        if isinstance(value, bool):
            return self._grade(1.0 if value else 0.0, reason or ("pass" if value else "fail"))
        if isinstance(value, int | float):
            return self._grade(
                float(value), reason or f"score {float(value):.3f}", raw=float(value)
            )
        raise DeclarationError(
            f"grader {self.name!r} returned {type(value).__name__}; return a Grade, a number, "
            "a bool, or (score, reason)"
        )


def register(item: Grader, *, replace: bool = False) -> Grader:
    """Make a grader findable by name (declarations refer to graders by name)."""
    existing = _REGISTRY.get(item.name)
    if existing is not None and existing is not item and not replace:
        raise DeclarationError(f"a grader named {item.name!r} is already registered ({existing!r})")
    _REGISTRY[item.name] = item
    return item


def grader(
    name: str, *, threshold: float = 0.5, description: str = "", replace: bool = True, **config: Any
) -> Callable[[Callable[..., Any]], FunctionGrader]:
    """Decorator: register a function as a named grader."""

    def wrap(fn: Callable[..., Any]) -> FunctionGrader:
        made = FunctionGrader(name, fn, threshold=threshold, description=description, config=config)
        register(made, replace=replace)
        return made

    return wrap


def get(name: str) -> Grader:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DeclarationError(
            f"no grader named {name!r}; registered: {sorted(_REGISTRY)}"
        ) from None


def resolve(items: Iterable[str | Grader], known: dict[str, Grader] | None = None) -> list[Grader]:
    """Graders from names (looked up in `known`, then the registry) or grader objects."""
    out = []
    for item in items:
        if isinstance(item, Grader):
            out.append(item)
        elif known is not None and item in known:
            out.append(known[item])
        else:
            out.append(get(item))
    names = [g.name for g in out]
    if len(set(names)) != len(names):
        raise DeclarationError(f"grader names must be unique in one eval: {names}")
    return out


def registered() -> dict[str, Grader]:
    return dict(_REGISTRY)
