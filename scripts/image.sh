#!/usr/bin/env bash
# Builds the detector image with podman where no Docker engine or registry is reachable (see the README's
# Operations section). The base image is made from Debian packages with mmdebstrap once and cached outside
# the repo; later builds reuse it.
#   scripts/image.sh wheel         the project's wheel in dist/ (the compiled core needs cargo)
#   scripts/image.sh base          the base image localhost/pybase:bookworm (built only when missing)
#   scripts/image.sh build [TAG [TARGET]]   the detector image on that base (default tag below); TARGET
#                                  eightbyeight-double builds compose's 8x8 double instead
#   scripts/image.sh podman ARGS   podman with the runtime settings these machines need
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${SMS_DETECTOR_CACHE:-$HOME/.cache/sms-pumping-detector}"
BASE_IMAGE=localhost/pybase:bookworm
TAG_DEFAULT=localhost/sms-pumping-detector:test
mkdir -p "$CACHE"
# crun and the default ulimits fail in these containers: runc, cgroupfs, no default ulimits.
if [ ! -f "$CACHE/containers.conf" ]; then
  printf '[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = "cgroupfs"\n' >"$CACHE/containers.conf"
fi
export CONTAINERS_CONF="$CACHE/containers.conf"

pod() { podman --runtime runc --cgroup-manager cgroupfs "$@"; }

base() {
  pod image exists "$BASE_IMAGE" && return 0
  local tarball="$CACHE/pybase-bookworm.tar"
  if [ ! -s "$tarball" ]; then
    echo "making the base image with mmdebstrap (about a minute, once)" >&2
    mmdebstrap --quiet --format=tar --variant=minbase --include=python3,python3-venv,ca-certificates bookworm \
      "$tarball.part"
    mv "$tarball.part" "$tarball"
  fi
  pod import --quiet "$tarball" "$BASE_IMAGE" >/dev/null
}

# The project's wheel, compiled core included, into dist/ for the Dockerfile (the host's cargo builds it).
wheel() {
  local python="${PYTHON:-.venv/bin/python}"
  [ -x "$python" ] || python=python3
  rm -f dist/sms_pumping_detector-*.whl
  "$python" -m pip wheel --quiet --no-deps --wheel-dir dist .
}

build() {
  base
  wheel
  # The host's CA bundle reaches the package registry from inside the build.
  pod build --quiet --network=host --pull=never \
    --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
    --build-arg BASE="$BASE_IMAGE" -t "${1:-$TAG_DEFAULT}" ${2:+--target "$2"} -f Dockerfile .
  # Untagged images and layers of this project's builds (by label, never others') older than a day: today's
  # stay as the layer cache, so rebuilds are quick and repeated runs do not fill the disk.
  pod image prune --force --filter label=org.sms-pumping-detector.image --filter until=24h >/dev/null
}

case "${1:-}" in
  base) base ;;
  build) shift; build "$@" ;;
  wheel) wheel ;;
  podman) shift; pod "$@" ;;
  *) echo "usage: $0 base | wheel | build [TAG [TARGET]] | podman ARGS..." >&2; exit 2 ;;
esac
