"""`mallard evals run|compare|show|import|calibrate|align|annotate|promote`: eval datasets,
judges, human labels, the gate."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import click

from catalog.evals import CATALOG, CORPORA
from cli.common import deployment, lake_settings
from mallard.specs import DeclarationError


class _EvalGroup(click.Group):
    def invoke(self, ctx: click.Context):  # type: ignore[override]
        from mallard.evals.compare import ComparisonError
        from mallard.evals.datasets import DatasetValidationError
        from mallard.evals.labels import LabelError
        from mallard.llm.errors import PromptError

        try:
            return super().invoke(ctx)
        except (
            DeclarationError,
            DatasetValidationError,
            ComparisonError,
            LabelError,
            LookupError,
            PromptError,
        ) as exc:
            raise click.ClickException(str(exc)) from None


@contextmanager
def _llm_client() -> Iterator[Any]:
    """The deployment's LLM client (no semantic cache: evals compare exact answers)."""
    with deployment() as resources, resources.llm.client(semantic_cache=False) as client:
        yield client


def _registry() -> Any:
    with deployment() as resources:
        return resources.prompts.registry()


def _bars(disable: bool = False) -> Any:
    from tqdm import tqdm

    def factory(description: str, total: int) -> Any:
        return tqdm(
            total=total,
            desc=description,
            unit="item",
            leave=False,
            disable=disable,
            dynamic_ncols=True,
        )

    return factory


def _eval_name(name: str | None) -> str:
    catalog = CATALOG
    if name:
        catalog.eval(name)
        return name
    names = sorted(catalog.eval_by_name)
    if len(names) != 1:
        raise click.UsageError(f"name the eval: one of {names}")
    return names[0]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A plain text table (no dependency beyond the standard library)."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())
    cells = [[_fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    numeric = [all(_is_number(row.get(c)) for row in rows) for c in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True)
        ).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) or value is None


def _print_run(summary: Mapping[str, Any], header: str) -> None:
    graders = list(summary["graders"])
    click.echo(header)
    rows = [
        {"category": c, **{g: cells[g] for g in graders}}
        for c, cells in summary["by_category"].items()
    ]
    rows.append({"category": "ALL (mean)", **{g: summary["graders"][g]["mean"] for g in graders}})
    rows.append(
        {"category": "pass rate", **{g: summary["graders"][g]["pass_rate"] for g in graders}}
    )
    click.echo(table(rows, ["category", *graders]))
    errors = {g: s["errors"] for g, s in summary["graders"].items() if s["errors"]}
    if errors:
        click.echo(f"grading errors (excluded): {errors}")
    click.echo(
        f"items {summary['items']} (failed answers {summary['failed_answers']}); answers from cache "
        f"{summary['answers_cached']}, grades from cache {summary['grades_cached']}/{summary['grades']}; "
        f"cost ${summary['cost_usd']:.6f} (answers ${summary['answer_cost_usd']:.6f}, grading "
        f"${summary['grading_cost_usd']:.6f}); answer latency p50 {summary['answer_latency_p50_ms']:.0f} ms"
    )
    if summary["worst_items"]:
        click.echo("worst items:")
        click.echo(
            table(
                summary["worst_items"],
                ["item_id", "category", "mean_score", "worst_grader", "reason"],
            )
        )


def _print_trust(trust: Sequence[Any]) -> None:
    for t in trust:
        click.echo(f"{'trusted  ' if t.trusted else 'UNTRUSTED'} {t.reason}")


@click.group("evals", cls=_EvalGroup)
def evals() -> None:
    """Offline evals: datasets, graders, judge calibration, runs per prompt version, the gate."""


@evals.command("import")
@click.argument("datasets", nargs=-1)
def import_datasets(datasets: tuple[str, ...]) -> None:
    """Import eval datasets (all declared, or the named ones); a changed file is a new version."""
    from mallard.evals.datasets import import_dataset

    catalog, settings = CATALOG, lake_settings()
    rows = []
    for name in datasets or sorted(catalog.dataset_by_name):
        result = import_dataset(catalog.dataset(name), settings=settings)
        rows.append(
            {
                "dataset": name,
                "version": result.version,
                "new": "yes" if result.created else "no",
                "items": result.items,
                "categories": ", ".join(f"{k} {v}" for k, v in result.by_category.items()),
            }
        )
    click.echo(table(rows))


@evals.command("run")
@click.argument("eval_name", required=False)
@click.option(
    "--version",
    "version",
    type=int,
    default=None,
    help="Prompt version (default: the --label one).",
)
@click.option(
    "--label", default="live", show_default=True, help="Prompt label to evaluate when no --version."
)
@click.option(
    "--slice", "slice_name", default=None, help="Dataset slice (default: the eval's declared one)."
)
@click.option("--all", "all_items", is_flag=True, help="Run every item of the dataset.")
@click.option("--limit", type=int, default=None, help="At most this many items.")
@click.option("--item", "items", multiple=True, help="Only these item ids (repeatable).")
@click.option("--grader", "graders", multiple=True, help="Only these graders (repeatable).")
@click.option(
    "--dataset-version", type=int, default=None, help="Pin a dataset version (default: latest)."
)
@click.option(
    "--no-cache", is_flag=True, help="Recompute grades (answers still use the LLM cache)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def run(
    eval_name: str | None,
    version: int | None,
    label: str,
    slice_name: str | None,
    all_items: bool,
    limit: int | None,
    items: tuple[str, ...],
    graders: tuple[str, ...],
    dataset_version: int | None,
    no_cache: bool,
    as_json: bool,
) -> None:
    """Answer the eval's dataset with one prompt version and grade every answer."""
    from mallard.evals.runs import run_offline_eval

    name = _eval_name(eval_name)
    catalog, settings = CATALOG, lake_settings()
    registry = _registry()
    ev = catalog.eval(name)
    if version is None:
        version = registry.get(ev.prompt, label).version
    with _llm_client() as client:
        result = run_offline_eval(
            catalog,
            name,
            version,
            client=client,
            registry=registry,
            settings=settings,
            corpora=CORPORA,
            slice_name=None if all_items else (slice_name or True),
            limit=limit,
            item_ids=list(items) or None,
            graders=list(graders) or None,
            dataset_version=dataset_version,
            import_latest=dataset_version is None,
            cache=not no_cache,
            progress=_bars(as_json),
        )
    summary = result.summary
    if as_json:
        click.echo(
            json.dumps(
                {"run_id": result.run_id, "prompt_version": version, **summary},
                default=str,
                indent=1,
            )
        )
        return
    _print_run(
        summary,
        f"{name}: {ev.prompt} v{version} on {result.dataset} v{result.dataset_version}"
        f"{' slice ' + result.slice if result.slice else ''} — run {result.run_id} ({result.wall_s:.1f} s)",
    )
    _print_trust(result.trust)


@evals.command("compare")
@click.argument("eval_name", required=False)
@click.option("--baseline", "-a", type=int, default=None, help="Baseline version (default: live).")
@click.option(
    "--candidate", "-b", type=int, default=None, help="Candidate version (default: staging)."
)
@click.option(
    "--pairwise/--no-pairwise", default=True, show_default=True, help="Also run the pairwise judge."
)
@click.option("--dataset-version", type=int, default=None)
def compare(
    eval_name: str | None,
    baseline: int | None,
    candidate: int | None,
    pairwise: bool,
    dataset_version: int | None,
) -> None:
    """Per-grader mean differences with paired bootstrap intervals, win/tie/loss, and the gate's view."""
    from mallard.evals.compare import compare_versions, decide, gate_trust
    from mallard.evals.graders.base import GradeContext
    from mallard.evals.spec import Gate

    name = _eval_name(eval_name)
    catalog, settings = CATALOG, lake_settings()
    registry = _registry()
    ev = catalog.eval(name)
    gate = ev.gate or Gate(graders=tuple(ev.grader_names[:1]))
    labels = registry.labels(ev.prompt)
    baseline = baseline if baseline is not None else labels.get(gate.label)
    candidate = candidate if candidate is not None else labels.get(gate.candidate_label)
    if baseline is None or candidate is None:
        raise click.UsageError(f"give --baseline and --candidate (labels of {ev.prompt}: {labels})")
    with _llm_client() as client:
        comparison = compare_versions(
            catalog,
            name,
            baseline,
            candidate,
            settings=settings,
            client=client,
            pairwise=pairwise,
            dataset_version=dataset_version,
            progress=_bars(),
        )
        trust = gate_trust(catalog, name, GradeContext(client=client), settings) if ev.gate else []
    click.echo(
        f"{name}: {ev.prompt} v{candidate} (candidate) vs v{baseline} (baseline) on {comparison.dataset} "
        f"v{comparison.dataset_version}, {comparison.items} paired items"
    )
    rows = [
        {
            "grader": c.grader,
            f"v{baseline}": c.baseline_mean,
            f"v{candidate}": c.candidate_mean,
            "diff": c.diff,
            "ci_low": c.ci_low,
            "ci_high": c.ci_high,
            "W/T/L": f"{c.wins}/{c.ties}/{c.losses}",
            "n": c.items,
            "gate": "yes" if c.grader in gate.graders else "",
        }
        for c in comparison.graders.values()
    ]
    click.echo(table(rows))
    if comparison.pairwise is not None:
        p = comparison.pairwise
        click.echo(
            f"pairwise judge {p.judge}: v{candidate} wins {p.wins}, ties {p.ties}, loses {p.losses} "
            f"(position-swap disagreements {p.position_disagreements}/{p.items}, errors {p.errors})"
        )
    if ev.gate:
        decision = decide(
            comparison, gate, trust, candidate_version=candidate, live_version=baseline
        )
        click.echo(f"gate: {'would promote' if decision.promote else 'would refuse'}")
        for reason in decision.reasons:
            click.echo(f"  - {reason}")


@evals.command("show")
@click.argument("eval_name", required=False)
@click.option(
    "--version", "version", type=int, default=None, help="Details of this version's latest run."
)
def show(eval_name: str | None, version: int | None) -> None:
    """The latest results: each prompt version's latest run, judge calibration and gate decisions."""
    from mallard.evals import store
    from mallard.evals.runs import latest_run, summarize

    name = _eval_name(eval_name)
    catalog, settings = CATALOG, lake_settings()
    ev = catalog.eval(name)
    rows = store.read("judge_scores", settings=settings, filters={"eval_name": name})
    if not rows:
        click.echo(
            f"No runs of eval {name} yet: `mallard evals run {name}` or materialize offline_evals/{name}."
        )
        return
    if version is not None:
        latest = latest_run(name, version, rows=rows)
        if not latest:
            raise click.ClickException(f"eval {name} has no run of v{version}")
        first = latest[0]
        _print_run(
            summarize(latest),
            f"{name}: {ev.prompt} v{version} on {first['dataset']} v{first['dataset_version']}"
            f"{' slice ' + first['slice'] if first['slice'] else ''} — run {first['run_id']} "
            f"at {first['timestamp']:%Y-%m-%d %H:%M:%S}",
        )
        return
    versions = sorted({r["prompt_version"] for r in rows if r["baseline_prompt_version"] is None})
    labels = _registry().labels(ev.prompt)
    overview = []
    for v in versions:
        latest = latest_run(name, v, rows=rows)
        summary = summarize(latest)
        tags = ",".join(sorted(k for k, x in labels.items() if x == v))
        overview.append(
            {
                "version": f"v{v}",
                "labels": tags or "-",
                "dataset": f"v{latest[0]['dataset_version']}",
                "items": summary["items"],
                **{g: s["mean"] for g, s in summary["graders"].items()},
                "cost_usd": summary["cost_usd"],
                "run": latest[0]["run_id"],
                "when": f"{latest[0]['timestamp']:%Y-%m-%d %H:%M}",
            }
        )
    click.echo(f"{name}: latest run of each version of prompt {ev.prompt} (mean normalised scores)")
    columns = list(dict.fromkeys(k for row in overview for k in row))
    click.echo(table(overview, columns))
    calibrations = store.read("judge_calibration", settings=settings)
    if calibrations:
        latest_by_judge: dict[str, dict[str, Any]] = {}
        for row in sorted(calibrations, key=lambda r: r["timestamp"]):
            latest_by_judge[row["judge"]] = row
        click.echo("\njudge calibration (latest per judge):")
        click.echo(
            table(
                list(latest_by_judge.values()),
                [
                    "judge",
                    "model",
                    "items",
                    "accuracy",
                    "kappa",
                    "kappa_low",
                    "kappa_high",
                    "kappa_method",
                    "min_kappa",
                    "trusted",
                ],
            )
        )
    decisions = sorted(
        store.read("eval_gate_decisions", settings=settings, filters={"eval_name": name}),
        key=lambda r: r["timestamp"],
    )[-5:]
    if decisions:
        click.echo("\ngate decisions (latest 5):")
        for d in decisions:
            reasons = json.loads(d["reasons"] or "[]")
            click.echo(
                f"{d['timestamp']:%Y-%m-%d %H:%M} v{d['candidate_version']} vs {d['label']} "
                f"v{d['live_version']}: {'PROMOTED' if d['promoted'] else 'refused'}"
            )
            for reason in reasons:
                click.echo(f"  - {reason}")


@evals.command("calibrate")
@click.option(
    "--judge", "judges", multiple=True, help="Judges to calibrate (default: the declared ones)."
)
@click.option(
    "--all", "all_items", is_flag=True, help="Every calibration item, not the declared slice."
)
@click.option("--limit", type=int, default=None)
@click.option(
    "--repeat", type=int, default=None, help="Calls per item (>1 measures the judge's variance)."
)
def calibrate(
    judges: tuple[str, ...], all_items: bool, limit: int | None, repeat: int | None
) -> None:
    """Agreement of each judge with the human verdicts (accuracy, Cohen's κ, Spearman's ρ)."""
    from mallard.evals.calibration import CalibrationReport, run_calibration

    catalog, settings = CATALOG, lake_settings()
    with _llm_client() as client:
        reports, info = run_calibration(
            catalog,
            client=client,
            settings=settings,
            corpora=CORPORA,
            judges=list(judges) or None,
            slice_name=None if all_items else True,
            limit=limit,
            repeat=repeat,
            progress=_bars(),
        )
    click.echo(
        f"calibration on {info['dataset']} v{info['dataset_version']}"
        f"{' slice ' + info['slice'] if info['slice'] else ''}: {info['items']} items, run {info['run_id']}"
    )
    click.echo(
        table(
            [r.to_row() for r in reports],
            CalibrationReport.SUMMARY_COLUMNS,
        )
    )


@evals.command("align")
@click.argument("judges", nargs=-1)
@click.option("--folds", type=int, default=5, show_default=True)
def align_judges(judges: tuple[str, ...], folds: int) -> None:
    """Refit composite judges from the latest labels (default: every composite judge) and report
    their cross-validated κ with its interval, each signal alone and the held-out datasets."""
    from mallard.evals.alignment import align
    from mallard.evals.graders.composite import CompositeJudge

    catalog, settings = CATALOG, lake_settings()
    names = list(judges) or [g.name for g in catalog.graders if isinstance(g, CompositeJudge)]
    with _llm_client() as client:
        for name in names:
            report = align(
                catalog,
                name,
                client=client,
                settings=settings,
                corpora=CORPORA,
                folds=folds,
                progress=_bars(),
            )
            click.echo(report.summary())
            labels = report.labels
            click.echo(
                f"  labels: {labels['items']} items ({labels['pass']} pass, {labels['fail']} fail); "
                f"human labels {labels['human_labels']} ({labels['human_overrides']} overriding a "
                f"dataset verdict, {labels['human_added']} new items); fingerprint "
                f"{report.fingerprint[:16]}"
            )


def _show_item(item: Any, index: int, total: int) -> None:
    sample = item.sample
    click.echo(f"\n[{index}/{total}] {item.dataset} {item.item_id} — {item.why}")
    click.echo(f"Question: {sample.question}")
    if sample.reference:
        click.echo(f"Gold answer: {sample.reference}")
    for text in sample.contexts:
        click.echo("Article: " + text[:600].replace("\n", " ") + (" …" if len(text) > 600 else ""))
    click.echo(f"Answer: {sample.output}")
    if item.label:
        click.echo(f"Current label: {item.label}")


@evals.command("annotate")
@click.argument("judge", required=False)
@click.option("--author", required=True, help="Who is labelling (recorded with every label).")
@click.option("--limit", type=int, default=10, show_default=True, help="Items to offer.")
@click.option("--item", "item_id", default=None, help="Label this item (with --verdict).")
@click.option("--dataset", default=None, help="The item's dataset (with --item).")
@click.option("--verdict", type=click.Choice(["pass", "fail"]), default=None)
@click.option("--reason", default="", help="Why (with --verdict).")
def annotate(
    judge: str | None,
    author: str,
    limit: int,
    item_id: str | None,
    dataset: str | None,
    verdict: str | None,
    reason: str,
) -> None:
    """Give human verdicts for a judge: the queue offers items the judge gets wrong or is least
    sure of first; answer p(ass), f(ail), s(kip) or q(uit). With --item and --verdict, label one
    item without the queue. Labels feed the next `mallard evals align`."""
    from mallard.evals.alignment import annotation_queue, sample_json
    from mallard.evals.graders.composite import CompositeJudge
    from mallard.evals.labels import add_label

    catalog, settings = CATALOG, lake_settings()
    composites = [g.name for g in catalog.graders if isinstance(g, CompositeJudge)]
    name = judge or (composites[0] if len(composites) == 1 else None)
    if name is None:
        raise click.UsageError(f"name the judge: one of {composites}")
    if item_id is not None or verdict is not None:
        if item_id is None or verdict is None:
            raise click.UsageError("--item and --verdict go together")
        queue = annotation_queue(catalog, name, settings=settings, corpora=CORPORA, limit=10_000)
        found = [q for q in queue if q.item_id == item_id and dataset in (None, q.dataset)]
        if not found:
            raise click.ClickException(f"no item {item_id!r} to label for judge {name!r}")
        q = found[0]
        label = add_label(
            judge=name,
            dataset=q.dataset,
            item_id=q.item_id,
            verdict=verdict,
            author=author,
            settings=settings,
            source="cli",
            reason=reason,
            sample=sample_json(q.sample),
        )
        click.echo(
            f"labelled {q.dataset} {q.item_id} {label.verdict} for {name} (version {label.version}, by {author})"
        )
        return
    queue = annotation_queue(
        catalog, name, settings=settings, corpora=CORPORA, limit=limit, author=author
    )
    if not queue:
        click.echo(f"nothing to label for {name}")
        return
    given = 0
    for index, q in enumerate(queue, 1):
        _show_item(q, index, len(queue))
        answer = click.prompt(
            "pass, fail, skip or quit", type=click.Choice(["p", "f", "s", "q"]), show_choices=True
        )
        if answer == "q":
            break
        if answer == "s":
            continue
        why = click.prompt("reason (optional)", default="", show_default=False)
        label = add_label(
            judge=name,
            dataset=q.dataset,
            item_id=q.item_id,
            verdict="pass" if answer == "p" else "fail",
            author=author,
            settings=settings,
            source="cli",
            reason=why,
            sample=sample_json(q.sample),
        )
        given += 1
        click.echo(f"recorded {label.verdict} (version {label.version})")
    click.echo(f"{given} label(s) given for {name}; `mallard evals align {name}` refits it")


@evals.command("promote")
@click.argument("eval_name", required=False)
@click.option(
    "--candidate", type=int, default=None, help="Candidate version (default: the staging one)."
)
@click.option("--dry-run", is_flag=True, help="Decide and record, but do not move the label.")
@click.option("--pairwise/--no-pairwise", default=True, show_default=True)
def promote(eval_name: str | None, candidate: int | None, dry_run: bool, pairwise: bool) -> None:
    """Run the promotion gate: move `live` to the candidate only if the evals allow it."""
    from mallard.evals.compare import promote_prompt

    name = _eval_name(eval_name)
    catalog, settings = CATALOG, lake_settings()
    with _llm_client() as client:
        decision = promote_prompt(
            catalog,
            name,
            client=client,
            registry=_registry(),
            settings=settings,
            candidate_version=candidate,
            dry_run=dry_run,
            pairwise=pairwise,
            progress=_bars(),
        )
    click.echo(str(decision))
    if decision.comparison is not None:
        click.echo(decision.comparison.markdown())
