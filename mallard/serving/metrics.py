"""The server's Prometheus metrics, summed over every worker.

With several workers, `mallard serve` points PROMETHEUS_MULTIPROC_DIR at a fresh folder before
the workers start; prometheus-client then keeps each worker's values in memory-mapped files
there, and `/metrics` reads them all (`MultiProcessCollector`), so a scrape sees the deployment's
counts whichever worker answers it. With one worker the values stay in memory.

Routes are labelled by their template (`/v1/models/{name}/predict`), never the raw path, so a
scan of random URLs cannot grow the label set; unknown paths count as `unmatched`.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def multiprocess_mode() -> bool:
    """Whether this process writes its values to PROMETHEUS_MULTIPROC_DIR (fixed at import)."""
    return values.ValueClass is not values.MutexValue


class ServerMetrics:
    """Request, prediction and validation counters of one server process."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        # A registry per app, so that tests can build several apps in one process.
        self.registry = CollectorRegistry(auto_describe=True)
        self.collectors: list[object] = []
        """Collectors read at scrape time (the same for every worker), e.g. the online evals'."""
        r = self.registry
        self.requests = Counter(
            "mallard_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "mallard_http_request_duration_seconds",
            "Time to answer a request, by route template, method and status.",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "mallard_predictions",
            "Rows predicted, by model, version and variant (champion, an alias, or a pinned version).",
            ["model", "version", "variant"],
            registry=r,
        )
        self.explanations = Counter(
            "mallard_explanations",
            "Rows explained, by model and version.",
            ["model", "version"],
            registry=r,
        )
        self.explainers_built = Counter(
            "mallard_explainers_built",
            "SHAP explainers built (once per model version and worker).",
            ["model", "version"],
            registry=r,
        )
        self.validation_warnings = Counter(
            "mallard_validation_warnings",
            "Input problems answered with a warning (strictness warn), by model and rule.",
            ["model", "rule"],
            registry=r,
        )
        self.validation_rejects = Counter(
            "mallard_validation_rejects",
            "Requests refused for an input problem (strictness reject), by model and rule.",
            ["model", "rule"],
            registry=r,
        )
        self.rate_limited = Counter(
            "mallard_rate_limited",
            "Requests answered 429, by bucket (key or address).",
            ["bucket"],
            registry=r,
        )
        self.auth_failures = Counter(
            "mallard_auth_failures",
            "Requests refused 401 or 403, by reason.",
            ["reason"],
            registry=r,
        )
        self.feature_rows_pushed = Counter(
            "mallard_feature_rows_pushed",
            "Rows written through /v1/features/push, by view.",
            ["view"],
            registry=r,
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        labels = (route, method, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def exposition(self) -> bytes:
        if multiprocess_mode():
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(
                registry, path=os.environ.get("PROMETHEUS_MULTIPROC_DIR")
            )
        else:
            registry = CollectorRegistry()
            registry.register(_Of(self.registry))
        for collector in self.collectors:
            registry.register(collector)  # type: ignore[arg-type]
        return generate_latest(registry)


class _Of:
    """Another registry's metrics, as one collector."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self):  # type: ignore[no-untyped-def]
        return self.registry.collect()
