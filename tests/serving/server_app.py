"""The API server the tests run: `mallard serve`'s app over the test world's two served models.

`python tests/serving/server_app.py PORT` runs it on uvicorn on 127.0.0.1 with the server's JSON
logs, exactly as `mallard serve` does with one worker; only the served models differ (the test
world registers `churn_classifier`, strictness warn, and `churn_strict`, strictness reject).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]


def factory():
    from world import MODEL, STRICT

    from cli.serve import build_app
    from mallard.serving import ServedModel

    return build_app(
        models=[
            ServedModel(MODEL, "classification", "warn", "churn_features", "test churn model"),
            ServedModel(STRICT, "classification", "reject", "churn_features", "the same, strict"),
        ]
    )


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
