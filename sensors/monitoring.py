"""Sensors of the model loop: drift or decay requests a retrain; a promotion is judged on shadow
outcomes and rolled back if worse."""

import datetime as dt
import json

import dagster as dg

from assets.names import retrain_job
from catalog.monitoring import MONITORED
from resources import AlertSinkResource, LakeResource, MLflowResource


def _retrain_on_drift_or_decay(
    context: dg.SensorEvaluationContext, lake: LakeResource, alerts: AlertSinkResource
):
    """Read new daily monitoring results and decide, per model, whether to retrain."""
    from mallard.monitoring import results
    from mallard.monitoring.alerts import Alert
    from mallard.monitoring.decisions import DayObservation, decide_retrain

    settings = lake.settings()
    sink = alerts.sink()
    cursor = json.loads(context.cursor) if context.cursor else {}
    requests, skipped = [], []
    for mon in MONITORED:
        state = cursor.get(mon.model, {})
        seen_drift = dt.date.fromisoformat(state["drift_day"]) if state.get("drift_day") else None
        seen_perf = dt.date.fromisoformat(state["perf_day"]) if state.get("perf_day") else None
        last_retrain = (
            dt.date.fromisoformat(state["retrain_day"]) if state.get("retrain_day") else None
        )
        drift_rows = results.read(settings, mon.model, "drift", after=seen_drift)
        perf_rows = results.read(settings, mon.model, "performance", after=seen_perf)
        observations = [
            DayObservation(
                r["day"],
                drift_share=r["value"],
                drifted=tuple(sorted(r["details"].get("drifted", {}))),
            )
            for r in drift_rows
            if r["value"] is not None
        ] + [
            DayObservation(
                r["day"],
                auc=r["value"],
                baseline_auc=r["details"].get("baseline"),
                known_on=r["day"] + dt.timedelta(days=mon.label_delay_days),
            )
            for r in perf_rows
            if r["value"] is not None
        ]
        if drift_rows:
            state["drift_day"] = drift_rows[-1]["day"].isoformat()
        if perf_rows:
            state["perf_day"] = perf_rows[-1]["day"].isoformat()
        decision = decide_retrain(
            observations, mon.policy, last_retrain, today=settings.current_date
        )
        if decision.retrain and decision.day is not None:
            state["retrain_day"] = decision.day.isoformat()
            sink.record(
                Alert(
                    decision.trigger or "drift",
                    mon.model,
                    decision.reason,
                    decision.day,
                    details={"action": "retrain requested"},
                )
            )
            requests.append(
                dg.RunRequest(
                    run_key=f"{mon.model}-{decision.day.isoformat()}",
                    job_name=retrain_job(mon.model),
                    tags={
                        "mallard/retrain": mon.model,
                        "mallard/trigger": decision.trigger or "",
                        "mallard/reason": decision.reason[:250],
                        "mallard/day": decision.day.isoformat(),
                    },
                )
            )
        else:
            skipped.append(f"{mon.model}: {decision.reason}")
        cursor[mon.model] = state
    context.update_cursor(json.dumps(cursor, sort_keys=True))
    if requests:
        return requests
    return dg.SkipReason("; ".join(skipped) or "no watched models")


def build_retrain_sensor(jobs: list) -> dg.SensorDefinition:
    """The drift/performance sensor, targeting the retrain_<model> jobs."""
    return dg.sensor(
        name="retrain_on_drift_or_decay",
        description="Requests a retraining run (candidate → evaluation → champion) when a watched "
        "model's drift share or performance drop crosses its threshold, at most once per cooldown.",
        jobs=jobs,
        minimum_interval_seconds=300,
    )(_retrain_on_drift_or_decay)


@dg.sensor(
    name="post_promotion_guard",
    description="After a promotion the previous champion keeps scoring in shadow; once outcomes "
    "arrive, rolls the champion back if it does worse by the model's promotion rule.",
    minimum_interval_seconds=300,
)
def post_promotion_guard(
    context: dg.SensorEvaluationContext, mlflow: MLflowResource, alerts: AlertSinkResource
):
    """Judge each watched model's latest promotion on shadow outcomes; roll back if worse."""
    from catalog.models import MODELS
    from mallard.models.loading import resolve_version
    from mallard.models.registry import RegistryError, history, rollback
    from mallard.monitoring import outcomes as out
    from mallard.monitoring.alerts import Alert
    from mallard.monitoring.guard import judge_promotion

    settings = mlflow.settings()
    cursor = json.loads(context.cursor) if context.cursor else {}
    notes = []
    for mon in MONITORED:
        spec = MODELS.get(mon.model)
        try:
            champion = resolve_version(settings, mon.model)
        except RegistryError:
            notes.append(f"{mon.model}: no champion yet")
            continue
        earlier = [v for v in history(mlflow.client(), mon.model) if v != champion]
        judged = cursor.get(mon.model, {}).get("judged", [])
        if not earlier or champion in judged:
            notes.append(
                f"{mon.model}: v{champion} {'already judged' if earlier else 'has no predecessor'}"
            )
            continue
        frame = out.read_outcomes(settings, mon.model)
        verdict = judge_promotion(
            frame,
            str(champion),
            str(earlier[-1]),
            spec.metric,
            spec.promotion.significance,
            mon.min_outcome_rows,
        )
        if not verdict.judged:
            notes.append(f"{mon.model}: {verdict.reason}")
            continue
        cursor.setdefault(mon.model, {}).setdefault("judged", []).append(champion)
        if verdict.rollback:
            decision = rollback(
                settings, mon.model, earlier[-1], reason=f"post-promotion guard: {verdict.reason}"
            )
            alerts.sink().record(
                Alert("rollback", mon.model, verdict.reason, details=verdict.evidence)
            )
            context.log.warning(
                f"rolled {mon.model} back to v{decision.champion_after}: {verdict.reason}"
            )
        notes.append(f"{mon.model}: {verdict.reason}")
    context.update_cursor(json.dumps(cursor, sort_keys=True))
    return dg.SkipReason("; ".join(notes) or "no watched models")
