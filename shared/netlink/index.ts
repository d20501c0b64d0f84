/**
 * The typed netlink API every plugin uses for kernel state: links, addresses, routes and rules, for
 * IPv4 and IPv6. Messages are encoded and decoded by the `netlink` package's rtnetlink codecs; the
 * transport is our blocking socket (./socket.ts).
 *
 * A `Netlink` handle acts on the network namespace it was opened in (see `Netns.netlink()` in
 * shared/netns.ts for opening one inside a pod's namespace).
 */
import { AttrStream, putU32, putU16, getU32, type StreamData } from "netlink/dist/structs";
import * as rt from "netlink/dist/rt/structs";
import * as ifla from "netlink/dist/rt/ifla";
import {
  type Family,
  type IP,
  type Prefix,
  bitsOf,
  broadcastOf,
  formatMac,
  ipFromBytes,
  ipToBytes,
  parseMac,
} from "../ip.ts";
import { NetlinkError, NetlinkSocket, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE } from "./socket.ts";

export { NetlinkError } from "./socket.ts";

const AF_UNSPEC = 0;
const AF_INET = 2;
const AF_INET6 = 10;
const ENODEV = 19;
const ENOENT = 2;
const ESRCH = 3;
const EADDRNOTAVAIL = 99;

export type MacvlanMode = "private" | "vepa" | "bridge" | "passthru" | "source";
export type IpvlanMode = "l2" | "l3" | "l3s";
export type IpvlanFlag = "bridge" | "private" | "vepa";

const MACVLAN_MODES: Record<MacvlanMode, number> = { private: 1, vepa: 2, bridge: 4, passthru: 8, source: 16 };
const IPVLAN_MODES: Record<IpvlanMode, number> = { l2: 0, l3: 1, l3s: 2 };
const IPVLAN_FLAGS: Record<IpvlanFlag, number> = { bridge: 0, private: 1, vepa: 2 };
const IFLA_MACVLAN_MODE = 1;
const IFLA_MACVLAN_BC_QUEUE_LEN = 7;
const IFLA_IPVLAN_MODE = 1;
const IFLA_IPVLAN_FLAGS = 2;
const VETH_INFO_PEER = 1;
const IF_OPER_UP = 6;

interface LinkCommon {
  name: string;
  mtu?: number;
  /** "aa:bb:cc:dd:ee:ff" */
  mac?: string;
  txQueueLen?: number;
  /** Create the link directly inside the namespace this descriptor refers to. */
  netnsFd?: number;
}

/** What `linkAdd` can create: one shape per link kind, as vishvananda/netlink's typed links. */
export type LinkSpec =
  | (LinkCommon & { kind: "macvlan"; parentIndex: number; mode: MacvlanMode; bcQueueLen?: number })
  | (LinkCommon & { kind: "ipvlan"; parentIndex: number; mode: IpvlanMode; flag: IpvlanFlag })
  | (LinkCommon & { kind: "veth"; peerName: string; peerNetnsFd?: number })
  | (LinkCommon & { kind: "dummy" });

/** Kind-specific state read back from the kernel. */
export type LinkInfo =
  | { kind: "macvlan"; mode: MacvlanMode | "unknown"; bcQueueLen?: number }
  | { kind: "ipvlan"; mode: IpvlanMode | "unknown"; flag: IpvlanFlag | "unknown" }
  | { kind: string };

export interface Link {
  index: number;
  name: string;
  mtu: number;
  mac: string;
  /** IFF_UP: administratively up. */
  up: boolean;
  /** Operational state UP (RFC 2863): has carrier and can pass traffic. */
  operUp: boolean;
  txQueueLen: number;
  /** IFLA_LINK: the parent of a macvlan/ipvlan/veth, possibly in another namespace. */
  parentIndex?: number;
  /** The namespace id of the parent, when it lives in another namespace. */
  parentNetnsId?: number;
  info?: LinkInfo;
}

export interface LinkChange {
  up?: boolean;
  mtu?: number;
  name?: string;
  mac?: string;
  /** Move the link into the namespace this descriptor refers to. */
  netnsFd?: number;
}

export interface Address {
  linkIndex: number;
  prefix: Prefix;
  /** IPv6 duplicate address detection still running. */
  tentative: boolean;
  dadFailed: boolean;
  scope: number;
}

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

export interface RuleSpec {
  family: Family;
  table: number;
  src?: Prefix;
  dst?: Prefix;
  priority?: number;
}

export interface Rule extends RuleSpec {
  action: number;
}

export const RT_TABLE_MAIN = 254;
export const RT_TABLE_LOCAL = 255;
export const RT_SCOPE_UNIVERSE = 0;
export const RT_SCOPE_LINK = 253;
export const RT_SCOPE_HOST = 254;
const RTN_UNICAST = 1;
const RTPROT_BOOT = 3;
const FR_ACT_TO_TBL = 1;

export class Netlink {
  private constructor(private readonly socket: NetlinkSocket) {}

  /** A handle on the namespace the calling thread is in now. */
  static open(): Netlink {
    return new Netlink(NetlinkSocket.open());
  }

  close(): void {
    this.socket.close();
  }

  // ---- links ----

  linkAdd(spec: LinkSpec): void {
    const attrs: ifla.LinkAttrs = { ifname: spec.name };
    if (spec.mtu !== undefined) attrs.mtu = spec.mtu;
    if (spec.mac !== undefined) attrs.address = macBytes(spec.mac);
    if (spec.txQueueLen !== undefined) attrs.txqlen = spec.txQueueLen;
    if (spec.netnsFd !== undefined) attrs.netNsFd = spec.netnsFd;
    if (spec.kind === "macvlan" || spec.kind === "ipvlan") attrs.link = putU32(spec.parentIndex);
    attrs.linkinfo = encode(ifla.formatInfo({ kind: spec.kind, ...kindData(spec) }));
    this.socket.execute(rt.MessageType.NEWLINK, NLM_F_CREATE | NLM_F_EXCL, linkMessage({}, attrs));
  }

  linkDel(index: number): void {
    this.socket.execute(rt.MessageType.DELLINK, 0, linkMessage({ index }, {}));
  }

  linkSet(index: number, change: LinkChange): void {
    const attrs: ifla.LinkAttrs = {};
    if (change.mtu !== undefined) attrs.mtu = change.mtu;
    if (change.name !== undefined) attrs.ifname = change.name;
    if (change.mac !== undefined) attrs.address = macBytes(change.mac);
    if (change.netnsFd !== undefined) attrs.netNsFd = change.netnsFd;
    const header: rt.Link = { index };
    if (change.up !== undefined) {
      header.flags = change.up ? { up: true } : {};
      header.change = { up: true };
    }
    this.socket.execute(rt.MessageType.SETLINK, 0, linkMessage(header, attrs));
  }

  /** The link of that name, or undefined when there is none. */
  linkByName(name: string): Link | undefined {
    return this.linkGet({}, { ifname: name });
  }

  linkByIndex(index: number): Link | undefined {
    return this.linkGet({ index }, {});
  }

  links(): Link[] {
    return this.socket.dump(rt.MessageType.GETLINK, linkMessage({}, {})).map(decodeLink);
  }

  private linkGet(header: rt.Link, attrs: ifla.LinkAttrs): Link | undefined {
    try {
      return decodeLink(this.socket.get(rt.MessageType.GETLINK, linkMessage(header, attrs)));
    } catch (err) {
      if (err instanceof NetlinkError && err.errno === ENODEV) return undefined;
      throw err;
    }
  }

  // ---- addresses ----

  addrAdd(linkIndex: number, prefix: Prefix): void {
    const local = ipToBytes(prefix.ip);
    const attrs: rt.AddressAttrs = { local, address: local };
    // As `ip addr add ... brd +` and upstream's netlink library: IPv4 below /31 gets a broadcast.
    if (prefix.family === 4 && prefix.length < 31) attrs.broadcast = ipToBytes(broadcastOf(prefix));
    const header: rt.Address = { family: afOf(prefix.family), prefixlen: prefix.length, index: linkIndex };
    this.socket.execute(rt.MessageType.NEWADDR, NLM_F_CREATE | NLM_F_EXCL, addressMessage(header, attrs));
  }

  addrDel(linkIndex: number, prefix: Prefix): void {
    const local = ipToBytes(prefix.ip);
    const header: rt.Address = { family: afOf(prefix.family), prefixlen: prefix.length, index: linkIndex };
    this.socket.execute(rt.MessageType.DELADDR, 0, addressMessage(header, { local, address: local }));
  }

  /** Addresses of one link (or all links), of one family (or both). */
  addrs(filter: { linkIndex?: number; family?: Family } = {}): Address[] {
    const header: rt.Address = { family: filter.family ? afOf(filter.family) : AF_UNSPEC };
    if (filter.linkIndex !== undefined) header.index = filter.linkIndex;
    return this.socket
      .dump(rt.MessageType.GETADDR, addressMessage(header, {}))
      .map(decodeAddress)
      .filter((a) => filter.linkIndex === undefined || a.linkIndex === filter.linkIndex);
  }

  // ---- routes ----

  /**
   * "add" appends like upstream's RouteAdd (create, not exclusive: the kernel still refuses an
   * exact duplicate); "exclusive" fails on any existing route to dst; "replace" overwrites.
   */
  routeAdd(route: RouteSpec, mode: "add" | "exclusive" | "replace" = "add"): void {
    const flags = NLM_F_CREATE | (mode === "exclusive" ? NLM_F_EXCL : mode === "replace" ? NLM_F_REPLACE : 0);
    this.socket.execute(rt.MessageType.NEWROUTE, flags, encodeRoute(route));
  }

  routeDel(route: RouteSpec): void {
    this.socket.execute(rt.MessageType.DELROUTE, 0, encodeRoute(route));
  }

  /** Routes of one family (or both), optionally of one table (default: every table) and link. */
  routes(filter: { family?: Family; table?: number; linkIndex?: number } = {}): Route[] {
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
      for (const payload of this.socket.dump(rt.MessageType.GETROUTE, routeMessage(header, attrs))) {
        const route = decodeRoute(payload);
        if (filter.table !== undefined && route.table !== filter.table) continue;
        if (filter.linkIndex !== undefined && route.linkIndex !== filter.linkIndex) continue;
        out.push(route);
      }
    }
    return out;
  }

  // ---- rules ----

  ruleAdd(rule: RuleSpec): void {
    this.socket.execute(rt.MessageType.NEWRULE, NLM_F_CREATE | NLM_F_EXCL, encodeRule(rule));
  }

  ruleDel(rule: RuleSpec): void {
    this.socket.execute(rt.MessageType.DELRULE, 0, encodeRule(rule));
  }

  rules(family?: Family): Rule[] {
    const families = family ? [family] : ([4, 6] as const);
    return families.flatMap((f) =>
      this.socket.dump(rt.MessageType.GETRULE, ruleMessage({ family: afOf(f) }, {})).map(decodeRule),
    );
  }
}

/** True for the errors that mean "that object is already gone". */
export function isNotFound(err: unknown): boolean {
  return (
    err instanceof NetlinkError &&
    (err.errno === ENODEV || err.errno === ENOENT || err.errno === ESRCH || err.errno === EADDRNOTAVAIL)
  );
}

// ---- encoding ----

function encode(data: StreamData): Buffer {
  const stream = new AttrStream();
  stream.emit(data);
  return Buffer.concat(stream.bufs);
}

function linkMessage(data: rt.Link, attrs: ifla.LinkAttrs): Uint8Array[] {
  return [encode((out) => rt.formatLinkMessage({ kind: "link", data, attrs }, out))];
}

function addressMessage(data: rt.Address, attrs: rt.AddressAttrs): Uint8Array[] {
  return [encode((out) => rt.formatAddressMessage({ kind: "address", data, attrs }, out))];
}

function routeMessage(data: rt.Route, attrs: rt.RouteAttrs): Uint8Array[] {
  return [encode((out) => rt.formatRouteMessage({ kind: "route", data, attrs }, out))];
}

function ruleMessage(data: rt.Rule, attrs: rt.RuleAttrs): Uint8Array[] {
  return [encode((out) => rt.formatRuleMessage({ kind: "rule", data, attrs }, out))];
}

function afOf(family: Family): number {
  return family === 4 ? AF_INET : AF_INET6;
}

function macBytes(mac: string): Buffer {
  const bytes = parseMac(mac);
  if (!bytes) throw new Error(`invalid MAC address "${mac}"`);
  return bytes;
}

function kindData(spec: LinkSpec): { data?: Buffer } {
  const data = new AttrStream();
  switch (spec.kind) {
    case "macvlan":
      data.push(IFLA_MACVLAN_MODE, putU32(MACVLAN_MODES[spec.mode]));
      if (spec.bcQueueLen !== undefined) data.push(IFLA_MACVLAN_BC_QUEUE_LEN, putU32(spec.bcQueueLen));
      break;
    case "ipvlan":
      data.push(IFLA_IPVLAN_MODE, putU16(IPVLAN_MODES[spec.mode]));
      data.push(IFLA_IPVLAN_FLAGS, putU16(IPVLAN_FLAGS[spec.flag]));
      break;
    case "veth": {
      const peer: ifla.LinkAttrs = { ifname: spec.peerName };
      if (spec.peerNetnsFd !== undefined) peer.netNsFd = spec.peerNetnsFd;
      data.push(VETH_INFO_PEER, encode((out) => rt.formatLinkMessage({ kind: "link", data: {}, attrs: peer }, out)));
      break;
    }
    case "dummy":
      return {};
  }
  return { data: Buffer.concat(data.bufs) };
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

function encodeRule(rule: RuleSpec): Uint8Array[] {
  const header: rt.Rule = {
    family: afOf(rule.family),
    table: rule.table < 256 ? rule.table : 0,
    action: FR_ACT_TO_TBL,
  };
  const attrs: rt.RuleAttrs = { table: rule.table };
  if (rule.src) {
    header.srcLen = rule.src.length;
    attrs.src = ipToBytes(rule.src.ip);
  }
  if (rule.dst) {
    header.dstLen = rule.dst.length;
    attrs.dst = ipToBytes(rule.dst.ip);
  }
  if (rule.priority !== undefined) attrs.priority = rule.priority;
  return ruleMessage(header, attrs);
}

// ---- decoding ----

function asBuffer(payload: Uint8Array): Buffer {
  return Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
}

function decodeLink(payload: Uint8Array): Link {
  const { data, attrs } = rt.parseLinkMessage(asBuffer(payload));
  const link: Link = {
    index: data.index ?? 0,
    name: attrs.ifname ?? "",
    mtu: attrs.mtu ?? 0,
    mac: attrs.address ? formatMac(attrs.address) : "",
    up: data.flags?.up === true,
    operUp: attrs.operstate === IF_OPER_UP,
    txQueueLen: attrs.txqlen ?? 0,
  };
  if (attrs.link) link.parentIndex = getU32(attrs.link);
  if (attrs.linkNetnsid !== undefined) link.parentNetnsId = attrs.linkNetnsid;
  if (attrs.linkinfo) link.info = decodeLinkInfo(ifla.parseInfo(attrs.linkinfo));
  return link;
}

function decodeLinkInfo(info: ifla.Info): LinkInfo {
  const kind = info.kind ?? "";
  if (kind === "macvlan" && info.data) {
    const raw = ifla.parseMacvlan(info.data);
    const out: LinkInfo = { kind, mode: nameOf(MACVLAN_MODES, raw.mode ?? -1) };
    const bcQueueLen = findAttribute(info.data, IFLA_MACVLAN_BC_QUEUE_LEN);
    if (bcQueueLen) out.bcQueueLen = getU32(bcQueueLen);
    return out;
  }
  if (kind === "ipvlan" && info.data) {
    const raw = ifla.parseIpvlan(info.data);
    const flags = raw.flags && raw.flags.length >= 2 ? raw.flags.readUInt16LE(0) : 0;
    return { kind, mode: nameOf(IPVLAN_MODES, raw.mode ?? -1), flag: nameOf(IPVLAN_FLAGS, flags) };
  }
  return { kind };
}

function findAttribute(data: Buffer, type: number): Buffer | undefined {
  let found: Buffer | undefined;
  let offset = 0;
  while (offset + 4 <= data.length) {
    const length = data.readUInt16LE(offset);
    if (length < 4) break;
    if ((data.readUInt16LE(offset + 2) & 0x3fff) === type) found = data.subarray(offset + 4, offset + length);
    offset += (length + 3) & ~3;
  }
  return found;
}

function nameOf<K extends string>(table: Record<K, number>, value: number): K | "unknown" {
  for (const [name, v] of Object.entries(table) as [K, number][]) if (v === value) return name;
  return "unknown";
}

function decodeAddress(payload: Uint8Array): Address {
  const { data, attrs } = rt.parseAddressMessage(asBuffer(payload));
  const family: Family = data.family === AF_INET ? 4 : 6;
  const bytes = attrs.local ?? attrs.address ?? Buffer.alloc(family === 4 ? 4 : 16);
  // IFA_FLAGS (32 bits) supersedes the 8-bit flags of the header when present.
  const flags = attrs.flags ?? data.flags ?? {};
  return {
    linkIndex: data.index ?? 0,
    prefix: { ip: ipFromBytes(bytes), length: data.prefixlen ?? bitsOf(family), family },
    tentative: flags.tentative === true,
    dadFailed: flags.dadfailed === true,
    scope: data.scope ?? 0,
  };
}

function decodeRoute(payload: Uint8Array): Route {
  const { data, attrs } = rt.parseRouteMessage(asBuffer(payload));
  const family: Family = data.family === AF_INET ? 4 : 6;
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

function decodeRule(payload: Uint8Array): Rule {
  const { data, attrs } = rt.parseRuleMessage(asBuffer(payload));
  const family: Family = data.family === AF_INET ? 4 : 6;
  const rule: Rule = {
    family,
    table: attrs.table ?? data.table ?? 0,
    action: enumNumber(rt.RuleAction, data.action),
  };
  if (attrs.src) rule.src = { ip: ipFromBytes(attrs.src), length: data.srcLen ?? bitsOf(family), family };
  if (attrs.dst) rule.dst = { ip: ipFromBytes(attrs.dst), length: data.dstLen ?? bitsOf(family), family };
  if (attrs.priority !== undefined) rule.priority = attrs.priority;
  return rule;
}

/** The codecs hand enum fields back as their names when they know them; we want the numbers. */
function enumNumber(values: Record<string, string | number>, value: number | string | undefined): number {
  if (typeof value === "number") return value;
  const number = value === undefined ? undefined : values[value];
  return typeof number === "number" ? number : 0;
}
