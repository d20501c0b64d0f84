/**
 * Group commit of one node's ADDs to a pool (the Kubernetes store). Every write of an IPPool
 * costs the API server the whole object (decode, patch, schema validation, managed fields,
 * encode), and writers racing on one object make it redo that work, so the pool writes, not the
 * requests, bound how many pods a cluster can start per second
 * (docs/whereabouts-kubernetes.md#one-pool-write-for-many-adds-node-batching). When a node
 * starts many pods at once, their ADDs queue for the pool anyway (the node-local lock);
 * here the one holding the lock serves the whole queue with one pool write.
 *
 * A queue is a folder of request files, one per waiting ADD, beside the node's locks. An ADD
 * writes its request, then takes the pool's batch lock. Holding it, it finds either an answer
 * left by the ADD that held the lock before it (it is done), or none: it leads, serving its own
 * request and every other one queued with the same fingerprint (the same range configuration)
 * whose process is still alive, and leaves each an answer file. A leader whose `lead` throws
 * leaves the others' requests queued: each then leads for itself. (`lead` may instead answer
 * them all with its failure, when they would all meet it.)
 */
import { mkdirSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { CniError, ErrorCode } from "../../../shared/cni/errors.ts";
import { isJsonObject } from "../../../shared/cni/json.ts";
import { errnoOf } from "../../../shared/errors.ts";
import { writeFileAtomically } from "./atomic.ts";
import type { Locks } from "./lock.ts";
import { hasStrings, parseJson } from "./json.ts";

/** Who asks; the same fields as operations' Requester, kept here so this module stands alone. */
export interface BatchRequester {
  containerId: string;
  ifName: string;
  podRef: string;
}

/** What a served ADD gets for its range: the address (decimal), its allocation key, whether the entry is new; or a CNI error. */
export type BatchOutcome = { address: string; key: string; created: boolean } | { error: { code: number; msg: string; details?: string } };

/**
 * Leads a batch: one outcome per requester it served, in order, the leader first; requesters
 * past the end of the list were not served and stay queued (each then leads for itself).
 */
export type Lead = (requesters: BatchRequester[]) => Promise<BatchOutcome[]>;

export interface NodeBatch {
  run(poolName: string, fingerprint: string, who: BatchRequester, lead: Lead): Promise<BatchOutcome>;
  /**
   * Runs `work` between batches of the pool, after withdrawing the container's queued request
   * and answer for the interface: no batch serves that sandbox after `work` (its release).
   */
  alone<T>(poolName: string, sandbox: Pick<BatchRequester, "containerId" | "ifName">, work: () => Promise<T>): Promise<T>;
}

interface QueuedRequest {
  pid: number;
  fingerprint: string;
  who: BatchRequester;
}

/** A torn-down sandbox's tombstone (alone()). */
const WITHDRAWN = ".withdrawn";
/** How long a tombstone stays: longer than any ADD of its sandbox can live (a runtime gives a sandbox minutes). */
const TOMBSTONE_MS = 60 * 60 * 1000;

/** The most ADDs one pool write serves: bounds the leader's work and its pool write's size. */
const MAX_BATCH = 32;

export class FileNodeBatch implements NodeBatch {
  /** `dir`: this node's lock folder, where each pool's batch lock and queue live. */
  constructor(
    private readonly dir: string,
    private readonly locks: Locks,
    private readonly options: { onTurn?: () => void; alive?: (pid: number) => boolean; startedAt?: number } = {},
  ) {}

  async run(poolName: string, fingerprint: string, who: BatchRequester, lead: Lead): Promise<BatchOutcome> {
    const queue = join(this.dir, `${poolName}.queue`);
    mkdirSync(queue, { recursive: true, mode: 0o700 });
    const id = requestId(who);
    const request = join(queue, `${id}.request`);
    const answer = join(queue, `${id}.answer`);
    // An answer left for an earlier ADD of this container that did not wait for it.
    rmSync(answer, { force: true });
    writeFileAtomic(request, JSON.stringify({ pid: process.pid, fingerprint, who } satisfies QueuedRequest));
    const lock = this.locks.hold(join(this.dir, `${poolName}.batch.lock`));
    try {
      if (withdrawnSince(join(queue, `${id}${WITHDRAWN}`), this.options.startedAt ?? performance.timeOrigin)) {
        // The runtime killed the plugin that called us and tore the sandbox down (alone()); this
        // process lived on, and an entry written now would belong to nobody.
        throw new CniError(ErrorCode.Internal, `container ${who.containerId} ${who.ifName} was torn down (DEL) while its ADD waited; nothing allocated`);
      }
      const served = readIfExists(answer);
      if (served !== undefined) {
        rmSync(answer, { force: true });
        const outcome = parseJson(served);
        if (!isOutcome(outcome)) throw new CniError(ErrorCode.IOFailure, `whereabouts node batch: answer ${answer} is corrupt`);
        return outcome;
      }
      const others = this.queued(queue, id, fingerprint, who);
      this.options.onTurn?.();
      const outcomes = await lead([who, ...others.map((other) => other.who)]);
      for (const [n, other] of others.entries()) {
        const outcome = outcomes[n + 1];
        if (outcome === undefined) break;
        writeFileAtomic(join(queue, `${other.id}.answer`), JSON.stringify(outcome));
        rmSync(join(queue, `${other.id}.request`), { force: true });
      }
      return outcomes[0]!;
    } finally {
      rmSync(request, { force: true });
      lock.release();
    }
  }

  async alone<T>(poolName: string, sandbox: Pick<BatchRequester, "containerId" | "ifName">, work: () => Promise<T>): Promise<T> {
    const queue = join(this.dir, `${poolName}.queue`);
    mkdirSync(queue, { recursive: true, mode: 0o700 });
    const lock = this.locks.hold(join(this.dir, `${poolName}.batch.lock`));
    try {
      const id = requestId(sandbox);
      // A tombstone first: an ADD of this sandbox that started before this DEL and still lives (a
      // plugin's IPAM child outlives the plugin the runtime killed) must not allocate after it,
      // whether queued now or later. A new ADD of the same container ID (cnitool's add after
      // del) started after it and is not stopped.
      writeFileAtomic(join(queue, `${id}${WITHDRAWN}`), "");
      rmSync(join(queue, `${id}.request`), { force: true });
      rmSync(join(queue, `${id}.answer`), { force: true });
      this.options.onTurn?.();
      return await work();
    } finally {
      lock.release();
    }
  }

  /**
   * The requests waiting behind ours with the same fingerprint; those of dead processes are
   * dropped. One request per pod and interface: two sandboxes of one pod (the runtime recreated
   * it while the first ADD waited) hold the same reservations, so they are served one at a time.
   */
  private queued(queue: string, ownId: string, fingerprint: string, own: BatchRequester): { id: string; who: BatchRequester }[] {
    const found: { id: string; who: BatchRequester }[] = [];
    const holders = new Set([`${own.podRef}\0${own.ifName}`]);
    for (const file of readdirSync(queue)) {
      if (file.endsWith(WITHDRAWN)) {
        removeIfOlder(join(queue, file), TOMBSTONE_MS);
        continue;
      }
      if (!file.endsWith(".request")) continue;
      const id = file.slice(0, -".request".length);
      if (id === ownId) continue;
      const text = readIfExists(join(queue, file));
      if (text === undefined) continue;
      const queued = parseJson(text);
      if (!isQueuedRequest(queued) || !(this.options.alive ?? processAlive)(queued.pid)) {
        // Its ADD is gone (or left the request unreadable): serving it would allocate for nobody.
        rmSync(join(queue, file), { force: true });
        continue;
      }
      if (queued.fingerprint !== fingerprint) continue;
      const holder = `${queued.who.podRef}\0${queued.who.ifName}`;
      if (holders.has(holder)) continue;
      holders.add(holder);
      const { containerId, ifName, podRef } = queued.who;
      found.push({ id, who: { containerId, ifName, podRef } });
      if (found.length === MAX_BATCH - 1) break;
    }
    return found;
  }
}

/**
 * A file name for the container's interface, as ledger.ts's attachmentFileName makes them (a
 * queue is one pool's, so the network needs no naming): container IDs match
 * ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$ and interface names hold no '/' or ':' (the CNI spec).
 * (Not a hash: loading node:crypto would cost every ADD CPU, docs/performance.md#start-up-costs-behind-the-clients-design.)
 */
function requestId(who: Pick<BatchRequester, "containerId" | "ifName">): string {
  return `${who.containerId}:${who.ifName}`;
}

function isQueuedRequest(value: unknown): value is QueuedRequest {
  return hasStrings(value, ["fingerprint"]) && Number.isInteger(value.pid) && hasStrings(value.who, ["containerId", "ifName", "podRef"]);
}

function isOutcome(value: unknown): value is BatchOutcome {
  if (!isJsonObject(value)) return false;
  if (value.error === undefined) return hasStrings(value, ["address", "key"]) && typeof value.created === "boolean";
  const { error } = value;
  return (
    isJsonObject(error) && Number.isInteger(error.code) && typeof error.msg === "string" && (error.details === undefined || typeof error.details === "string")
  );
}

/** Whether a tombstone at `path` was laid after `startedAt` (epoch ms): the sandbox was torn down during this ADD. */
function withdrawnSince(path: string, startedAt: number): boolean {
  try {
    return statSync(path).mtimeMs >= startedAt;
  } catch (err) {
    if (errnoOf(err) === "ENOENT") return false;
    throw err;
  }
}

function removeIfOlder(path: string, ms: number): void {
  try {
    if (Date.now() - statSync(path).mtimeMs > ms) rmSync(path, { force: true });
  } catch (err) {
    if (errnoOf(err) !== "ENOENT") throw err;
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: alive, but another user's.
    return errnoOf(err) === "EPERM";
  }
}

function readIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    if (errnoOf(err) === "ENOENT") return undefined;
    throw err;
  }
}

/** Whole or not at all, 0600; not synced: a queue matters only while its processes live. */
function writeFileAtomic(path: string, text: string): void {
  writeFileAtomically(path, text, `${path}.${process.pid}.partial`, false);
}
