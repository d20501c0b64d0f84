#!/usr/bin/env bash
# Installs what conformance/guest needs to boot a Debian kernel with IPVLAN under qemu: the
# emulator, a distribution kernel (ipvlan as a module), and the binaries copied into the guest's
# initramfs; and openssl, for the test API server's client certificates. Idempotent: when
# everything is installed already, it touches neither apt nor the net.
#
#   sudo bash scripts/install-guest-deps.sh
set -euo pipefail

packages=(
  qemu-system-x86   # qemu-system-x86_64 with TCG, virtio-9p and virtio-serial
  linux-image-amd64 # /boot/vmlinuz-<ver> and /lib/modules/<ver>, ipvlan.ko among them
  busybox-static    # the guest's init and small tools; static, so no libraries to chase
  cpio              # packs the initramfs
  iproute2          # /usr/sbin/ip, copied into the guest (busybox's ip knows no ipvlan)
  iputils-ping      # ping, copied into the guest
  bash              # copied into the guest, for scripts that ask for it
  util-linux        # setpriv --pdeathsig: qemu dies with the test process that started it
  coreutils         # mkfifo: the host end of the guest agent's channel
  xz-utils          # unpacks the kernel's xz payload once, for a faster (PVH) boot
  openssl           # the test API server's client CA and certificate (conformance/kube)
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
  # No recommends: qemu's would pull in a GUI stack, the kernel's firmware and a bootloader.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

kernels=(/boot/vmlinuz-*)
[ -e "${kernels[0]}" ] || { echo "no kernel in /boot after installing linux-image-amd64" >&2; exit 1; }
echo "guest dependencies installed: $(qemu-system-x86_64 --version | head -1); kernels: ${kernels[*]##*/vmlinuz-}"
