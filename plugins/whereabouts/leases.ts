/**
 * Allocation rules on one pool (upstream: `pkg/allocate/allocate.go`, `AssignIP` and
 * `IterateForAssignment`, with `pkg/iphelpers/iphelpers.go`): reading its keys back into
 * addresses, the lowest free address of a range, and which entries belong to a container, a
 * pod, or nobody any more. (Which address an ADD takes, and `allocate()`, are operations.ts's.)
 * Pure: unit-tested. The cost of a choice grows with the number of allocations and exclusions,
 * never with the size of the range, so a sparse /64 costs what a sparse /24 does.
 */
import { CniError, ErrorCode } from "../../shared/cni/errors.ts";
import type { Attachment } from "../../shared/cni/types.ts";
import { offsetOfKey } from "./names.ts";
import { bitsOf } from "../../shared/ip.ts";
import { type IpRange, type Span, parseCidr } from "./range.ts";
import type { Allocation, Pool } from "./store/interface.ts";

export interface Lease {
  key: string;
  allocation: Allocation;
  /** Undefined when the key names no address (not a number, or beyond the address space). */
  address: bigint | undefined;
}

export interface PoolLeases {
  /** The address key "0" stands for: the IP written in the pool's range. */
  base: bigint;
  leases: Lease[];
}

/** Every entry of `pool` with the address its key stands for. A pool whose range is not of `range`'s family is code 5. */
export function readLeases(range: IpRange, pool: Pool): PoolLeases {
  const stored = parseCidr(pool.range);
  if (stored === undefined || stored.address.family !== range.family) {
    throw new CniError(ErrorCode.IOFailure, `the pool of ${range.cidr} holds range ${JSON.stringify(pool.range)}, which is not an IPv${range.family} CIDR`);
  }
  const base = stored.address.value;
  const limit = 1n << BigInt(bitsOf(range.family));
  const leases: Lease[] = [];
  for (const [key, allocation] of pool.allocations) {
    const offset = offsetOfKey(key);
    const address = offset === undefined || base + offset >= limit ? undefined : base + offset;
    leases.push({ key, allocation, address });
  }
  return { base, leases };
}

function compareSpans(a: Span, b: Span): number {
  return a.start < b.start ? -1 : a.start > b.start ? 1 : 0;
}

/** The lowest address of the range (first..last) that is neither taken nor excluded. */
export function lowestFree(range: IpRange, taken: Iterable<bigint>): bigint | undefined {
  return lowestFreeAddresses(range, taken, 1)[0];
}

/**
 * The `count` lowest addresses of the range (first..last) that are neither taken nor excluded,
 * ascending: a sweep over the sorted taken addresses and exclusions, jumping past each.
 */
export function lowestFreeAddresses(range: IpRange, taken: Iterable<bigint>, count: number): bigint[] {
  const blocked: Span[] = [...range.exclude];
  for (const address of taken) {
    if (address >= range.first && address <= range.last) blocked.push({ start: address, end: address });
  }
  blocked.sort(compareSpans);
  const free: bigint[] = [];
  let candidate = range.first;
  for (const span of blocked) {
    if (span.end < candidate) continue;
    // The gap before this span.
    for (; candidate < span.start && candidate <= range.last && free.length < count; candidate++) free.push(candidate);
    if (free.length === count || candidate > range.last) return free;
    candidate = span.end + 1n;
    if (candidate > range.last) return free;
  }
  for (; candidate <= range.last && free.length < count; candidate++) free.push(candidate);
  return free;
}

/**
 * The lease an ADD of this pod and interface gets back (upstream v0.8.0+ idempotency): the entry
 * with the same podref and ifname, else one of the same pod written before entries carried an
 * ifname.
 */
export function findPodLease(leases: readonly Lease[], podRef: string, ifName: string): Lease | undefined {
  const usable = leases.filter((lease) => lease.address !== undefined && lease.allocation.podref === podRef);
  return usable.find((lease) => lease.allocation.ifname === ifName) ?? usable.find((lease) => !lease.allocation.ifname);
}

/** DEL's and CHECK's match: the container's entry for this interface; an entry without ifname matches on the container ID. */
export function belongsTo(allocation: Allocation, containerId: string, ifName: string): boolean {
  return allocation.id === containerId && (!allocation.ifname || allocation.ifname === ifName);
}

/**
 * GC's choice: this network's entries that no valid attachment accounts for (same rule as
 * belongsTo). An entry another network wrote, or one without a network (written by upstream or
 * by DEL-era code), is never garbage here: the runtime's list says nothing about it.
 */
export function garbage(leases: readonly Lease[], valid: readonly Attachment[], network: string): Lease[] {
  return leases.filter(
    (lease) => lease.allocation.network === network && !valid.some((attachment) => belongsTo(lease.allocation, attachment.containerID, attachment.ifname)),
  );
}
