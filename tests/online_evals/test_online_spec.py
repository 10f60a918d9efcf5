"""The OnlineEval declaration: bad fields are refused naming the field and the fix; the filter
and the sample decide which traces an eval takes, the same way on every run."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from online_helpers import call

from catalog.graders import GRADERS
from catalog.online_evals import ONLINE_CATALOG, ONLINE_EVALS
from mallard.evals.online import OnlineEval, OnlineEvalCatalog, sample_point
from mallard.specs import DeclarationError


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"sampling_rate": 0}, r"sampling_rate=0 must be within \(0, 1\]"),
        ({"sampling_rate": 1.5}, r"sampling_rate=1.5 must be within \(0, 1\]"),
        ({"sampling_rate": math.nan}, r"sampling_rate=nan"),
        ({"delay": dt.timedelta(seconds=-5)}, r"delay=.* must be ≥ 0.*dt.timedelta\(minutes=5\)"),
        ({"delay": -1}, r"delay=-1 must be ≥ 0"),
        ({"graders": ()}, r"graders is empty"),
        ({"batch_size": 0}, r"batch_size=0 must be an integer ≥ 1"),
        ({"prompt_label": "live"}, r"need prompt=<the prompt's name>"),
        ({"name": "Bad Name"}, r"name='Bad Name' is not a safe identifier"),
        ({"metadata": {1: "x"}}, r"metadata=.* must map attribute names"),
        ({"shadow_endpoints": ("",)}, r"shadow_endpoints=\(''\,\) must be a name or a tuple"),
    ],
)
def test_a_bad_field_is_refused_naming_it(fields, message) -> None:
    with pytest.raises(DeclarationError, match=message):
        OnlineEval(**{"name": "bad", "graders": ("grounding",), **fields})


def test_an_unknown_grader_is_refused_with_the_known_ones() -> None:
    spec = OnlineEval(name="typo", graders=("grounding", "grundedness"))
    with pytest.raises(DeclarationError) as caught:
        OnlineEvalCatalog([spec], GRADERS)
    text = str(caught.value)
    assert "OnlineEval 'typo': graders names 'grundedness'" in text
    assert "declare it in catalog/graders.py" in text and "'grounding'" in text


def test_the_deployments_online_evals_resolve() -> None:
    for spec in ONLINE_EVALS:
        assert [g.name for g in ONLINE_CATALOG.graders(spec.name)] == spec.grader_names


def test_the_sample_is_the_same_on_every_run_and_nested_across_rates() -> None:
    ids = [f"{i:032x}" for i in range(4000)]
    half = OnlineEval(name="half", graders=("grounding",), sampling_rate=0.5)
    tenth = OnlineEval(name="tenth", graders=("grounding",), sampling_rate=0.1)
    picked = [t for t in ids if half.sampled(t)]
    assert picked == [t for t in ids if half.sampled(t)]  # no state, no randomness
    # within 4 standard deviations of the rate
    assert abs(len(picked) - 2000) < 4 * math.sqrt(4000 * 0.25)
    few = {t for t in ids if tenth.sampled(t)}
    assert abs(len(few) - 400) < 4 * math.sqrt(4000 * 0.09)
    assert few <= set(picked)  # raising the rate keeps every trace a lower one picked
    assert all(0 <= sample_point(t) < 1 for t in ids[:100])
    assert sample_point(ids[7]) == sample_point(str(ids[7]))


def test_the_filter_on_prompt_label_model_endpoint_and_metadata() -> None:
    spec = OnlineEval(
        name="narrow",
        graders=("grounding",),
        prompt="support_assistant",
        prompt_label="live",
        models=("gpt-4o-mini",),
        endpoints="openai-gpt-4o-mini",
        metadata={"category": ["billing", "plans"]},
    )
    assert spec.endpoints == ("openai-gpt-4o-mini",)
    row = call(1, attributes={"category": "plans"})
    assert spec.matches(row, label_version=1)
    assert not spec.matches(row, label_version=2)  # `live` points to another version
    assert not spec.matches(row, label_version=None)  # the label points nowhere
    assert not spec.matches({**row, "model": "qwen"}, 1)
    assert not spec.matches({**row, "endpoint": "local-qwen-1.5b"}, 1)
    assert not spec.matches({**row, "prompt_name": "other"}, 1)
    assert not spec.matches(call(1, attributes={"category": "devices"}), 1)
    assert not spec.matches(call(1), 1)  # no such attribute
    assert not spec.matches({**row, "status": "error"}, 1)  # errors only with include_errors
    versions = OnlineEval(
        name="v2", graders=("grounding",), prompt="support_assistant", prompt_versions=(2,)
    )
    assert versions.matches(call(1, prompt_version=2)) and not versions.matches(call(1))
