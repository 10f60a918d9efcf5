"""Online evals as hourly assets: `online_evals/<name>`, one per declaration in
catalog/online_evals.py, and its job `online_eval_<name>`.

A run grades the production traces of its hours (one run for a range of hours: a single-run
backfill) that the eval's filter and sample take and that are ready (the delay has passed),
each (trace, grader version) once, and appends the grades to `online_scores`. Each hour's
materialization records its traces, scores, pass rates and cost of grading; the run's records a
plot of the pass rate per hour and grader. The `online_evals` sensor launches these runs as
traces arrive (sensors/online_evals.py); a run launched from the UI grades whatever of its
hours is still ungraded.
"""

import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Any

import dagster as dg

from assets.common import markdown_table, png_markdown
from assets.names import TRACES_ASSET, hour_key, online_eval_job, online_eval_key
from catalog.llm import OWNER
from catalog.online_evals import ALERT_RULES, BUDGETS, ONLINE_CATALOG, ONLINE_EVALS
from mallard.config import get_settings
from mallard.evals.online import OnlineEval, OnlineEvalCatalog
from resources import (
    AlertSinkResource,
    LakeResource,
    LLMResource,
    PromptRegistryResource,
    TraceStoreResource,
)

PARTITIONS_START = dt.datetime.combine(get_settings().sample_start_date, dt.time(), tzinfo=dt.UTC)
hourly_partitions = dg.HourlyPartitionsDefinition(
    start_date=PARTITIONS_START.strftime("%Y-%m-%d-%H:%M"), end_offset=1
)
TREND_HOURS = 48


class OnlineEvalConfig(dg.Config):
    """What the sensor pins for a run; the defaults grade what is ready when the run starts."""

    traces_version: int = -1
    """Delta version of the traces table to read (-1: the current one)."""
    cutoff: str = ""
    """ISO time: traces whose newest span started after it are left (empty: now − delay)."""
    trace_ids: list[str] = []
    """The traces to grade (empty: every ready, ungraded trace of the run's hours)."""


def _label_version(spec: OnlineEval, prompts: PromptRegistryResource) -> int | None:
    if not (spec.prompt and spec.prompt_label):
        return None
    try:
        return prompts.registry().labels(spec.prompt).get(spec.prompt_label)
    except Exception:  # noqa: BLE001 - an unregistered prompt: its label points nowhere
        return None


def summarize(scores: Any) -> list[dict[str, Any]]:
    """Per grader: graded traces, errors, mean score, pass rate (errors left out), cost of
    grading and whether its judges are trusted."""
    out = []
    for name, group in scores.groupby("grader", sort=True):
        ok = group[group["error"] == ""]
        out.append(
            {
                "grader": name,
                "traces": int(group["trace_id"].nunique()),
                "errors": int(len(group) - len(ok)),
                "mean_score": round(float(ok["score"].mean()), 4) if len(ok) else None,
                "pass_rate": round(float(ok["passed"].mean()), 4) if len(ok) else None,
                "cost_usd": round(float(group["cost_usd"].sum()), 6),
                "trusted": bool(group["trusted"].all()),
            }
        )
    return out


def per_version(scores: Any) -> list[dict[str, Any]]:
    """Pass rate per prompt version and grader (errors left out)."""
    ok = scores[scores["error"] == ""]
    rows = []
    for (prompt, version, name), group in ok.groupby(
        ["prompt_name", "prompt_version", "grader"], sort=True
    ):
        rows.append(
            {
                "prompt": prompt,
                "version": int(version),
                "grader": name,
                "traces": int(len(group)),
                "pass_rate": round(float(group["passed"].mean()), 4),
            }
        )
    return rows


def pass_rate_plot(scores: Any, path: Path, title: str) -> Path:
    """Pass rate per hour, one line per grader, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = scores[scores["error"] == ""]
    fig, ax = plt.subplots(figsize=(8, 2.8), dpi=90)
    for name, group in ok.groupby("grader", sort=True):
        rate = group.groupby("hour")["passed"].mean()
        ax.plot(rate.index, rate.values, marker=".", lw=1, label=name)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("pass rate")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(loc="lower left", fontsize=7, ncol=3)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def build_online_eval_asset(
    spec: OnlineEval, catalog: OnlineEvalCatalog = ONLINE_CATALOG
) -> dg.AssetsDefinition:
    """The hourly asset of one online eval (its graders resolved in `catalog`)."""
    graders = catalog.graders(spec.name)
    with_judges = any(g.judges for g in graders)

    @dg.asset(
        key=online_eval_key(spec.name),
        group_name="llm_online",
        owners=[OWNER],
        description=spec.description or f"Online eval {spec.name}: {', '.join(spec.grader_names)}",
        partitions_def=hourly_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"delta"},
        metadata={
            "graders": ", ".join(spec.grader_names),
            "sampling_rate": spec.sampling_rate,
            "delay_s": spec.delay.total_seconds(),
            "filter": dg.MetadataValue.json(
                {
                    "prompt": spec.prompt,
                    "prompt_label": spec.prompt_label,
                    "prompt_versions": list(spec.prompt_versions),
                    "models": list(spec.models),
                    "endpoints": list(spec.endpoints),
                    "metadata": dict(spec.metadata),
                }
            ),
        },
    )
    def _online_eval(
        context: dg.AssetExecutionContext,
        config: OnlineEvalConfig,
        lake: LakeResource,
        traces: TraceStoreResource,
        prompts: PromptRegistryResource,
        llm: LLMResource,
    ) -> dg.MaterializeResult:
        """Grade the run's hours' ready, sampled, ungraded production traces and record each
        hour's scores, pass rates and cost of grading."""
        from mallard.evals import online_scores
        from mallard.evals.graders.base import GradeContext
        from mallard.evals.online import grade, hour_of, read_traces, select

        settings = lake.settings()
        store = traces.store()
        window = context.partition_time_window
        start, end = window.start.astimezone(dt.UTC), window.end.astimezone(dt.UTC)
        version = config.traces_version if config.traces_version >= 0 else store.version()
        cutoff = (
            dt.datetime.fromisoformat(config.cutoff)
            if config.cutoff
            else dt.datetime.now(dt.UTC) - spec.delay
        )
        stored = 0
        if version is not None:
            spans = read_traces(
                store.table_path,
                version=version,
                start=None if config.trace_ids else start,
                end=None if config.trace_ids else end,
                trace_ids=config.trace_ids,
            )
            ids = sorted(set(spans.column("trace_id").to_pylist()))
            from contextlib import nullcontext

            # No client (and no model loaded) for an eval whose graders make no LLM call.
            scope: Any = llm.client(run_id=context.run.run_id) if with_judges else nullcontext()
            with scope as client:
                ctx = GradeContext(client=client, run_id=context.run.run_id, settings=settings)
                fingerprints = [g.fingerprint(ctx) for g in graders]
                complete, pairs = online_scores.graded(settings, spec.name, fingerprints, ids)
                rows, pending = select(
                    spec,
                    spans,
                    cutoff=cutoff,
                    label_version=_label_version(spec, prompts),
                    graded=complete,
                )
                rows = [r for r in rows if start <= hour_of(r["timestamp"]) < end]
                context.log.info(
                    f"{spec.name}: {len(rows)} trace(s) to grade in {hour_key(start)} … "
                    f"{hour_key(end - dt.timedelta(hours=1))} (traces v{version}); "
                    f"left out: {pending.counts()}"
                )
                new = grade(
                    spec,
                    graders,
                    rows,
                    ctx,
                    run_id=context.run.run_id,
                    traces_version=version,
                    done=pairs,
                    trust=lambda g: _trust(g, ctx, settings),
                )
            stored = online_scores.append(new, settings=settings)
        scores = online_scores.current(
            online_scores.frame(settings, eval_name=spec.name, start=start, end=end)
        )
        for hour in context.partition_keys:
            begin = dt.datetime.strptime(hour, "%Y-%m-%d-%H:%M").replace(tzinfo=dt.UTC)
            part = scores[scores["hour"] == begin]
            summary = summarize(part)
            metadata: dict[str, Any] = {
                "traces": int(part["trace_id"].nunique()),
                "grading_cost_usd": round(float(part["cost_usd"].sum()), 6),
                "scores": dg.MetadataValue.md(markdown_table(summary)),
            }
            for item in summary:
                if item["pass_rate"] is not None:
                    metadata[f"pass_rate/{item['grader']}"] = item["pass_rate"]
                    metadata[f"mean_score/{item['grader']}"] = item["mean_score"]
            context.add_asset_metadata(metadata, partition_key=hour)
        trend = online_scores.current(
            online_scores.frame(
                settings, eval_name=spec.name, start=end - dt.timedelta(hours=TREND_HOURS), end=end
            )
        )
        run_metadata: dict[str, Any] = {
            "hours_in_run": len(context.partition_keys),
            "grades_stored": stored,
            "traces_version": version if version is not None else -1,
            "by_prompt_version": dg.MetadataValue.md(markdown_table(per_version(scores))),
            "online_scores": dg.MetadataValue.path(str(online_scores.table_path(settings))),
        }
        if len(trend):
            plot = pass_rate_plot(
                trend,
                settings.reports_dir
                / "online_evals"
                / spec.name
                / f"pass_rate_{hour_key(end).replace(':', '')}.png",
                f"{spec.name}: pass rate per hour (last {TREND_HOURS} h to {hour_key(end)})",
            )
            run_metadata["pass_rate_per_hour"] = dg.MetadataValue.md(
                png_markdown(plot, settings, "pass rate per hour")
            )
        return dg.MaterializeResult(metadata=run_metadata)

    return _online_eval


def _trust(grader: Any, ctx: Any, settings: Any) -> tuple[bool, str]:
    from mallard.evals.calibration import judge_trust

    found = judge_trust(grader, ctx, settings=settings)
    return all(t.trusted for t in found), "; ".join(t.reason for t in found)


ONLINE_EVAL_ASSETS = [build_online_eval_asset(spec) for spec in ONLINE_EVALS]
ONLINE_EVAL_JOBS = [
    dg.define_asset_job(
        online_eval_job(spec.name),
        selection=dg.AssetSelection.assets(online_eval_key(spec.name)),
        partitions_def=hourly_partitions,
        description=f"Grade the production traces of a range of hours for {spec.name} "
        "(one run per range).",
    )
    for spec in ONLINE_EVALS
]


# Shadow prompts: a candidate version replayed on live traces ------------------------------------


def shadow_comparison_key(name: str) -> dg.AssetKey:
    """The shadow comparison of an online eval: `shadow_comparison/support_assistant_live_shadow`
    (its last part differs from the online eval's: the UI names an asset by it)."""
    return dg.AssetKey(["shadow_comparison", f"{name}_shadow"])


def _shadow_candidate(spec: OnlineEval, registry: Any) -> tuple[Any, str]:
    """The candidate PromptVersion the eval declares (None and why when there is none)."""
    assert spec.prompt
    if spec.shadow_version is not None:
        try:
            return registry.version(spec.prompt, spec.shadow_version), ""
        except Exception as exc:  # noqa: BLE001 - an unregistered version: nothing to replay
            return None, f"prompt {spec.prompt!r} v{spec.shadow_version} is not registered ({exc})"
    labels = registry.labels(spec.prompt) if spec.prompt in registry.names() else {}
    version = labels.get(spec.shadow_label)
    if version is None:
        return None, (
            f"label {spec.shadow_label!r} of prompt {spec.prompt!r} points to no version "
            f"(labels: {labels}); point it at the candidate to run it in shadow"
        )
    return registry.version(spec.prompt, version), ""


def build_shadow_asset(
    spec: OnlineEval, catalog: OnlineEvalCatalog = ONLINE_CATALOG
) -> dg.AssetsDefinition:
    """The shadow comparison of one online eval that declares a candidate prompt version."""
    graders = catalog.graders(spec.name)
    candidate_name = (
        f"label {spec.shadow_label!r}" if spec.shadow_label else f"v{spec.shadow_version}"
    )

    @dg.asset(
        key=shadow_comparison_key(spec.name),
        group_name="llm_online",
        owners=[OWNER],
        deps=[online_eval_key(spec.name)],
        kinds={"json"},
        description=f"Shadow run of {spec.prompt} {candidate_name} on the newest "
        f"{spec.shadow_traces} live traces {spec.name} graded: the same questions, retrieved "
        "context and endpoint, graded by the same graders; per grader a paired bootstrap "
        "interval, sign test and power, and promote / keep / needs more traffic.",
    )
    def _shadow(
        context: dg.AssetExecutionContext,
        lake: LakeResource,
        traces: TraceStoreResource,
        prompts: PromptRegistryResource,
        llm: LLMResource,
    ) -> dg.MaterializeResult:
        """Replay the candidate on a sample of live traces, grade its answers with the live
        eval's graders and compare them with the live grades of the same traces."""
        from mallard.evals import online_scores
        from mallard.evals.graders.base import GradeContext
        from mallard.evals.online import grade, gradeable, read_traces
        from mallard.evals.shadow import (
            ShadowRun,
            compare_graded,
            recommend,
            replay,
            save_run,
            shadow_live_pairs,
        )

        settings = lake.settings()
        run_id = context.run.run_id
        candidate, missing = _shadow_candidate(spec, prompts.registry())
        if candidate is None:
            return dg.MaterializeResult(
                metadata={"recommendation": "needs more traffic", "reason": missing}
            )
        live = online_scores.current(online_scores.frame(settings, eval_name=spec.name))
        ids, live_versions = (
            shadow_live_pairs(live, candidate.version, spec.shadow_traces, spec.shadow_endpoints)
            if len(live)
            else ([], [])
        )
        store = traces.store()
        rows: list[dict[str, Any]] = []
        if ids:
            rows, _, _ = gradeable(read_traces(store.table_path, trace_ids=ids), cutoff=None)
        # Replayed calls carry this run's id: recorded as Mallard's own, never graded as live.
        with llm.client(run_id=run_id, semantic_cache=False) as client:
            answers = replay(rows, candidate, client, run_id=run_id)
            ok = [a for a in answers if a["status"] == "ok"]
            ctx = GradeContext(client=client, run_id=run_id, settings=settings)
            shadow_scores = grade(
                spec,
                graders,
                ok,
                ctx,
                run_id=run_id,
                traces_version=None,
                trust=lambda g: _trust(g, ctx, settings),
            )
        comparisons = compare_graded(
            live[live["trace_id"].isin(ids)], shadow_scores, deciding=spec.shadow_decides
        )
        verdict, why = recommend(comparisons)
        result = ShadowRun(
            eval_name=spec.name,
            prompt=candidate.name,
            candidate_version=candidate.version,
            live_versions=live_versions,
            replayed=len(answers),
            errors=len(answers) - len(ok),
            comparisons=comparisons,
            recommendation=verdict,
            reason=why,
            cost_usd=round(sum(float(a.get("cost_usd") or 0) for a in ok), 6),
            run_id=run_id,
            at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        path = save_run(settings, result)
        failures = Counter(a["error"] for a in answers if a["status"] != "ok")
        for error, count in failures.most_common(3):
            context.log.warning(f"{spec.name} shadow: {count} replay(s) failed: {error}")
        context.log.info(f"{spec.name} shadow v{candidate.version}: {verdict} ({why})")
        return dg.MaterializeResult(
            metadata={
                "recommendation": verdict,
                "reason": why,
                "candidate_version": candidate.version,
                "live_versions": dg.MetadataValue.json(live_versions),
                "replayed": result.replayed,
                "replay_errors": result.errors,
                "replay_cost_usd": result.cost_usd,
                "comparisons": dg.MetadataValue.md(
                    markdown_table([_rounded(c.as_dict()) for c in comparisons])
                ),
                "shadow_run": dg.MetadataValue.path(str(path)),
            }
        )

    return _shadow


def _rounded(row: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}


SHADOW_ASSETS = [build_shadow_asset(spec) for spec in ONLINE_EVALS if spec.has_shadow]

# Analytics over production traffic and its grades ------------------------------------------------


def _records(frame: Any, limit: int | None = None) -> list[dict[str, Any]]:
    import math

    rows = frame.head(limit).to_dict("records") if limit else frame.to_dict("records")
    out = []
    for row in rows:
        clean = {}
        for key, value in row.items():
            if hasattr(value, "isoformat"):
                value = value.isoformat()
            elif isinstance(value, float):
                value = None if math.isnan(value) else round(value, 4)
            clean[key] = value
        out.append(clean)
    return out


def trends_plot(trends: Any, path: Path, title: str) -> Path:
    """Daily pass rate per prompt version, one panel per grader."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    graders = sorted(trends["grader"].unique())
    fig, axes = plt.subplots(
        len(graders), 1, figsize=(8, 1.9 * len(graders)), dpi=90, sharex=True, squeeze=False
    )
    for ax, name in zip(axes[:, 0], graders, strict=True):
        part = trends[trends["grader"] == name]
        for (prompt, version), group in part.groupby(["prompt_name", "prompt_version"]):
            passed = (group["pass_rate"] * group["traces"]).groupby(group["period"]).sum()
            total = group.groupby("period")["traces"].sum()
            rate = passed / total
            ax.plot(rate.index, rate.values, marker=".", lw=1, label=f"{prompt} v{version}")
        ax.set_ylim(-0.05, 1.05)
        ax.set_ylabel(name, fontsize=8)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(loc="lower left", fontsize=7)
    axes[0, 0].set_title(title, fontsize=9)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


@dg.asset(
    name="llm_quality_trends",
    group_name="llm_online",
    owners=[OWNER],
    deps=[online_eval_key(spec.name) for spec in ONLINE_EVALS],
    description="Online-eval quality per hour, prompt version, model and grader: pass rate, "
    "mean and median score, low- and high-quality counts; a daily plot per prompt version.",
)
def llm_quality_trends(lake: LakeResource) -> dg.MaterializeResult:
    """Hourly quality trends from online_scores, and the daily pass rate per prompt version."""
    from mallard.evals import online_scores
    from mallard.evals.online_analytics import quality_trends, score_distribution

    settings = lake.settings()
    scores = online_scores.current(online_scores.frame(settings))
    hourly = quality_trends(scores, period="hour")
    daily = quality_trends(scores, period="day")
    metadata: dict[str, Any] = {
        "hours": int(hourly["period"].nunique()),
        "graded_traces": int(scores["trace_id"].nunique()),
        "by_day": dg.MetadataValue.md(markdown_table(_records(daily.tail(60)))),
        "score_distribution": dg.MetadataValue.md(
            markdown_table(_records(score_distribution(scores)))
        ),
    }
    if len(daily):
        last = daily["period"].max()
        plot = trends_plot(
            daily,
            settings.reports_dir / "online_evals" / "trends" / f"daily_{last:%Y%m%d}.png",
            "pass rate per day and prompt version",
        )
        metadata["trends"] = dg.MetadataValue.md(png_markdown(plot, settings, "quality trends"))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    name="llm_model_comparison",
    group_name="llm_online",
    owners=[OWNER],
    deps=[TRACES_ASSET],
    description="Production traffic per endpoint and model: p50/p95/p99 latency, error and "
    "success rates, tokens and cost.",
)
def llm_model_comparison(traces: TraceStoreResource) -> dg.MaterializeResult:
    """Compare the models that served production traffic (Mallard's own calls left out)."""
    from mallard.evals.online_analytics import model_comparison

    table = model_comparison(traces.store().gradeable())
    return dg.MaterializeResult(
        metadata={
            "models": len(table),
            "comparison": dg.MetadataValue.md(markdown_table(_records(table))),
        }
    )


@dg.asset(
    name="llm_costs",
    group_name="llm_online",
    owners=[OWNER],
    deps=[TRACES_ASSET],
    description="Production spend per model, user and prompt version, per day, week and month.",
)
def llm_costs(traces: TraceStoreResource) -> dg.MaterializeResult:
    """Cost per model (daily), prompt version (weekly) and user (monthly, the top 20)."""
    from mallard.evals.online_analytics import costs

    rows = traces.store().gradeable()
    per_model = costs(rows, by="model", period="day")
    per_prompt = costs(rows, by="prompt", period="week")
    per_user = costs(rows, by="user", period="month").sort_values("cost_usd", ascending=False)
    return dg.MaterializeResult(
        metadata={
            "total_cost_usd": round(float(rows["cost_usd"].sum()), 6) if len(rows) else 0.0,
            "per_model_per_day": dg.MetadataValue.md(markdown_table(_records(per_model.tail(60)))),
            "per_prompt_per_week": dg.MetadataValue.md(markdown_table(_records(per_prompt))),
            "top_users_per_month": dg.MetadataValue.md(
                markdown_table(_records(per_user, limit=20))
            ),
        }
    )


ANALYTICS_ASSETS = [llm_quality_trends, llm_model_comparison, llm_costs]


# Alert rules, as checks on the analytics assets ---------------------------------------------------


def build_alert_check(rule: Any) -> dg.AssetChecksDefinition:
    """The asset check of one alert rule: evaluates it as of the newest trace, records and sends
    what fires (deduplicated until its renotify interval), passes when nothing fires."""
    from mallard.evals.online_alerts import TRAFFIC_METRICS

    target = {"error_rate": llm_model_comparison, "latency_p95": llm_model_comparison}.get(
        rule.metric, llm_costs if rule.metric == "cost_per_user" else llm_quality_trends
    )

    @dg.asset_check(
        asset=target,
        name=f"alert_{rule.name}",
        description=rule.description or f"{rule.metric} against {rule.threshold}",
        blocking=False,
    )
    def _alert_check(
        lake: LakeResource, traces: TraceStoreResource, alerts: AlertSinkResource
    ) -> dg.AssetCheckResult:
        from mallard.evals import online_scores
        from mallard.evals.online_alerts import evaluate, notify

        if rule.metric in TRAFFIC_METRICS:
            firings = evaluate(rule, traces=traces.store().gradeable())
        else:
            scores = online_scores.current(online_scores.frame(lake.settings()))
            firings = evaluate(rule, scores=scores)
        sink = alerts.sink()
        outcomes = [notify(sink, rule, f) for f in firings]
        return dg.AssetCheckResult(
            passed=not firings,
            severity=dg.AssetCheckSeverity.ERROR
            if rule.severity == "critical"
            else dg.AssetCheckSeverity.WARN,
            description="; ".join(f.reason for f in firings) or "nothing over the threshold",
            metadata={
                "firing": len(firings),
                "notified": sum(o != "suppressed" for o in outcomes),
                "suppressed": sum(o == "suppressed" for o in outcomes),
                "groups": dg.MetadataValue.json(
                    [{"subject": f.subject, "value": round(f.value, 4)} for f in firings]
                ),
            },
        )

    return _alert_check


ALERT_CHECKS = [build_alert_check(rule) for rule in ALERT_RULES]


def build_budget_check(budget: Any) -> dg.AssetChecksDefinition:
    """The asset check of one spend budget on `llm_costs`: alerts once per scope key, period and
    level reached (80 % and 100 % by default); fails while a key is at or over its limit."""

    @dg.asset_check(
        asset=llm_costs,
        name=f"budget_{budget.name}",
        description=budget.description
        or f"{budget.scope} spend per {budget.period} against ${budget.limit_usd:g}",
        blocking=False,
    )
    def _budget_check(traces: TraceStoreResource, alerts: AlertSinkResource) -> dg.AssetCheckResult:
        from mallard.evals.online_budgets import evaluate_budget, notify_budget

        firings = evaluate_budget(budget, traces.store().gradeable())
        sink = alerts.sink()
        outcomes = [notify_budget(sink, budget, f) for f in firings]
        over = [f for f in firings if f.level >= 1]
        return dg.AssetCheckResult(
            passed=not over,
            severity=dg.AssetCheckSeverity.ERROR if over else dg.AssetCheckSeverity.WARN,
            description="; ".join(f.reason for f in firings) or "every key under its budget",
            metadata={
                "at_or_over_limit": len(over),
                "near_limit": len(firings) - len(over),
                "notified": sum(o != "suppressed" for o in outcomes),
                "suppressed": sum(o == "suppressed" for o in outcomes),
                "keys": dg.MetadataValue.json(
                    [
                        {"subject": f.subject, "spent_usd": round(f.spent_usd, 6), "level": f.level}
                        for f in firings
                    ]
                ),
            },
        )

    return _budget_check


BUDGET_CHECKS = [build_budget_check(budget) for budget in BUDGETS]
