"""The `mallard` command: the deployment's front end, over the same resources as the assets."""

from __future__ import annotations

import datetime as dt

import click

from mallard.config import ConfigError, get_settings, load_settings


def _parse_date(_ctx: click.Context, param: click.Parameter, value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date; use YYYY-MM-DD", param=param) from None


class _MallardGroup(click.Group):
    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_MallardGroup)
def main() -> None:
    """Mallard: an ML and LLM quality platform on Dagster."""


@main.command("info")
def info() -> None:
    """Print the settings in force and where Mallard keeps its data."""
    settings = get_settings()
    rows = {
        "MALLARD_ENV": settings.env,
        "MALLARD_HOME": settings.home,
        "Dagster instance (DAGSTER_HOME)": settings.dagster_home,
        "Delta lake": settings.lake_dir,
        "sample world": settings.sample_dir,
        "MLflow tracking URI": settings.mlflow_tracking_uri,
        "online store": settings.online_store_path
        if settings.online_store == "sqlite"
        else settings.redis_url,
        "LLM server": settings.llm_base_url or "(local models in-process)",
    }
    for key, value in rows.items():
        click.echo(f"{key:34} {value}")


@main.command("demo-data")
@click.option(
    "--end-date",
    callback=_parse_date,
    help="Last simulated day, YYYY-MM-DD (default: today, or MALLARD_END_DATE).",
)
@click.option("--seed", type=int, default=None, help="Random seed (default: MALLARD_SEED, 7).")
@click.option(
    "--scale",
    type=float,
    default=None,
    help="Size: 1.0 ≈ 20,000 customers (default: MALLARD_SAMPLE_SCALE).",
)
@click.option(
    "--add-days",
    type=click.IntRange(min=1),
    default=None,
    help="Add N days after the existing world's last day instead of generating a new one: its "
    "start date and every earlier row stay as they were.",
)
def demo_data(
    end_date: dt.date | None, seed: int | None, scale: float | None, add_days: int | None
) -> None:
    """Generate the Pondstream sample world under MALLARD_HOME/sample (or add days to it)."""
    from mallard.sample_world.generate import WorldSpec, generate_world

    overrides = {
        k: v
        for k, v in {"seed": seed, "sample_scale": scale, "end_date": end_date}.items()
        if v is not None
    }
    if add_days is not None:
        if overrides:
            raise click.UsageError(
                "--add-days extends the existing world with its own seed, size and start date; "
                "leave out --end-date, --seed and --scale"
            )
        _add_days(add_days)
        return
    settings = load_settings(**overrides).ensure_home()
    spec = WorldSpec(
        end_date=settings.sample_end_date,
        seed=settings.seed,
        customers=settings.sample_customers,
    )
    click.echo(
        f"Generating {spec.customers:,} customers over {spec.days} days ending {spec.end_date} (seed {spec.seed})"
    )
    summary = generate_world(
        spec, settings.sample_dir, progress=lambda msg: click.echo(f"  … {msg}")
    )
    click.echo(f"Wrote {settings.sample_dir}")
    for name, count in summary.rows.items():
        click.echo(f"  {name:16} {count:>12,} rows")
    click.echo("Shift at day 60 (before → after):")
    before, after = summary.shift["before_shift"], summary.shift["after_shift"]
    for key in before:
        click.echo(f"  {key:22} {before[key]:10.4f} → {after[key]:10.4f}")


def _add_days(days: int) -> None:
    from mallard.sample_world.generate import WorldNotExtensible, extend_world, read_spec

    settings = get_settings().ensure_home()
    try:
        before = read_spec(settings.sample_dir)
        click.echo(
            f"Adding {days} day(s) to the world of {before.start_date} … {before.end_date} "
            f"in {settings.sample_dir}"
        )
        summary = extend_world(
            settings.sample_dir, days, progress=lambda msg: click.echo(f"  … {msg}")
        )
    except WorldNotExtensible as exc:
        raise click.ClickException(str(exc)) from None
    after = read_spec(settings.sample_dir)
    click.echo(f"The world now runs {after.start_date} … {after.end_date} ({after.days} days)")
    for name, count in summary.rows.items():
        click.echo(f"  {name:16} {count:>12,} rows")
    click.echo(
        "With `make dev` running, the new_source_days sensor requests the new days' features, "
        "scoring, drift and outcomes within a few minutes."
    )


@main.command("settings")
def show_settings() -> None:
    """Print the settings as JSON."""
    click.echo(get_settings().model_dump_json(indent=2))


def _register_subcommands() -> None:
    from cli.alerts import alerts
    from cli.evals import evals
    from cli.features import features
    from cli.models import models
    from cli.ops import ops
    from cli.prompts import prompts
    from cli.traces import traces

    for group in (features, models, alerts, prompts, evals, ops, traces):
        main.add_command(group)
    from cli.serve import add_serving_commands

    add_serving_commands(main)  # serve, keys, audit, predictions


_register_subcommands()


if __name__ == "__main__":
    main()
