/**
 * ipvlan configuration: upstream's keys (master, mode, mtu, linkInContainer, ipam, dns) plus
 * `flag`, the isolation flag upstream users ask for (containernetworking/plugins#1032).
 * Pure: no kernel access, unit-tested.
 */
import { optionalBoolean, optionalInteger, optionalString, oneOf } from "../../shared/cni/config.ts";
import type { NetConf } from "../../shared/cni/types.ts";
import type { IpvlanFlag, IpvlanMode } from "../../shared/netlink/link.ts";

export const IPVLAN_MODES = ["l2", "l3", "l3s"] as const satisfies readonly IpvlanMode[];
export const IPVLAN_FLAGS = ["bridge", "private", "vepa"] as const satisfies readonly IpvlanFlag[];

export interface IpvlanConfig {
  /** Undefined: prevResult's single interface when chained, else the default route's link. */
  master?: string;
  mode: IpvlanMode;
  flag: IpvlanFlag;
  /** 0: inherit the master's. */
  mtu: number;
  linkInContainer: boolean;
  hasIpam: boolean;
}

export function loadConfig(conf: NetConf): IpvlanConfig {
  const raw = conf.raw;
  const config: IpvlanConfig = {
    mode: oneOf(raw, "mode", IPVLAN_MODES, "l2", "ipvlan mode"),
    flag: oneOf(raw, "flag", IPVLAN_FLAGS, "bridge", "ipvlan flag"),
    mtu: optionalInteger(raw, "mtu", { min: 0, max: 0xffffffff }) ?? 0,
    linkInContainer: optionalBoolean(raw, "linkInContainer") ?? false,
    hasIpam: conf.ipam !== undefined && conf.ipam.type !== "",
  };
  const master = optionalString(raw, "master");
  if (master) config.master = master;
  return config;
}
