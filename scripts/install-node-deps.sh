#!/usr/bin/env bash
# Installs what conformance/node/ runs a real Kubernetes node with, beside the kubelet that
# scripts/build-kube.sh builds: Debian's containerd (1.6) and runc. Idempotent: when both are
# installed already, it touches neither apt nor the net.
#
#   sudo bash scripts/install-node-deps.sh
set -euo pipefail

packages=(
  containerd # the node's container runtime, started by the tests with a config of their own
  runc       # containerd's OCI runtime
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
echo "node dependencies installed: $(containerd --version | cut -d' ' -f3), runc $(runc --version | head -1 | cut -d' ' -f3)"
