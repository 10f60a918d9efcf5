"""The post-promotion guard on a real MLflow registry, real outcome tables and a Dagster sensor tick.

A promotion is constructed (v1 champion, then v2), both versions' shadow-scored outcomes are
written with the real writer, and the guard judges: it rolls back a new champion that is worse
beyond chance, keeps one that is not, and waits while too few outcomes are known.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from mallard.config import load_settings
from resources import resources_for_env
from sensors.monitoring import post_promotion_guard

MODEL = "churn_classifier"
FIRST_DAY = dt.date(2026, 5, 20)


@pytest.fixture
def promoted(mallard_home: Path):
    """churn_classifier with champion history v1 → v2 in a fresh MLflow SQLite registry."""
    from mallard.models.registry import client, ensure_experiment, set_champion

    settings = load_settings()
    c = client(settings)
    experiment = ensure_experiment(settings, MODEL, c)
    c.create_registered_model(MODEL)
    for version in (1, 2):
        run = c.create_run(experiment)
        c.create_model_version(MODEL, f"{run.info.artifact_uri}/model", run.info.run_id)
        set_champion(
            settings, c, MODEL, version, action="promote", reason=f"constructed v{version}"
        )
    return settings


def _write_outcomes(settings, *, good: str, days: int = 3, rows_per_day: int = 400) -> None:
    """Champion v2 and shadow v1 scored the same entities; `good` names the informative one."""
    from mallard.monitoring.outcomes import replace_outcomes

    rng = np.random.default_rng(3)
    for offset in range(days):
        day = FIRST_DAY + dt.timedelta(days=offset)
        labels = rng.random(rows_per_day) < 0.3
        informative = np.clip(labels * 0.5 + rng.random(rows_per_day) * 0.6, 0, 1)
        noise = rng.random(rows_per_day)
        frames = []
        for version, role in (("2", "champion"), ("1", "shadow")):
            scores = informative if version == good else noise
            frames.append(
                pd.DataFrame(
                    {
                        "entity_key": [json.dumps({"customer_id": i}) for i in range(rows_per_day)],
                        "timestamp": pd.Timestamp(day, tz="UTC"),
                        "day": day,
                        "model_name": MODEL,
                        "model_version": version,
                        "role": role,
                        "prediction": (scores > 0.5).astype(float),
                        "score": scores,
                        "label": labels.astype(float),
                    }
                )
            )
        replace_outcomes(settings, pd.concat(frames), MODEL, day)


def _tick(settings, cursor: str | None = None):
    instance = dg.DagsterInstance.ephemeral()
    try:
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, resources=resources_for_env()
        ) as context:
            return post_promotion_guard.evaluate_tick(context)
    finally:
        instance.dispose()


def _champion(settings) -> int:
    from mallard.models.registry import CHAMPION, client, version_for_alias

    return int(version_for_alias(client(settings), MODEL, CHAMPION).version)


def test_a_worse_new_champion_is_rolled_back_and_alerted(promoted) -> None:
    from mallard.models.registry import client
    from mallard.monitoring.alerts import list_alerts

    settings = promoted
    _write_outcomes(settings, good="1")
    result = _tick(settings)

    assert _champion(settings) == 1
    assert "entirely below 0" in result.skip_message
    decision = json.loads(
        client(settings).get_registered_model(MODEL).tags["mallard.last_decision"]
    )
    assert decision["action"] == "rollback" and "post-promotion guard" in decision["reason"]
    alerts = list_alerts(settings, kind="rollback", subject=MODEL)
    assert len(alerts) == 1 and "v2 auc" in alerts[0].reason
    assert json.loads(result.cursor)[MODEL]["judged"] == [2]

    # The next tick has nothing to judge: v1 has no predecessor in the (truncated) history.
    again = _tick(settings, result.cursor)
    assert "no predecessor" in again.skip_message and _champion(settings) == 1
    assert len(list_alerts(settings, kind="rollback")) == 1


def test_a_new_champion_that_is_not_worse_holds(promoted) -> None:
    from mallard.monitoring.alerts import list_alerts

    settings = promoted
    _write_outcomes(settings, good="2")
    result = _tick(settings)
    assert _champion(settings) == 2
    assert "v2 holds" in result.skip_message
    assert list_alerts(settings, kind="rollback") == []
    assert "already judged" in _tick(settings, result.cursor).skip_message


def test_the_guard_waits_for_enough_outcomes(promoted) -> None:
    settings = promoted
    _write_outcomes(settings, good="1", days=1, rows_per_day=100)
    result = _tick(settings)
    assert "waiting for outcomes: 100 of 500" in result.skip_message
    assert _champion(settings) == 2
    assert MODEL not in json.loads(result.cursor)
