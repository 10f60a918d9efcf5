"""The code location loads, and loads without the heavy libraries."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

ROOT = Path(__file__).resolve().parent.parent
HEAVY = (
    "pycaret",
    "mlflow",
    "evidently",
    "shap",
    "torch",
    "llama_cpp",
    "onnxruntime",
    "dagster_mlflow",
)


def test_definitions_validate() -> None:
    from pipelines.definitions import defs

    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    sources = {
        key.to_user_string()
        for key in graph.get_all_asset_keys()
        if graph.get(key).group_name == "sources"
    }
    assert {
        "customers",
        "usage_events",
        "billing_events",
        "churn_labels",
        "production_traces",
    } <= sources


def test_loading_imports_no_heavy_library(mallard_home: Path) -> None:
    code = (
        "import sys, pipelines.definitions\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert proc.stdout.strip() == ""


def test_dg_check_defs(mallard_home: Path) -> None:
    dg_cli = Path(sys.executable).with_name("dg")
    proc = subprocess.run(
        [str(dg_cli), "check", "defs"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_asset_has_an_owner_and_a_description() -> None:
    """The UI's owner and description columns are never empty (the catalog declares them)."""
    from pipelines.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = [k for k in graph.get_all_asset_keys() if graph.get(k).is_materializable]
    unowned = sorted(k.to_user_string() for k in keys if not graph.get(k).owners)
    undescribed = sorted(k.to_user_string() for k in keys if not graph.get(k).description)
    assert not unowned, f"assets without an owner: {unowned}"
    assert not undescribed, f"assets without a description: {undescribed}"


def test_display_names_are_unique() -> None:
    """The UI names an asset by its last path component: no two share one."""
    from collections import Counter

    from pipelines.definitions import defs

    names = Counter(key.path[-1] for key in defs.resolve_asset_graph().get_all_asset_keys())
    assert not [name for name, n in names.items() if n > 1]
