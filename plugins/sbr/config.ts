/**
 * sbr configuration: upstream's `table` (v1.6+), and `gateways` and `addSourceHints` from its main
 * branch. Pure: no kernel access, unit-tested.
 */
import { optionalBoolean, optionalInteger, optionalStringArray } from "../../shared/cni/config.ts";
import { CniError, ErrorCode } from "../../shared/cni/errors.ts";
import type { IPConfig, Interface, NetConf } from "../../shared/cni/types.ts";
import { type Family, type IP, familyOf, formatIp, tryParseIp } from "../../shared/ip.ts";

export interface SbrConfig {
  /** Rules only, into this table; routes are left alone. */
  table?: number;
  /** Per family, overriding the gateway prevResult gives an address. */
  gateways: Map<Family, IP>;
  /** Keep subnet routes in main with the address as source hint instead of moving them. */
  addSourceHints: boolean;
}

export function loadConfig(conf: NetConf): SbrConfig {
  const raw = conf.raw;
  const table = optionalInteger(raw, "table", { min: 1, max: 0xffffffff });
  return {
    ...(table !== undefined ? { table } : {}),
    gateways: parseGateways(optionalStringArray(raw, "gateways") ?? []),
    addSourceHints: optionalBoolean(raw, "addSourceHints") ?? false,
  };
}

function parseGateways(texts: string[]): Map<Family, IP> {
  if (texts.length > 2) {
    throw new CniError(ErrorCode.InvalidConfig, "gateways list cannot contain more than 2 entries (one IPv4, one IPv6)");
  }
  const gateways = new Map<Family, IP>();
  for (const text of texts) {
    const ip = tryParseIp(text);
    if (!ip) throw new CniError(ErrorCode.InvalidConfig, `invalid static gateway IP address: ${text}`);
    const family = familyOf(ip);
    const taken = gateways.get(family);
    if (taken) {
      const name = family === 4 ? "IPv4" : "IPv6";
      throw new CniError(ErrorCode.InvalidConfig, `gateways list contains multiple ${name} addresses: ${formatIp(taken)} and ${text}`);
    }
    gateways.set(family, ip);
  }
  return gateways;
}

/**
 * The addresses of prevResult that belong to `ifName`: those pointing at it, and those pointing at
 * no interface (or at an index prevResult does not have), as upstream.
 */
export function ipsOfInterface(ifName: string, ips: IPConfig[], interfaces: Interface[]): IPConfig[] {
  return ips.filter((ip) => {
    const target = ip.interface === undefined ? undefined : interfaces[ip.interface];
    return target === undefined || target.name === ifName;
  });
}
