"""Drift reports on bounded samples: the right features flagged, bad inputs explained."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mallard.monitoring.drift import DriftConfig, DriftInputError, drift_report


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(3)
    n = 20_000
    reference = pd.DataFrame(
        {
            "minutes": rng.gamma(2.0, 40.0, n),
            "errors": rng.poisson(0.2, n).astype(float),
            "tenure": rng.integers(1, 700, n).astype(float),
            "plan": rng.choice(["basic", "standard", "premium"], n),
        }
    )
    current = reference.sample(frac=1.0, random_state=1).reset_index(drop=True).copy()
    current["errors"] = rng.poisson(1.5, n).astype(float)  # shifted
    current["plan"] = rng.choice(["basic", "standard", "premium"], n, p=[0.2, 0.3, 0.5])  # shifted
    return reference, current


def test_flags_exactly_the_shifted_features(frames, tmp_path: Path) -> None:
    reference, current = frames
    result = drift_report(
        reference, current, ["minutes", "errors", "tenure"], ["plan"], html_path=tmp_path / "r.html"
    )
    assert set(result.drifted) == {"errors", "plan"}
    assert result.share_drifted == pytest.approx(0.5)
    assert result.rows_compared == 5_000  # sampled
    assert (tmp_path / "r.html").stat().st_size > 10_000


def test_same_distribution_is_not_flagged(frames) -> None:
    reference, _ = frames
    half = len(reference) // 2
    result = drift_report(
        reference.iloc[:half], reference.iloc[half:], ["minutes", "errors", "tenure"], ["plan"]
    )
    assert result.drifted == {}


def test_per_column_method_and_threshold_apply(frames) -> None:
    reference, current = frames
    config = DriftConfig(
        per_column_method={"minutes": "psi"}, per_column_threshold={"errors": 10.0}
    )
    result = drift_report(reference, current, ["minutes", "errors"], [], config)
    by_name = {c.column: c for c in result.columns}
    assert by_name["minutes"].method.lower().startswith("psi")
    assert not by_name["errors"].drifted and by_name["errors"].threshold == 10.0


def test_bad_inputs_are_explained(frames) -> None:
    reference, current = frames
    with pytest.raises(DriftInputError, match="current data has no rows"):
        drift_report(reference, current.iloc[:0], ["minutes"], [])
    constant = reference.assign(tenure=5.0)
    result = drift_report(
        constant, current.drop(columns=["minutes"]), ["minutes", "errors", "tenure"], []
    )
    assert "feature 'minutes' is missing from the current data" in result.problems
    assert (
        "feature 'tenure' has a single value in the reference: drift cannot be scored on it"
        in result.problems
    )
    assert [c.column for c in result.columns] == ["errors"]
