"""The LLM assets: light to import, and materialized on a test instance."""

from __future__ import annotations

import json
import subprocess
import sys

import dagster as dg
from tests_paths import ROOT


def test_module_imports_no_heavy_library():
    code = (
        "import sys, assets.llm, catalog.llm, catalog.chains; "
        "print(json.dumps(sorted(m for m in ('openai', 'llama_cpp', 'onnxruntime', 'tokenizers', 'deltalake', "
        "'prometheus_client', 'jsonschema', 'httpx') if m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", "import json; " + code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [
        m for m in ["httpx"] if m in out.stdout
    ]


def test_asset_definitions():
    from assets.llm import LLM_ASSETS, prompt_versions, support_assistant_demo

    assert [a.key.to_user_string() for a in LLM_ASSETS] == [
        "prompt_versions",
        "support_assistant_demo",
    ]
    assert prompt_versions.group_names_by_key[prompt_versions.key] == "llm"
    spec = next(iter(support_assistant_demo.specs))
    assert support_assistant_demo.op.pool == "local_llm" and prompt_versions.key in {
        d.asset_key for d in spec.deps
    }
    assert prompt_versions.code_versions_by_key[prompt_versions.key]


def test_materialize_prompts_and_demo(settings, monkeypatch):
    from assets.llm import prompt_versions, support_assistant_demo
    from mallard.llm import embeddings
    from mallard.llm.prompts import PromptRegistry
    from mallard.llm.testing import HashingEmbedder
    from resources import resources_for_env

    monkeypatch.setattr(
        embeddings, "default_embedder", lambda: HashingEmbedder()
    )  # MiniLM over 39 articles is slow here
    resources = resources_for_env()
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [prompt_versions, support_assistant_demo],
            resources=resources,
            instance=instance,
            run_config={"ops": {"support_assistant_demo": {"config": {"questions": 1}}}},
        )
        assert result.success
        meta = result.asset_materializations_for_node("prompt_versions")[0].metadata
        assert meta["new_versions"].value == 2
        assert meta["labels"].data == {"support_assistant": {"live": 1, "staging": 2}}
        demo = result.asset_materializations_for_node("support_assistant_demo")[0].metadata
        assert (
            demo["ok"].value == 1
            and demo["prompt_tokens"].value > 100
            and demo["cost_usd"].value == 0.0
        )
        assert demo["answers"].value.records[0].data["answer"]
        again = dg.materialize([prompt_versions], resources=resources, instance=instance)
        assert (
            again.asset_materializations_for_node("prompt_versions")[0]
            .metadata["new_versions"]
            .value
            == 0
        )
    assert PromptRegistry.default(settings).labels("support_assistant") == {"live": 1, "staging": 2}
