/**
 * Routes over netlink: add (appending, exclusive or replacing), delete, and list them by family,
 * table and output link.
 */
import { putU32, getU32 } from "netlink/dist/structs";
import * as rt from "netlink/dist/rt/structs";
import { type Family, type IP, type Prefix, ipFromBytes, ipToBytes } from "../ip.ts";
import { afOf, asBuffer, encode, enumNumber, familyOfAf } from "./message.ts";
import { type Netlink, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE } from "./socket.ts";

export interface RouteSpec {
  dst: Prefix;
  gw?: IP;
  linkIndex?: number;
  /** Default: main (254). */
  table?: number;
  /** 0 universe, 253 link, 254 host. Default 0, as upstream's netlink library. */
  scope?: number;
  priority?: number;
  src?: IP;
  mtu?: number;
  advmss?: number;
  /** Who made the route (RTPROT_*). Default 3 (boot), as `ip route add` and upstream. */
  protocol?: number;
}

export interface Route extends RouteSpec {
  table: number;
  scope: number;
  family: Family;
  protocol: number;
  type: number;
}

export const RT_TABLE_MAIN = 254;
export const RT_TABLE_LOCAL = 255;
const RT_SCOPE_UNIVERSE = 0;
export const RT_SCOPE_LINK = 253;
const RTN_UNICAST = 1;
const RTPROT_BOOT = 3;

/**
 * "add" appends like upstream's RouteAdd (create, not exclusive: the kernel still refuses an
 * exact duplicate); "exclusive" fails on any existing route to dst; "replace" overwrites.
 */
export function routeAdd(nl: Netlink, route: RouteSpec, mode: "add" | "exclusive" | "replace" = "add"): void {
  const flags = NLM_F_CREATE | (mode === "exclusive" ? NLM_F_EXCL : mode === "replace" ? NLM_F_REPLACE : 0);
  nl.execute(rt.MessageType.NEWROUTE, flags, encodeRoute(route));
}

export function routeDel(nl: Netlink, route: RouteSpec): void {
  nl.execute(rt.MessageType.DELROUTE, 0, encodeRoute(route));
}

/** Routes of one family (or both), optionally of one table (default: every table) and link. */
export function routeList(nl: Netlink, filter: { family?: Family; table?: number; linkIndex?: number } = {}): Route[] {
  const families = filter.family ? [filter.family] : ([4, 6] as const);
  const out: Route[] = [];
  for (const family of families) {
    const header: rt.Route = { family: afOf(family) };
    const attrs: rt.RouteAttrs = {};
    // With strict checking on, the kernel filters a dump by table and output link for us.
    if (filter.table !== undefined) {
      header.table = filter.table < 256 ? filter.table : 0;
      attrs.table = filter.table;
    }
    if (filter.linkIndex !== undefined) attrs.oif = filter.linkIndex;
    for (const payload of nl.dump(rt.MessageType.GETROUTE, routeMessage(header, attrs))) {
      const route = decodeRoute(payload);
      if (filter.table !== undefined && route.table !== filter.table) continue;
      if (filter.linkIndex !== undefined && route.linkIndex !== filter.linkIndex) continue;
      out.push(route);
    }
  }
  return out;
}

function routeMessage(data: rt.Route, attrs: rt.RouteAttrs): Uint8Array[] {
  return [encode((out) => rt.formatRouteMessage({ kind: "route", data, attrs }, out))];
}

function encodeRoute(route: RouteSpec): Uint8Array[] {
  const family = route.dst.family;
  const table = route.table ?? RT_TABLE_MAIN;
  const header: rt.Route = {
    family: afOf(family),
    dstLen: route.dst.length,
    table: table < 256 ? table : 0,
    protocol: route.protocol ?? RTPROT_BOOT,
    scope: route.scope ?? RT_SCOPE_UNIVERSE,
    type: RTN_UNICAST,
  };
  const attrs: rt.RouteAttrs = { table };
  if (route.dst.length > 0) attrs.dst = ipToBytes(route.dst.ip);
  if (route.gw) attrs.gateway = ipToBytes(route.gw);
  if (route.linkIndex !== undefined) attrs.oif = route.linkIndex;
  if (route.priority !== undefined) attrs.priority = route.priority;
  if (route.src) attrs.prefsrc = ipToBytes(route.src);
  const metrics: rt.RouteMetrics = {};
  if (route.mtu !== undefined) metrics.mtu = putU32(route.mtu);
  if (route.advmss !== undefined) metrics.advmss = putU32(route.advmss);
  if (Object.keys(metrics).length > 0) attrs.metrics = metrics;
  return routeMessage(header, attrs);
}

function decodeRoute(payload: Uint8Array): Route {
  const { data, attrs } = rt.parseRouteMessage(asBuffer(payload));
  const family = familyOfAf(data.family);
  const dst = attrs.dst
    ? { ip: ipFromBytes(attrs.dst), length: data.dstLen ?? 0, family }
    : { ip: ipFromBytes(Buffer.alloc(family === 4 ? 4 : 16)), length: 0, family };
  const route: Route = {
    dst,
    family,
    table: attrs.table ?? data.table ?? RT_TABLE_MAIN,
    scope: enumNumber(rt.RouteScope, data.scope),
    protocol: enumNumber(rt.RouteProtocol, data.protocol),
    type: enumNumber(rt.RouteType, data.type),
  };
  if (attrs.gateway) route.gw = ipFromBytes(attrs.gateway);
  if (attrs.oif !== undefined) route.linkIndex = attrs.oif;
  if (attrs.priority !== undefined) route.priority = attrs.priority;
  if (attrs.prefsrc) route.src = ipFromBytes(attrs.prefsrc);
  if (attrs.metrics?.mtu) route.mtu = getU32(attrs.metrics.mtu);
  if (attrs.metrics?.advmss) route.advmss = getU32(attrs.metrics.advmss);
  return route;
}
