/**
 * Addresses and ranges as whereabouts sees them: addresses are BigInts (so IPv6 offsets keep all
 * 128 bits), a range is a network plus the span handed out from it, and text is written the way
 * Go prints IPs, because IPPool and reservation names are built from that text (upstream:
 * `pkg/storage/kubernetes/ipam.go`, `IPPoolName` and `NormalizeIP`).
 * Pure: unit-tested.
 *
 * `Family` and `bitsOf` are shared/ip.ts's. The address form is whereabouts' own: shared/ip.ts
 * holds ipaddr.js objects (byte forms for netlink, prefix relations) and reads IPv4 as Go's
 * net.ParseIP does, where ranges are read as upstream's range parser reads them (leading zeros
 * allowed) and their arithmetic needs 128-bit integers.
 */
import { CniError, ErrorCode } from "../../shared/cni/errors.ts";
import { type Family, bitsOf } from "../../shared/ip.ts";

export interface Address {
  family: Family;
  value: bigint;
}

/** Inclusive. */
export interface Span {
  start: bigint;
  end: bigint;
}

export interface IpRange {
  family: Family;
  /** The network address. */
  network: bigint;
  prefix: number;
  /** Go's text of the network ("2001:db8::/64"): the IPPool's spec.range and the source of its name. */
  cidr: string;
  /** The lowest and highest address ever handed out (after range_start/range_end; upstream: `pkg/allocate/allocate.go`, `IterateForAssignment`). */
  first: bigint;
  last: bigint;
  /** Excluded spans of this range's family, as configured (not clipped to the range). */
  exclude: Span[];
}

/** What a config entry says about one range, before validation. */
export interface RangeSpec {
  range: string;
  rangeStart?: string;
  rangeEnd?: string;
  exclude: string[];
  /** Names the entry in messages: "ipam.range", "ipam.ipRanges[1].range". */
  label: string;
}

/**
 * Parses an IPv4 or IPv6 address. IPv4 parts may carry leading zeros and are read as decimal
 * ("010.0.0.1" is 10.0.0.1), as upstream's range parser takes them; Go's net.ParseIP and our
 * shared parser refuse them, and configs written for upstream use them.
 */
export function parseAddress(text: string): Address | undefined {
  if (/^\d{1,10}\.\d{1,10}\.\d{1,10}\.\d{1,10}$/.test(text)) {
    const parts = text.split(".").map((part) => Number.parseInt(part, 10));
    if (parts.some((part) => part > 255)) return undefined;
    return { family: 4, value: parts.reduce((acc, part) => (acc << 8n) | BigInt(part), 0n) };
  }
  const value = parseIpv6(text);
  return value === undefined ? undefined : { family: 6, value };
}

/**
 * RFC 4291 text as Go reads it: up to eight groups of 1-4 hex digits, one "::", an IPv4 dotted
 * quad as the last 32 bits. (ipaddr.js reads "::10.1.2.3" as IPv4-mapped; Go does not.)
 */
function parseIpv6(text: string): bigint | undefined {
  if (!text.includes(":") || !/^[0-9a-fA-F:.]+$/.test(text)) return undefined;
  let body = text;
  let tail: bigint[] = [];
  if (text.includes(".")) {
    const colon = text.lastIndexOf(":");
    const quad = parseAddress(text.slice(colon + 1));
    if (quad === undefined || quad.family !== 4) return undefined;
    tail = [quad.value >> 16n, quad.value & 0xffffn];
    const prefix = text.slice(0, colon + 1);
    body = prefix.endsWith("::") ? prefix : prefix.slice(0, -1);
  }
  const halves = body.split("::");
  if (halves.length > 2) return undefined;
  const groupsOf = (half: string): bigint[] | undefined => {
    if (half === "") return [];
    const groups = half.split(":");
    if (groups.some((group) => !/^[0-9a-fA-F]{1,4}$/.test(group))) return undefined;
    return groups.map((group) => BigInt(`0x${group}`));
  };
  const [before = "", after] = halves;
  const head = groupsOf(before);
  const rest = after === undefined ? [] : groupsOf(after);
  if (head === undefined || rest === undefined) return undefined;
  const explicit = head.length + rest.length + tail.length;
  if (halves.length === 2 ? explicit > 7 : explicit !== 8) return undefined;
  const groups = [...head, ...Array<bigint>(8 - explicit).fill(0n), ...rest, ...tail];
  return groups.reduce((acc, group) => (acc << 16n) | group, 0n);
}

/** "ip/prefix", host bits kept. */
export function parseCidr(text: string): { address: Address; prefix: number } | undefined {
  const slash = text.indexOf("/");
  if (slash < 0) return undefined;
  const address = parseAddress(text.slice(0, slash));
  const prefixText = text.slice(slash + 1);
  if (address === undefined || !/^\d{1,3}$/.test(prefixText)) return undefined;
  const prefix = Number(prefixText);
  return prefix <= bitsOf(address.family) ? { address, prefix } : undefined;
}

function hostMask(family: Family, prefix: number): bigint {
  return (1n << BigInt(bitsOf(family) - prefix)) - 1n;
}

/** The network containing `value` and its all-ones address. */
export function networkSpan(family: Family, value: bigint, prefix: number): Span {
  const mask = hostMask(family, prefix);
  return { start: value & ~mask, end: value | mask };
}

function isIpv4Mapped(value: bigint): boolean {
  return value >> 32n === 0xffffn;
}

/**
 * Go's net.IP.String(): dotted quad for IPv4 and for IPv4-mapped IPv6; otherwise RFC 5952, i.e.
 * lowercase hex without leading zeros, the longest run of two or more zero groups (the first one
 * on a tie) as "::", a lone zero group written "0".
 */
export function formatAddress(address: Address): string {
  const { family, value } = address;
  if (family === 4 || isIpv4Mapped(value)) {
    const v4 = value & 0xffffffffn;
    return [24n, 16n, 8n, 0n].map((shift) => String((v4 >> shift) & 0xffn)).join(".");
  }
  const groups = Array.from({ length: 8 }, (_, i) => Number((value >> BigInt(112 - 16 * i)) & 0xffffn));
  let bestStart = -1;
  let bestLength = 1; // a run must be at least two groups long to be compressed
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = (part: number[]): string => part.map((g) => g.toString(16)).join(":");
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLength))}`;
}

export function formatCidr(family: Family, value: bigint, prefix: number): string {
  return `${formatAddress({ family, value })}/${prefix}`;
}

/** True for addresses of the network's family inside it. */
function inSpan(span: Span, value: bigint): boolean {
  return value >= span.start && value <= span.end;
}

function invalid(message: string, details = ""): CniError {
  return new CniError(ErrorCode.InvalidConfig, message, details);
}

/**
 * Builds one range from its config entry (upstream: `pkg/config/config.go`): `CIDR` or `A-B/P`, bounded by
 * range_start/range_end, with exclusions. Everything is checked here, at load: upstream
 * silently ignores out-of-span bounds and parses exclusions only when it allocates.
 */
export function parseRange(spec: RangeSpec): IpRange {
  let cidrText = spec.range;
  let startText = spec.rangeStart;
  let endText = spec.rangeEnd;
  // IPv6 text never holds a '-', so one splits "A-B/P" for both families.
  if (cidrText.includes("-")) {
    const [start = "", rest = "", ...extra] = cidrText.split("-");
    if (extra.length > 0) throw invalid(`invalid "${spec.label}": ${JSON.stringify(spec.range)} is not a CIDR or an A-B/P range`);
    startText = start;
    cidrText = rest;
    const slash = rest.indexOf("/");
    endText = slash < 0 ? rest : rest.slice(0, slash);
  }
  const parsed = parseCidr(cidrText);
  if (parsed === undefined) {
    throw invalid(`invalid "${spec.label}": ${JSON.stringify(spec.range)} is not a CIDR or an A-B/P range`);
  }
  const { family } = parsed.address;
  const net = networkSpan(family, parsed.address.value, parsed.prefix);
  const cidr = formatCidr(family, net.start, parsed.prefix);
  if (family === 6 && isIpv4Mapped(net.start) && parsed.prefix >= 96) {
    // Go prints these networks as IPv4 with a rewritten prefix: no name could match upstream's.
    throw invalid(`invalid "${spec.label}": IPv4-mapped IPv6 range ${spec.range} is not supported; use the IPv4 range`);
  }
  // Upstream never hands out the network's own address nor its all-ones address, IPv6 included.
  if (net.end - net.start < 2n) throw invalid(`range ${cidr} has no usable IP addresses`);
  const usable: Span = { start: net.start + 1n, end: net.end - 1n };

  const bound = (text: string | undefined, key: string): bigint | undefined => {
    if (text === undefined || text === "") return undefined;
    const address = parseAddress(text);
    if (address === undefined) throw invalid(`invalid ${key} ${JSON.stringify(text)} for range ${cidr}: not an IP address`);
    if (address.family !== family || !inSpan(net, address.value)) {
      throw invalid(`${key} ${text} is outside range ${cidr}`);
    }
    return address.value;
  };
  const start = bound(startText, "range_start");
  const end = bound(endText, "range_end");
  // Network and all-ones addresses as bounds ("10.0.0.0-10.0.0.255/24") mean the whole span.
  const first = start !== undefined && start > usable.start ? start : usable.start;
  const last = end !== undefined && end < usable.end ? end : usable.end;
  if (first > last) {
    throw invalid(`range ${cidr} has no usable IP addresses between ${startText ?? "its start"} and ${endText ?? "its end"}`);
  }

  const exclude: Span[] = [];
  for (const entry of spec.exclude) {
    const span = parseExclude(entry);
    if (span === undefined) {
      throw invalid(`invalid exclude ${JSON.stringify(entry)} in range ${cidr}: expected a CIDR or an IP address`);
    }
    // An exclusion of the other family cannot match; upstream ignores it the same way.
    if (span.family === family) exclude.push({ start: span.start, end: span.end });
  }
  return { family, network: net.start, prefix: parsed.prefix, cidr, first, last, exclude };
}

function parseExclude(text: string): (Span & { family: Family }) | undefined {
  const cidr = parseCidr(text);
  if (cidr !== undefined) return { family: cidr.address.family, ...networkSpan(cidr.address.family, cidr.address.value, cidr.prefix) };
  const address = parseAddress(text);
  return address && { family: address.family, start: address.value, end: address.value };
}

/** "10.0.0.5/24": an allocated address with its range's prefix, as results carry it. */
export function addressInRange(range: IpRange, value: bigint): string {
  return formatCidr(range.family, value, range.prefix);
}
