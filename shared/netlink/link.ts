/**
 * Links over netlink: create one of the kinds the plugins make (one typed `LinkSpec` per kind, as
 * vishvananda/netlink's typed links), change, delete, look up and list them.
 */
import { AttrStream, putU32, putU16, getU32 } from "netlink/dist/structs";
import * as rt from "netlink/dist/rt/structs";
import * as ifla from "netlink/dist/rt/ifla";
import { errnoOf } from "../errors.ts";
import { formatMac, parseMac } from "../ip.ts";
import { asBuffer, encode } from "./message.ts";
import { type Netlink, NetlinkError, NLM_F_CREATE, NLM_F_EXCL } from "./socket.ts";

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
type LinkInfo =
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

export function linkAdd(nl: Netlink, spec: LinkSpec): void {
  const attrs: ifla.LinkAttrs = { ifname: spec.name };
  if (spec.mtu !== undefined) attrs.mtu = spec.mtu;
  if (spec.mac !== undefined) attrs.address = macBytes(spec.mac);
  if (spec.txQueueLen !== undefined) attrs.txqlen = spec.txQueueLen;
  if (spec.netnsFd !== undefined) attrs.netNsFd = spec.netnsFd;
  if (spec.kind === "macvlan" || spec.kind === "ipvlan") attrs.link = putU32(spec.parentIndex);
  attrs.linkinfo = encode(ifla.formatInfo({ kind: spec.kind, ...kindData(spec) }));
  nl.execute(rt.MessageType.NEWLINK, NLM_F_CREATE | NLM_F_EXCL, linkMessage({}, attrs));
}

export function linkDel(nl: Netlink, index: number): void {
  nl.execute(rt.MessageType.DELLINK, 0, linkMessage({ index }, {}));
}

export function linkSet(nl: Netlink, index: number, change: LinkChange): void {
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
  nl.execute(rt.MessageType.SETLINK, 0, linkMessage(header, attrs));
}

/** The link of that name, or undefined when there is none. */
export function linkByName(nl: Netlink, name: string): Link | undefined {
  return linkGet(nl, {}, { ifname: name });
}

export function linkByIndex(nl: Netlink, index: number): Link | undefined {
  return linkGet(nl, { index }, {});
}

function linkGet(nl: Netlink, header: rt.Link, attrs: ifla.LinkAttrs): Link | undefined {
  try {
    return decodeLink(nl.get(rt.MessageType.GETLINK, linkMessage(header, attrs)));
  } catch (err) {
    if (err instanceof NetlinkError && errnoOf(err) === "ENODEV") return undefined;
    throw err;
  }
}

// ---- encoding ----

function linkMessage(data: rt.Link, attrs: ifla.LinkAttrs): Uint8Array[] {
  return [encode((out) => rt.formatLinkMessage({ kind: "link", data, attrs }, out))];
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
      data.push(
        VETH_INFO_PEER,
        encode((out) => rt.formatLinkMessage({ kind: "link", data: {}, attrs: peer }, out)),
      );
      break;
    }
    case "dummy":
      return {};
  }
  return { data: Buffer.concat(data.bufs) };
}

// ---- decoding ----

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
