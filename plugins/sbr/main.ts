/**
 * The sbr (source-based routing) meta plugin, chained after an interface plugin: traffic sourced
 * from an address of CNI_IFNAME leaves through CNI_IFNAME and its gateway, while the pod's main
 * table (eth0's default route) stays as it is.
 *
 * Default mode, per address: a table from 100 up that no rule uses, a rule `from <ip> lookup
 * <table>`, a default route via the gateway in that table, and the interface's main-table routes
 * of that family moved into it. With `table`, only the rules, into that table.
 */
import { CniError, ErrorCode } from "../../shared/cni/errors.ts";
import type { PluginVerbs } from "../../shared/cni/skel.ts";
import type { CmdArgs, IPConfig, Result } from "../../shared/cni/types.ts";
import { messageOf } from "../../shared/errors.ts";
import { kernel } from "../../shared/iface/configure.ts";
import { type UndoLog, withUndo } from "../../shared/iface/undo.ts";
import {
  type Family,
  type IP,
  type Prefix,
  bitsOf,
  defaultPrefix,
  formatIp,
  formatPrefix,
  networkOf,
  parseIp,
  parsePrefix,
  prefixContains,
  sameIp,
} from "../../shared/ip.ts";
import { logger } from "../../shared/log.ts";
import { addrList } from "../../shared/netlink/addr.ts";
import { type Link, linkByName } from "../../shared/netlink/link.ts";
import { type Route, RT_SCOPE_LINK, RT_TABLE_MAIN, routeAdd, routeDel, routeList } from "../../shared/netlink/route.ts";
import { ruleAdd, ruleDel, ruleList } from "../../shared/netlink/rule.ts";
import { type Netlink, isAlreadyGone } from "../../shared/netlink/socket.ts";
import { isNetnsGone, withNetns } from "../../shared/netns.ts";
import { type SbrConfig, ipsOfInterface, loadConfig } from "./config.ts";

const log = logger("sbr");
/** Tables sbr allocates from; below are the ones people number by hand, 253-255 are the kernel's. */
const FIRST_TABLE = 100;
const RESERVED_TABLES = new Set([253, 254, 255]);

export const sbr: PluginVerbs = {
  name: "sbr",

  add(args: CmdArgs): Result {
    const config = loadConfig(args.conf);
    const prev = args.conf.prevResult;
    if (!prev) throw new CniError(ErrorCode.InvalidConfig, "sbr must be called as a chained plugin: prevResult is missing");
    if (!prev.ips || prev.ips.length === 0) {
      throw new CniError(ErrorCode.InvalidConfig, `no IP addresses supplied on interface: ${args.ifName}`);
    }
    const addresses = ipsOfInterface(args.ifName, prev.ips, prev.interfaces ?? []);
    inLockedNetns(args.netns, (nl) => {
      const link = linkByName(nl, args.ifName);
      if (!link) throw new CniError(ErrorCode.InvalidConfig, `interface "${args.ifName}" not found in the pod`);
      // A failure half way must not leave rules pointing at tables without routes.
      withUndo(log, (undo) => {
        if (config.table !== undefined) {
          for (const ip of addresses) addSourceRule(nl, hostPrefix(ip), config.table, undo);
        } else {
          routeBySource(nl, link, addresses, config, undo);
        }
      });
    });
    return prev;
  },

  del(args: CmdArgs): void {
    const config = loadConfig(args.conf);
    // Everything sbr made lives in the namespace: no namespace, nothing left to remove.
    if (!args.netns) return;
    try {
      inLockedNetns(args.netns, (nl) => {
        const sources = sourcesOf(nl, args);
        const failures: string[] = [];
        for (const rule of ruleList(nl)) {
          if (!rule.src || rule.src.length !== bitsOf(rule.family)) continue;
          if (!sources.some((ip) => sameIp(ip, rule.src!.ip))) continue;
          if (config.table !== undefined ? rule.table !== config.table : !isSbrTable(rule.table)) continue;
          try {
            ruleDel(nl, rule);
          } catch (err) {
            if (!isAlreadyGone(err)) failures.push(`from ${formatIp(rule.src.ip)} lookup ${rule.table}: ${messageOf(err)}`);
          }
        }
        if (failures.length > 0) throw new CniError(ErrorCode.Kernel, `failed to delete rules ${failures.join("; ")}`);
        // The table's routes go with the interface when the interface plugin deletes it.
      });
    } catch (err) {
      if (!isNetnsGone(err)) throw err;
    }
  },

  check(args: CmdArgs): void {
    const config = loadConfig(args.conf);
    const prev = args.conf.prevResult;
    if (!prev) throw new CniError(ErrorCode.InvalidConfig, "required prevResult missing");
    const addresses = ipsOfInterface(args.ifName, prev.ips ?? [], prev.interfaces ?? []);
    inLockedNetns(args.netns, (nl) => {
      const link = linkByName(nl, args.ifName);
      if (!link) throw new CniError(ErrorCode.Internal, `interface "${args.ifName}" not found in the pod`);
      const rules = ruleList(nl);
      for (const ip of addresses) {
        const host = hostPrefix(ip);
        const rule = rules.find(
          (r) =>
            r.src !== undefined &&
            r.src.length === host.length &&
            sameIp(r.src.ip, host.ip) &&
            (config.table !== undefined ? r.table === config.table : isSbrTable(r.table)),
        );
        if (!rule) throw new CniError(ErrorCode.Internal, `no rule routes traffic from ${formatIp(host.ip)}`);
        if (config.table !== undefined) continue;
        const gw = gatewayFor(ip, host.family, config);
        const table = routeList(nl, { family: host.family, table: rule.table });
        if (gw && !table.some((r) => r.dst.length === 0 && r.gw !== undefined && sameIp(r.gw, gw) && r.linkIndex === link.index)) {
          throw new CniError(ErrorCode.Internal, `table ${rule.table} has no default route via ${formatIp(gw)} dev ${args.ifName}`);
        }
        const leftInMain = routeList(nl, { family: host.family, table: RT_TABLE_MAIN, linkIndex: link.index }).filter(
          (r) => !config.addSourceHints || r.scope !== RT_SCOPE_LINK,
        );
        if (leftInMain.length > 0) {
          throw new CniError(ErrorCode.Internal, `main table still routes via ${args.ifName} (${leftInMain.length} routes)`);
        }
      }
    });
  },
};

/** Opens the pod's namespace, locks it against concurrent sbr calls, and hands over a netlink handle. */
function inLockedNetns(path: string, work: (nl: Netlink) => void): void {
  withNetns(path, (ns, nl) => {
    ns.lock(); // released when withNetns closes the namespace
    work(nl);
  });
}

function routeBySource(nl: Netlink, link: Link, addresses: IPConfig[], config: SbrConfig, undo: UndoLog): void {
  // Listed once, before we add anything: these are the routes to move.
  const mainRoutes = routeList(nl, { table: RT_TABLE_MAIN, linkIndex: link.index });
  const usedTables = new Set(ruleList(nl).map((r) => r.table));
  const handledFamilies = new Set<Family>();
  let table = FIRST_TABLE;
  for (const ip of addresses) {
    const host = hostPrefix(ip);
    const subnet = networkOf(parsePrefix(ip.address));
    while (usedTables.has(table) || RESERVED_TABLES.has(table)) table++;
    usedTables.add(table);
    handledFamilies.add(host.family);

    addSourceRule(nl, host, table, undo);
    const gw = gatewayFor(ip, host.family, config);
    if (gw) {
      const route = { dst: defaultPrefix(host.family), gw, linkIndex: link.index, table };
      kernel(`failed to add default route via ${formatIp(gw)} to table ${table}`, () => routeAdd(nl, route, "exclusive"));
      undo.push(() => routeDel(nl, route));
    }
    // Only routes of the address's own family: upstream also copies (and then deletes from main)
    // the other family's routes, which breaks IPv6 link-local on an IPv4-only interface.
    for (const route of mainRoutes) {
      if (route.family !== host.family || !belongsToSubnet(route, subnet)) continue;
      const copy = { ...route, table };
      kernel(`failed to copy route to ${formatDst(route)} into table ${table}`, () => routeAdd(nl, copy, "replace"));
      undo.push(() => routeDel(nl, copy));
    }
  }

  const moved = mainRoutes.filter((r) => handledFamilies.has(r.family));
  if (config.addSourceHints) {
    keepSubnetRoutesWithHints(nl, link, addresses, moved);
  } else {
    for (const route of moved) {
      kernel(`failed to delete route to ${formatDst(route)} from the main table`, () => routeDel(nl, route));
      undo.push(() => routeAdd(nl, route, "add"));
    }
  }
}

/**
 * addSourceHints: subnet routes stay in main, with the address as preferred source, so that
 * locally originated traffic to the subnet picks it; gateway routes still move out of main.
 */
function keepSubnetRoutesWithHints(nl: Netlink, link: Link, addresses: IPConfig[], moved: Route[]): void {
  for (const ip of addresses) {
    const prefix = parsePrefix(ip.address);
    const route = { dst: networkOf(prefix), linkIndex: link.index, scope: RT_SCOPE_LINK, src: prefix.ip, protocol: 2 };
    try {
      routeAdd(nl, route, "replace");
    } catch (err) {
      log.error(`adding source hint for ${ip.address}: ${messageOf(err)}`);
    }
  }
  for (const route of moved.filter((r) => r.scope !== RT_SCOPE_LINK)) {
    try {
      routeDel(nl, route);
    } catch (err) {
      log.error(`deleting route to ${formatDst(route)} from main: ${messageOf(err)}`);
    }
  }
}

/** Upstream's rule: the route's source or gateway is in the address's subnet, or it has neither. */
function belongsToSubnet(route: Route, subnet: Prefix): boolean {
  if (route.src && prefixContains(subnet, route.src)) return true;
  if (route.gw && prefixContains(subnet, route.gw)) return true;
  return !route.src && !route.gw;
}

function addSourceRule(nl: Netlink, host: Prefix, table: number, undo: UndoLog): void {
  const rule = { family: host.family, table, src: host };
  kernel(`failed to add rule from ${formatIp(host.ip)} lookup ${table}`, () => ruleAdd(nl, rule));
  undo.push(() => ruleDel(nl, rule));
}

function gatewayFor(ip: IPConfig, family: Family, config: SbrConfig): IP | undefined {
  return config.gateways.get(family) ?? (ip.gateway ? parseIp(ip.gateway) : undefined);
}

function hostPrefix(ip: IPConfig): Prefix {
  const prefix = parsePrefix(ip.address);
  return { ip: prefix.ip, length: bitsOf(prefix.family), family: prefix.family };
}

function isSbrTable(table: number): boolean {
  return table >= FIRST_TABLE && !RESERVED_TABLES.has(table);
}

/** The addresses whose rules DEL removes: those on the interface, and prevResult's for it. */
function sourcesOf(nl: Netlink, args: CmdArgs): IP[] {
  const sources: IP[] = [];
  const link = linkByName(nl, args.ifName);
  if (link) sources.push(...addrList(nl, { linkIndex: link.index }).map((a) => a.prefix.ip));
  // prevResult still names the addresses when the interface is already gone.
  const prev = args.conf.prevResult;
  for (const ip of ipsOfInterface(args.ifName, prev?.ips ?? [], prev?.interfaces ?? [])) sources.push(parsePrefix(ip.address).ip);
  return sources;
}

/** A route's destination as messages name it: "default", or the prefix. */
function formatDst(route: Route): string {
  return route.dst.length === 0 ? "default" : formatPrefix(route.dst);
}
