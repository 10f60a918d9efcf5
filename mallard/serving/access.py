"""Who may call a route: `Access` (roles, the ingest scope, whether calls are audited) and the
role sets routes declare. Pure data, imported by the routes, the server's services and auth."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mallard.serving.keys import ROLES


@dataclass(frozen=True)
class Access:
    """Who may call a route. No roles: public (no key, no rate limit: probes and the docs)."""

    roles: frozenset[str]
    ingest: bool = False  # an ingest-scoped key may call it
    mutating: bool = False  # every call (allowed or refused) is recorded in the audit log
    action: str = ""  # the audit action of a mutating route

    @property
    def public(self) -> bool:
        return not self.roles

    def describe(self) -> dict[str, Any]:
        return {
            "public": self.public,
            "roles": sorted(self.roles, key=ROLES.index),
            "ingest": self.ingest,
            "audited": self.mutating,
        }

    def allows(self, role: str | None, scope: str | None) -> bool:
        if self.public:
            return True
        if role not in self.roles:
            return False
        return scope != "ingest" or self.ingest


PUBLIC = Access(frozenset())
READERS = frozenset({"admin", "developer", "viewer"})
WRITERS = frozenset({"admin", "developer"})
ADMINS = frozenset({"admin"})
