#!/usr/bin/env bash
# The demo: what a node of a multi-NIC cluster does for two pods, with the built plugins only.
# A "node" namespace with an uplink (ens224) to a "router"; each pod has a primary eth0 (a veth
# with the pod's default route, as a primary CNI makes) and gets net1 from the chain
#   macvlan (master ens224) + whereabouts (IPAM, node-local file store) + sbr (source routing)
# called exactly as kubelet/Multus would: CNI environment variables, the config on stdin, the
# result on stdout. Everything it creates is removed at the end (also on Ctrl-C or failure).
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x bin/macvlan ] || { echo "bin/ is missing: run 'npm ci && npm run build' first" >&2; exit 1; }

tag="demo$$"
NODE="$tag-node" ROUTER="$tag-router" POD_A="$tag-pod-a" POD_B="$tag-pod-b"
STORE=$(mktemp -d /tmp/whereabouts-demo.XXXXXX)
cleanup() {
  for ns in "$NODE" "$ROUTER" "$POD_A" "$POD_B"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$STORE"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "a node with uplink ens224, cabled to a router (10.10.0.1, and 172.31.0.1 behind it)"
for ns in "$NODE" "$ROUTER" "$POD_A" "$POD_B"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n "$NODE" link add ens224 type veth peer name uplink netns "$ROUTER"
ip -n "$NODE" link set ens224 up
ip -n "$ROUTER" addr add 10.10.0.1/24 dev uplink
ip -n "$ROUTER" addr add 172.31.0.1/16 dev lo
ip -n "$ROUTER" link set uplink up
ip -n "$NODE" -br link

step "each pod already has eth0 from the primary CNI, with the pod's default route"
i=0
for pod in "$POD_A" "$POD_B"; do
  i=$((i + 1))
  ip -n "$NODE" link add "veth$i" type veth peer name eth0 netns "$pod"
  ip -n "$NODE" link set "veth$i" up
  ip -n "$pod" addr add "192.168.100.$((i + 1))/24" dev eth0
  ip -n "$pod" link set eth0 up
  ip -n "$pod" route add default via 192.168.100.1
done
ip -n "$POD_A" route

IPAM=$(cat <<JSON
{"type":"whereabouts","datastore":"file","datastore_dir":"$STORE","range":"10.10.0.0/24",
 "range_start":"10.10.0.10","gateway":"10.10.0.1","routes":[{"dst":"172.31.0.0/16"}]}
JSON
)
MACVLAN="{\"cniVersion\":\"1.0.0\",\"name\":\"storage\",\"type\":\"macvlan\",\"master\":\"ens224\",\"ipam\":$IPAM}"

cni() { # cni <plugin> <command> <pod> <config-json>: one plugin call, as the runtime makes it
  CNI_COMMAND=$2 CNI_CONTAINERID="ctr-$3" CNI_NETNS="/run/netns/$3" CNI_IFNAME=net1 CNI_PATH="$PWD/bin" \
  CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=$3" ip netns exec "$NODE" "bin/$1" <<<"$4"
}
chain_add() { # macvlan (which asks whereabouts) and then sbr with macvlan's result as prevResult
  local result
  result=$(cni macvlan ADD "$1" "$MACVLAN")
  cni sbr ADD "$1" "{\"cniVersion\":\"1.0.0\",\"name\":\"storage\",\"type\":\"sbr\",\"prevResult\":$result}"
}
chain_del() { # the reverse order, as a runtime runs DEL
  cni sbr DEL "$1" '{"cniVersion":"1.0.0","name":"storage","type":"sbr"}'
  cni macvlan DEL "$1" "$MACVLAN"
}

step "ADD pod A: macvlan + whereabouts + sbr (the chain's final result, as kubelet reads it)"
chain_add "$POD_A"; echo
step "ADD pod B"
chain_add "$POD_B" >/dev/null && echo ok

step "what the kernel says in pod A: net1 from macvlan, its address from whereabouts, sbr's rule and table"
ip -n "$POD_A" -d -br link show net1
ip -n "$POD_A" -br addr show net1
ip -n "$POD_A" rule
echo "-- table main:"; ip -n "$POD_A" route
echo "-- table 100:"; ip -n "$POD_A" route show table 100
echo "-- a lookup from net1's address leaves through net1; any other through eth0:"
ip -n "$POD_A" route get 172.31.0.1 from 10.10.0.10 | head -1
ip -n "$POD_A" route get 198.51.100.7 | head -1

step "whereabouts' lease store (the IPPool object, as a file on this node)"
find "$STORE" -name '*.json' -path '*pool*' -exec cat {} \; -exec echo \;

step "traffic from net1's address (sbr routes it by source): pod A -> pod B over macvlan, -> router, -> 172.31.0.1 via net1's gateway"
ip netns exec "$POD_A" ping -c1 -W2 -I 10.10.0.10 10.10.0.11 | tail -2 | head -1
ip netns exec "$POD_A" ping -c1 -W2 -I 10.10.0.10 10.10.0.1 | tail -2 | head -1
ip netns exec "$POD_A" ping -c1 -W2 -I 10.10.0.10 172.31.0.1 | tail -2 | head -1

step "bad input: a master that does not exist (a CNI error object, exit code 1, nothing left behind)"
cni macvlan ADD "$POD_A" "${MACVLAN/ens224/ens9}" 2>/dev/null || echo " (exit $?)"

step "DEL both pods, twice (DEL is idempotent); the addresses go back to the pool"
for pod in "$POD_A" "$POD_B"; do chain_del "$pod"; chain_del "$pod"; done
ip -n "$POD_A" -br link
echo "-- pod A's rules (sbr's from-rule is gone):"; ip -n "$POD_A" rule
find "$STORE" -name '*.json' -path '*pool*' -exec cat {} \; -exec echo \;
echo "demo done"
