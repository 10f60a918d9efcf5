"""The API servers benchmarks/serving.py measures, each on uvicorn with one worker on 127.0.0.1.

    python benchmarks/serving_app.py features CONFIG.json PORT   # online features of the bench views
    python benchmarks/serving_app.py predict PORT                # `mallard serve` over MALLARD_HOME

`features`: `mallard.serving.create_app` over the feature-store benchmark's three views (as a
FeatureRegistry of Delta sources), a SQLite online store loaded with them, and the server state
(keys, buckets, audit) of MALLARD_HOME: every request is authenticated and rate limited.
`predict`: exactly `mallard serve`'s app (cli.serve.build_app: the deployment's resources, the
prediction log's durable buffer) serving the churn model of the world benchmarks/serving.py
built.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MODEL = "churn_classifier"


def bench_registry(views: list[dict]):
    """The benchmark's views as Mallard declarations (no ttl: the data is from 2024)."""
    from mallard.features.sources import Source
    from mallard.features.specs import Entity, Feature, FeatureRegistry, FeatureService, FeatureView

    customer = Entity("customer", {"customer_id": "int64"})
    declared = [
        FeatureView(
            name=v["name"],
            entities=[customer],
            sources=[Source(f"{v['name']}_source", "delta", v["path"])],
            sql=f"SELECT * FROM {v['name']}_source",
            features=[Feature(f, "float64") for f in v["features"]],
            ttl=None,
        )
        for v in views
    ]
    service = FeatureService("bench", [f"{v['name']}:*" for v in views])
    return FeatureRegistry(declared, [service])


def features_app(config_path: str):
    from mallard.config import load_settings
    from mallard.features.online import open_online_store
    from mallard.serving import ServingClients, create_app
    from mallard.serving.logs import configure_logging
    from mallard.serving.state import open_server_state

    config = json.loads(Path(config_path).read_text())
    settings = load_settings(home=config["home"])
    configure_logging(settings.serve_log_level)
    state = open_server_state(settings)
    store = open_online_store("sqlite", path=config["store"])

    def close() -> None:
        store.close()
        state.close()

    clients = ServingClients(
        state=state,
        online_store=store,
        feature_registry=bench_registry(config["views"]),
        close=close,
    )
    return create_app(clients, settings)


def predict_app():
    from cli.serve import build_app
    from mallard.serving import ServedModel

    return build_app(
        models=[ServedModel(MODEL, "classification", "warn", "churn_features", "benchmark")]
    )


def main() -> None:
    import uvicorn

    from mallard.serving.logs import log_config

    mode = sys.argv[1]
    if mode == "features":
        app, port = features_app(sys.argv[2]), int(sys.argv[3])
    elif mode == "predict":
        app, port = predict_app(), int(sys.argv[2])
    else:
        raise SystemExit(f"unknown mode {mode!r}: features or predict")
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_config=log_config("info"),
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
