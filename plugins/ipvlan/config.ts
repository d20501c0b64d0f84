/**
 * ipvlan configuration: upstream's keys (master, mode, mtu, linkInContainer, ipam, dns) plus
 * `flag`, the isolation flag upstream users ask for (containernetworking/plugins#1032).
 * Pure: no kernel access, unit-tested.
 */
import { oneOf } from "../../shared/cni/config.ts";
import type { NetConf } from "../../shared/cni/types.ts";
import { type ChildLinkConfig, loadChildLinkConfig } from "../../shared/iface/childlink-config.ts";
import type { IpvlanFlag, IpvlanMode } from "../../shared/netlink/link.ts";

const IPVLAN_MODES = ["l2", "l3", "l3s"] as const satisfies readonly IpvlanMode[];
const IPVLAN_FLAGS = ["bridge", "private", "vepa"] as const satisfies readonly IpvlanFlag[];

export interface IpvlanConfig extends ChildLinkConfig {
  mode: IpvlanMode;
  flag: IpvlanFlag;
}

export function loadConfig(conf: NetConf): IpvlanConfig {
  const raw = conf.raw;
  const mode = oneOf(raw, "mode", IPVLAN_MODES, "l2", "ipvlan mode");
  const flag = oneOf(raw, "flag", IPVLAN_FLAGS, "bridge", "ipvlan flag");
  return { ...loadChildLinkConfig(conf), mode, flag };
}
