#!/usr/bin/env bash
# Installs from Debian what the tests run containers with: runc, the OCI runtime of the test nodes'
# containerd v2.2.9 (conformance/node/node.ts; containerd, its shim and ctr are built by
# scripts/build-containerd.sh, kubelet by scripts/build-kube.sh); and Debian's containerd 1.6 (with
# its ctr), which conformance/deploy.test.ts starts on its own to import and run the product's
# image. Idempotent: when both are installed already, it touches neither apt nor the net.
#
#   sudo bash scripts/install-node-deps.sh
set -euo pipefail

packages=(
  runc       # the OCI runtime, found on PATH by containerd's runc shim
  containerd # conformance/deploy.test.ts's containerd (not the test nodes')
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
echo "node dependencies installed: runc $(runc --version | head -1 | cut -d' ' -f3), Debian's containerd $(containerd --version | cut -d' ' -f3)"
