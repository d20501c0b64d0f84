/**
 * Upstream's object names and allocation keys, byte for byte (upstream:
 * `pkg/storage/kubernetes/ipam.go`, `IPPoolName`, `NormalizeIP` and `toAllocationMap`;
 * `pkg/iphelpers/iphelpers.go`, `IPGetOffset`): the Kubernetes store shares IPPools and
 * OverlappingRangeIPReservations with upstream's binaries, and the file store names its files
 * the same way. Pure: unit-tested against upstream's examples.
 */
import { type Address, formatAddress } from "./range.ts";

/** `10.0.0.0/8` → `10.0.0.0-8`; `2001:db8::/64` → `2001-db8---64`. */
function normalizeRange(cidr: string): string {
  return cidr.replaceAll(":", "-").replaceAll("/", "-");
}

/** The IPPool of a range: `10.0.0.0-8`, or `<network_name>-10.0.0.0-8`. */
export function poolName(cidr: string, networkName: string): string {
  const name = normalizeRange(cidr);
  return networkName ? `${networkName}-${name}` : name;
}

/**
 * The OverlappingRangeIPReservation of one address: Go's text of the IP with ':' as '-', a
 * trailing ':' completed with '0' first (`2001:db9::` → `2001-db9--0`), and `<network_name>-`
 * in front when set.
 */
export function reservationName(address: Address, networkName: string): string {
  let text = formatAddress(address);
  if (text.endsWith(":")) text += "0";
  const name = text.replaceAll(":", "-");
  return networkName ? `${networkName}-${name}` : name;
}

/**
 * The key of an allocation in spec.allocations: the address's offset from the IP written in
 * spec.range, in decimal. Upstream truncates IPv6 offsets to 64 bits; offsets inside a /64 are
 * identical either way, and wider ranges get the true offset here.
 */
export function allocationKey(value: bigint, base: bigint): string {
  return (value - base).toString();
}

/**
 * The offset a key stands for, or undefined for a key that is not a decimal number. Upstream reads
 * keys as signed 64-bit numbers and skips the rest, so it loses addresses in the upper half of a
 * /64; every non-negative number is read here.
 */
export function offsetOfKey(key: string): bigint | undefined {
  return /^\d{1,40}$/.test(key) ? BigInt(key) : undefined;
}
