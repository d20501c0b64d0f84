#!/usr/bin/env bash
# Builds the real kube-apiserver and etcd that the Kubernetes tests, benchmarks and demo run, the
# kubelet of the node tests (conformance/node/), and the kube-controller-manager and kube-scheduler
# that run deploy/'s DaemonSet (startCluster's controllerManager option), from the Go modules
# pinned in tools/kube, into a git-ignored cache. A cold build takes many
# minutes on two cores; a cached one is reused at once.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBE_VERSION=v1.36.3
OUT=".cache/kube/$KUBE_VERSION"
BINARIES=(etcd kube-apiserver kubectl kubelet kube-controller-manager kube-scheduler)
cached=1
for binary in "${BINARIES[@]}"; do [ -x "$OUT/$binary" ] || cached=0; done
if [ $cached = 1 ]; then
  echo "${BINARIES[*]} cached in $OUT"
  exit 0
fi
command -v go >/dev/null || { echo "go is required to build kube-apiserver and etcd" >&2; exit 1; }
mkdir -p "$OUT"
minor=$(echo "$KUBE_VERSION" | cut -d. -f2)
version_flags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  version_flags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
done
export CGO_ENABLED=0
cd tools/kube
started=$(date +%s)
build() { # build <name> <package> <extra ldflags>: skipped when already built
  local name=$1 package=$2 ldflags=$3
  [ -x "../../$OUT/$name" ] && return
  echo "building $name ..."
  go build -v -trimpath -tags grpcnotrace -ldflags "-s -w$ldflags" -o "../../$OUT/$name.partial" "$package" 2>&1 \
    | awk '{ n++ } n % 100 == 0 { printf "  %d packages compiled\n", n; fflush() }'
  mv "../../$OUT/$name.partial" "../../$OUT/$name"
}
# etcd is built from the module graph, so it is exactly the version kube-apiserver pins (v3.6.8).
build etcd go.etcd.io/etcd/server/v3 ""
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$version_flags"
build kubectl k8s.io/kubernetes/cmd/kubectl "$version_flags"
# kubelet shares most packages with kube-apiserver: a few minutes more on a cold build.
build kubelet k8s.io/kubernetes/cmd/kubelet "$version_flags"
# The DaemonSet controller sets a node affinity on its pods, not nodeName: the scheduler binds them.
# Both share most packages with kube-apiserver and kubelet (docs/testing.md has the times).
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$version_flags"
build kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler "$version_flags"
echo "built in $(( $(date +%s) - started )) s:"
ls -la "../../$OUT"
exit 0
