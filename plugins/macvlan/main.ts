/**
 * The macvlan plugin: a macvlan link on a master, born in the pod's namespace as CNI_IFNAME, with
 * addresses and routes from IPAM. The verbs are the shared child-link mechanism; macvlan supplies
 * its config, its link, and what CHECK verifies about it.
 */
import { CniError, ErrorCode } from "../../shared/cni/errors.ts";
import { childLinkPlugin } from "../../shared/iface/childlink.ts";
import { type MacvlanConfig, loadConfig } from "./config.ts";

export const macvlan = childLinkPlugin<MacvlanConfig>({
  name: "macvlan",
  loadConfig,

  linkSpec(config, master, ifName) {
    return {
      kind: "macvlan",
      name: ifName,
      parentIndex: master.index,
      mode: config.mode,
      ...(config.mtu > 0 ? { mtu: config.mtu } : {}),
      ...(config.mac ? { mac: config.mac } : {}),
      ...(config.bcQueueLen !== undefined ? { bcQueueLen: config.bcQueueLen } : {}),
    };
  },

  checkLink(config, link, ifName) {
    const mode = link.info && "mode" in link.info ? link.info.mode : "unknown";
    if (mode !== config.mode) {
      throw new CniError(ErrorCode.Internal, `interface "${ifName}" has macvlan mode ${mode}, expected ${config.mode}`);
    }
  },
});
