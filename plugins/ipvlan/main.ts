/**
 * The ipvlan plugin: an ipvlan link on a master, born in the pod's namespace as CNI_IFNAME. It
 * shares the master's MAC, so the kernel keeps one mode and flag per master.
 *
 * Chained after another interface plugin (no `ipam`), it takes its master from prevResult's single
 * interface and applies prevResult's addresses.
 */
import { CniError, ErrorCode } from "../../shared/cni/errors.ts";
import type { NetConf } from "../../shared/cni/types.ts";
import { childLinkPlugin } from "../../shared/iface/childlink.ts";
import { type IpvlanConfig, loadConfig } from "./config.ts";

export const ipvlan = childLinkPlugin<IpvlanConfig>({
  name: "ipvlan",
  loadConfig,
  addressesFromPrevResult: true,

  chainedMaster(conf: NetConf) {
    const prev = conf.prevResult;
    if (!prev) return undefined;
    const named = (prev.interfaces ?? []).filter((i) => i.name);
    if (named.length !== 1) {
      throw new CniError(
        ErrorCode.InvalidConfig,
        `"master" is not set and prevResult does not name a single interface to use as master (it has ${named.length})`,
      );
    }
    return named[0]!.name;
  },

  linkSpec(config, master, ifName) {
    return {
      kind: "ipvlan",
      name: ifName,
      parentIndex: master.index,
      mode: config.mode,
      flag: config.flag,
      ...(config.mtu > 0 ? { mtu: config.mtu } : {}),
    };
  },

  checkLink(config, link, ifName) {
    const info = link.info && "flag" in link.info ? link.info : undefined;
    if (info?.mode !== config.mode) {
      throw new CniError(ErrorCode.Internal, `interface "${ifName}" has ipvlan mode ${info?.mode ?? "unknown"}, expected ${config.mode}`);
    }
    if (info.flag !== config.flag) {
      throw new CniError(ErrorCode.Internal, `interface "${ifName}" has ipvlan flag ${info.flag}, expected ${config.flag}`);
    }
  },
});
