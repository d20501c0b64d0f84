/**
 * A test node's primary network, as the cluster's own CNI (Antrea or Calico in the guides) would
 * install it: upstream bridge + host-local v1.9.1 copied into the node's /opt/cni/bin, and a
 * conflist `10-bridge.conflist` (network `podnet`) in its /etc/cni/net.d. The test nodes share this
 * machine's network namespace, so each node gets a bridge and a subnet (10.244.<index + 1>.0/24)
 * of its own. upstream bridge never deletes its bridge: the caller does, with the name it chose.
 *
 * Runs under Node (vitest) and Bun (the benchmarks): node: modules only.
 */
import { copyFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { UPSTREAM_BIN } from "../harness.ts";
import type { KubeNode } from "./node.ts";

export const PRIMARY_CONFLIST = "/etc/cni/net.d/10-bridge.conflist";

export function installPrimaryNetwork(node: KubeNode, o: { index: number; bridge: string }): void {
  for (const plugin of ["bridge", "host-local", "loopback"]) copyFileSync(join(UPSTREAM_BIN, plugin), join(node.cniBinDir, plugin));
  writeFileSync(
    node.hostPath(PRIMARY_CONFLIST),
    JSON.stringify({
      cniVersion: "1.1.0",
      name: "podnet",
      plugins: [
        {
          type: "bridge",
          bridge: o.bridge,
          isGateway: true,
          ipMasq: false,
          ipam: { type: "host-local", ranges: [[{ subnet: `10.244.${o.index + 1}.0/24` }]], routes: [{ dst: "0.0.0.0/0" }] },
        },
      ],
    }),
  );
}
