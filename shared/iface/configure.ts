/**
 * Applying a CNI result to an interface inside a pod, and verifying it later (CHECK): the one
 * mechanism the interface plugins share, as upstream's pkg/ipam.ConfigureIface.
 */
import { CniError, ErrorCode } from "../cni/errors.ts";
import type { Result } from "../cni/types.ts";
import { type Family, type IP, type Prefix, defaultPrefix, formatIp, formatPrefix, networkOf, parseIp, parsePrefix, sameIp } from "../ip.ts";
import { addrAdd, addrList } from "../netlink/addr.ts";
import { type Link, linkByIndex, linkByName, linkSet } from "../netlink/link.ts";
import { RT_TABLE_LOCAL, RT_TABLE_MAIN, routeAdd, routeList } from "../netlink/route.ts";
import { type Netlink, NetlinkError } from "../netlink/socket.ts";
import { type Netns, sysctlGet, sysctlSet } from "../netns.ts";

const DAD_TIMEOUT_MS = 5000;
const DAD_POLL_MS = 50;

/**
 * Adds the result's addresses for `ifName` (entries whose `interface` points at it), brings the
 * link up, waits for IPv6 duplicate address detection when an IPv6 gateway will be used, then adds
 * the routes; a route without `gw` goes via the gateway of its family's address, as upstream.
 */
export function configureInterface(ns: Netns, nl: Netlink, ifName: string, result: Result): void {
  const interfaces = result.interfaces ?? [];
  if (interfaces.length === 0) throw new CniError(ErrorCode.Internal, "no interfaces to configure");
  const link = linkByName(nl, ifName);
  if (!link) throw new CniError(ErrorCode.Kernel, `interface "${ifName}" not found in the pod's namespace`);

  const gateways = new Map<Family, IP>();
  let ipv6Enabled = false;
  for (const entry of result.ips ?? []) {
    if (entry.interface === undefined) continue;
    if (interfaces[entry.interface]?.name !== ifName) {
      throw new CniError(ErrorCode.Internal, `address ${entry.address} names interface index ${entry.interface}, which is not "${ifName}"`);
    }
    const prefix = parsePrefix(entry.address);
    if (prefix.family === 6 && !ipv6Enabled) {
      ns.run(() => enableIpv6(ifName));
      ipv6Enabled = true;
    }
    kernel(`failed to add address ${entry.address} to "${ifName}"`, () => addrAdd(nl, link.index, prefix));
    if (entry.gateway && !gateways.has(prefix.family)) gateways.set(prefix.family, parseIp(entry.gateway));
  }

  kernel(`failed to set "${ifName}" up`, () => linkSet(nl, link.index, { up: true }));

  // Routes via an IPv6 gateway fail while our address is still tentative.
  if (gateways.has(6)) waitForDad(nl, link);

  for (const route of result.routes ?? []) {
    const dst = parsePrefix(route.dst);
    const gw = route.gw ? parseIp(route.gw) : gateways.get(dst.family);
    const spec = {
      dst: networkOf(dst),
      linkIndex: link.index,
      ...(gw ? { gw } : {}),
      ...(route.priority !== undefined ? { priority: route.priority } : {}),
      ...(route.table !== undefined ? { table: route.table } : {}),
      ...(route.scope !== undefined ? { scope: route.scope } : {}),
      ...(route.mtu !== undefined ? { mtu: route.mtu } : {}),
      ...(route.advmss !== undefined ? { advmss: route.advmss } : {}),
    };
    const via = gw ? ` via ${formatIp(gw)}` : "";
    kernel(`failed to add route ${formatPrefix(spec.dst)}${via} dev ${ifName}`, () => routeAdd(nl, spec, "add"));
  }
}

/**
 * The interface plugins' CHECK: every address of `result` for this interface is on the link
 * with a route to its subnet, and every route of `result` exists. Routes are looked for in every
 * table, not only main (upstream's choice): a chained sbr moves them into a table of their own,
 * and CHECK of the chain must still pass (upstream's fails, containernetworking/plugins#297).
 */
export function checkInterface(nl: Netlink, link: Link, ifName: string, result: Result): void {
  const interfaces = result.interfaces ?? [];
  const onLink = addrList(nl, { linkIndex: link.index });
  const knownRoutes = routeList(nl).filter((r) => r.table !== RT_TABLE_LOCAL);
  for (const entry of result.ips ?? []) {
    if (entry.interface === undefined || interfaces[entry.interface]?.name !== ifName) continue;
    const want = parsePrefix(entry.address);
    if (!onLink.some((a) => a.prefix.length === want.length && sameIp(a.prefix.ip, want.ip))) {
      throw new CniError(ErrorCode.Internal, `address ${entry.address} is not on "${ifName}"`);
    }
    const subnet = networkOf(want);
    if (!knownRoutes.some((r) => samePrefix(r.dst, subnet))) {
      throw new CniError(ErrorCode.Internal, `no route to ${formatPrefix(subnet)} for address ${entry.address} on "${ifName}"`);
    }
  }
  for (const route of result.routes ?? []) {
    const dst = networkOf(parsePrefix(route.dst));
    const gw = route.gw ? parseIp(route.gw) : undefined;
    const isDefault = dst.length === 0;
    const found = knownRoutes.some(
      (r) =>
        samePrefix(r.dst, dst) &&
        // A default route matches any default route of its family, as upstream.
        (isDefault || !gw || (r.gw !== undefined && sameIp(r.gw, gw))),
    );
    if (!found) {
      throw new CniError(ErrorCode.Internal, `route ${route.dst}${gw ? ` via ${route.gw}` : ""} not found for "${ifName}"`);
    }
  }
}

/** The link of the first default route in the main table, IPv4 before IPv6, as upstream. */
export function defaultRouteLink(nl: Netlink): Link {
  for (const family of [4, 6] as const) {
    const route = routeList(nl, { family, table: RT_TABLE_MAIN }).find(
      (r) => r.dst.length === 0 && r.linkIndex !== undefined && samePrefix(r.dst, defaultPrefix(family)),
    );
    const link = route?.linkIndex !== undefined ? linkByIndex(nl, route.linkIndex) : undefined;
    if (link) return link;
  }
  throw new CniError(ErrorCode.InvalidConfig, `"master" is not set and there is no default route to take it from`);
}

/** Runs a kernel operation, naming what failed in the error rather than a bare errno. */
export function kernel<T>(what: string, operation: () => T): T {
  try {
    return operation();
  } catch (err) {
    if (err instanceof NetlinkError) throw new CniError(ErrorCode.Kernel, `${what}: ${err.message}`);
    throw err;
  }
}

function samePrefix(a: Prefix, b: Prefix): boolean {
  return a.family === b.family && a.length === b.length && sameIp(a.ip, b.ip);
}

/** IPv6 may be disabled on the pod's interfaces by the node's defaults; the result needs it on. */
function enableIpv6(ifName: string): void {
  for (const name of [`net/ipv6/conf/lo/disable_ipv6`, `net/ipv6/conf/${ifName}/disable_ipv6`]) {
    try {
      if (sysctlGet(name) !== "0") sysctlSet(name, "0");
    } catch {
      // A kernel without IPv6 fails the address add itself, with a clearer message.
    }
  }
  try {
    sysctlSet(`net/ipv6/conf/${ifName}/keep_addr_on_down`, "1");
  } catch {
    // Older kernels lack it; addresses are then lost on link down, which we never do.
  }
}

function waitForDad(nl: Netlink, link: Link): void {
  const deadline = Date.now() + DAD_TIMEOUT_MS;
  for (;;) {
    const addrs = addrList(nl, { linkIndex: link.index, family: 6 });
    const failed = addrs.find((a) => a.dadFailed);
    if (failed) {
      throw new CniError(ErrorCode.Kernel, `address ${formatPrefix(failed.prefix)} on "${link.name}" failed duplicate address detection`);
    }
    if (!addrs.some((a) => a.tentative)) return;
    if (Date.now() >= deadline) {
      // Without carrier DAD never runs; upstream accepts that, and so do we.
      if (!linkByIndex(nl, link.index)?.operUp) return;
      throw new CniError(ErrorCode.Kernel, `"${link.name}" still has tentative IPv6 addresses after ${DAD_TIMEOUT_MS} ms`);
    }
    sleepSync(DAD_POLL_MS);
  }
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}
