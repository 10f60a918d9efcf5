"""The LLM client and the prompt registry."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import PrivateAttr

from resources.lake import LakeResource
from resources.traces import TraceStoreResource

if TYPE_CHECKING:
    from mallard.llm import Endpoints
    from mallard.llm.client import LLMClient
    from mallard.llm.prompts import PromptRegistry


class LLMResource(dg.ConfigurableResource):
    """LLM clients over the endpoints declared in catalog/llm.py, closed when the step ends.

    With `base_url` set (production), every local model is served by that OpenAI-compatible server
    instead of running in-process (`Endpoints.served_at`); `endpoint_urls` reaches the named
    endpoints at other URLs (`Endpoints.routed`, MALLARD_LLM_ENDPOINT_URLS).
    """

    lake: LakeResource
    traces: TraceStoreResource
    base_url: str = ""
    api_key_env: str = ""
    default_endpoint: str = "smollm2-local"
    endpoint_urls: dict[str, str] = {}
    _open: list[Any] = PrivateAttr(default_factory=list)

    def endpoints(self) -> Endpoints:
        from catalog.llm import ENDPOINTS

        endpoints = ENDPOINTS
        if self.base_url:
            endpoints = endpoints.served_at(self.base_url, self.api_key_env or None)
        return endpoints.routed(self.endpoint_urls) if self.endpoint_urls else endpoints

    @contextmanager
    def client(self, run_id: str = "", **options: Any) -> Iterator[LLMClient]:
        """An LLM client whose calls are traced to the trace store; closed on exit."""
        from mallard.llm.client import LLMClient

        options.setdefault("traces", self.traces.store().recorder())
        client = LLMClient(
            self.endpoints(), settings=self.lake.settings(), run_id=run_id, **options
        )
        self._open.append(client)
        try:
            yield client
        finally:
            self._open.remove(client)
            client.close()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        for client in list(self._open):
            client.close()
        self._open.clear()


class PromptRegistryResource(dg.ConfigurableResource):
    """The prompt registry: versions, labels and their history (`<lake>/prompt_registry.sqlite`)."""

    lake: LakeResource

    def registry(self) -> PromptRegistry:
        from mallard.llm.prompts import PromptRegistry

        return PromptRegistry.default(self.lake.settings())
