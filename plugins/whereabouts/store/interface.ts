/**
 * What whereabouts keeps, and the interface every store implements: the node-local file store
 * (file.ts) and the Kubernetes store (kubernetes.ts: IPPool and OverlappingRangeIPReservation
 * objects).
 *
 * The data mirrors upstream's CRDs (`doc/crds/whereabouts.cni.cncf.io_ippools.yaml` and
 * `..._overlappingrangeipreservations.yaml`, copied in deploy/crds/): a pool per range holds its allocations keyed
 * by offset, and, with overlapping ranges on, a reservation per address says which pod holds it
 * across every pool of the network. Stores move this data; which address to take is decided by
 * operations.ts, the same for every store.
 */
import { CniError, ErrorCode } from "../../../shared/cni/errors.ts";

/** One entry of spec.allocations. `ifname` is absent in entries written before upstream v0.8.0. */
export interface Allocation {
  id: string;
  podref: string;
  ifname?: string;
  /**
   * The CNI network (config `name`) whose ADD wrote the entry: GC releases only its own network's
   * entries, since two networks may share a pool. Kept by the file store only; the Kubernetes
   * objects hold exactly upstream's fields.
   */
  network?: string;
}

/** An IPPool's spec. An absent pool reads as `{ range: <its range>, allocations: empty }`. */
export interface Pool {
  /** The CIDR the allocation keys count from (the IP written in it, host bits and all). */
  range: string;
  /** Offset (decimal string) → holder. */
  allocations: ReadonlyMap<string, Allocation>;
  /** Changes with every write, where the store can tell (the Kubernetes store's resourceVersion). */
  version?: string;
}

/** Which pool: its object name, and the range it is created with when absent. */
export interface PoolId {
  name: string;
  range: string;
}

/** What a pool update decided: new allocations to store (undefined: store nothing) and a value for the caller. */
export interface PoolChange<T> {
  allocations?: ReadonlyMap<string, Allocation>;
  value: T;
}

/** An OverlappingRangeIPReservation's spec. `ifname` is absent in reservations made before upstream v0.8.0. */
export interface ReservationHolder {
  podref: string;
  ifname?: string;
}

/**
 * The outcome of claiming an address: `claimed` (the reservation was created for the holder),
 * `held` (it already belonged to the holder), or taken by another pod or interface, named.
 */
export type ClaimOutcome = "claimed" | "held" | { takenBy: ReservationHolder };

export interface WhereaboutsStore {
  /** The pool as stored now, for reading only (CHECK, STATUS). */
  readPool(pool: PoolId): Promise<Pool>;

  /**
   * Whether others are writing the pool around now: it no longer reads as `version` (a Pool's
   * `version`), cheaply. Only asked of stores whose pools have versions.
   */
  poolMoving(pool: PoolId, version: string): Promise<boolean>;

  /**
   * Reads the pool, runs `change` on it and stores the allocations it returns, with no other
   * writer in between; returns `change`'s value. A store may run `change` more than once:
   * the file store runs it once under the pool's lock, an optimistic store (Kubernetes: GET with
   * a resourceVersion, PATCH guarded by it) runs it again on the fresh pool after a conflict.
   * So `change` must not assume it runs once: its only side effects are reservation claims,
   * which the caller tracks and releases when unused. An error from `change` stores nothing and
   * is rethrown as is. An absent pool is created only when there is something to store.
   */
  updatePool<T>(pool: PoolId, change: (current: Pool) => Promise<PoolChange<T>>): Promise<T>;

  /**
   * Creates the reservation `name` for `holder` unless it exists; atomic against every other
   * claim and release of the same name, from this node or any other the store serves.
   * A reservation without ifname matches a holder with the same podref.
   */
  claimReservation(name: string, holder: ReservationHolder): Promise<ClaimOutcome>;

  /** Deletes the reservation `name` if `holder` holds it (same rule as claiming); true when deleted. */
  releaseReservation(name: string, holder: ReservationHolder): Promise<boolean>;

  /** Throws when the store cannot be read and written now (STATUS answers code 50 then). */
  ping(): Promise<void>;

  /**
   * Runs the undoing of a failed ADD (rollback, releasing claims). A store with a deadline gives
   * it a short budget of its own: an ADD that failed because its time ran out must still take
   * back what it wrote, or the range fills with orphans.
   */
  cleanup<T>(work: () => Promise<T>): Promise<T>;

  close(): Promise<void>;
}

/** A reservation that may be left to release: by its range (CIDR as configured), address (decimal) and holder. */
export interface UnreleasedReservation {
  range: string;
  address: string;
  holder: ReservationHolder;
}

/** The rule both stores use: same pod, and same interface unless one side predates ifname. */
export function sameHolder(stored: ReservationHolder, holder: ReservationHolder): boolean {
  if (stored.podref !== holder.podref) return false;
  return !stored.ifname || !holder.ifname || stored.ifname === holder.ifname;
}

/** A store's "try again later" (code 11): it could not be reached, or did not answer, in time. */
export function isUnavailable(err: unknown): err is CniError {
  return err instanceof CniError && err.code === ErrorCode.TryAgainLater;
}
