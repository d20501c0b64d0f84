#!/usr/bin/env bash
# Builds the container runtime of the real node tests (conformance/node/node.ts): containerd
# v2.2.9, its runc shim (containerd-shim-runc-v2) and ctr, from the Go modules pinned in
# tools/containerd, into a git-ignored cache. containerd 2 because CNI 1.1 (cniVersion "1.1.0"
# results, STATUS) needs it; runc stays Debian's (scripts/install-node-deps.sh). A cold build takes
# minutes on two cores; a cached one is reused at once.
#
#   bash scripts/build-containerd.sh    # prints where the binaries are
set -euo pipefail
cd "$(dirname "$0")/.."

CONTAINERD_VERSION=v2.2.9   # pinned in tools/containerd/go.mod
OUT=".cache/containerd/$CONTAINERD_VERSION"
BINARIES=(containerd containerd-shim-runc-v2 ctr)
cached=1
for binary in "${BINARIES[@]}"; do [ -x "$OUT/$binary" ] || cached=0; done
if [ $cached = 1 ]; then
  echo "containerd, containerd-shim-runc-v2 and ctr $CONTAINERD_VERSION cached in $OUT"
  exit 0
fi
command -v go >/dev/null || { echo "go is required to build containerd" >&2; exit 1; }

# What upstream's Makefile builds a static release with, less what the tests never use (the btrfs,
# devmapper and zfs snapshotters, Go plugins loaded at run time): fewer packages to compile. The
# version variables make `containerd --version` say v2.2.9 (else "2.2.9+unknown").
tags="no_btrfs no_devmapper no_zfs no_dynamic_plugins"
pkg=github.com/containerd/containerd/v2
ldflags="-s -w -X $pkg/version.Version=$CONTAINERD_VERSION -X $pkg/version.Package=$pkg"
export CGO_ENABLED=0

partial="$OUT.partial"
rm -rf "$partial"
mkdir -p "$partial"
echo "building containerd, containerd-shim-runc-v2 and ctr $CONTAINERD_VERSION (cold: minutes) ..."
started=$SECONDS
# One go build for the three: their shared packages are compiled once. -v names each package as it
# is compiled (a path, no space): one line per 100 of them shows progress; any other line (an
# error) is shown as it is.
(cd tools/containerd && go build -v -trimpath -tags "$tags" -ldflags "$ldflags" -o "../../$partial/" \
  "$pkg/cmd/containerd" "$pkg/cmd/containerd-shim-runc-v2" "$pkg/cmd/ctr") 2>&1 \
  | awk '/ |^#/ { print; fflush(); next } { n++ } n % 100 == 0 { printf "  %d packages compiled\n", n; fflush() }'
rm -rf "$OUT"
mv "$partial" "$OUT"
echo "built in $((SECONDS - started)) s: $("$OUT/containerd" --version)"
ls -la "$OUT"
