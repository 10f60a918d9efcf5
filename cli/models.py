"""`mallard models …`: list the declared models, show one, train it, roll its champion back."""

from __future__ import annotations

import json

import click

from catalog.models import MODELS
from cli.common import mlflow_settings


@click.group("models")
def models() -> None:
    """Trained models: candidates, champions, decisions and rollbacks (MLflow registry)."""


@models.command("list")
def list_models() -> None:
    """Every declared model with its task, metric, champion and candidate versions."""
    from mallard.models.registry import describe

    settings = mlflow_settings()
    catalog = MODELS
    click.echo(
        f"{'model':20} {'task':15} {'metric':11} {'champion':>9} {'candidate':>10}  estimators"
    )
    for spec in catalog:
        state = describe(settings, spec.name)
        aliases = state.get("aliases", {})
        click.echo(
            f"{spec.name:20} {spec.task:15} {spec.metric:11} "
            f"{('v' + str(aliases['champion'])) if 'champion' in aliases else '-':>9} "
            f"{('v' + str(aliases['candidate'])) if 'candidate' in aliases else '-':>10}  "
            f"{', '.join(spec.estimators)}"
        )


@models.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the registry state as JSON.")
def show(name: str, as_json: bool) -> None:
    """The declaration, aliases, versions and the last decision of one model."""
    from mallard.models.registry import describe

    catalog = MODELS
    try:
        spec = catalog.get(name)
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0])) from None
    state = describe(mlflow_settings(), name)
    if as_json:
        click.echo(json.dumps({"declaration": spec.describe(), **state}, indent=2, default=str))
        return
    click.echo(f"{name}: {spec.task} on {spec.training_set} (service {spec.feature_service})")
    if spec.description:
        click.echo(f"  {spec.description}")
    click.echo(
        f"  label {spec.label or '-'}, metric {spec.metric}, estimators {', '.join(spec.estimators)}, "
        f"{spec.folds} folds, budget {spec.time_budget:g} s"
    )
    rule = spec.promotion
    click.echo(
        f"  promotion: improvement > {rule.min_improvement:g} at significance {rule.significance} "
        f"({rule.test})"
    )
    if not state["registered"]:
        click.echo("  not trained yet")
        return
    aliases = ", ".join(f"{k}=v{v}" for k, v in state["aliases"].items()) or "none"
    click.echo(f"  aliases: {aliases}; champion history: {state['champion_history']}")
    last = state.get("last_decision") or {}
    if last:
        click.echo(
            f"  last decision: {last.get('action')} v{last.get('version')} — {last.get('reason')}"
        )
    click.echo(
        f"  {'version':>7}  {'created':25} {'estimator':10} {'held-out':16} {'decision':9} aliases"
    )
    for v in state["versions"]:
        click.echo(
            f"  {v['version']:>7}  {v['created']:25} {v['estimator']:10} {v['holdout_metric']:16} "
            f"{v['decision']:9} {', '.join(v['aliases'])}"
        )


@models.command("rollback")
@click.argument("name")
@click.option("--to", "to_version", type=int, default=None, help="Version to make champion.")
@click.option("--reason", default="", help="Why (recorded with the decision).")
def rollback(name: str, to_version: int | None, reason: str) -> None:
    """Move NAME's champion alias back (to the previous champion, or --to VERSION)."""
    from mallard.models.registry import RegistryError
    from mallard.models.registry import rollback as do_rollback

    try:
        decision = do_rollback(
            mlflow_settings(), name, to_version, reason or "rolled back from the CLI"
        )
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"{name}: champion v{decision.champion_before} → v{decision.champion_after} "
        f"(recorded as run {decision.run_id})"
    )


@models.command("train")
@click.argument("name")
@click.option("--no-promote", is_flag=True, help="Train and evaluate only; leave the champion.")
def train(name: str, no_promote: bool) -> None:
    """Train a candidate of NAME, record its statistics, evaluate it and apply the rule."""
    from mallard.models.data import TrainingDataError
    from mallard.models.evaluation import apply_promotion, evaluate_candidate
    from mallard.models.registry import RegistryError
    from mallard.models.statistics import compute_training_statistics
    from mallard.models.training import train_candidate

    catalog = MODELS
    try:
        spec = catalog.get(name)
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0])) from None
    settings = mlflow_settings()
    features, types = catalog.features(name), catalog.feature_types
    try:
        train_candidate(spec, settings, features, types, log=click.echo)
        compute_training_statistics(spec, settings, features, types, log=click.echo)
        evaluate_candidate(spec, settings, features, types, log=click.echo)
        if not no_promote:
            apply_promotion(spec, settings, log=click.echo)
    except (TrainingDataError, RegistryError) as exc:
        raise click.ClickException(str(exc)) from None
