#!/usr/bin/env bash
# Install the servers Mallard's tests run on 127.0.0.1 (Redis, PostgreSQL), and the browser the UI
# test drives (Chromium and its WebDriver), and promtool (Debian's `prometheus`), from Debian's
# packages, if missing.
# The tests start and stop them themselves; nothing here starts a service. The browser is Debian's
# `chromium`, never one a tool downloads.
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)  # promtool checks deploy/prometheus/
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "Mallard's tests need: ${need[*]} (Debian packages). Install them with sudo apt-get install ${need[*]}." >&2
  exit 1
fi
echo "Installing ${need[*]} from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts services it installs where it can; the tests run their own on free ports.
service redis-server stop >/dev/null 2>&1 || true
service postgresql stop >/dev/null 2>&1 || true
service prometheus stop >/dev/null 2>&1 || true
