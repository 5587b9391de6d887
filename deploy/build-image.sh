#!/usr/bin/env bash
# Builds the node image (tag: $1, default gen-cluster:latest) FROM scratch around a statically
# linked gen-cluster: glibc linked in (`+crt-static`), DNS through hickory, so the image needs
# no C library and no name-service modules.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-gen-cluster:latest}
target=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --release --locked -p gen-cluster --target "$target"
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/rootfs/data"
strip --strip-debug -o "$context/rootfs/gen-cluster" "${CARGO_TARGET_DIR:-target}/$target/release/gen-cluster"
cp deploy/Dockerfile "$context/Dockerfile"
docker build --quiet --tag "$tag" "$context" >/dev/null
echo "built $tag ($(docker image inspect --format '{{.Size}}' "$tag") bytes)"
