"""Structural mistakes in feature declarations fail at load with the view and field named."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from catalog.features import customer, usage_7d
from catalog.sources import usage_events
from mallard.features.specs import Entity, Feature, FeatureRegistry, FeatureService, FeatureView
from mallard.specs import DeclarationError

ROOT = Path(__file__).resolve().parents[2]


def _view(**changes) -> FeatureView:
    fields = dict(
        name="v",
        entities=[customer],
        sources=[usage_events],
        sql="WITH e AS (SELECT * FROM usage_events) SELECT 1 FROM e",
        features=[Feature("a", "int64")],
        ttl=dt.timedelta(days=1),
    )
    fields.update(changes)
    return FeatureView(**fields)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "Bad-Name"}, "FeatureView: name='Bad-Name' is not a safe identifier"),
        (
            {"features": [Feature("a", "int64"), Feature("a", "float64")]},
            "FeatureView 'v': feature 'a' is declared twice",
        ),
        ({"features": [Feature("drop table", "int64")]}, "FeatureView 'v': features='drop table'"),
        ({"features": [Feature("a", "decimal")]}, "feature 'a' has type 'decimal'"),
        ({"features": [Feature("customer_id", "int64")]}, "feature 'customer_id' collides"),
        ({"entities": ["customer"]}, "entities holds 'customer', which is not an Entity"),
        ({"ttl": dt.timedelta(days=-1)}, "ttl must be ≥ 0"),
        (
            {"sources": ["usage_events_v2"]},
            "sources holds 'usage_events_v2', which is not a Source",
        ),
        ({"sources": "usage_events"}, "sources must be a list of at least one Source"),
        ({"features": ["a"]}, "features holds 'a', which is not a Feature"),
        (
            {"sql": "SELECT * FROM usage_events_v2 JOIN usage_events USING (customer_id)"},
            "sql reads 'usage_events_v2', which is not among its sources (usage_events)",
        ),
        ({"sql": "SELEKT 1"}, "sql does not parse"),
    ],
)
def test_bad_view_is_named(changes, message) -> None:
    with pytest.raises(DeclarationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _view(**changes)


def test_entity_key_types() -> None:
    with pytest.raises(DeclarationError, match="join key 'id' has type 'float64'"):
        Entity("thing", {"id": "float64"})


def test_service_naming_a_missing_feature_fails() -> None:
    with pytest.raises(DeclarationError, match="FeatureService 'svc'.*no feature 'nope'"):
        FeatureRegistry([usage_7d], [FeatureService("svc", ["usage_7d:nope"])])
    with pytest.raises(DeclarationError, match="unknown view 'ghost'"):
        FeatureRegistry([usage_7d], [FeatureService("svc", ["ghost:*"])])


def test_version_hash_follows_the_definition() -> None:
    same = _view()
    assert same.version_hash == _view().version_hash
    assert _view(sql="SELECT 2").version_hash != same.version_hash
    assert _view(features=[Feature("b", "int64")]).version_hash != same.version_hash
    assert _view(description="words only").version_hash == same.version_hash


def test_code_location_fails_to_load_on_a_bad_declaration(tmp_path: Path) -> None:
    """A broken catalog stops the code location with the view and field in the message."""
    code = (
        "import catalog.features as f\n"
        "from mallard.features.specs import Feature, FeatureView\n"
        "f.FEATURE_VIEWS.append(FeatureView(name='dupes', entities=[f.customer], sources=[f.usage_events],"
        " sql='select 1', features=[Feature('x','int64'), Feature('x','int64')]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MALLARD_HOME": str(tmp_path)},
    )
    assert proc.returncode != 0
    assert "FeatureView 'dupes': feature 'x' is declared twice" in proc.stderr
