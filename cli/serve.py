"""`mallard serve`, `mallard keys …`, `mallard audit list`, `mallard predictions list`.

`mallard serve` runs the API (mallard.serving) on uvicorn with the host, port and workers of the
settings. Each worker builds its app with `app_factory`: the deployment's resources, opened once
per worker and closed when it stops, handed to `create_app`. With more than one worker,
Prometheus' multiprocess mode is switched on (a fresh folder under MALLARD_HOME/serve) before
the workers start; keys, rate-limit buckets and the audit log are shared through the server
state (SQLite files locally, Redis in prod).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from contextlib import ExitStack
from typing import Any

import click

from cli.common import deployment
from mallard.config import ConfigError, Settings, get_settings


def served_models(settings: Settings) -> list[Any]:
    """The declared models MALLARD_SERVE_MODELS names (default: every declared model)."""
    from catalog.models import MODELS
    from mallard.serving import ServedModel

    wanted = settings.served_models
    if wanted is None:
        wanted = MODELS.names
    unknown = [name for name in wanted if name not in MODELS]
    if unknown:
        raise ConfigError(
            f"MALLARD_SERVE_MODELS names {', '.join(unknown)}, which catalog/models.py does not "
            f"declare (declared: {', '.join(MODELS.names)})"
        )
    return [
        ServedModel(
            name=spec.name,
            task=spec.task,
            strictness=spec.strictness,
            feature_service=spec.feature_service,
            description=spec.description,
            canary=spec.canary,
        )
        for spec in (MODELS.get(name) for name in wanted)
    ]


def build_app(models: list[Any] | None = None) -> Any:
    """The API over this deployment's resources (what each uvicorn worker runs)."""
    from catalog.features import REGISTRY
    from mallard.serving import ServingClients, create_app
    from mallard.serving.logs import configure_logging
    from resources import open_resources

    stack = ExitStack()
    try:
        resources = stack.enter_context(open_resources())
        settings = resources.mlflow.settings()
        configure_logging(settings.serve_log_level)
        state = resources.server.open()
        stack.callback(state.close)
        store = resources.online_store.open()
        stack.callback(store.close)
        clients = ServingClients(
            state=state,
            online_store=store,
            feature_registry=REGISTRY,
            prompts=resources.prompts.registry(),
            prediction_log=resources.prediction_log.buffer(),
            traces=resources.traces.buffer(),
            models=served_models(settings) if models is None else models,
            close=stack.close,
        )
        return create_app(clients, settings)
    except BaseException:
        stack.close()
        raise


def app_factory() -> Any:
    """uvicorn's factory (`cli.serve:app_factory`)."""
    return build_app()


@click.command("serve")
@click.option(
    "--host", default=None, help="Address to bind (default: MALLARD_SERVE_HOST, 127.0.0.1)."
)
@click.option("--port", type=int, default=None, help="Port (default: MALLARD_SERVE_PORT, 8000).")
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Worker processes (default: MALLARD_SERVE_WORKERS, 1).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="Default: MALLARD_SERVE_LOG_LEVEL, info.",
)
def serve(host: str | None, port: int | None, workers: int | None, log_level: str | None) -> None:
    """Run the API server (FastAPI on uvicorn): /v1 routes, /docs, /metrics, /healthz, /readyz."""
    import uvicorn

    from mallard.serving.keys import server_secret
    from mallard.serving.logs import log_config

    overrides = {
        k: v
        for k, v in {
            "serve_host": host,
            "serve_port": port,
            "serve_workers": workers,
            "serve_log_level": log_level,
        }.items()
        if v is not None
    }
    settings = get_settings().model_copy(update=overrides) if overrides else get_settings()
    settings.ensure_home()
    server_secret(settings)  # fail now, naming MALLARD_SERVER_SECRET, not in every worker
    served_models(settings)
    if settings.serve_workers > 1:
        folder = settings.serve_dir / f"prometheus-{settings.serve_port}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    os.environ["MALLARD_SERVE_LOG_LEVEL"] = settings.serve_log_level  # the workers' too
    click.echo(
        f"Mallard API on http://{settings.serve_host}:{settings.serve_port} "
        f"({settings.serve_workers} worker(s); docs at /docs)"
    )
    uvicorn.run(
        "cli.serve:app_factory",
        factory=True,
        host=settings.serve_host,
        port=settings.serve_port,
        workers=settings.serve_workers,
        log_config=log_config(settings.serve_log_level),
        access_log=False,
        timeout_graceful_shutdown=30,
        server_header=False,
    )


# -- keys -------------------------------------------------------------------------------------
def _state() -> Any:
    with deployment() as resources:
        return resources.server.open()


class _KeyGroup(click.Group):
    def invoke(self, ctx: click.Context):  # type: ignore[override]
        from mallard.serving.keys import KeyOperationError

        try:
            return super().invoke(ctx)
        except (KeyOperationError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None


@click.group("keys", cls=_KeyGroup)
def keys() -> None:
    """API keys: create, list, revoke, rotate (every operation is in the audit log)."""


def _duration(_ctx: click.Context, param: click.Parameter, value: str) -> dt.timedelta:
    from mallard.serving.keys import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param=param) from None


def _show(record: dict[str, Any]) -> None:
    click.echo(
        f"{record['prefix']}  {record['owner']:24} {record['role']:9} {record['scope']:6} "
        f"{record['state']:7} expires {record['expires_at']}"
    )


@keys.command("create")
@click.option("--owner", required=True, help="Who or what the key is for.")
@click.option("--role", type=click.Choice(["admin", "developer", "viewer"]), required=True)
@click.option("--ingest", is_flag=True, help="Scope the key to the routes that send traffic.")
@click.option("--expires-in", default="90d", show_default=True, callback=_duration)
@click.option("--rate", type=float, default=None, help="Requests per second (default: server's).")
@click.option("--burst", type=int, default=None, help="Bucket size (default: server's).")
def create_key(
    owner: str,
    role: str,
    ingest: bool,
    expires_in: dt.timedelta,
    rate: float | None,
    burst: int | None,
) -> None:
    """Create a key; it is shown once, here."""
    state = _state()
    try:
        created = state.create_key(
            owner,
            role,
            scope="ingest" if ingest else "all",
            expires_in=expires_in,
            rate_per_s=rate,
            burst=burst,
        )
    finally:
        state.close()
    click.echo(created.key)
    click.echo(
        f"# prefix {created.record.prefix}, {role}{' (ingest)' if ingest else ''} for {owner}, "
        f"expires {created.record.public()['expires_at']}. Store the key now: it is not shown again.",
        err=True,
    )


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_keys(as_json: bool) -> None:
    """Every key's prefix, owner, role, scope, state and expiry (never the key)."""
    state = _state()
    try:
        records = [r.public() for r in state.keys.list()]
    finally:
        state.close()
    if as_json:
        click.echo(json.dumps(records, indent=1))
        return
    if not records:
        click.echo("No keys yet: `mallard keys create --owner you --role admin`.")
    for record in records:
        _show(record)


@keys.command("revoke")
@click.argument("prefix")
def revoke_key(prefix: str) -> None:
    """Revoke a key; its next request is refused."""
    state = _state()
    try:
        record = state.revoke_key(prefix)
    finally:
        state.close()
    _show(record.public())


@keys.command("rotate")
@click.argument("prefix")
@click.option(
    "--grace",
    default="0s",
    show_default=True,
    callback=_duration,
    help="How long the old key still works.",
)
def rotate_key(prefix: str, grace: dt.timedelta) -> None:
    """A new key for the same owner, role and scope; the old one is revoked (or expires after
    --grace). The new key is shown once."""
    state = _state()
    try:
        created = state.rotate_key(prefix, grace=grace)
    finally:
        state.close()
    click.echo(created.key)
    click.echo(f"# {prefix} → {created.record.prefix}. Store the key now.", err=True)


# -- audit ------------------------------------------------------------------------------------
@click.group("audit")
def audit() -> None:
    """The audit log: mutating API calls and key operations."""


@audit.command("list")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--action", default=None, help="An action (keys.revoke) or a prefix (keys.).")
@click.option("--actor", default=None, help="Part of the actor (a key prefix, an owner, cli:).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines, before/after included.")
def list_audit(limit: int, action: str | None, actor: str | None, as_json: bool) -> None:
    """Newest first: when, who, what, the outcome and the request id."""
    state = _state()
    try:
        events = state.audit.list(limit=limit, action=action, actor=actor)
    finally:
        state.close()
    if as_json:
        for event in events:
            click.echo(json.dumps(event.as_dict(), default=str))
        return
    if not events:
        click.echo("The audit log is empty.")
    for event in events:
        click.echo(
            f"{event.at[:19]}  {event.status:3}  {event.action:16} {event.target:24} "
            f"{event.actor}  {event.request_id}"
        )


# -- predictions ------------------------------------------------------------------------------
@click.group("predictions")
def predictions() -> None:
    """The prediction log (batch scoring and the API)."""


@predictions.command("list")
@click.option("--model", default=None)
@click.option("--source", type=click.Choice(["api", "batch"]), default=None)
@click.option("--limit", type=int, default=20, show_default=True)
def list_predictions(model: str | None, source: str | None, limit: int) -> None:
    """The latest logged predictions (what the drift and outcome assets read)."""
    from mallard.monitoring.predictions import read_predictions

    with deployment() as resources:
        settings = resources.lake.settings()
    frame = read_predictions(settings, model)
    if source is not None:
        frame = frame[frame["source"] == source]
    frame = frame.sort_values("timestamp").tail(limit)
    if frame.empty:
        click.echo("No predictions logged (API predictions appear within a few seconds).")
        return
    for row in frame.itertuples():
        click.echo(
            f"{row.timestamp:%Y-%m-%d %H:%M:%S}  {row.source:5} {row.model_name} v{row.model_version} "
            f"{row.role:9} {row.entity_key:24} prediction={row.prediction:g} "
            f"score={'' if row.score != row.score else f'{row.score:.4f}'}  {row.run_id}"
        )


def add_serving_commands(main: click.Group) -> None:
    for command in (serve, keys, audit, predictions):
        main.add_command(command)
