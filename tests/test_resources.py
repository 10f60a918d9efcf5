"""The resources in both environments.

`local` is embedded: files under MALLARD_HOME. `prod` runs against real servers started here on
127.0.0.1: PostgreSQL as the Dagster instance (deploy/dagster.yaml), Redis as the online store,
an `mlflow server` process, and the scripted OpenAI-compatible server as the LLM endpoint. One
job runs end to end on that instance and each store is read back.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import httpx
import pytest
from sample_dates import TEST_END_DATE

from mallard.config import ConfigError, load_settings
from resources import (
    PROD_VARIABLES,
    LLMResource,
    MLflowResource,
    open_resources,
    resources_for_env,
)

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_local_resources_are_embedded(mallard_home: Path) -> None:
    with open_resources("local") as r:
        settings = r.lake.settings()
        assert settings.home == mallard_home.resolve()
        assert r.mlflow.settings().mlflow_tracking_uri.startswith("sqlite:///")
        assert {e.provider for e in r.llm.endpoints().values()} == {"local", "openai-compatible"}
        with r.duckdb.get_connection() as con:
            assert con.execute("SELECT current_setting('TimeZone')").fetchone() == ("UTC",)
            loaded = con.execute(
                "SELECT loaded FROM duckdb_extensions() WHERE extension_name = 'delta'"
            ).fetchone()
            assert loaded == (True,)
        with r.online_store.open() as store:
            assert store.kind == "sqlite"
        assert Path(store.path).is_relative_to(mallard_home.resolve())
        assert r.traces.store().table_path == settings.lake_dir / "traces"
        assert r.prompts.registry().path.parent == settings.lake_dir
        assert r.alerts.sink().webhook_url is None


def test_local_settings_choose_redis_and_an_llm_server(
    mallard_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MALLARD_ONLINE_STORE", "redis")
    monkeypatch.setenv("MALLARD_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("MALLARD_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    resources = resources_for_env("local")
    assert resources["online_store"].kind == "redis"
    endpoints = resources["llm"].endpoints()
    assert all(e.provider == "openai-compatible" for e in endpoints.values())
    assert endpoints["smollm2-local"].base_url == "http://127.0.0.1:9/v1"
    assert endpoints["smollm2-local"].model == "SmolLM2-135M-Instruct-Q4_1"


def test_a_named_endpoint_is_reached_at_the_url_the_settings_give(
    mallard_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MALLARD_LLM_ENDPOINT_URLS reroutes a declared endpoint (a gateway, a stand-in): its calls
    reach that server with the declared model, and are priced and traced as declared."""
    from mallard.llm.testing import FakeOpenAIServer
    from mallard.traces.store import TraceStore

    with FakeOpenAIServer(model="gpt-4o-mini", reply=lambda body: "Four screens.") as server:
        monkeypatch.setenv(
            "MALLARD_LLM_ENDPOINT_URLS", json.dumps({"openai-gpt-4o-mini": server.base_url})
        )
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
        llm = resources_for_env("local")["llm"]
        endpoints = llm.endpoints()
        routed = endpoints["openai-gpt-4o-mini"]
        assert routed.base_url == server.base_url and routed.fallbacks == ("qwen-1.5b-local",)
        assert endpoints["qwen-1.5b-local"].provider == "local"  # the others stay as declared
        with llm.client(run_id="routed-test", semantic_cache=False) as client:
            answer = client.complete("openai-gpt-4o-mini", "How many screens on Premium?")
    assert answer.text == "Four screens." and answer.endpoint == "openai-gpt-4o-mini"
    assert answer.cost_usd > 0  # the declared price, whatever server answered
    assert [r.body["model"] for r in server.requests] == ["gpt-4o-mini"]
    recorded = TraceStore(load_settings().lake_dir / "traces").arrow().to_pylist()
    assert [(r["endpoint"], r["run_id"]) for r in recorded] == [
        ("openai-gpt-4o-mini", "routed-test")
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{"openai-gpt-4o-mini": "127.0.0.1:4000"}', "127.0.0.1:4000.: must be an http\\(s\\) URL"),
        ("not json", "MALLARD_LLM_ENDPOINT_URLS"),
    ],
)
def test_a_bad_endpoint_url_setting_is_named(
    mallard_home: Path, monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("MALLARD_LLM_ENDPOINT_URLS", value)
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_an_undeclared_endpoint_url_is_refused_naming_the_setting(
    mallard_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MALLARD_LLM_ENDPOINT_URLS", '{"gpt-5": "http://127.0.0.1:4000/v1"}')
    with pytest.raises(KeyError, match="MALLARD_LLM_ENDPOINT_URLS names 'gpt-5'.*declared: "):
        resources_for_env("local")["llm"].endpoints()


def _prod_environment(home: Path) -> dict[str, str]:
    return {
        "MALLARD_HOME": str(home),
        "MALLARD_LAKE_ROOT": str(home / "lake-root"),
        "MALLARD_MLFLOW_TRACKING_URI": "http://127.0.0.1:1",
        "MALLARD_REDIS_URL": "redis://127.0.0.1:1/0",
        "MALLARD_LLM_BASE_URL": "http://127.0.0.1:1/v1",
    }


@pytest.mark.parametrize("variable", sorted(PROD_VARIABLES))
def test_prod_refuses_to_load_without_a_location(
    variable: str, mallard_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in _prod_environment(mallard_home).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MALLARD_ENV", "prod")
    monkeypatch.delenv(variable)
    with pytest.raises(ConfigError) as error:
        resources_for_env()
    assert variable in str(error.value)
    assert sum(name in str(error.value) for name in PROD_VARIABLES) == 1


def test_prod_code_location_stops_loading_naming_the_variable(mallard_home: Path) -> None:
    env = {**os.environ, **_prod_environment(mallard_home), "MALLARD_ENV": "prod"}
    del env["MALLARD_MLFLOW_TRACKING_URI"]
    proc = subprocess.run(
        [sys.executable, "-c", "import pipelines.definitions"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "MALLARD_MLFLOW_TRACKING_URI" in proc.stderr.splitlines()[-1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real `mlflow server` (SQLite backend, served artifacts) on 127.0.0.1."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    binary = Path(sys.executable).with_name("mlflow")
    process = subprocess.Popen(
        [
            str(binary),
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail("mlflow server did not start")
        time.sleep(0.5)
    yield url
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture
def prod(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    postgres_dsn: str,
    redis_url: str,
    mlflow_server: str,
    sample_world,
):
    """MALLARD_ENV=prod against the servers, with a Dagster instance in PostgreSQL."""
    from mallard.llm.testing import FakeOpenAIServer

    home = tmp_path / "home"
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    shutil.copy(ROOT / "deploy" / "dagster.yaml", dagster_home / "dagster.yaml")
    _, world_dir, _ = sample_world
    shutil.copytree(world_dir, home / "sample")
    pg = dict(part.split("=") for part in postgres_dsn.split())
    with FakeOpenAIServer(reply=lambda body: "served by the LLM server") as server:
        environment = {
            **_prod_environment(home),
            "MALLARD_ENV": "prod",
            "MALLARD_END_DATE": TEST_END_DATE.isoformat(),
            "DAGSTER_HOME": str(dagster_home),
            "MALLARD_MLFLOW_TRACKING_URI": mlflow_server,
            "MALLARD_REDIS_URL": redis_url,
            "MALLARD_LLM_BASE_URL": server.base_url,
            "MALLARD_PG_HOST": pg["host"],
            "MALLARD_PG_PORT": pg["port"],
            "MALLARD_PG_USER": pg["user"],
            "MALLARD_PG_PASSWORD": "",
            "MALLARD_PG_DB": pg["dbname"],
        }
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        yield environment, server


def test_prod_job_writes_redis_mlflow_and_postgres(prod) -> None:
    """Features into the lake root, the online store into Redis, a run into the MLflow server and
    an answer from the LLM server, in one job whose events are read back from PostgreSQL."""
    import psycopg2
    import redis

    from assets.features import FEATURE_VIEW_ASSETS, online_store
    from assets.sources import SOURCE_ASSETS
    from resources import end_mlflow_on_run_finished

    environment, server = prod
    view = next(a for a in FEATURE_VIEW_ASSETS if a.key.to_user_string() == "usage_7d")
    sources = [a for a in SOURCE_ASSETS if a.key in view.dependency_keys]

    @dg.asset(deps=[online_store])
    def prod_probe(mlflow: MLflowResource, llm: LLMResource) -> dg.MaterializeResult:
        """Logs a run to the tracking server and asks the LLM server one question."""
        import mlflow as mlflow_api

        client = mlflow.client()
        experiment = client.create_experiment("prod-probe")
        with mlflow_api.start_run(experiment_id=experiment) as run:
            mlflow_api.log_metric("answer_length", 1.0)
        with llm.client(run_id="prod-probe") as chat:
            reply = chat.complete("smollm2-local", "Which server answers?")
        return dg.MaterializeResult(metadata={"mlflow_run": run.info.run_id, "reply": reply.text})

    defs = dg.Definitions(
        assets=[*sources, view, online_store, prod_probe],
        jobs=[
            dg.define_asset_job(
                "prod_smoke",
                selection=[online_store.key, prod_probe.key],
                hooks={end_mlflow_on_run_finished},
            )
        ],
        resources=resources_for_env(),
    )
    day = dt.date(2026, 6, 28)
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert instance.run_monitoring_enabled
        # The features the job reads: the view's sources, then one day of the view.
        for selection, partition in ((sources, None), ([view], day.isoformat())):
            setup = dg.materialize(
                selection, instance=instance, resources=defs.resources, partition_key=partition
            )
            assert setup.success
        result = defs.resolve_job_def("prod_smoke").execute_in_process(instance=instance)
        assert result.success
        run_id = result.run_id
        probe = instance.get_latest_materialization_event(dg.AssetKey("prod_probe"))
        assert probe is not None and probe.run_id == run_id
        metadata = probe.asset_materialization.metadata
        assert metadata["reply"].value == "served by the LLM server"

    # Events are in PostgreSQL.
    with (
        psycopg2.connect(
            host=environment["MALLARD_PG_HOST"],
            port=environment["MALLARD_PG_PORT"],
            user=environment["MALLARD_PG_USER"],
            dbname=environment["MALLARD_PG_DB"],
        ) as con,
        con.cursor() as cur,
    ):
        cur.execute("SELECT count(*) FROM event_logs WHERE run_id = %s", (run_id,))
        assert cur.fetchone()[0] > 5
        cur.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,))
        assert cur.fetchone()[0] == "SUCCESS"

    # The online store is Redis, and the features were written under the lake root.
    keys = redis.Redis.from_url(environment["MALLARD_REDIS_URL"]).keys("mallard:*")
    assert len(keys) > 100
    assert any((Path(environment["MALLARD_LAKE_ROOT"]) / "features").rglob("_delta_log"))

    # The run is on the tracking server, finished.
    from mlflow import MlflowClient

    run = MlflowClient(tracking_uri=environment["MALLARD_MLFLOW_TRACKING_URI"]).get_run(
        metadata["mlflow_run"].value
    )
    assert run.info.status == "FINISHED" and run.data.metrics["answer_length"] == 1.0

    # The LLM server was asked for the declared model, not a local file.
    assert [r.body["model"] for r in server.requests] == ["SmolLM2-135M-Instruct-Q4_1"]
