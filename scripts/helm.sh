#!/usr/bin/env bash
# Prints the path of a helm binary, building Helm from the Go module proxy the first time (a few minutes;
# then cached outside the repo). `scripts/helm.sh --run ARGS` runs it instead.
set -euo pipefail
VERSION=v3.16.4
CACHE="${SMS_DETECTOR_CACHE:-$HOME/.cache/sms-pumping-detector}"
helm_bin=""
if command -v helm >/dev/null 2>&1 && helm version --template '{{.Version}}' 2>/dev/null | grep -q '^v3\.'; then
  helm_bin="$(command -v helm)"
elif [ -x "$CACHE/bin/helm" ]; then
  helm_bin="$CACHE/bin/helm"
else
  go_bin="$(command -v go || true)"
  [ -n "$go_bin" ] || [ ! -x /usr/local/go/bin/go ] || go_bin=/usr/local/go/bin/go
  [ -n "$go_bin" ] || { echo "helm is missing and so is Go to build it (go install)" >&2; exit 1; }
  echo "building helm $VERSION with go install (once)" >&2
  mkdir -p "$CACHE/bin"
  GOBIN="$CACHE/bin" GOFLAGS=-mod=mod "$go_bin" install "helm.sh/helm/v3/cmd/helm@$VERSION" >&2
  helm_bin="$CACHE/bin/helm"
fi
if [ "${1:-}" = "--run" ]; then
  shift
  exec "$helm_bin" "$@"
fi
echo "$helm_bin"
