"""Alerts are recorded, posted as Slack-compatible JSON, and listed; a dead webhook loses nothing."""

from __future__ import annotations

import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import main
from mallard.config import load_settings
from mallard.monitoring.alerts import Alert, list_alerts
from resources import open_resources


def record_alert(alert: Alert):
    """Record through the deployment's alert sink resource, as sensors do."""
    with open_resources() as resources:
        return resources.alerts.sink().record(alert)


@pytest.fixture
def webhook():
    """A real HTTP server on 127.0.0.1 that keeps every JSON body posted to it."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()


def test_alert_is_recorded_and_posted(
    mallard_home: Path, monkeypatch: pytest.MonkeyPatch, webhook
) -> None:
    url, received = webhook
    monkeypatch.setenv("MALLARD_ALERT_WEBHOOK_URL", url)
    stored = record_alert(
        Alert(
            "drift",
            "churn_classifier",
            "4 of 14 features drifted (share 0.29 ≥ 0.25)",
            dt.date(2026, 5, 2),
            details={"drifted": ["errors_7d"]},
        ),
    )
    assert stored.delivery == "sent"
    assert len(received) == 1
    assert "drift — churn_classifier on 2026-05-02" in received[0]["text"]
    assert received[0]["blocks"][0]["type"] == "section"
    assert received[0]["mallard"]["details"] == {"drifted": ["errors_7d"]}


def test_dead_webhook_keeps_the_alert(mallard_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLARD_ALERT_WEBHOOK_URL", "http://127.0.0.1:9/nowhere")
    stored = record_alert(Alert("rollback", "churn_classifier", "v3 worse than v2"))
    assert stored.delivery.startswith("failed")
    assert [a.reason for a in list_alerts(load_settings())] == ["v3 worse than v2"]


def test_without_url_alerts_are_only_recorded_and_listed(mallard_home: Path) -> None:
    settings = load_settings()
    record_alert(Alert("drift", "churn_classifier", "first", dt.date(2026, 5, 1)))
    record_alert(Alert("performance", "minutes_regressor", "second", dt.date(2026, 5, 3)))
    assert [a.delivery for a in list_alerts(settings)] == ["recorded only", "recorded only"]
    assert [a.reason for a in list_alerts(settings, kind="drift")] == ["first"]
    result = CliRunner().invoke(main, ["alerts", "list"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert (
        "performance" in lines[1] and "minutes_regressor" in lines[1] and "2026-05-03" in lines[1]
    )
    assert "drift" in lines[2] and "first" in lines[2]


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="alert kind 'oops' is unknown"):
        Alert("oops", "x", "y")
