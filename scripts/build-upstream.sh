#!/usr/bin/env bash
# Builds the upstream reference binaries our conformance suite compares against, with the Go
# module proxy, into a git-ignored cache. Pinned versions; a cached build is reused.
set -euo pipefail
cd "$(dirname "$0")/.."

PLUGINS_VERSION=v1.9.1
CNI_VERSION=v1.3.0
WHEREABOUTS_VERSION=v0.9.4   # pinned in tools/whereabouts/go.mod
MULTUS_VERSION=v4.3.0        # pinned in tools/multus/go.mod
OUT=".cache/upstream/plugins-$PLUGINS_VERSION"
WHEREABOUTS_OUT=".cache/upstream/whereabouts-$WHEREABOUTS_VERSION"
MULTUS_OUT=".cache/upstream/multus-$MULTUS_VERSION"

command -v go >/dev/null || { echo "go is required to build the upstream reference plugins" >&2; exit 1; }

# whereabouts' go.mod has a replace line, which `go install pkg@version` refuses: it is built from
# a tools module that requires it (tools/whereabouts).
if [ ! -x "$WHEREABOUTS_OUT/whereabouts" ]; then
  echo "building upstream whereabouts $WHEREABOUTS_VERSION into $WHEREABOUTS_OUT"
  mkdir -p "$WHEREABOUTS_OUT"
  (cd tools/whereabouts && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" \
    -o "../../$WHEREABOUTS_OUT/whereabouts" github.com/k8snetworkplumbingwg/whereabouts/cmd)
fi

# multus' thin plugin and passthru-cni: `go install` of its gopkg.in path is refused by the proxy,
# so they too are built from a tools module that requires it (tools/multus). A cold build of the
# thin plugin takes about a minute and a half on 2 cores (the Kubernetes client libraries);
# passthru then reuses Go's build cache.
build_multus() { # <output name> <package under multus-cni.v4/cmd>
  [ -x "$MULTUS_OUT/$1" ] && return 0
  echo "building upstream multus $MULTUS_VERSION $2 into $MULTUS_OUT/$1 (cold: a minute or two)"
  local start=$SECONDS
  mkdir -p "$MULTUS_OUT"
  (cd tools/multus && CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X gopkg.in/k8snetworkplumbingwg/multus-cni.v4/pkg/multus.version=$MULTUS_VERSION" \
    -o "../../$MULTUS_OUT/$1" "gopkg.in/k8snetworkplumbingwg/multus-cni.v4/cmd/$2")
  echo "  built $MULTUS_OUT/$1 in $((SECONDS - start))s"
}
build_multus multus multus
build_multus passthru passthru-cni

# ptp, bridge and loopback: the primary network (eth0) of the multus suites, the same upstream
# plugins under ours and upstream's multus.
if [ -x "$OUT/macvlan" ] && [ -x "$OUT/static" ] && [ -x "$OUT/ipvlan" ] && [ -x "$OUT/sbr" ] \
   && [ -x "$OUT/host-local" ] && [ -x "$OUT/ptp" ] && [ -x "$OUT/bridge" ] && [ -x "$OUT/loopback" ] \
   && [ -x "$OUT/cnitool" ]; then
  echo "upstream binaries cached in $OUT, $WHEREABOUTS_OUT and $MULTUS_OUT"
  exit 0
fi
mkdir -p "$OUT"
export GOBIN="$PWD/$OUT" CGO_ENABLED=0 GOFLAGS=-mod=mod
echo "building upstream containernetworking/plugins $PLUGINS_VERSION and cnitool $CNI_VERSION into $OUT"
go install -trimpath \
  -ldflags "-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$PLUGINS_VERSION" \
  github.com/containernetworking/plugins/plugins/main/macvlan@$PLUGINS_VERSION \
  github.com/containernetworking/plugins/plugins/main/ipvlan@$PLUGINS_VERSION \
  github.com/containernetworking/plugins/plugins/meta/sbr@$PLUGINS_VERSION \
  github.com/containernetworking/plugins/plugins/ipam/host-local@$PLUGINS_VERSION \
  github.com/containernetworking/plugins/plugins/ipam/static@$PLUGINS_VERSION \
  github.com/containernetworking/plugins/plugins/main/ptp@$PLUGINS_VERSION \
  github.com/containernetworking/plugins/plugins/main/bridge@$PLUGINS_VERSION \
  github.com/containernetworking/plugins/plugins/main/loopback@$PLUGINS_VERSION
go install -trimpath -ldflags "-s -w" github.com/containernetworking/cni/cnitool@$CNI_VERSION
ls -la "$OUT"
