"""`mallard prompts list|show|diff|promote|rollback|sync`: the prompt registry."""

from __future__ import annotations

import click

from cli.common import deployment
from mallard.llm.errors import PromptError


def _registry():
    with deployment() as resources:
        return resources.prompts.registry()


class _PromptGroup(click.Group):
    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except PromptError as exc:
            raise click.ClickException(str(exc)) from None


@click.group("prompts", cls=_PromptGroup)
def prompts() -> None:
    """Versioned prompts: list, show, diff, promote, rollback."""


@prompts.command("list")
def list_prompts() -> None:
    """Each prompt's versions and the labels pointing at them."""
    rows = _registry().versions_table()
    if not rows:
        click.echo(
            "No prompts registered (materialize the prompt_versions asset or run `mallard prompts sync`)."
        )
        return
    click.echo(f"{'prompt':24} {'version':>7}  {'hash':12}  {'labels':16} {'created':26} by")
    for row in rows:
        click.echo(
            f"{row['name']:24} {row['version']:>7}  {row['content_hash']:12}  {row['labels'] or '-':16} "
            f"{row['created_at'][:26]:26} {row['created_by']}"
        )


@prompts.command("show")
@click.argument("name")
@click.option("--label", default="live", show_default=True)
@click.option(
    "--version", "version", type=int, default=None, help="Show this version instead of a label."
)
def show(name: str, label: str, version: int | None) -> None:
    """A prompt's template, model configuration and label history."""
    registry = _registry()
    found = registry.get(name, label, version=version)
    click.echo(
        f"{found.name} v{found.version} ({found.content_hash[:12]})"
        + (f" [{label}]" if version is None else "")
    )
    click.echo(f"description: {found.template.description}")
    click.echo(f"variables:   {', '.join(found.variables)}")
    click.echo(f"model:       {dict(found.template.model)}")
    for role, content in found.template.messages:
        click.echo(f"--- {role}")
        click.echo(content)
    history = registry.history(name)
    if history:
        click.echo("--- label history")
        for e in history:
            click.echo(
                f"{e.at[:19]}  {e.label:10} {e.action:8} v{e.from_version or '-'} → v{e.to_version}  "
                f"by {e.actor}: {e.reason}"
            )


@prompts.command("diff")
@click.argument("name")
@click.argument("a", type=int)
@click.argument("b", type=int)
def diff(name: str, a: int, b: int) -> None:
    """Unified diff between versions A and B."""
    click.echo(_registry().diff(name, a, b) or "(identical)")


@prompts.command("promote")
@click.argument("name")
@click.option("--version", "version", type=int, default=None, help="Version to promote.")
@click.option(
    "--from-label", default=None, help="Promote the version this label points at (e.g. staging)."
)
@click.option("--label", default="live", show_default=True, help="Label to move.")
@click.option("--reason", required=True, help="Why (recorded).")
@click.option("--actor", default=None, help="Who (default: $MALLARD_USER or the login name).")
def promote(
    name: str,
    version: int | None,
    from_label: str | None,
    label: str,
    reason: str,
    actor: str | None,
) -> None:
    """Point a label at a version; the move is recorded with who, when and why."""
    event = _registry().promote(
        name, version, label=label, from_label=from_label, reason=reason, actor=actor
    )
    if event is None:
        click.echo(f"{name}: {label} already points at that version; nothing recorded")
    else:
        click.echo(
            f"{name}: {label} v{event.from_version or '-'} → v{event.to_version} (by {event.actor})"
        )


@prompts.command("rollback")
@click.argument("name")
@click.option("--label", default="live", show_default=True)
@click.option(
    "--to-version", type=int, default=None, help="Default: the version the label pointed at before."
)
@click.option("--reason", required=True, help="Why (recorded).")
@click.option("--actor", default=None)
def rollback(name: str, label: str, to_version: int | None, reason: str, actor: str | None) -> None:
    """Move a label back to an earlier version; recorded with who, when and why."""
    event = _registry().rollback(
        name, label=label, to_version=to_version, reason=reason, actor=actor
    )
    click.echo(
        f"{name}: {label} v{event.from_version} → v{event.to_version} (rollback by {event.actor})"
    )


@prompts.command("sync")
@click.argument(
    "directory", type=click.Path(exists=True, file_okay=False), default="catalog/prompts"
)
def sync(directory: str) -> None:
    """Register new versions from prompt files (what the prompt_versions asset does)."""
    from mallard.llm.prompts.registry import sync_prompt_files

    for row in sync_prompt_files(_registry(), directory):
        state = "new" if row["created"] else "unchanged"
        labels = f", labels set: {', '.join(row['labels_set'])}" if row["labels_set"] else ""
        click.echo(f"{row['name']} v{row['version']} ({state}{labels})  {row['file']}")
