/**
 * Addresses over netlink: add and delete an IPv4 or IPv6 address on a link, and list them with
 * the state IPv6 duplicate address detection leaves on them.
 */
import * as rt from "netlink/dist/rt/structs";
import { type Family, type Prefix, bitsOf, broadcastOf, ipFromBytes, ipToBytes } from "../ip.ts";
import { AF_UNSPEC, afOf, asBuffer, encode, familyOfAf } from "./message.ts";
import { type Netlink, NLM_F_CREATE, NLM_F_EXCL } from "./socket.ts";

export interface Address {
  linkIndex: number;
  prefix: Prefix;
  /** IPv6 duplicate address detection still running. */
  tentative: boolean;
  dadFailed: boolean;
  scope: number;
}

export function addrAdd(nl: Netlink, linkIndex: number, prefix: Prefix): void {
  const local = ipToBytes(prefix.ip);
  const attrs: rt.AddressAttrs = { local, address: local };
  // As `ip addr add ... brd +` and upstream's netlink library: IPv4 below /31 gets a broadcast.
  if (prefix.family === 4 && prefix.length < 31) attrs.broadcast = ipToBytes(broadcastOf(prefix));
  const header: rt.Address = { family: afOf(prefix.family), prefixlen: prefix.length, index: linkIndex };
  nl.execute(rt.MessageType.NEWADDR, NLM_F_CREATE | NLM_F_EXCL, addressMessage(header, attrs));
}

/** Addresses of one link (or all links), of one family (or both). */
export function addrList(nl: Netlink, filter: { linkIndex?: number; family?: Family } = {}): Address[] {
  const header: rt.Address = { family: filter.family ? afOf(filter.family) : AF_UNSPEC };
  if (filter.linkIndex !== undefined) header.index = filter.linkIndex;
  return nl
    .dump(rt.MessageType.GETADDR, addressMessage(header, {}))
    .map(decodeAddress)
    .filter((a) => filter.linkIndex === undefined || a.linkIndex === filter.linkIndex);
}

function addressMessage(data: rt.Address, attrs: rt.AddressAttrs): Uint8Array[] {
  return [encode((out) => rt.formatAddressMessage({ kind: "address", data, attrs }, out))];
}

function decodeAddress(payload: Uint8Array): Address {
  const { data, attrs } = rt.parseAddressMessage(asBuffer(payload));
  const family = familyOfAf(data.family);
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
