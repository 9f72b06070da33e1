#!/usr/bin/env bash
# Installs the Debian packages the integration and deployment tests need, only when missing.
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v kcat >/dev/null 2>&1 || need+=(kcat)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# deploy/: the image is built and run with podman on runc, its base made by mmdebstrap; promtool tests the alerts.
command -v podman >/dev/null 2>&1 || need+=(podman)
{ command -v runc || [ -x /usr/sbin/runc ]; } >/dev/null 2>&1 || need+=(runc)
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# bench/serve.py drives `detector serve` with wrk.
command -v wrk >/dev/null 2>&1 || need+=(wrk)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing Debian packages: ${need[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
