"""Progress reporting for long eval steps: the CLI draws tqdm bars, assets log lines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Progress = Callable[[str, int], Any]  # (description, total) -> an object with update(n) and close()


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def no_progress(description: str, total: int) -> _NoProgress:
    return _NoProgress()
