/**
 * The node-local store (`"datastore": "file"`): upstream's objects as JSON files, for a single
 * node, one directory per network_name mirroring the CRDs. The layout, file by file:
 * docs/whereabouts.md#the-file-store.
 *
 * Files are replaced atomically (write a temporary file, fsync, rename, fsync the directory), so
 * a crash leaves the old or the new content, never a mix. A pool update is a read-change-write
 * under the pool's lock; a reservation claim happens inside it, before the pool is written, so a
 * crash in between leaves at worst a reservation without its allocation: an address blocked,
 * never one handed out twice.
 *
 * The lock itself comes from outside (`Locks`, node/lock.ts): flock(2) in the plugin, a fake in
 * unit tests.
 */
import { accessSync, constants, mkdirSync, readFileSync, unlinkSync } from "node:fs";
import { dirname, join } from "node:path";
import { CniError, ErrorCode } from "../../../shared/cni/errors.ts";
import { isJsonObject } from "../../../shared/cni/json.ts";
import { errnoOf, messageOf } from "../../../shared/errors.ts";
import { syncDir, writeFileAtomically } from "../node/atomic.ts";
import type { Lock, Locks } from "../node/lock.ts";
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

/** The directory of networks without a network_name. */
const DEFAULT_SCOPE = "default";
const POOLS = "ippools";
const RESERVATIONS = "overlappingrangeipreservations";

export interface FileStoreOptions {
  /** datastore_dir. */
  dir: string;
  /** network_name; empty for none. */
  networkName: string;
  locks: Locks;
}

export function openFileStore(options: FileStoreOptions): WhereaboutsStore {
  return new FileStore(options);
}

function storeError(what: string, path: string, err: unknown): CniError {
  return new CniError(ErrorCode.IOFailure, `whereabouts file store: cannot ${what} ${path}: ${messageOf(err)}`);
}

/** The folder of one `network_name`'s pools and reservations (and its journal) under `datastore_dir`. */
export function fileStoreRoot(dir: string, networkName: string): string {
  return join(dir, networkName || DEFAULT_SCOPE);
}

class FileStore implements WhereaboutsStore {
  private readonly root: string;
  private readonly locks: Locks;

  constructor(options: FileStoreOptions) {
    this.root = fileStoreRoot(options.dir, options.networkName);
    this.locks = options.locks;
  }

  private poolPath(name: string): string {
    return join(this.root, POOLS, `${name}.json`);
  }

  private reservationPath(name: string): string {
    return join(this.root, RESERVATIONS, `${name}.json`);
  }

  async poolMoving(): Promise<boolean> {
    // Pools here have no versions (readPool gives none), so nobody asks.
    return false;
  }

  async readPool(pool: PoolId): Promise<Pool> {
    const path = this.poolPath(pool.name);
    const decoded = readJson(path);
    return decoded === undefined ? { range: pool.range, allocations: new Map() } : decodePool(decoded, path);
  }

  async updatePool<T>(pool: PoolId, change: (current: Pool) => Promise<PoolChange<T>>): Promise<T> {
    const path = this.poolPath(pool.name);
    makeDir(dirname(path));
    const lock = this.takeLock(join(this.root, POOLS, `${pool.name}.lock`));
    try {
      const current = await this.readPool(pool);
      const { allocations, value } = await change(current);
      if (allocations !== undefined) writeAtomically(path, encodePool(current.range, allocations));
      return value;
    } finally {
      lock.release();
    }
  }

  async claimReservation(name: string, holder: ReservationHolder): Promise<ClaimOutcome> {
    return this.withReservations(() => {
      const path = this.reservationPath(name);
      const existing = readJson(path);
      if (existing !== undefined) {
        const stored = decodeHolder(existing, path);
        return sameHolder(stored, holder) ? "held" : { takenBy: stored };
      }
      writeAtomically(path, `${JSON.stringify(encodeHolder(holder), null, 2)}\n`);
      return "claimed";
    });
  }

  async releaseReservation(name: string, holder: ReservationHolder): Promise<boolean> {
    return this.withReservations(() => {
      const path = this.reservationPath(name);
      const existing = readJson(path);
      if (existing === undefined || !sameHolder(decodeHolder(existing, path), holder)) return false;
      try {
        unlinkSync(path);
        syncDir(dirname(path));
      } catch (err) {
        throw storeError("remove", path, err);
      }
      return true;
    });
  }

  async cleanup<T>(work: () => Promise<T>): Promise<T> {
    // No deadline here: the undoing runs like any other work.
    return work();
  }

  async ping(): Promise<void> {
    for (const dir of [join(this.root, POOLS), join(this.root, RESERVATIONS)]) {
      makeDir(dir);
      try {
        accessSync(dir, constants.R_OK | constants.W_OK | constants.X_OK);
      } catch (err) {
        throw storeError("write to", dir, err);
      }
    }
  }

  async close(): Promise<void> {}

  private withReservations<T>(work: () => T): T {
    makeDir(join(this.root, RESERVATIONS));
    const lock = this.takeLock(join(this.root, `${RESERVATIONS}.lock`));
    try {
      return work();
    } finally {
      lock.release();
    }
  }

  private takeLock(path: string): Lock {
    try {
      return this.locks.hold(path);
    } catch (err) {
      throw storeError("lock", path, err);
    }
  }
}

function makeDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw storeError("create directory", dir, err);
  }
}

/** The decoded JSON at `path`, or undefined when there is no file. */
function readJson(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    if (errnoOf(err) === "ENOENT") return undefined;
    throw storeError("read", path, err);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw storeError("decode", path, err);
  }
}

/**
 * Replaces `path` with `text` so that a crash at any point leaves the old or the new file. The
 * temporary name is fixed: only the lock holder writes it, and a leftover from a crash is simply
 * overwritten next time.
 */
function writeAtomically(path: string, text: string): void {
  try {
    writeFileAtomically(path, text);
  } catch (err) {
    throw storeError("write", path, err);
  }
}

// ---- file contents: the CRDs' specs -------------------------------------------------------------

function corrupt(path: string, what: string): CniError {
  return new CniError(ErrorCode.IOFailure, `whereabouts file store: ${path} is corrupt: ${what}`);
}

function decodePool(decoded: unknown, path: string): Pool {
  if (!isJsonObject(decoded) || typeof decoded.range !== "string" || !isJsonObject(decoded.allocations)) {
    throw corrupt(path, 'expected {"range": "<cidr>", "allocations": {...}}');
  }
  const allocations = new Map<string, Allocation>();
  for (const [key, value] of Object.entries(decoded.allocations)) {
    if (!isJsonObject(value) || typeof value.id !== "string" || typeof value.podref !== "string") {
      throw corrupt(path, `allocation ${JSON.stringify(key)} needs string "id" and "podref"`);
    }
    const allocation: Allocation = { id: value.id, podref: value.podref };
    if (typeof value.ifname === "string" && value.ifname !== "") allocation.ifname = value.ifname;
    if (typeof value.network === "string" && value.network !== "") allocation.network = value.network;
    allocations.set(key, allocation);
  }
  return { range: decoded.range, allocations };
}

function encodePool(range: string, allocations: ReadonlyMap<string, Allocation>): string {
  // Keys in offset order, so the file reads like the pool it is.
  const sorted = [...allocations].sort(([a], [b]) => a.length - b.length || (a < b ? -1 : a > b ? 1 : 0));
  const entries = sorted.map(([key, { id, podref, ifname, network }]) => {
    return `    ${JSON.stringify(key)}: ${JSON.stringify({ id, podref, ...(ifname ? { ifname } : {}), ...(network ? { network } : {}) })}`;
  });
  const body = entries.length === 0 ? "{}" : `{\n${entries.join(",\n")}\n  }`;
  return `{\n  "range": ${JSON.stringify(range)},\n  "allocations": ${body}\n}\n`;
}

function decodeHolder(decoded: unknown, path: string): ReservationHolder {
  if (!isJsonObject(decoded) || typeof decoded.podref !== "string") throw corrupt(path, 'expected {"podref": ..., "ifname": ...}');
  const holder: ReservationHolder = { podref: decoded.podref };
  if (typeof decoded.ifname === "string" && decoded.ifname !== "") holder.ifname = decoded.ifname;
  return holder;
}

function encodeHolder(holder: ReservationHolder): ReservationHolder {
  return { podref: holder.podref, ...(holder.ifname ? { ifname: holder.ifname } : {}) };
}
