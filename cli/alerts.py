"""`mallard alerts …`: the alert history."""

from __future__ import annotations

import click

from cli.common import deployment
from mallard.monitoring.alerts import ALERT_KINDS


@click.group("alerts")
def alerts() -> None:
    """Alerts raised by drift, performance, rollbacks and LLM quality rules."""


@alerts.command("list")
@click.option(
    "--kind", type=click.Choice(ALERT_KINDS), default=None, help="Only alerts of this kind."
)
@click.option("--subject", default=None, help="Only alerts about this model or prompt.")
@click.option("--limit", type=int, default=50, show_default=True)
def list_command(kind: str | None, subject: str | None, limit: int) -> None:
    """The newest alerts first: kind, model or prompt, day and reason."""
    with deployment() as resources:
        rows = resources.alerts.sink().list(kind=kind, subject=subject, limit=limit)
    if not rows:
        click.echo("no alerts recorded")
        return
    click.echo(f"{'id':>4}  {'created (UTC)':20} {'kind':12} {'subject':22} {'day':10}  reason")
    for row in rows:
        click.echo(
            f"{row.alert_id:>4}  {row.created_at[:19]:20} {row.kind:12} {row.subject:22} "
            f"{row.day or '':10}  {row.reason}  [{row.delivery}]"
        )
