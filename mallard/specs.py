"""Small helpers shared by every declaration type in `catalog/`."""

from __future__ import annotations

import re

_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class DeclarationError(ValueError):
    """A declaration in catalog/ is wrong; the message names the object and the field."""


def check_identifier(kind: str, name: str, field: str = "name", owner: str | None = None) -> str:
    """Require a safe lower-case SQL identifier, or raise naming the declaration and field."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        where = f"{kind} {owner!r}" if owner else kind
        raise DeclarationError(
            f"{where}: {field}={name!r} is not a safe identifier; use lower-case letters, digits "
            "and underscores, starting with a letter (at most 63 characters)"
        )
    return name
