/**
 * macvlan configuration: upstream's keys (master, mode, mtu, mac, linkInContainer, bcqueuelen,
 * ipam, dns) and where the MAC may come from. Pure: no kernel access, unit-tested.
 */
import { parseCniArgs, ARG_MAC } from "../../shared/cni/args.ts";
import { optionalBoolean, optionalInteger, optionalObject, optionalString, oneOf } from "../../shared/cni/config.ts";
import { CniError, ErrorCode } from "../../shared/cni/errors.ts";
import type { NetConf } from "../../shared/cni/types.ts";
import { parseMac } from "../../shared/ip.ts";
import type { MacvlanMode } from "../../shared/netlink/link.ts";

export const MACVLAN_MODES = ["bridge", "private", "vepa", "passthru"] as const satisfies readonly MacvlanMode[];

export interface MacvlanConfig {
  /** Undefined: the link of the default route (of the pod's namespace with linkInContainer). */
  master?: string;
  mode: MacvlanMode;
  /** 0: inherit the master's. */
  mtu: number;
  mac?: string;
  linkInContainer: boolean;
  bcQueueLen?: number;
  hasIpam: boolean;
}

export function loadConfig(conf: NetConf, cniArgs: string): MacvlanConfig {
  const raw = conf.raw;
  const master = optionalString(raw, "master");
  const config: MacvlanConfig = {
    mode: oneOf(raw, "mode", MACVLAN_MODES, "bridge", "macvlan mode"),
    mtu: optionalInteger(raw, "mtu", { min: 0, max: 0xffffffff }) ?? 0,
    linkInContainer: optionalBoolean(raw, "linkInContainer") ?? false,
    hasIpam: conf.ipam !== undefined && conf.ipam.type !== "",
  };
  if (master) config.master = master;
  const bcQueueLen = optionalInteger(raw, "bcqueuelen", { min: 0, max: 0xffffffff });
  // Upstream sends the attribute only when positive; 0 keeps the kernel's default.
  if (bcQueueLen) config.bcQueueLen = bcQueueLen;

  // The MAC's sources, weakest first: the config, CNI_ARGS MAC=, runtimeConfig.mac.
  let mac = optionalString(raw, "mac");
  const fromArgs = parseCniArgs(cniArgs, [ARG_MAC]).get(ARG_MAC);
  if (fromArgs) mac = fromArgs;
  const runtimeConfig = optionalObject(raw, "runtimeConfig");
  const fromRuntime = runtimeConfig ? optionalString(runtimeConfig, "mac") : undefined;
  if (fromRuntime) mac = fromRuntime;
  if (mac) {
    if (!parseMac(mac)) throw new CniError(ErrorCode.InvalidConfig, `invalid MAC address "${mac}"`);
    config.mac = mac.toLowerCase().replaceAll("-", ":");
  }
  return config;
}
