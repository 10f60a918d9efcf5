"""The API server the trace tests run: `mallard serve`'s app (cli.serve.build_app) serving no
model, with the trace buffer's flush interval and capacity set for the test.

    python tests/traces/trace_server_app.py PORT [--flush-s S] [--flush-rows N] [--max-pending N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> None:
    import uvicorn

    from cli.serve import build_app
    from mallard.config import get_settings
    from mallard.serving.logs import log_config
    from mallard.traces.store import trace_store

    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--flush-s", type=float, default=0.2)
    parser.add_argument("--flush-rows", type=int, default=5000)
    parser.add_argument("--max-pending", type=int, default=100_000)
    args = parser.parse_args()
    app = build_app(models=[])
    settings = get_settings()
    clients = app.state.services.clients
    clients.traces = trace_store(settings).buffer(
        settings.buffers_dir / "traces",
        flush_rows=args.flush_rows,
        flush_interval_s=args.flush_s,
        max_pending_rows=args.max_pending,
    )
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_config=log_config("warning"),
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=20,
    )


if __name__ == "__main__":
    main()
