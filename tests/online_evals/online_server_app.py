"""The API server the online-eval tests run: `mallard serve`'s app (cli.serve.build_app)
serving no model.

    python tests/online_evals/online_server_app.py PORT
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> None:
    import uvicorn

    from cli.serve import build_app
    from mallard.serving.logs import log_config

    uvicorn.run(
        build_app(models=[]),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_config=log_config("warning"),
        access_log=False,
    )


if __name__ == "__main__":
    main()
