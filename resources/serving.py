"""The API server's own clients: its shared state (keys, rate limits, audit) and the prediction
log's write-behind buffer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import dagster as dg

from resources.lake import LakeResource

if TYPE_CHECKING:
    from mallard.lake.buffer import DurableBuffer
    from mallard.serving.state import ServerState


class ServerStateResource(dg.ConfigurableResource):
    """Keys, rate-limit buckets and the audit log every worker shares: SQLite files under
    `<home>/serve` (local) or Redis (prod). The keys' HMAC secret is MALLARD_SERVER_SECRET
    (required in prod), read when the state is opened, never part of the resource's config."""

    lake: LakeResource
    kind: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str = ""

    def open(self) -> ServerState:
        from mallard.serving.state import open_server_state

        if self.kind == "redis" and not self.redis_url:
            raise dg.Failure(
                "the server state is redis but redis_url is empty: set MALLARD_REDIS_URL"
            )
        return open_server_state(self.lake.settings(), self.kind, self.redis_url)


class PredictionLogResource(dg.ConfigurableResource):
    """The prediction log's durable write-behind buffer: acknowledged rows are fsynced under
    `<home>/buffers/predictions` and appended to `lake/predictions` in batches."""

    lake: LakeResource

    def buffer(self) -> DurableBuffer:
        from mallard.lake.buffer import DurableBuffer
        from mallard.monitoring.predictions import log_sink

        settings = self.lake.settings()
        return DurableBuffer(
            settings.buffers_dir / "predictions",
            log_sink(settings),
            flush_rows=settings.prediction_log_flush_rows,
            flush_interval_s=settings.prediction_log_flush_s,
            name="predictions",
        )
