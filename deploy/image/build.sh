#!/usr/bin/env bash
# Builds an image on this machine with podman or docker, with no base image to pull:
#   1. the release binaries, with cargo (skipped with --bin-dir);
#   2. their root filesystem, with deploy/image/rootfs.sh (the binaries, the libraries they
#      link, CA certificates, the user 10001, /data), in target/image/IMAGE (removed after);
#   3. the image, the Dockerfile's target `local`, in the Docker format (the OCI format drops
#      HEALTHCHECK), labelled with the version.
#
#   deploy/image/build.sh [IMAGE] [--engine podman|docker] [--tag NAME] [--bin-dir DIR]
#                         [--rootfs DIR]
#
# IMAGE: `switchyard` (deploy/Dockerfile, tag switchyard:latest; the default) or `thumbnail`
# (the thumbnail example's function and event display, examples/thumbnail/Dockerfile, tag
# switchyard-thumbnail:latest).
# --engine: podman when it is installed, otherwise docker. --tag: the image's name.
# --bin-dir: a folder with the binaries already built (the container tests pass target/debug).
# --rootfs: where the root filesystem is assembled: a folder under target/image/ (the build
# context is the repository, and .dockerignore leaves out the rest of target/).
# Linux, bash 4.4 or later; with Docker, BuildKit (Docker 23 and later).
set -euo pipefail
usage="usage: $0 [switchyard|thumbnail] [--engine podman|docker] [--tag NAME] [--bin-dir DIR] [--rootfs DIR]"
image=switchyard
case "${1:-}" in switchyard | thumbnail) image=$1; shift ;; esac
engine=
tag=
bin_dir=
rootfs=
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }
  case "$1" in
    --engine) engine=$2 ;;
    --tag) tag=$2 ;;
    # Relative to where the script was run from.
    --bin-dir) bin_dir=$(CDPATH='' cd -- "$2" >/dev/null && pwd) ;;
    --rootfs) rootfs=$2 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
  shift 2
done
CDPATH='' cd -- "$(dirname "$0")/../.." >/dev/null
case "$image" in
  switchyard)
    package=switchyard bins=(switchyard) dockerfile=deploy/Dockerfile
    tag=${tag:-switchyard:latest} ;;
  thumbnail)
    package=switchyard-example-thumbnail bins=(thumbnail event-display)
    dockerfile=examples/thumbnail/Dockerfile tag=${tag:-switchyard-thumbnail:latest} ;;
esac
rootfs=${rootfs:-target/image/$image}
case "$rootfs" in
  *..*) echo "--rootfs must not contain '..'" >&2; exit 2 ;;
  target/image/?*) ;;
  *) echo "--rootfs must be a folder under target/image/ (the build context's part of target/)" >&2; exit 2 ;;
esac
if [ -z "$engine" ]; then
  if command -v podman >/dev/null; then engine=podman; else engine=docker; fi
fi
command -v "$engine" >/dev/null || { echo "$engine is not installed" >&2; exit 1; }
if [ -z "$bin_dir" ]; then
  cargo build --release --locked -p "$package"
  # Where cargo put them (CARGO_TARGET_DIR and build.target-dir move target/).
  target_dir=$(cargo metadata --no-deps --format-version 1 --offline |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  bin_dir=${target_dir:-target}/release
fi
paths=()
for b in "${bins[@]}"; do
  [ -x "$bin_dir/$b" ] || { echo "$bin_dir/$b is missing: build it first (cargo build -p $package)" >&2; exit 1; }
  paths+=("$bin_dir/$b")
done
version=dev
if command -v cargo >/dev/null; then
  version=$(cargo metadata --no-deps --format-version 1 --offline 2>/dev/null |
    sed -n 's/.*"name":"'"$package"'","version":"\([^"]*\)".*/\1/p') || true
fi
trap 'rm -rf "$rootfs"' EXIT
deploy/image/rootfs.sh "$rootfs" "${paths[@]}"
format=()
# Docker's format keeps HEALTHCHECK.
[ "$engine" = podman ] && format=(--format docker)
"$engine" build "${format[@]}" --target local --build-arg "LOCAL_ROOTFS=$rootfs" \
  --build-arg "VERSION=${version:-dev}" -f "$dockerfile" -t "$tag" .
echo "built $tag ($image ${version:-dev}) with $engine"
