/**
 * The verbs' work over any WhereaboutsStore: which address to take or release in each range,
 * the per-address reservations of overlapping ranges, and undoing a half-done ADD. The same for
 * the file store and the Kubernetes store; no process, file or network access of its own, so
 * unit tests drive it with an in-memory store.
 */
import { CniError, ErrorCode } from "../../shared/cni/errors.ts";
import type { Attachment, IPConfig, Result } from "../../shared/cni/types.ts";
import { messageOf } from "../../shared/errors.ts";
import type { Logger } from "../../shared/log.ts";
import { LATEST } from "../../shared/cni/version.ts";
import type { BatchOutcome, NodeBatch } from "./node/batch.ts";
import { type Lease, belongsTo, findPodLease, garbage, lowestFree, lowestFreeAddresses, readLeases } from "./leases.ts";
import type { WhereaboutsConfig } from "./config.ts";
import { allocationKey, poolName, reservationName } from "./names.ts";
import { type IpRange, addressInRange, formatAddress, parseCidr } from "./range.ts";
import {
  type Allocation,
  type PoolId,
  type ReservationHolder,
  type UnreleasedReservation,
  type WhereaboutsStore,
  isUnavailable,
  sameHolder,
} from "./store/interface.ts";

export interface Context {
  store: WhereaboutsStore;
  config: WhereaboutsConfig;
  log: Logger;
  /** Waits; replaceable so tests of sleep_for_race do not wait. */
  sleep?: (ms: number) => Promise<void>;
  /** A number in [0, 1) for spreading racers out; replaceable so tests can pin it. */
  random?: () => number;
  /** Serves this node's concurrent ADDs of a pool together (the Kubernetes store); absent: each ADD alone. */
  batch?: NodeBatch;
  /**
   * The reservations this invocation may leave behind (the node's journal): each is tracked
   * before it is claimed, or when its release fails, and settled once a pool entry backs it or it
   * is released. What is still tracked when the process ends, killed or not, a later invocation
   * releases (releaseOrphan).
   */
  reservations?: ReservationTracker;
  /**
   * When the invocation's time is up (epoch ms), for a store with a deadline: a batch leader
   * serves the requesters it can in the first half of what is left and writes, leaving the rest
   * queued, rather than run out of time with all of them.
   */
  deadline?: () => number;
}

export interface ReservationTracker {
  track(reservation: UnreleasedReservation): void;
  settle(reservation: UnreleasedReservation): void;
}

/**
 * Racing ADDs on different nodes all read the same lowest free address and all but one find
 * it reserved, then all try the next, and so on: a walk in lock step that costs every loser two
 * requests per address. An address found reserved by another pod while the pool stands still is
 * an overlapping range's pod or a dead ADD's reservation, and the next address is the answer, as
 * upstream gives it; found while other writers are changing the pool (its version moved since
 * we read it), it means a race, and from then on each candidate is drawn at random from the
 * lowest free addresses: SPREAD_WIDTH of them, twice as many after each further reserved one
 * (many racers fill a narrow window with their reservations faster than they move past it; as
 * Ethernet's backoff does in time, the window widens until they stop meeting).
 */
const SPREAD_WIDTH = 256;
/** The widest window: bounds the work of a draw in a sparse IPv6 range. */
const MAX_SPREAD = 16 * SPREAD_WIDTH;

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

function poolOf(range: IpRange, config: WhereaboutsConfig): PoolId {
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
    await ctx.store.cleanup(() =>
      rollBack(
        ctx,
        undo.filter((t) => t.created),
        who,
      ),
    );
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

/**
 * The address `who` gets in one range. With a node batch (the Kubernetes store), the ADDs of
 * this node waiting for the same pool are served together: one process reads the pool, claims
 * an address for each and writes them all in one pool write, so a node starting many pods at
 * once costs the API server one pool write per batch instead of one per pod.
 */
async function allocateInRange(ctx: Context, range: IpRange, who: Requester, attempt: { last?: Taken }): Promise<Taken> {
  const pool = poolOf(range, ctx.config);
  const served = ctx.batch
    ? await ctx.batch.run(pool.name, rangeFingerprint(ctx.config, range), who, async (requesters) => {
        // The leader's own entry is undone by allocate() when it fails; the others' here.
        const attempts = requesters.map((_, n) => (n === 0 ? attempt : {}));
        try {
          return (await serveRange(ctx, range, pool, requesters, attempts)).map(toServed);
        } catch (err) {
          // The pool write may have landed without its answer reaching us: take back the
          // entries it would have made for the others, and their reservations.
          await ctx.store.cleanup(async () => {
            for (const [n, who] of requesters.entries()) {
              const last = attempts[n]!.last;
              if (n > 0 && last?.created) await rollBack(ctx, [last], who);
            }
          });
          // The API is away: every requester would meet that in turn, each after its own
          // timeout; all of them hear it now. Otherwise each leads for itself.
          if (isUnavailable(err)) return requesters.map(() => ({ error: err.toJSON(LATEST) }));
          throw err;
        }
      })
    : toServed((await serveRange(ctx, range, pool, [who], [attempt]))[0]!);
  if ("error" in served) throw new CniError(served.error.code, served.error.msg, served.error.details);
  return { range, pool, address: BigInt(served.address), key: served.key, created: served.created };
}

function toServed(outcome: RangeOutcome): BatchOutcome {
  if ("error" in outcome) return { error: outcome.error.toJSON(LATEST) };
  const { address, key, created } = outcome.taken;
  return { address: String(address), key, created };
}

/**
 * What makes two ADDs' requests for a pool the same request: only ADDs that agree on how the
 * range is shaped and reserved are served together (two networks may share a pool name with
 * different range_start or exclusions).
 */
function rangeFingerprint(config: WhereaboutsConfig, range: IpRange): string {
  return JSON.stringify({
    cidr: range.cidr,
    first: String(range.first),
    last: String(range.last),
    exclude: range.exclude.map((span) => `${span.start}-${span.end}`),
    gateway: config.gateway?.family === range.family ? String(config.gateway.value) : "",
    overlapping: config.overlappingRanges,
    networkName: config.networkName,
    network: config.name,
    sleep: config.sleepForRaceSeconds,
    // The same pool name in another namespace or cluster is another pool.
    store: config.store,
  });
}

/** A requester's outcome in one range: its address, or why it got none (the range is full). */
type RangeOutcome = { taken: Taken } | { error: CniError };

/**
 * One pool update that gives every requester an address, in order: each keeps the entry it
 * already has, or takes the lowest free address (while racing, one drawn as SPREAD_WIDTH says)
 * that no requester before it took and whose reservation it can claim. A requester the range
 * has no room for gets code 102 and the others still get theirs; any other failure fails them
 * all and takes back their claims, but for each requester's last entry (`attempts[n].last`),
 * which a write that failed may still have stored: the caller rolls those back.
 */
async function serveRange(ctx: Context, range: IpRange, pool: PoolId, requesters: readonly Requester[], attempts: { last?: Taken }[]): Promise<RangeOutcome[]> {
  const { store, config } = ctx;
  // Reservations each requester's runs created. An optimistic store may rerun the pool update
  // and pick other addresses; the ones no longer used are released at the end.
  const claims = requesters.map(() => new Map<string, bigint>());
  const gateway = config.gateway?.family === range.family ? [config.gateway.value] : [];
  try {
    const outcomes = await store.updatePool(pool, async (current) => {
      // A rerun follows a write that did not land: what an earlier run chose is nobody's entry.
      for (const attempt of attempts) attempt.last = undefined;
      const now = Date.now();
      const serveUntil = ctx.deadline ? now + (ctx.deadline() - now) / 2 : Infinity;
      const { base, leases } = readLeases(range, current);
      reportUnreadable(ctx, pool, leases);
      const next = new Map(current.allocations);
      const given = [...addressesOf(leases), ...gateway];
      // Reservations found held by others, shared by the batch: one walk, not one per requester.
      const reserved = new Map<bigint, ReservationHolder>();
      /** While racing: how many of the lowest free addresses a candidate is drawn from. */
      let spread: number | undefined;
      let changed = false;
      const outcomes: RangeOutcome[] = [];
      for (const [n, who] of requesters.entries()) {
        // The leader is always served; the others while time allows (the rest stay queued).
        if (n > 0 && Date.now() > serveUntil) break;
        const holder = reservationHolder(who);
        let own = findPodLease(leases, who.podRef, who.ifName);
        const stale: Lease[] = [];
        let address: bigint | undefined;
        for (;;) {
          const othersReserved = [...reserved].filter(([, by]) => !sameHolder(by, holder)).map(([reservedAddress]) => reservedAddress);
          address = own?.address ?? chooseFree(ctx, range, [...given, ...othersReserved], spread);
          if (address === undefined || !config.overlappingRanges) break;
          const name = reservationOf(range, address, config);
          // Logged before it exists: a process killed from here on leaves it to a replay.
          const tracked = unreleased(range, address, holder);
          ctx.reservations?.track(tracked);
          const outcome = await store.claimReservation(name, holder);
          if (outcome === "claimed") claims[n]!.set(name, address);
          // Not ours to release: another pod's, or the pod's own from before this ADD. (Held
          // because an earlier run of this update claimed it: still ours, still tracked.)
          else if (!claims[n]!.has(name)) ctx.reservations?.settle(tracked);
          if (typeof outcome === "string") break;
          reserved.set(address, outcome.takenBy);
          if (spread !== undefined) spread = Math.min(2 * spread, MAX_SPREAD);
          else if (current.version !== undefined && (await store.poolMoving(pool, current.version))) spread = SPREAD_WIDTH;
          if (own) {
            // Our entry's address is reserved for another pod through an overlapping range:
            // the two can't both keep it, and the reservation is the cluster-wide truth.
            ctx.log.error(
              `${pool.name}: ${who.podRef} ${who.ifName} held ${formatAddress({ family: range.family, value: address })}, reserved by another pod; taking a new address`,
            );
            stale.push(own);
            own = undefined;
          }
        }
        if (address === undefined) {
          outcomes.push({ error: new CniError(ErrorCode.RangeExhausted, `no free IP address left in range ${describe(range)}`) });
          continue;
        }
        const key = own?.key ?? allocationKey(address, base);
        const entry: Allocation = { id: who.containerId, podref: who.podRef, ifname: who.ifName, network: config.name };
        for (const lease of stale) next.delete(lease.key);
        if (!(own && stale.length === 0 && sameAllocation(own.allocation, entry))) {
          next.set(key, entry);
          changed = true;
        }
        given.push(address);
        const taken: Taken = { range, pool, address, key, created: own === undefined };
        attempts[n]!.last = taken;
        outcomes.push({ taken });
      }
      if (config.sleepForRaceSeconds > 0) await (ctx.sleep ?? sleep)(config.sleepForRaceSeconds * 1000);
      return { allocations: changed ? next : undefined, value: outcomes };
    });
    for (const [n, who] of requesters.entries()) {
      const outcome = outcomes[n];
      const kept = outcome && "taken" in outcome ? reservationOf(range, outcome.taken.address, config) : undefined;
      for (const [name, address] of claims[n]!) {
        // The kept one is backed by its pool entry now.
        if (name === kept) ctx.reservations?.settle(unreleased(range, address, reservationHolder(who)));
        else await releaseQuietly(ctx, range, address, reservationHolder(who));
      }
    }
    return outcomes;
  } catch (err) {
    // Each requester's last entry may be in the pool (a write whose answer was lost): its
    // reservation is the rollback's to release with it (rollBack), the others are released here.
    await store.cleanup(async () => {
      for (const [n, who] of requesters.entries()) {
        const last = attempts[n]!.last;
        for (const address of claims[n]!.values()) {
          if (!(last?.created && last.address === address)) await releaseQuietly(ctx, range, address, reservationHolder(who));
        }
      }
    });
    throw err;
  }
}

/** The lowest free address; while racing, one of the lowest `spread` at random. */
function chooseFree(ctx: Context, range: IpRange, taken: bigint[], spread: number | undefined): bigint | undefined {
  if (spread === undefined) return lowestFree(range, taken);
  const free = lowestFreeAddresses(range, taken, spread);
  return free[Math.floor((ctx.random ?? Math.random)() * free.length)];
}

function unreleased(range: IpRange, address: bigint, holder: ReservationHolder): UnreleasedReservation {
  return { range: range.cidr, address: String(address), holder };
}

/** The reservation holder an allocation names. */
function holderOf(allocation: Allocation): ReservationHolder {
  return { podref: allocation.podref, ...(allocation.ifname ? { ifname: allocation.ifname } : {}) };
}

/** The reservation holder a requester is: its pod and interface. */
function reservationHolder(who: Requester): ReservationHolder {
  return { podref: who.podRef, ifname: who.ifName };
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

/**
 * Removes the entries an ADD created, if they are still its own, and their reservations, also
 * when the entry never made it into the pool (a write that failed): nothing else would release
 * them. A reservation the pool gives to the same pod and interface through another entry (a
 * newer sandbox's) stays. Best effort: the ADD's error is what the runtime sees.
 */
async function rollBack(ctx: Context, created: readonly Taken[], who: Requester): Promise<void> {
  const holder = reservationHolder(who);
  for (const t of created) {
    // Tracked before the entry goes (a kill between the write and the release leaves it to a
    // replay): an earlier range's reservation was settled when its entry was written.
    ctx.reservations?.track(unreleased(t.range, t.address, holder));
    try {
      const unused = await ctx.store.updatePool(t.pool, async (current) => {
        const entry = current.allocations.get(t.key);
        if (entry && (entry.id !== who.containerId || entry.ifname !== who.ifName)) return { value: !sameHolder(entry, holder) };
        if (!entry) return { value: true };
        const next = new Map(current.allocations);
        next.delete(t.key);
        return { allocations: next, value: true };
      });
      if (unused) await releaseQuietly(ctx, t.range, t.address, holder);
      else ctx.reservations?.settle(unreleased(t.range, t.address, holder));
    } catch (err) {
      ctx.log.error(`could not undo the allocation of ${addressInRange(t.range, t.address)} in ${t.pool.name}: ${messageOf(err)}`);
      // Whether the entry is stored or not, its reservation must not outlive both: it stays
      // tracked, and releaseOrphan later keeps it while the pool gives the address to this pod,
      // and frees it otherwise.
      ctx.reservations?.track(unreleased(t.range, t.address, holder));
    }
  }
}

// ---- DEL and GC ---------------------------------------------------------------------------------

/** Releases the container's addresses for this interface in every range (upstream stops at the first range without one). */
export async function release(ctx: Context, containerId: string, ifName: string): Promise<string[]> {
  return releaseWhere(ctx, (leases) => leases.filter((lease) => belongsTo(lease.allocation, containerId, ifName)), { containerId, ifName });
}

/** GC: releases every allocation this network wrote in its ranges that no valid attachment accounts for. */
export async function collectGarbage(ctx: Context, valid: readonly Attachment[]): Promise<string[]> {
  return releaseWhere(ctx, (leases) => garbage(leases, valid, ctx.config.name));
}

/**
 * Removes the chosen entries of every range's pool, then their reservations; returns the
 * addresses released. With a node batch, a container's release waits for the batch being served
 * and withdraws the container's queued request: a sandbox torn down after its ADD was killed is
 * then never served after its DEL, which would leave an entry nobody releases.
 */
async function releaseWhere(ctx: Context, choose: (leases: readonly Lease[]) => Lease[], of?: Pick<Requester, "containerId" | "ifName">): Promise<string[]> {
  const released: string[] = [];
  for (const range of ctx.config.ranges) {
    const pool = poolOf(range, ctx.config);
    // Tracked before the entries go: a process killed between the pool write and the releases
    // leaves the reservations to a replay, which frees those no entry backs any more.
    const tracked: UnreleasedReservation[] = [];
    const update = () =>
      ctx.store.updatePool(pool, async (current) => {
        const chosen = choose(readLeases(range, current).leases);
        for (const lease of chosen) {
          if (lease.address === undefined) continue;
          const reservation = unreleased(range, lease.address, holderOf(lease.allocation));
          ctx.reservations?.track(reservation);
          tracked.push(reservation);
        }
        if (chosen.length === 0) return { value: chosen };
        const next = new Map(current.allocations);
        for (const lease of chosen) next.delete(lease.key);
        return { allocations: next, value: chosen };
      });
    const releaseRange = async () => {
      const removed = await update();
      for (const lease of removed) {
        const { podref, ifname } = lease.allocation;
        const text = lease.address === undefined ? `key ${lease.key}` : addressInRange(range, lease.address);
        ctx.log.info(`released ${text} of ${podref} ${ifname ?? ""} (container ${lease.allocation.id}) in ${pool.name}`);
        released.push(text);
        // Released whatever enable_overlapping_ranges says now: it may have been on when the address was taken.
        if (lease.address !== undefined) await releaseQuietly(ctx, range, lease.address, holderOf(lease.allocation));
      }
      // Chosen by a run of the update whose write did not land, or kept after all.
      for (const reservation of tracked) if (!removed.some((lease) => lease.address === BigInt(reservation.address))) ctx.reservations?.settle(reservation);
    };
    // The reservations go between batches too: an ADD of the same pod served between the pool
    // write and their release would find them its own ("held") and lose them.
    if (ctx.batch && of) await ctx.batch.alone(pool.name, of, releaseRange);
    else await releaseRange();
  }
  return released;
}

/**
 * Deletes the reservation of `address` if `holder` holds it. A failure (the API gone) must not
 * leave it behind for good: nobody would ever release a reservation no pool entry names, so it
 * stays tracked in `ctx.reservations` (the node's journal), for releaseOrphan later.
 */
async function releaseQuietly(ctx: Context, range: IpRange, address: bigint, holder: ReservationHolder): Promise<void> {
  const name = reservationOf(range, address, ctx.config);
  const tracked = unreleased(range, address, holder);
  try {
    await ctx.store.releaseReservation(name, holder);
    ctx.reservations?.settle(tracked);
  } catch (err) {
    ctx.log.error(`could not release reservation ${name}: ${messageOf(err)}`);
    ctx.reservations?.track(tracked);
  }
}

/**
 * Releases a reservation an earlier call could not, unless the pool now gives its address to its
 * holder (the pod's retry took it back). Runs as a pool update, so no ADD of this node is between
 * the check and the release.
 */
export async function releaseOrphan(ctx: Context, orphan: UnreleasedReservation): Promise<boolean> {
  const range = ctx.config.ranges.find((r) => r.cidr === orphan.range);
  // The configuration it was recorded with no longer names the range (its flat file changed):
  // an error, so that the entry stays for a human rather than the reservation be forgotten.
  if (!range)
    throw new CniError(ErrorCode.InvalidConfig, `range ${orphan.range} of the reservation of ${orphan.address} is no longer in the network's configuration`);
  const address = BigInt(orphan.address);
  return ctx.store.updatePool(poolOf(range, ctx.config), async (current) => {
    const { leases } = readLeases(range, current);
    const held = leases.some((lease) => lease.address === address && sameHolder(lease.allocation, orphan.holder));
    if (held) return { value: false };
    return { value: await ctx.store.releaseReservation(reservationOf(range, address, ctx.config), orphan.holder) };
  });
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
    throw new CniError(ErrorCode.Unavailable, `whereabouts store is not available: ${messageOf(err)}`);
  }
  for (const range of ctx.config.ranges) {
    let free: bigint | undefined;
    try {
      const { leases } = readLeases(range, await ctx.store.readPool(poolOf(range, ctx.config)));
      const gateway = ctx.config.gateway?.family === range.family ? [ctx.config.gateway.value] : [];
      free = lowestFree(range, [...addressesOf(leases), ...gateway]);
    } catch (err) {
      throw new CniError(ErrorCode.Unavailable, `cannot read the pool of range ${range.cidr}: ${messageOf(err)}`);
    }
    if (free === undefined) throw new CniError(ErrorCode.Unavailable, `no free IP address left in range ${describe(range)}`);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
