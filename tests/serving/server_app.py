"""The API server the tests run: `mallard serve`'s app over the test world's two served models.

`python tests/serving/server_app.py PORT` runs it on uvicorn on 127.0.0.1 with the server's JSON
logs, exactly as `mallard serve` does with one worker; only the served models differ (the test
world registers `churn_classifier`, strictness warn, `churn_strict`, strictness reject,
`churn_schema`, whose versions change their inputs, and `churn_canary`, with a challenger).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]


# The canary model's challenger: the `challenger` alias, answering 30 % of entities.
CANARY_SHARE = 0.3


def served_models():
    from world import CANARY_MODEL, MODEL, SCHEMA_MODEL, STRICT

    from mallard.models.specs import Canary
    from mallard.serving import ServedModel

    return [
        ServedModel(MODEL, "classification", "warn", "churn_features", "test churn model"),
        ServedModel(STRICT, "classification", "reject", "churn_features", "the same, strict"),
        ServedModel(SCHEMA_MODEL, "classification", "warn", "churn_features", "inputs change"),
        ServedModel(
            CANARY_MODEL,
            "classification",
            "warn",
            "churn_features",
            "with a canary",
            canary=Canary(challenger="challenger", share=CANARY_SHARE),
        ),
    ]


def factory():
    from cli.serve import build_app

    return build_app(models=served_models())


if __name__ == "__main__":
    import uvicorn

    from mallard.serving.logs import log_config

    uvicorn.run(
        "server_app:factory",
        factory=True,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_config=log_config("info"),
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=20,
    )
