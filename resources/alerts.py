"""The alert sink: the alert history, and a Slack-compatible webhook."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from resources.lake import LakeResource

if TYPE_CHECKING:
    from mallard.monitoring.alerts import AlertSink


class AlertSinkResource(dg.ConfigurableResource):
    """Records alerts in `<home>/monitoring/alerts.sqlite` and posts them to `webhook_url`."""

    lake: LakeResource
    webhook_url: str = ""

    def sink(self) -> AlertSink:
        from mallard.monitoring.alerts import AlertSink, alerts_path

        return AlertSink(alerts_path(self.lake.settings()), self.webhook_url or None)
