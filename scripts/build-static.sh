#!/usr/bin/env bash
# Builds bin/warren-static: the node binary linked statically (CGO off), the only file the
# FROM-scratch image (Dockerfile) holds, so it must not need a libc or a dynamic loader.
#   scripts/build-static.sh [OUTPUT]   (default bin/warren-static)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
out=${1:-bin/warren-static}
mkdir -p "$(dirname "$out")"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out" ./cmd/node ||
  { echo "build-static.sh: go build of ./cmd/node failed" >&2; exit 1; }
# A cgo build would link against the host's libc and die in the image with a confusing
# "no such file or directory" for the loader; the build settings say which one we got.
go version -m "$out" | grep -q 'CGO_ENABLED=0' ||
  { echo "build-static.sh: $out was not built with CGO_ENABLED=0" >&2; exit 1; }
echo "build-static.sh: $out ($(du -h "$out" | cut -f1))"
