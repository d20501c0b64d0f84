#!/usr/bin/env bash
# Installs what conformance/node/ runs a real Kubernetes node with from Debian: runc, the OCI
# runtime of the containerd that scripts/build-containerd.sh builds (containerd v2.2.9, its shim
# and ctr), beside the kubelet that scripts/build-kube.sh builds. Idempotent: when runc is
# installed already, it touches neither apt nor the net.
#
#   sudo bash scripts/install-node-deps.sh
set -euo pipefail

packages=(
  runc # containerd's OCI runtime, found on PATH by containerd's runc shim
)

missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
  [ "$status" = installed ] || missing+=("$package")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "node dependencies installed: runc $(runc --version | head -1 | cut -d' ' -f3)"
