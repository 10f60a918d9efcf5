"""`mallard features …`: inspect, validate and read the feature store."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import click

from catalog.features import REGISTRY
from cli.common import deployment, lake_settings
from mallard.specs import DeclarationError


@click.group("features")
def features() -> None:
    """Feature views, services, training data and online reads."""


@features.command("list")
def list_views() -> None:
    """Every feature view (with its current version) and feature service."""
    from mallard.features.versions import list_versions

    registry, settings = REGISTRY, lake_settings()
    click.echo(f"{'view':16} {'version':10} {'entity keys':14} {'ttl':10} {'features':>8}  owner")
    for view in registry.views.values():
        known = {v.content_hash: v.label for v in list_versions(settings, view.name)}
        version = known.get(view.version_hash, "(new)").partition("@")[2] or "(new)"
        ttl = str(view.ttl) if view.ttl is not None else "none"
        click.echo(
            f"{view.name:16} {version:10} {','.join(view.join_keys):14} {ttl:10} {len(view.features):>8}  {view.owner}"
        )
    click.echo("")
    for service in registry.services.values():
        click.echo(f"service {service.name}: {', '.join(service.features)}")


@features.command("show")
@click.argument("view_name")
def show(view_name: str) -> None:
    """One view: its declaration, versions and stored rows."""
    from mallard.features.versions import list_versions

    registry, settings = REGISTRY, lake_settings()
    view = registry.views.get(view_name)
    if view is None:
        raise click.ClickException(
            f"unknown view {view_name!r}; choose one of {', '.join(registry.views)}"
        )
    click.echo(f"{view.name}: {view.description}")
    click.echo(
        f"  entities   {', '.join(e.name for e in view.entities)} (keys {', '.join(view.join_keys)})"
    )
    click.echo(f"  sources    {', '.join(s.name for s in view.sources)}")
    click.echo(f"  ttl        {view.ttl}")
    click.echo(f"  hash       {view.version_hash}")
    for feature in view.features:
        click.echo(f"  feature    {feature.name:28} {feature.type:9} {feature.description}")
    for version in list_versions(settings, view.name):
        current = " (current)" if version.content_hash == view.version_hash else ""
        stored = "stored" if version.table_path.exists() else "not materialized"
        click.echo(f"  version    {version.label} {version.content_hash} {stored}{current}")


@features.command("validate")
def validate() -> None:
    """Run every view's SQL against its sources and check the declared columns and types."""
    from mallard.features.compute import validate_view

    registry, settings = REGISTRY, lake_settings()
    failed = []
    for view in registry.views.values():
        try:
            validate_view(view, settings)
            click.echo(f"ok      {view.name}")
        except DeclarationError as exc:
            failed.append(view.name)
            click.echo(f"FAILED  {exc}")
        except Exception as exc:  # noqa: BLE001 - every view is checked, whatever one raises
            failed.append(view.name)
            click.echo(f"FAILED  FeatureView {view.name!r}: {type(exc).__name__}: {exc}")
    if failed:
        click.echo(f"{len(failed)} of {len(registry.views)} views failed: {', '.join(failed)}")
        sys.exit(1)


@features.command("historical")
@click.option(
    "--entities",
    "entities_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Parquet or CSV with the join keys and an event_timestamp column.",
)
@click.option(
    "--features",
    "references",
    required=True,
    multiple=True,
    help="A service name, or view:feature / view:* (repeatable).",
)
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Parquet file to write.",
)
@click.option(
    "--exclude-created-after",
    is_flag=True,
    help="Ignore feature rows created after each entity timestamp.",
)
@click.option(
    "--plan",
    type=click.Choice(["auto", "asof", "hash", "merge"]),
    default="auto",
    show_default=True,
    help="Join plan; auto chooses per view by sizes (all give the same result).",
)
def historical(
    entities_path: str,
    references: tuple[str, ...],
    out_path: str,
    exclude_created_after: bool,
    plan: str,
) -> None:
    """Point-in-time correct features for a table of entity rows."""
    import pandas as pd

    from mallard.features.offline.engine import get_historical_features
    from mallard.features.training import view_reads

    settings = lake_settings()
    path = Path(entities_path)
    entity = (
        pd.read_parquet(path)
        if path.suffix == ".parquet"
        else pd.read_csv(path, parse_dates=["event_timestamp"])
    )
    if "event_timestamp" not in entity.columns:
        raise click.ClickException(
            f"{entities_path}: needs an event_timestamp column (has {', '.join(entity.columns)})"
        )
    try:
        reads, versions = view_reads(REGISTRY, settings, list(references))
    except DeclarationError as exc:
        raise click.ClickException(str(exc)) from None
    started = dt.datetime.now()
    frame = get_historical_features(
        entity,
        reads,
        exclude_created_after=exclude_created_after,
        plan=plan,  # type: ignore[arg-type]  # click.Choice checked it
    )
    frame.to_parquet(out_path, index=False)
    seconds = (dt.datetime.now() - started).total_seconds()
    plans = ", ".join(f"{s['name']}: {s['plan']}" for s in frame.attrs.get("mallard", []))
    click.echo(
        f"{len(frame):,} rows × {frame.shape[1]} columns → {out_path} in {seconds:.2f} s "
        f"({', '.join(versions.values())}; plans {plans})"
    )


@features.command("materialize")
@click.option("--view", "views", multiple=True, help="Only these views (repeatable); default all.")
def materialize(views: tuple[str, ...]) -> None:
    """Load the newest offline values into the online store (incremental)."""
    from tqdm import tqdm

    from mallard.features.materialize import materialize_online

    chosen = list(views) or list(REGISTRY.views)
    with (
        deployment() as resources,
        resources.online_store.open() as store,
        tqdm(total=len(chosen), unit="view") as bar,
    ):

        def progress(message: str) -> None:
            bar.write(message)
            bar.update(1)

        materialize_online(REGISTRY, resources.lake.settings(), store, chosen, progress=progress)


def _parse_key(text: str) -> dict[str, object]:
    key: dict[str, object] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep:
            raise click.BadParameter(f"{text!r}: use name=value[,name=value]", param_hint="--key")
        key[name.strip()] = int(value) if value.strip().lstrip("-").isdigit() else value.strip()
    return key


@features.command("online")
@click.option(
    "--key",
    "keys",
    required=True,
    multiple=True,
    help="Entity key, e.g. customer_id=42 (repeatable).",
)
@click.option(
    "--features", "references", required=True, multiple=True, help="A service name or view:feature."
)
@click.option(
    "--at",
    "at",
    default=None,
    help="Judge staleness at this UTC time (YYYY-MM-DDTHH:MM), default now.",
)
def online(keys: tuple[str, ...], references: tuple[str, ...], at: str | None) -> None:
    """Read features for entity keys from the online store (stale values are null)."""
    import json

    from mallard.features.materialize import get_online_features

    entity_keys = [_parse_key(k) for k in keys]
    try:
        with deployment() as resources, resources.online_store.open() as store:
            now = dt.datetime.fromisoformat(at).replace(tzinfo=dt.UTC) if at else None
            result = get_online_features(store, REGISTRY, entity_keys, list(references), now=now)
    except DeclarationError as exc:
        raise click.ClickException(str(exc)) from None
    for i, row in enumerate(result.rows()):
        status = {view: states[i] for view, states in result.status.items()}
        click.echo(json.dumps({**row, "_status": status}, default=str))
