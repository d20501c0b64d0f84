/**
 * The verbs' work over any WhereaboutsStore: which address to take or release in each range,
 * the per-address reservations of overlapping ranges, and undoing a half-done ADD. The same for
 * the file store and the Kubernetes store; no process, file or network access of its own, so
 * unit tests drive it with an in-memory store.
 */
import { CniError, ErrorCode } from "../../shared/cni/errors.ts";
import type { Attachment, IPConfig, Result } from "../../shared/cni/types.ts";
import type { Logger } from "../../shared/log.ts";
import { type Lease, belongsTo, findPodLease, garbage, lowestFree, readLeases } from "./allocate.ts";
import type { WhereaboutsConfig } from "./config.ts";
import { allocationKey, poolName, reservationName } from "./names.ts";
import { type IpRange, addressInRange, formatAddress, parseCidr } from "./range.ts";
import type { Allocation, PoolId, ReservationHolder, WhereaboutsStore } from "./store.ts";

export interface Context {
  store: WhereaboutsStore;
  config: WhereaboutsConfig;
  log: Logger;
  /** Waits; replaceable so tests of sleep_for_race do not wait. */
  sleep?: (ms: number) => Promise<void>;
}

/** Who an ADD allocates for. */
export interface Requester {
  containerId: string;
  ifName: string;
  podRef: string;
}

/** One address taken by an ADD. `created`: a new entry, not one the pod already had. */
interface Taken {
  range: IpRange;
  pool: PoolId;
  address: bigint;
  key: string;
  created: boolean;
}

export function poolOf(range: IpRange, config: WhereaboutsConfig): PoolId {
  return { name: poolName(range.cidr, config.networkName), range: range.cidr };
}

function reservationOf(range: IpRange, address: bigint, config: WhereaboutsConfig): string {
  return reservationName({ family: range.family, value: address }, config.networkName);
}

function describe(range: IpRange): string {
  const first = formatAddress({ family: range.family, value: range.first });
  const last = formatAddress({ family: range.family, value: range.last });
  return `${range.cidr} (${first}-${last})`;
}

// ---- ADD ----------------------------------------------------------------------------------------

/**
 * One address from every range, in order, plus the static addresses. All or nothing: when a
 * range fails, what earlier ranges took for this ADD is released before the error is thrown.
 */
export async function allocate(ctx: Context, who: Requester): Promise<Result> {
  const { config } = ctx;
  const taken: Taken[] = [];
  const attempt: { last?: Taken } = {};
  try {
    for (const range of config.ranges) {
      attempt.last = undefined;
      taken.push(await allocateInRange(ctx, range, who, attempt));
    }
  } catch (err) {
    const undo = attempt.last ? [...taken, attempt.last] : taken;
    await ctx.store.cleanup(() => rollBack(ctx, undo.filter((t) => t.created), who));
    throw err;
  }
  const ips: IPConfig[] = taken.map(({ range, address }) => {
    const ip: IPConfig = { address: addressInRange(range, address) };
    // Upstream puts the gateway on every address, IPv6 ones too; only its own family's gets it here.
    if (config.gateway && config.gateway.family === range.family) ip.gateway = formatAddress(config.gateway);
    return ip;
  });
  for (const t of taken) {
    ctx.log.info(`${t.created ? "allocated" : "kept"} ${addressInRange(t.range, t.address)} for ${who.podRef} ${who.ifName} (container ${who.containerId})`);
  }
  const result: Result = { cniVersion: "1.1.0", ips: [...ips, ...config.addresses] };
  if (config.routes.length > 0) result.routes = config.routes;
  if (config.dns) result.dns = config.dns;
  return result;
}

async function allocateInRange(ctx: Context, range: IpRange, who: Requester, attempt: { last?: Taken }): Promise<Taken> {
  const { store, config } = ctx;
  const pool = poolOf(range, config);
  const holder: ReservationHolder = { podref: who.podRef, ifname: who.ifName };
  // Reservations this call created. An optimistic store may rerun the pool update and pick
  // another address; the ones no longer used are released at the end.
  const claimed = new Set<string>();
  const heldElsewhere = new Set<bigint>();
  const gateway = config.gateway?.family === range.family ? [config.gateway.value] : [];
  try {
    const result = await store.updatePool(pool, async (current) => {
      const { base, leases } = readLeases(range, current);
      reportUnreadable(ctx, pool, leases);
      let own = findPodLease(leases, who.podRef, who.ifName);
      const stale: Lease[] = [];
      for (;;) {
        const address = own?.address ?? lowestFree(range, [...addressesOf(leases), ...heldElsewhere, ...gateway]);
        if (address === undefined) {
          throw new CniError(ErrorCode.RangeExhausted, `no free IP address left in range ${describe(range)}`);
        }
        if (config.overlappingRanges) {
          const name = reservationOf(range, address, config);
          const outcome = await store.claimReservation(name, holder);
          if (outcome === "taken") {
            heldElsewhere.add(address);
            if (own) {
              // Our entry's address is reserved for another pod through an overlapping range:
              // the two can't both keep it, and the reservation is the cluster-wide truth.
              ctx.log.error(`${pool.name}: ${who.podRef} ${who.ifName} held ${formatAddress({ family: range.family, value: address })}, reserved by another pod; taking a new address`);
              stale.push(own);
              own = undefined;
            }
            continue;
          }
          if (outcome === "claimed") claimed.add(name);
        }
        const key = own?.key ?? allocationKey(address, base);
        const entry: Allocation = { id: who.containerId, podref: who.podRef, ifname: who.ifName, network: config.name };
        const unchanged = own !== undefined && stale.length === 0 && sameAllocation(own.allocation, entry);
        const next = new Map(current.allocations);
        for (const lease of stale) next.delete(lease.key);
        next.set(key, entry);
        attempt.last = { range, pool, address, key, created: own === undefined };
        if (config.sleepForRaceSeconds > 0) await (ctx.sleep ?? sleep)(config.sleepForRaceSeconds * 1000);
        return { allocations: unchanged ? undefined : next, value: attempt.last };
      }
    });
    const kept = reservationOf(range, result.address, config);
    for (const name of claimed) if (name !== kept) await releaseQuietly(ctx, name, holder);
    return result;
  } catch (err) {
    await store.cleanup(async () => {
      for (const name of claimed) await releaseQuietly(ctx, name, holder);
    });
    throw err;
  }
}

function addressesOf(leases: readonly Lease[]): bigint[] {
  const out: bigint[] = [];
  for (const lease of leases) if (lease.address !== undefined) out.push(lease.address);
  return out;
}

function sameAllocation(a: Allocation, b: Allocation): boolean {
  return a.id === b.id && a.podref === b.podref && (a.ifname ?? "") === (b.ifname ?? "") && a.network === b.network;
}

function reportUnreadable(ctx: Context, pool: PoolId, leases: readonly Lease[]): void {
  for (const lease of leases) {
    if (lease.address === undefined) ctx.log.error(`${pool.name}: ignoring allocation key ${JSON.stringify(lease.key)}, which names no address`);
  }
}

/** Removes the entries an ADD created, if they are still its own. Best effort: the ADD's error is what the runtime sees. */
async function rollBack(ctx: Context, created: readonly Taken[], who: Requester): Promise<void> {
  for (const t of created) {
    try {
      const removed = await ctx.store.updatePool(t.pool, async (current) => {
        const entry = current.allocations.get(t.key);
        if (!entry || entry.id !== who.containerId || entry.ifname !== who.ifName) return { value: false };
        const next = new Map(current.allocations);
        next.delete(t.key);
        return { allocations: next, value: true };
      });
      if (removed) await releaseQuietly(ctx, reservationOf(t.range, t.address, ctx.config), { podref: who.podRef, ifname: who.ifName });
    } catch (err) {
      ctx.log.error(`could not undo the allocation of ${addressInRange(t.range, t.address)} in ${t.pool.name}: ${errorText(err)}`);
    }
  }
}

// ---- DEL and GC ---------------------------------------------------------------------------------

/** Releases the container's addresses for this interface in every range (upstream stops at the first range without one). */
export async function release(ctx: Context, containerId: string, ifName: string): Promise<string[]> {
  return releaseWhere(ctx, (leases) => leases.filter((lease) => belongsTo(lease.allocation, containerId, ifName)));
}

/** GC: releases every allocation this network wrote in its ranges that no valid attachment accounts for. */
export async function collectGarbage(ctx: Context, valid: readonly Attachment[]): Promise<string[]> {
  return releaseWhere(ctx, (leases) => garbage(leases, valid, ctx.config.name));
}

/** Removes the chosen entries of every range's pool, then their reservations; returns the addresses released. */
async function releaseWhere(ctx: Context, choose: (leases: readonly Lease[]) => Lease[]): Promise<string[]> {
  const released: string[] = [];
  for (const range of ctx.config.ranges) {
    const pool = poolOf(range, ctx.config);
    const removed = await ctx.store.updatePool(pool, async (current) => {
      const chosen = choose(readLeases(range, current).leases);
      if (chosen.length === 0) return { value: chosen };
      const next = new Map(current.allocations);
      for (const lease of chosen) next.delete(lease.key);
      return { allocations: next, value: chosen };
    });
    for (const lease of removed) {
      const { podref, ifname } = lease.allocation;
      const text = lease.address === undefined ? `key ${lease.key}` : addressInRange(range, lease.address);
      ctx.log.info(`released ${text} of ${podref} ${ifname ?? ""} (container ${lease.allocation.id}) in ${pool.name}`);
      released.push(text);
      // Released whatever enable_overlapping_ranges says now: it may have been on when the address was taken.
      if (lease.address !== undefined) {
        await releaseQuietly(ctx, reservationOf(range, lease.address, ctx.config), { podref, ...(ifname ? { ifname } : {}) });
      }
    }
  }
  return released;
}

async function releaseQuietly(ctx: Context, name: string, holder: ReservationHolder): Promise<void> {
  try {
    await ctx.store.releaseReservation(name, holder);
  } catch (err) {
    ctx.log.error(`could not release reservation ${name}: ${errorText(err)}`);
  }
}

// ---- CHECK and STATUS ---------------------------------------------------------------------------

/**
 * The container holds an address for this interface in every range; with a prevResult, each of
 * those addresses is in it.
 */
export async function check(ctx: Context, containerId: string, ifName: string, prevResult?: Result): Promise<void> {
  const reported = new Set<string>();
  for (const ip of prevResult?.ips ?? []) {
    const cidr = parseCidr(ip.address);
    if (cidr) reported.add(`${cidr.address.family}/${cidr.address.value}`);
  }
  for (const range of ctx.config.ranges) {
    const pool = poolOf(range, ctx.config);
    const { leases } = readLeases(range, await ctx.store.readPool(pool));
    const lease = leases.find((l) => l.address !== undefined && belongsTo(l.allocation, containerId, ifName));
    if (lease?.address === undefined) {
      throw new CniError(ErrorCode.Internal, `container ${containerId} has no address for ${ifName} in range ${range.cidr}`);
    }
    if (prevResult && !reported.has(`${range.family}/${lease.address}`)) {
      throw new CniError(
        ErrorCode.Internal,
        `container ${containerId} holds ${addressInRange(range, lease.address)} for ${ifName}, which prevResult does not list`,
      );
    }
  }
}

/** Code 50 unless the store answers and every range has a free address. */
export async function status(ctx: Context): Promise<void> {
  try {
    await ctx.store.ping();
  } catch (err) {
    throw new CniError(ErrorCode.Unavailable, `whereabouts store is not available: ${errorText(err)}`);
  }
  for (const range of ctx.config.ranges) {
    let free: bigint | undefined;
    try {
      const { leases } = readLeases(range, await ctx.store.readPool(poolOf(range, ctx.config)));
      const gateway = ctx.config.gateway?.family === range.family ? [ctx.config.gateway.value] : [];
      free = lowestFree(range, [...addressesOf(leases), ...gateway]);
    } catch (err) {
      throw new CniError(ErrorCode.Unavailable, `cannot read the pool of range ${range.cidr}: ${errorText(err)}`);
    }
    if (free === undefined) throw new CniError(ErrorCode.Unavailable, `no free IP address left in range ${describe(range)}`);
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
