/**
 * IP address and prefix helpers over ipaddr.js: parsing with clear errors, byte forms for netlink,
 * and the handful of prefix relations the plugins need.
 */
import ipaddr from "ipaddr.js";

export type Family = 4 | 6;
export type IP = ipaddr.IPv4 | ipaddr.IPv6;

export interface Prefix {
  /** The address as written, host bits kept ("10.1.2.3" of "10.1.2.3/24"). */
  ip: IP;
  length: number;
  family: Family;
}

export function familyOf(ip: IP): Family {
  return ip.kind() === "ipv4" ? 4 : 6;
}

/**
 * Parses a plain IPv4 or IPv6 address as Go's net.ParseIP would; undefined when the text is not
 * one. ipaddr.js alone also takes forms Go refuses ("10.1", "0x0a.0.0.1", zone suffixes), which
 * upstream plugins down the chain would then reject.
 */
export function tryParseIp(text: string): IP | undefined {
  if (ipaddr.IPv4.isValidFourPartDecimal(text)) return ipaddr.IPv4.parse(text);
  if (text.includes(":") && !text.includes("%") && ipaddr.IPv6.isValid(text)) return ipaddr.IPv6.parse(text);
  return undefined;
}

export function parseIp(text: string): IP {
  const ip = tryParseIp(text);
  if (!ip) throw new Error(`invalid IP address "${text}"`);
  return ip;
}

/** Parses "ip/len", keeping the host bits. */
export function tryParsePrefix(text: string): Prefix | undefined {
  const slash = text.indexOf("/");
  if (slash < 0) return undefined;
  const ip = tryParseIp(text.slice(0, slash));
  const lengthText = text.slice(slash + 1);
  if (!ip || !/^(0|[1-9]\d{0,2})$/.test(lengthText)) return undefined;
  const length = Number(lengthText);
  const family = familyOf(ip);
  if (length > bitsOf(family)) return undefined;
  return { ip, length, family };
}

export function parsePrefix(text: string): Prefix {
  const prefix = tryParsePrefix(text);
  if (!prefix) throw new Error(`invalid CIDR "${text}"`);
  return prefix;
}

export function bitsOf(family: Family): number {
  return family === 4 ? 32 : 128;
}

export function formatIp(ip: IP): string {
  // toString() gives the RFC 5952 short form for IPv6, as Go and iproute2 print it.
  return ip.toString();
}

export function formatPrefix(prefix: Prefix): string {
  return `${formatIp(prefix.ip)}/${prefix.length}`;
}

export function ipToBytes(ip: IP): Buffer {
  return Buffer.from(ip.toByteArray());
}

export function ipFromBytes(bytes: Uint8Array): IP {
  return ipaddr.fromByteArray(Array.from(bytes));
}

/** The prefix with its host bits cleared ("10.1.2.3/24" → "10.1.2.0/24"). */
export function networkOf(prefix: Prefix): Prefix {
  const bytes = prefix.ip.toByteArray();
  for (let bit = prefix.length; bit < bytes.length * 8; bit++) {
    bytes[bit >> 3]! &= ~(0x80 >> (bit & 7));
  }
  return { ip: ipaddr.fromByteArray(bytes), length: prefix.length, family: prefix.family };
}

export function prefixContains(prefix: Prefix, ip: IP): boolean {
  return familyOf(ip) === prefix.family && ip.match(prefix.ip, prefix.length);
}

export function sameIp(a: IP, b: IP): boolean {
  return familyOf(a) === familyOf(b) && a.toNormalizedString() === b.toNormalizedString();
}

/** The IPv4 broadcast address of a prefix, as `ip addr add ... brd +` computes it. */
export function broadcastOf(prefix: Prefix): IP {
  const bytes = prefix.ip.toByteArray();
  for (let bit = prefix.length; bit < bytes.length * 8; bit++) {
    bytes[bit >> 3]! |= 0x80 >> (bit & 7);
  }
  return ipaddr.fromByteArray(bytes);
}

/** The unspecified network of a family, for default routes: 0.0.0.0/0 or ::/0. */
export function defaultPrefix(family: Family): Prefix {
  return family === 4 ? { ip: ipaddr.IPv4.parse("0.0.0.0"), length: 0, family } : { ip: ipaddr.IPv6.parse("::"), length: 0, family };
}

/** Parses a MAC address "aa:bb:cc:dd:ee:ff" (any case, ':' or '-'). */
export function parseMac(text: string): Buffer | undefined {
  if (!/^([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}$/.test(text)) return undefined;
  return Buffer.from(text.split(/[:-]/).map((part) => parseInt(part, 16)));
}

export function formatMac(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(":");
}
