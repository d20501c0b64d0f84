/**
 * The config keys every child-link plugin (macvlan, ipvlan) reads the same way: master, mtu,
 * linkInContainer, and whether IPAM is configured. Kept apart from ./childlink.ts, which reaches
 * the kernel, so that the plugins' config modules stay pure and unit-tested.
 */
import { optionalBoolean, optionalInteger, optionalString } from "../cni/config.ts";
import type { NetConf } from "../cni/types.ts";

export interface ChildLinkConfig {
  /**
   * Undefined: the master the kind takes from a chain (ipvlan: prevResult's single interface),
   * else the link of the default route (of the pod's namespace with linkInContainer).
   */
  master?: string;
  /** 0: inherit the master's. */
  mtu: number;
  /** The master lives in the pod's namespace. */
  linkInContainer: boolean;
  hasIpam: boolean;
}

export function loadChildLinkConfig(conf: NetConf): ChildLinkConfig {
  const raw = conf.raw;
  const config: ChildLinkConfig = {
    mtu: optionalInteger(raw, "mtu", { min: 0, max: 0xffffffff }) ?? 0,
    linkInContainer: optionalBoolean(raw, "linkInContainer") ?? false,
    // An empty ipam section means no IPAM, as upstream.
    hasIpam: conf.ipam !== undefined && conf.ipam.type !== "",
  };
  const master = optionalString(raw, "master");
  if (master) config.master = master;
  return config;
}
