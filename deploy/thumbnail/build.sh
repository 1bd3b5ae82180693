#!/usr/bin/env bash
# Builds the thumbnail bundle's three images (compose.yaml) with podman or docker:
#   - switchyard:latest and switchyard-thumbnail:latest with deploy/image/build.sh (FROM
#     scratch, from this machine's cargo build);
#   - switchyard-moto:latest from deploy/thumbnail/moto.Dockerfile.
#
#   deploy/thumbnail/build.sh [--engine podman|docker] [--bin-dir DIR] [--local-base]
#
# --bin-dir: a folder with switchyard, thumbnail and event-display already built (otherwise
# they are built in release mode). --local-base: moto's image is built on a Debian bookworm
# made here with debootstrap (as root; kept as localhost/switchyard-debian-python:bookworm
# and made once), for machines that reach Debian's and PyPI's packages but no image
# registry. That base trusts the CA certificates this machine trusts, so pip works behind a
# TLS-inspecting proxy too.
# The tags can be changed with SWITCHYARD_IMAGE, THUMBNAIL_IMAGE and MOTO_IMAGE, which
# compose.yaml reads too.
# Linux, bash 4.4 or later.
set -euo pipefail
usage="usage: $0 [--engine podman|docker] [--bin-dir DIR] [--local-base]"
engine=
bin_dir=
local_base=0
while [ $# -gt 0 ]; do
  case "$1" in
    --engine | --bin-dir) [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; } ;;
  esac
  case "$1" in
    --engine) engine=$2; shift 2 ;;
    # Relative to where the script was run from.
    --bin-dir) bin_dir=$(CDPATH='' cd -- "$2" >/dev/null && pwd); shift 2 ;;
    --local-base) local_base=1; shift ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
CDPATH='' cd -- "$(dirname "$0")/../.." >/dev/null
if [ -z "$engine" ]; then
  if command -v podman >/dev/null; then engine=podman; else engine=docker; fi
fi
switchyard_image=${SWITCHYARD_IMAGE:-switchyard:latest}
thumbnail_image=${THUMBNAIL_IMAGE:-switchyard-thumbnail:latest}
moto_image=${MOTO_IMAGE:-switchyard-moto:latest}
# Each image its own root filesystem folder, so that two builds at once do not meet.
suffix=$(printf '%s' "$switchyard_image$thumbnail_image" | md5sum | cut -c1-8)
bins=()
[ -n "$bin_dir" ] && bins=(--bin-dir "$bin_dir")

deploy/image/build.sh switchyard --engine "$engine" --tag "$switchyard_image" "${bins[@]}" \
  --rootfs "target/image/switchyard-$suffix"
deploy/image/build.sh thumbnail --engine "$engine" --tag "$thumbnail_image" "${bins[@]}" \
  --rootfs "target/image/thumbnail-$suffix"

base=()
if [ "$local_base" = 1 ]; then
  base_image=localhost/switchyard-debian-python:bookworm
  if ! "$engine" image inspect "$base_image" >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || { echo "--local-base runs debootstrap, which needs root" >&2; exit 1; }
    command -v debootstrap >/dev/null || { echo "debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm \
      "$root" http://deb.debian.org/debian >/dev/null ||
      { cat "$root/debootstrap/debootstrap.log" >&2 2>/dev/null; exit 1; }
    # This machine's CAs (or CA_BUNDLE's), so that pip in the build works where they are
    # needed (a TLS-inspecting proxy).
    cp "${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}" "$root/etc/ssl/certs/ca-certificates.crt"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | "$engine" import - "$base_image" >/dev/null
    echo "made $base_image with debootstrap"
  fi
  base=(--build-arg "BASE=$base_image")
fi
format=()
[ "$engine" = podman ] && format=(--format docker)
"$engine" build "${format[@]}" "${base[@]}" -f deploy/thumbnail/moto.Dockerfile -t "$moto_image" .
echo "built $switchyard_image, $thumbnail_image and $moto_image with $engine"
