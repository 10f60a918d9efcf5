"""A MALLARD_HOME can be moved, or backed up and restored elsewhere, with its MLflow store."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from mallard.config import load_settings
from mallard.models import registry
from mallard.models.loading import load_json_artifact, load_version


def _log_version(settings, model: str) -> tuple[int, str]:
    """A small model logged and registered the way training does, then made champion."""
    import mlflow
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    c = registry.client(settings)
    experiment = registry.ensure_experiment(settings, model, c)
    rng = np.random.default_rng(7)
    x = rng.random((40, 2))
    fitted = LogisticRegression().fit(x, (x[:, 0] > 0.5).astype(int))
    with mlflow.start_run(experiment_id=experiment):
        mlflow.log_dict(
            {"features": ["a", "b"], "categorical": [], "label": "y", "task": "classification"},
            "model_inputs.json",
        )
        example = pd.DataFrame(x[:5], columns=["a", "b"])
        info = mlflow.sklearn.log_model(
            fitted,
            name="model",
            serialization_format="cloudpickle",
            input_example=example,
            registered_model_name=model,
            pip_requirements=["scikit-learn"],
            await_registration_for=0,
        )
    version = int(info.registered_model_version)
    decision = registry.set_champion(settings, c, model, version, action="promote", reason="probe")
    return version, decision.run_id


def _rows_mentioning(database: Path, text: str) -> list[str]:
    """Every table.column of the MLflow database with a value containing `text`."""
    found = []
    with sqlite3.connect(database) as con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for column in [r[1] for r in con.execute(f"PRAGMA table_info('{table}')")]:
                hits = con.execute(
                    f"SELECT count(*) FROM '{table}' WHERE CAST(\"{column}\" AS TEXT) LIKE ?",
                    (f"%{text}%",),
                ).fetchone()[0]
                if hits:
                    found.append(f"{table}.{column}")
    return found


def test_a_moved_home_loads_its_models_and_artifacts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = tmp_path / "old-home", tmp_path / "restored" / "home"
    monkeypatch.delenv("MALLARD_MLFLOW_TRACKING_URI", raising=False)
    before = load_settings(home=old)
    version, decision_run = _log_version(before, "move_probe")
    model = load_version(before, "move_probe", version)
    expected = model.pipeline.predict(_frame())

    shutil.copytree(old, new)  # a backup restored elsewhere …
    shutil.rmtree(old)  # … of a home that is gone
    after = load_settings(home=new)
    assert after.mlflow_tracking_uri == f"sqlite:///{new / 'mlflow' / 'mlflow.db'}"

    restored = load_version(after, "move_probe", version)
    assert list(restored.pipeline.predict(_frame())) == list(expected)
    decision = load_json_artifact(after, decision_run, "decision.json")
    assert decision is not None and decision["version"] == version
    c = registry.client(after)
    run = c.get_run(restored.run_id)
    assert run.info.artifact_uri.startswith((new / "mlflow" / "artifacts").as_uri())
    assert {a.path for a in c.list_artifacts(restored.run_id)} >= {"model_inputs.json"}
    assert _rows_mentioning(new / "mlflow" / "mlflow.db", str(old)) == []
    # New runs land in the restored home too.
    assert not old.exists()
    _log_version(after, "move_probe")
    assert not old.exists()


def _frame():
    import pandas as pd

    return pd.DataFrame({"a": [0.1, 0.9, 0.4], "b": [0.5, 0.5, 0.2]})
