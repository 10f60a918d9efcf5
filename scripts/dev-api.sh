#!/usr/bin/env bash
# `make dev`'s API server: `mallard serve` on MALLARD_SERVE_HOST:MALLARD_SERVE_PORT (127.0.0.1:8000),
# which serves MALLARD_HOME/reports read-only at /reports — the plots and Evidently reports the
# Dagster UI shows and links to. Started in the background beside the Dagster UI; it stops when
# the process named by MALLARD_DEV_PARENT (make, or the caller) ends, whichever way it ends.
#
#   MALLARD_DEV_PARENT=$PPID bash scripts/dev-api.sh      # from a make recipe
#
# If something already listens on the port (`make serve` in another terminal), it is left alone.
set -euo pipefail
host=${MALLARD_SERVE_HOST:-127.0.0.1}
port=${MALLARD_SERVE_PORT:-8000}
parent=${MALLARD_DEV_PARENT:-$PPID}
probe=$host
[ "$probe" = "0.0.0.0" ] && probe=127.0.0.1
if (exec 3<>"/dev/tcp/$probe/$port") 2>/dev/null; then
  echo "[dev] port $port is in use (make serve?): plots and reports at http://$probe:$port/reports/ from there"
  exit 0
fi
log_dir=${MALLARD_HOME:-.mallard}/logs
mkdir -p "$log_dir"
log=$log_dir/dev-api.log
mallard serve >"$log" 2>&1 &
server=$!
# The watchdog: when the parent is gone, stop the server (SIGTERM: uvicorn shuts down cleanly).
(
  while kill -0 "$parent" 2>/dev/null && kill -0 "$server" 2>/dev/null; do sleep 1; done
  kill -TERM "$server" 2>/dev/null || true
) >/dev/null 2>&1 &
echo "[dev] API on http://$probe:$port (plots and reports at /reports/; log $log)"
