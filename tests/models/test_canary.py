"""Canary and A/B: the sticky split, the unpaired comparison, its sample size, the decision, and
the canary analysis asset writing that decision where the promotion gate writes its own."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest

from mallard.models.canary import (
    binomial_bounds,
    compare_variants,
    decide_canary,
    entity_key,
    in_challenger,
    required_total,
    split_point,
)
from mallard.models.specs import Canary

MODEL = "churn_classifier"


# -- the split --------------------------------------------------------------------------------------
@pytest.mark.parametrize("share", [0.05, 0.1, 0.3, 0.5])
def test_the_share_lies_within_the_binomial_bound_over_10000_keys(share: float) -> None:
    n = 10_000
    served = sum(in_challenger(MODEL, {"customer_id": i}, share) for i in range(1, n + 1))
    low, high = binomial_bounds(n, share, 0.999)
    assert low <= served <= high, (low, served, high)
    assert low < share * n < high


def test_the_split_is_sticky_and_grows_by_moving_entities_to_the_challenger() -> None:
    keys = [{"customer_id": i} for i in range(2_000)] + [{"account": "a-1", "region": "eu"}]
    first = [in_challenger(MODEL, k, 0.1) for k in keys]
    assert first == [in_challenger(MODEL, k, 0.1) for k in keys]  # the same, every time
    # The key's text is canonical: the order of its fields does not matter.
    assert split_point(MODEL, {"region": "eu", "account": "a-1"}) == split_point(MODEL, keys[-1])
    assert split_point(MODEL, entity_key(keys[-1])) == split_point(MODEL, keys[-1])
    wider = [in_challenger(MODEL, k, 0.2) for k in keys]
    assert all(w for f, w in zip(first, wider, strict=True) if f)  # nobody moves back
    # Another model's split is independent of this one.
    other = [in_challenger("minutes_forecast", k, 0.1) for k in keys[:-1]]
    both = sum(a and b for a, b in zip(first, other, strict=False))
    assert both < 0.05 * len(other)


def test_the_split_is_the_same_in_another_process() -> None:
    import subprocess
    import sys

    code = (
        "from mallard.models.canary import split_point;"
        "print(repr(split_point('churn_classifier', {'customer_id': 42})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert float(out) == split_point(MODEL, {"customer_id": 42})


# -- the comparison -------------------------------------------------------------------------------
def _scores(rng: np.random.Generator, y: np.ndarray, strength: float) -> np.ndarray:
    return 1 / (1 + np.exp(-(strength * (2 * y - 1) + rng.normal(size=len(y)))))


def test_welch_matches_scipy_and_gives_the_textbook_sample_size() -> None:
    from scipy import stats

    rng = np.random.default_rng(0)
    yc, yt = rng.integers(0, 2, 3_000), rng.integers(0, 2, 1_000)
    pc = np.where(rng.random(3_000) < 0.70, yc, 1 - yc)  # 70 % right
    pt = np.where(rng.random(1_000) < 0.74, yt, 1 - yt)  # 74 % right
    result = compare_variants(
        "accuracy", yc, pc, yt, pt, share=0.25, min_effect=0.02, significance=0.05, power=0.8
    )
    assert result.test == "welch"
    reference = stats.ttest_ind((pt == yt).astype(float), (pc == yc).astype(float), equal_var=False)
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-9)
    assert result.difference == pytest.approx((pt == yt).mean() - (pc == yc).mean())
    assert result.ci_low < result.difference < result.ci_high
    # Unpooled two-proportion size at share s: (z + z)² (p1 q1 / (1 − s) + p2 q2 / s) / δ².
    p1, p2 = (pc == yc).mean(), (pt == yt).mean()
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    textbook = (
        z**2 * (p1 * (1 - p1) * 3_000 / 2_999 / 0.75 + p2 * (1 - p2) * 1_000 / 999 / 0.25) / 0.02**2
    )
    assert result.required_total == math.ceil(textbook)
    assert result.required_challenger == math.ceil(result.required_total * 0.25)
    # Lower is better for an error: the difference is oriented so that positive is better.
    values = compare_variants(
        "mae",
        np.zeros(500),
        np.full(500, 3.0),
        np.zeros(200),
        np.full(200, 2.0) + rng.normal(size=200) * 0.1,
        share=0.3,
        min_effect=0.1,
    )
    assert values.difference == pytest.approx(3.0 - values.challenger) and values.difference > 0


def test_required_size_scales_with_the_inverse_square_of_the_effect() -> None:
    small = required_total(
        1e-4, 4e-4, 1_000, 250, share=0.2, min_effect=0.01, significance=0.05, power=0.8
    )
    large = required_total(
        1e-4, 4e-4, 1_000, 250, share=0.2, min_effect=0.02, significance=0.05, power=0.8
    )
    assert small == pytest.approx(4 * large, rel=0.01)
    assert (
        required_total(
            1e-4, 4e-4, 1_000, 250, share=0.2, min_effect=0.01, significance=0.05, power=0.9
        )
        > small
    )


def _groups(seed: int, champion: float, challenger: float, n: int = 3_000, share: float = 0.3):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(float)
    arm = np.array([in_challenger(MODEL, {"customer_id": i}, share) for i in range(n)])
    score = np.where(arm, _scores(rng, y, challenger), _scores(rng, y, champion))
    return y[~arm], score[~arm], y[arm], score[arm]


RULE = Canary(share=0.3, min_effect=0.01, power=0.8, significance=0.05, n_bootstrap=1000)


def _decide(groups, rule: Canary = RULE):
    comparison = compare_variants(
        "auc",
        *groups,
        share=rule.share,
        min_effect=rule.min_effect,
        significance=rule.significance,
        power=rule.power,
        n_bootstrap=rule.n_bootstrap,
    )
    return decide_canary(comparison, rule, champion_version=1, challenger_version=2)


def test_a_planted_lift_is_promoted() -> None:
    decision = _decide(_groups(1, champion=0.6, challenger=1.2))
    c = decision.comparison
    assert decision.action == "promote", decision.reason
    assert c is not None and c.test == "two_sample_bootstrap" and c.ci_low > 0
    assert c.challenger > c.champion and c.n_challenger + c.n_champion == 3_000
    assert "promote" in decision.reason and "CI [" in decision.reason


def test_equal_variants_wait_and_say_how_many_outcomes_are_still_needed() -> None:
    decision = _decide(_groups(2, champion=0.8, challenger=0.8))
    c = decision.comparison
    assert decision.action == "wait", decision.reason
    assert c is not None and c.ci_low < 0 < c.ci_high
    assert c.still_needed > 0 and not c.powered
    assert f"{c.still_needed:,} more outcomes needed" in decision.reason
    assert c.required_total > c.n_champion + c.n_challenger


def test_a_worse_challenger_is_rolled_back_and_a_powered_null_too() -> None:
    worse = _decide(_groups(3, champion=1.2, challenger=0.5))
    assert worse.action == "rollback" and worse.comparison.ci_high < 0  # type: ignore[union-attr]
    # With an effect large enough that the sample is already powered, no lift means roll back.
    futile = _decide(
        _groups(4, champion=0.8, challenger=0.8, n=6_000),
        dataclasses.replace(RULE, min_effect=0.08),
    )
    assert futile.action == "rollback", futile.reason
    assert futile.comparison is not None and futile.comparison.powered
    assert "not better by 0.08" in futile.reason


def test_too_few_outcomes_wait() -> None:
    y = np.array([0.0, 1.0] * 20)
    comparison = compare_variants("auc", y, y * 0.5 + 0.2, y, y * 0.6, share=0.3, min_effect=0.01)
    decision = decide_canary(comparison, RULE, champion_version=1, challenger_version=2)
    assert decision.action == "wait" and "each variant needs 100" in decision.reason
    assert decide_canary(None, RULE, champion_version=1, challenger_version=2).action == "wait"


def test_the_declaration_is_checked() -> None:
    from mallard.specs import DeclarationError

    for bad, field in (
        (Canary(share=0), "canary.share"),
        (Canary(challenger="champion"), "canary.challenger"),
        (Canary(challenger=0), "canary.challenger"),
        (Canary(power=1.0), "canary.power"),
        (Canary(min_effect=0), "canary.min_effect"),
    ):
        with pytest.raises(DeclarationError, match=field):
            bad.check("m", "classification")
    with pytest.raises(DeclarationError, match="canary"):
        Canary().check("m", "clustering")
    Canary(challenger=3, share=0.05).check("m", "regression")


# -- the decision record and the asset --------------------------------------------------------------
@pytest.fixture
def registry_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A home with two registered versions of MODEL: v1 champion, v2 the `challenger` alias."""
    import mlflow
    import mlflow.sklearn
    from sklearn.dummy import DummyClassifier

    from mallard.config import load_settings
    from mallard.models.registry import client, ensure_experiment, set_champion
    from mallard.models.training import quiet

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("MALLARD_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    settings = load_settings(home=home)
    settings.ensure_home()
    c = client(settings)
    experiment = ensure_experiment(settings, MODEL, c)
    for _ in range(2):
        with quiet(), mlflow.start_run(experiment_id=experiment):
            mlflow.sklearn.log_model(
                DummyClassifier().fit([[0], [1]], [0, 1]),
                name="model",
                registered_model_name=MODEL,
                pip_requirements=["scikit-learn"],
                await_registration_for=0,
            )
    set_champion(settings, c, MODEL, 1, action="promote", reason="test")
    c.set_registered_model_alias(MODEL, "challenger", "2")
    return settings


def _live_traffic(settings, champion: float, challenger: float, n: int, share: float) -> Path:
    """API predictions of both variants two weeks ago, and the labels that arrived since."""
    import pandas as pd
    import pyarrow as pa

    from mallard.monitoring.predictions import api_rows, append, prediction_schema

    rng = np.random.default_rng(5)
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=20)
    at = dt.datetime.combine(day, dt.time(9, 30), dt.UTC)
    y = (rng.random(n) < 0.3).astype(int)
    keys = [{"customer_id": int(i)} for i in range(1, n + 1)]
    arm = np.array([in_challenger(MODEL, k, share) for k in keys])
    rows = []
    for variant, version, strength in (
        ("champion", "1", champion),
        ("challenger", "2", challenger),
    ):
        picked = np.flatnonzero(arm == (variant == "challenger"))
        scores = _scores(rng, y[picked].astype(float), strength)
        rows += api_rows(
            [keys[i] for i in picked],
            [{"minutes_7d": 1.0}] * len(picked),
            [float(s > 0.5) for s in scores],
            [float(s) for s in scores],
            timestamp=at,
            model_name=MODEL,
            model_version=version,
            role=variant,
            request_id=f"req-{variant}",
        )
    # The champion also answered the same entities before the canary began: not compared.
    rows += api_rows(
        keys[:50],
        [{}] * 50,
        [0.0] * 50,
        [0.5] * 50,
        timestamp=at - dt.timedelta(days=3),
        model_name=MODEL,
        model_version="1",
        role="champion",
        request_id="req-before",
    )
    append(settings, pa.Table.from_pylist(rows, schema=prediction_schema()))
    labels = pd.DataFrame(
        {
            "customer_id": np.arange(1, n + 1),
            "label_timestamp": pd.Timestamp(day, tz="UTC"),
            "known_at": pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=14),
            "churned_14d": y,
        }
    )
    path = settings.home / "canary_labels.parquet"
    labels.to_parquet(path)
    return path


def _materialize(settings, labels: Path, rule: Canary):
    import dagster as dg

    from assets.canary import build_canary_asset
    from catalog.models import MODELS
    from mallard.features.sources import Source
    from resources import AlertSinkResource, LakeResource, MLflowResource

    spec = dataclasses.replace(MODELS.get(MODEL), metric="auc", canary=rule)
    source = Source("canary_labels", "parquet", str(labels), timestamp_field="label_timestamp")
    asset = build_canary_asset(spec, source, ["customer_id"])
    lake = LakeResource(home=str(settings.home))
    result = dg.materialize(
        [asset],
        resources={"mlflow": MLflowResource(lake=lake), "alerts": AlertSinkResource(lake=lake)},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    return result.asset_materializations_for_node(asset.op.name)[0].metadata


def test_the_asset_promotes_a_planted_lift_where_the_gate_records(registry_home) -> None:
    from mallard.models.registry import client, describe
    from mallard.monitoring.alerts import list_alerts

    settings = registry_home
    labels = _live_traffic(settings, champion=0.5, challenger=1.3, n=3_000, share=0.3)
    metadata = _materialize(settings, labels, dataclasses.replace(RULE, min_outcomes=50))
    assert metadata["decision"].value == "promote", metadata["reason"].value
    assert metadata["champion_outcomes"].value + metadata["challenger_outcomes"].value == 3_000
    assert metadata["test"].value == "two_sample_bootstrap"
    described = describe(settings, MODEL)
    assert described["aliases"]["champion"] == 2 and described["champion_history"] == [1, 2]
    assert described["last_decision"]["action"] == "promote"
    assert described["last_decision"]["reason"].startswith("canary: promote")
    version = client(settings).get_model_version(MODEL, "2")
    assert version.tags["mallard.decision"] == "promote"
    assert version.tags["mallard.canary"] == "promoted"
    alert = list_alerts(settings, kind="promotion", subject=MODEL)[0]
    assert alert.reason == described["last_decision"]["reason"]
    assert alert.details["canary"]["ci_low"] > 0
    # Run again: the canary has ended (the challenger is the champion), nothing is decided.
    again = _materialize(settings, labels, RULE)
    assert again["decision"].value == "none"


def test_the_asset_waits_on_equal_variants_and_rolls_back_a_worse_one(registry_home) -> None:
    from mallard.models.registry import client, describe
    from mallard.monitoring.alerts import list_alerts

    settings = registry_home
    labels = _live_traffic(settings, champion=0.9, challenger=0.9, n=3_000, share=0.3)
    waited = _materialize(settings, labels, dataclasses.replace(RULE, min_outcomes=50))
    assert waited["decision"].value == "wait", waited["reason"].value
    assert waited["outcomes_still_needed"].value > 0
    described = describe(settings, MODEL)
    assert described["aliases"] == {"champion": 1, "challenger": 2}
    assert described["last_decision"]["action"] == "wait"
    assert list_alerts(settings, subject=MODEL) == []

    # The same traffic judged against a large declared effect: powered, no lift — roll back.
    rolled = _materialize(
        settings, labels, dataclasses.replace(RULE, min_outcomes=50, min_effect=0.15)
    )
    assert rolled["decision"].value == "rollback", rolled["reason"].value
    described = describe(settings, MODEL)
    assert described["aliases"] == {"champion": 1}  # the challenger alias is gone
    assert client(settings).get_model_version(MODEL, "2").tags["mallard.canary"] == "rolled_back"
    assert list_alerts(settings, kind="rollback", subject=MODEL)[0].severity == "warning"
