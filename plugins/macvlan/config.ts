/**
 * macvlan configuration: upstream's keys (master, mode, mtu, mac, linkInContainer, bcqueuelen,
 * ipam, dns) and where the MAC may come from. Pure: no kernel access, unit-tested.
 */
import { parseCniArgs, ARG_MAC } from "../../shared/cni/args.ts";
import { optionalInteger, optionalObject, optionalString, oneOf } from "../../shared/cni/config.ts";
import { CniError, ErrorCode } from "../../shared/cni/errors.ts";
import type { NetConf } from "../../shared/cni/types.ts";
import { type ChildLinkConfig, loadChildLinkConfig } from "../../shared/iface/childlink-config.ts";
import { parseMac } from "../../shared/ip.ts";
import type { MacvlanMode } from "../../shared/netlink/link.ts";

const MACVLAN_MODES = ["bridge", "private", "vepa", "passthru"] as const satisfies readonly MacvlanMode[];

export interface MacvlanConfig extends ChildLinkConfig {
  mode: MacvlanMode;
  mac?: string;
  bcQueueLen?: number;
}

export function loadConfig(conf: NetConf, cniArgs: string): MacvlanConfig {
  const raw = conf.raw;
  const mode = oneOf(raw, "mode", MACVLAN_MODES, "bridge", "macvlan mode");
  const config: MacvlanConfig = { ...loadChildLinkConfig(conf), mode };
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
