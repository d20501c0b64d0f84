#!/usr/bin/env bash
# The demo: a "node" namespace with an uplink to a "router" namespace, and two pods that get a
# second interface (net1) from the built plugins, exactly as kubelet/Multus would call them:
# CNI environment variables, the network config on stdin, the result on stdout.
# Everything it creates is removed at the end (also on Ctrl-C or failure).
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x bin/macvlan ] || { echo "bin/macvlan is missing: run 'npm ci && npm run build' first" >&2; exit 1; }
bash scripts/build-upstream.sh >/dev/null   # upstream's static IPAM, for now
IPAM_DIR="$PWD/.cache/upstream/plugins-v1.9.1"

tag="demo$$"
NODE="$tag-node" ROUTER="$tag-router" POD_A="$tag-pod-a" POD_B="$tag-pod-b"
cleanup() { for ns in "$NODE" "$ROUTER" "$POD_A" "$POD_B"; do ip netns del "$ns" 2>/dev/null || true; done; }
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "a node with uplink ens224, cabled to a router at 10.10.0.1"
for ns in "$NODE" "$ROUTER" "$POD_A" "$POD_B"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n "$NODE" link add ens224 type veth peer name uplink netns "$ROUTER"
ip -n "$NODE" link set ens224 up
ip -n "$ROUTER" addr add 10.10.0.1/24 dev uplink
ip -n "$ROUTER" addr add 172.31.0.1/16 dev lo
ip -n "$ROUTER" link set uplink up
ip -n "$NODE" -br link

cni() { # cni <command> <pod> <config-json>
  CNI_COMMAND=$1 CNI_CONTAINERID="ctr-$2" CNI_NETNS="/run/netns/$2" CNI_IFNAME=net1 \
  CNI_PATH="$IPAM_DIR" ip netns exec "$NODE" bin/macvlan <<<"$3"
}
config() { # config <address>
  cat <<JSON
{"cniVersion":"1.0.0","name":"storage","type":"macvlan","master":"ens224","mode":"bridge",
 "ipam":{"type":"static","addresses":[{"address":"$1","gateway":"10.10.0.1"}],
         "routes":[{"dst":"172.31.0.0/16"}]}}
JSON
}

step "ADD: pod A gets net1 = 10.10.0.11 (the plugin's result, as kubelet reads it)"
cni ADD "$POD_A" "$(config 10.10.0.11/24)"; echo
step "ADD: pod B gets net1 = 10.10.0.12"
cni ADD "$POD_B" "$(config 10.10.0.12/24)" >/dev/null && echo ok

step "what the kernel says in pod A"
ip -n "$POD_A" -d -br link show net1
ip -n "$POD_A" -br addr show net1
ip -n "$POD_A" route

step "traffic: pod A -> pod B (macvlan bridge), pod A -> router, pod A -> 172.31.0.1 via the route from IPAM"
ip netns exec "$POD_A" ping -c1 -W2 10.10.0.12 | tail -2 | head -1
ip netns exec "$POD_A" ping -c1 -W2 10.10.0.1 | tail -2 | head -1
ip netns exec "$POD_A" ping -c1 -W2 172.31.0.1 | tail -2 | head -1

step "bad input: a master that does not exist (a CNI error object, exit code 1)"
cni ADD "$POD_A" "$(config 10.10.0.13/24 | sed 's/ens224/ens9/')" || echo " (exit $?)"

step "DEL both pods, twice (DEL is idempotent)"
for pod in "$POD_A" "$POD_B"; do cni DEL "$pod" "$(config 10.10.0.11/24)"; cni DEL "$pod" "$(config 10.10.0.11/24)"; done
ip -n "$POD_A" -br link
echo "demo done"
