"""What the server's routes use: the clients the deployment hands the app (`ServingClients`),
everything a route reads from `app.state.services` (`Services`), and the lean routes' table
(`LeanRoute`). Data only: the modules that serve requests import it, it imports none of them."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

    from mallard.config import Settings
    from mallard.features.online import OnlineStore
    from mallard.features.specs import FeatureRegistry
    from mallard.lake.buffer import DurableBuffer
    from mallard.llm.prompts import PromptRegistry
    from mallard.serving.access import Access
    from mallard.serving.features import FeatureService
    from mallard.serving.metrics import ServerMetrics
    from mallard.serving.models import ModelService, ServedModel
    from mallard.serving.state import ServerState


@dataclass
class ServingClients:
    """What the server is handed: built by the deployment's resources, closed by `close`."""

    state: ServerState
    online_store: OnlineStore | None = None
    feature_registry: FeatureRegistry | None = None
    prompts: PromptRegistry | None = None
    prediction_log: DurableBuffer | None = None
    models: Sequence[ServedModel] = ()
    traces: DurableBuffer | None = None  # the trace ingestion buffer (routes/traces.py)
    close: Callable[[], None] | None = None


@dataclass
class Services:
    """Everything a route uses, on `app.state.services`."""

    settings: Settings
    clients: ServingClients
    metrics: ServerMetrics
    models: ModelService
    features: FeatureService
    started_at: float = field(default_factory=time.time)
    access: dict[tuple[str, str], Access] = field(default_factory=dict)
    lean: dict[tuple[str, str], LeanRoute] = field(default_factory=dict)  # (method, path)

    @property
    def state(self) -> ServerState:
        return self.clients.state

    def access_of(self, route: Any, method: str) -> Access | None:
        path = getattr(route, "path", None)
        return None if path is None else self.access.get((method, path))


@dataclass(frozen=True)
class LeanRoute:
    """A route served on the lean path: its FastAPI route (template, declared access), its body
    model and the call that answers it."""

    route: Any  # the APIRoute: scope["route"] for the metrics and the access log
    access: Access
    body_model: type[BaseModel]
    call: Callable[[Services, Any], dict[str, Any]]
    inline: Callable[[Services], bool]  # whether the call may run on the event loop
