/**
 * The Kubernetes store: IPPools and OverlappingRangeIPReservations on the API server, the very
 * objects upstream whereabouts v0.9.4 writes (its CRDs in deploy/crds/;
 * docs/whereabouts-kubernetes.md#objects), so that both can serve one cluster.
 *
 * Correctness comes from optimistic concurrency, not from a lock: a pool is read, and written with
 * a JSON Patch that tests every entry it touches to be as read (poolPatch), so a concurrent
 * writer of the same address, ours or upstream's, makes the write fail with 422 and the change
 * is computed again on the fresh pool; writers of different addresses do not disturb each other.
 * A reservation is an object whose creation is atomic cluster-wide.
 *
 * Every call shares one deadline per invocation; an API server that cannot be reached, or
 * answers too slowly, is CniError 11 ("try again later").
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { CniError, ErrorCode } from "../../../shared/cni/errors.ts";
import { errnoOf, messageOf } from "../../../shared/errors.ts";
import { KubeApiError, KubeClient, KubeUnavailableError, type JsonPatchOperation, type ObjectMeta } from "../../../shared/kube/client.ts";
import { KubeconfigError, inClusterConnection, loadKubeconfig } from "../../../shared/kube/config.ts";
import type { StoreChoice } from "../config.ts";
import type { Locks } from "../node/lock.ts";
import {
  type Allocation,
  type ClaimOutcome,
  type Pool,
  type PoolChange,
  type PoolId,
  type ReservationHolder,
  type WhereaboutsStore,
  sameHolder,
} from "./interface.ts";

const API = "/apis/whereabouts.cni.cncf.io/v1alpha1";
const API_VERSION = "whereabouts.cni.cncf.io/v1alpha1";
/** Asks for an object's metadata without its spec, falling back to the whole object. */
const METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json";
const FIRST_BACKOFF_MS = 4;
const MAX_BACKOFF_MS = 250;
/** Time a failed ADD gets, past the invocation's deadline, to take back what it wrote. */
const CLEANUP_BUDGET_MS = 3000;

export interface IPPoolObject {
  metadata: ObjectMeta;
  spec?: { range?: string; allocations?: Record<string, { id?: string; podref?: string; ifname?: string }> };
}

interface ReservationObject {
  metadata: ObjectMeta;
  spec?: { podref?: string; ifname?: string; containerid?: string };
}

type KubernetesChoice = Extract<StoreChoice, { kind: "kubernetes" }>;

/**
 * `deadline` (epoch ms) bounds every API call of this store: one per plugin invocation. `locks`
 * serialise this node's writers of a pool, through a lock file per pool in the choice's lockDir.
 */
export async function openKubernetesStore(
  choice: KubernetesChoice,
  deadline: number,
  locks: Locks,
  env: Record<string, string | undefined> = process.env,
): Promise<KubernetesStore> {
  mkdirSync(choice.lockDir, { recursive: true, mode: 0o700 });
  try {
    const connection = choice.kubeconfig ? await loadKubeconfig(choice.kubeconfig) : inClusterConnection(env);
    return new KubernetesStore(new KubeClient(connection, { deadline }), locks, choice.lockDir);
  } catch (err) {
    // A kubeconfig that does not resolve, or a token or CA file it names that cannot be read.
    if (err instanceof KubeconfigError || errnoOf(err) !== undefined) {
      throw new CniError(ErrorCode.InvalidConfig, `cannot use the Kubernetes datastore: ${messageOf(err)}`);
    }
    throw err;
  }
}

export class KubernetesStore implements WhereaboutsStore {
  constructor(
    readonly client: KubeClient,
    private readonly locks: Locks,
    /** This node's lock files, one per pool. */
    private readonly lockDir: string,
  ) {}

  async readPool(pool: PoolId): Promise<Pool> {
    const object = await this.call(() => this.client.get<IPPoolObject>(this.poolPath(pool.name)));
    return object ? decodePool(object, pool) : { range: pool.range, allocations: new Map() };
  }

  /**
   * Asks the API server's watch cache (resourceVersion=0: no etcd read) for the pool's metadata
   * only (no allocations to encode). A version other than the one read, newer or, in a cache a
   * moment behind, older, means the pool was written around now.
   */
  async poolMoving(pool: PoolId, version: string): Promise<boolean> {
    const path = `${this.poolPath(pool.name)}?resourceVersion=0`;
    const object = await this.call(() => this.client.get<{ metadata: ObjectMeta }>(path, METADATA_ONLY));
    return object?.metadata.resourceVersion !== version;
  }

  /**
   * Optimistic across nodes, serialised within one: every write of the pool costs the API server
   * the whole object, and concurrent ones make it redo that work, so behind a node-local lock a
   * pool sees one writer per node at a time (the node's ADDs come in batches, node/batch.ts).
   */
  async updatePool<T>(pool: PoolId, change: (current: Pool) => Promise<PoolChange<T>>): Promise<T> {
    const lock = this.locks.hold(join(this.lockDir, `${pool.name}.lock`));
    try {
      return await this.updatePoolOptimistically(pool, change);
    } finally {
      lock.release();
    }
  }

  private async updatePoolOptimistically<T>(pool: PoolId, change: (current: Pool) => Promise<PoolChange<T>>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const object = await this.call(() => this.client.get<IPPoolObject>(this.poolPath(pool.name)));
      const current = object ? decodePool(object, pool) : { range: pool.range, allocations: new Map<string, Allocation>() };
      const { allocations, value } = await change(current);
      if (!allocations) return value;
      try {
        if (!object) {
          await this.client.create(`${API}/namespaces/${this.client.namespace}/ippools`, {
            apiVersion: API_VERSION,
            kind: "IPPool",
            metadata: { name: pool.name, namespace: this.client.namespace },
            spec: { range: pool.range, allocations: encodeAllocations(allocations) },
          });
        } else {
          await this.client.patch(this.poolPath(pool.name), poolPatch(object, pool.range, allocations));
        }
        return value;
      } catch (err) {
        // Somebody else wrote an entry we touch first (a failed entry test), or created the pool: compute again.
        if (isConflict(err)) {
          await backoff(attempt);
          continue;
        }
        throw toCniError(err);
      }
    }
  }

  async claimReservation(name: string, holder: ReservationHolder): Promise<ClaimOutcome> {
    for (;;) {
      try {
        await this.client.create(`${API}/namespaces/${this.client.namespace}/overlappingrangeipreservations`, {
          apiVersion: API_VERSION,
          kind: "OverlappingRangeIPReservation",
          metadata: { name, namespace: this.client.namespace },
          spec: { podref: holder.podref, ...(holder.ifname ? { ifname: holder.ifname } : {}) },
        });
        return "claimed";
      } catch (err) {
        if (!(err instanceof KubeApiError && err.status === 409)) throw toCniError(err);
      }
      const existing = await this.call(() => this.client.get<ReservationObject>(this.reservationPath(name)));
      // Deleted between our create and our read: try to create it again.
      if (!existing) continue;
      const stored = holderOf(existing);
      return sameHolder(stored, holder) ? "held" : { takenBy: stored };
    }
  }

  async releaseReservation(name: string, holder: ReservationHolder): Promise<boolean> {
    for (;;) {
      const existing = await this.call(() => this.client.get<ReservationObject>(this.reservationPath(name)));
      if (!existing || !sameHolder(holderOf(existing), holder)) return false;
      try {
        // Only the version we judged: a reservation re-created meanwhile for another pod stays.
        return await this.client.delete(this.reservationPath(name), existing.metadata.resourceVersion);
      } catch (err) {
        if (!isConflict(err)) throw toCniError(err);
      }
    }
  }

  async cleanup<T>(work: () => Promise<T>): Promise<T> {
    this.client.extendDeadline(Date.now() + CLEANUP_BUDGET_MS);
    return work();
  }

  async ping(): Promise<void> {
    await this.call(() => this.client.get(`${API}/namespaces/${this.client.namespace}/ippools?limit=1`));
  }

  async close(): Promise<void> {
    this.client.close();
  }

  private poolPath(name: string): string {
    return `${API}/namespaces/${this.client.namespace}/ippools/${encodeURIComponent(name)}`;
  }

  private reservationPath(name: string): string {
    return `${API}/namespaces/${this.client.namespace}/overlappingrangeipreservations/${encodeURIComponent(name)}`;
  }

  private async call<T>(request: () => Promise<T>): Promise<T> {
    try {
      return await request();
    } catch (err) {
      throw toCniError(err);
    }
  }
}

function toCniError(err: unknown): unknown {
  if (err instanceof KubeUnavailableError) {
    return new CniError(ErrorCode.TryAgainLater, `the Kubernetes API is not available, try again later: ${err.message}`);
  }
  if (err instanceof KubeApiError) {
    return new CniError(ErrorCode.Internal, `the Kubernetes API refused a request: ${err.message}`, err.reason);
  }
  return err;
}

function isConflict(err: unknown): boolean {
  // 409: a create that lost, or a precondition that failed; 422: a JSON Patch test that failed.
  return err instanceof KubeApiError && (err.status === 409 || err.status === 422);
}

function decodePool(object: IPPoolObject, pool: PoolId): Pool {
  const allocations = new Map<string, Allocation>();
  for (const [key, entry] of Object.entries(object.spec?.allocations ?? {})) {
    allocations.set(key, {
      id: entry.id ?? "",
      podref: entry.podref ?? "",
      ...(entry.ifname ? { ifname: entry.ifname } : {}),
    });
  }
  return { range: object.spec?.range || pool.range, allocations, ...(object.metadata.resourceVersion ? { version: object.metadata.resourceVersion } : {}) };
}

function encodeAllocations(allocations: ReadonlyMap<string, Allocation>): Record<string, Allocation> {
  const out: Record<string, Allocation> = {};
  for (const [key, entry] of allocations) out[key] = allocationJson(entry);
  return out;
}

function allocationJson(entry: Allocation): Allocation {
  return { id: entry.id, podref: entry.podref, ...(entry.ifname ? { ifname: entry.ifname } : {}) };
}

/**
 * The write of `next` over `object` as a JSON Patch that guards each entry it touches, not the
 * whole pool: every added key is tested absent (a `test` for null, which the API server's JSON
 * Patch passes for a missing member), every removed or replaced one is tested to hold what we
 * read. The API server applies a patch to the pool as it is when the patch arrives, so writers
 * of different addresses all succeed at once instead of failing on each other's resourceVersion,
 * while two writers of one address still cannot both win. Upstream writes whole pools guarded by
 * resourceVersion, so our entries can't be lost under its writes either.
 */
export function poolPatch(object: IPPoolObject, range: string, next: ReadonlyMap<string, Allocation>): JsonPatchOperation[] {
  return [...entryOperations(object, range, next), ...(object.metadata.managedFields?.length ? [RESET_MANAGED_FIELDS] : [])];
}

/**
 * The API server records, per entry, which client wrote it (managedFields): as large again as
 * the allocations, decoded, updated and encoded with the pool on every read and write. Nobody
 * applies IPPools server-side, so the record serves no one; a list of one empty entry is the
 * documented way to clear it, and the API server then keeps none for our writes.
 */
const RESET_MANAGED_FIELDS: JsonPatchOperation = { op: "add", path: "/metadata/managedFields", value: [{}] };

function entryOperations(object: IPPoolObject, range: string, next: ReadonlyMap<string, Allocation>): JsonPatchOperation[] {
  const stored = object.spec?.allocations;
  if (!object.spec) {
    const spec = { range, allocations: encodeAllocations(next) };
    return [
      { op: "test", path: "/spec", value: null },
      { op: "add", path: "/spec", value: spec },
    ];
  }
  if (!stored) {
    return [
      { op: "test", path: "/spec/allocations", value: null },
      { op: "add", path: "/spec/allocations", value: encodeAllocations(next) },
    ];
  }
  const operations: JsonPatchOperation[] = [];
  for (const [key, before] of Object.entries(stored)) {
    if (next.has(key)) continue;
    const path = `/spec/allocations/${pointer(key)}`;
    operations.push({ op: "test", path, value: before }, { op: "remove", path });
  }
  for (const [key, entry] of next) {
    const before = stored[key];
    const json = allocationJson(entry);
    const path = `/spec/allocations/${pointer(key)}`;
    if (!before) operations.push({ op: "test", path, value: null }, { op: "add", path, value: json });
    else if (before.id !== json.id || before.podref !== json.podref || (before.ifname ?? "") !== (json.ifname ?? "")) {
      operations.push({ op: "test", path, value: before }, { op: "replace", path, value: json });
    }
  }
  return operations;
}

/** RFC 6901 escaping; allocation keys are digits, but a pool written by hand may hold anything. */
function pointer(key: string): string {
  return key.replaceAll("~", "~0").replaceAll("/", "~1");
}

function holderOf(object: ReservationObject): ReservationHolder {
  return { podref: object.spec?.podref ?? "", ...(object.spec?.ifname ? { ifname: object.spec.ifname } : {}) };
}

/** Exponential with full jitter, so that racing writers spread out instead of colliding again. */
function backoff(attempt: number): Promise<void> {
  const ceiling = Math.min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** attempt);
  return new Promise((resolve) => setTimeout(resolve, Math.random() * ceiling));
}
