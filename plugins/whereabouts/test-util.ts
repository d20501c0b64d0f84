/** Helpers for whereabouts' unit tests: an in-memory store, locks that lock nothing, a recording logger, configs. */
import { closeSync, openSync } from "node:fs";
import { parseNetConf } from "../../shared/cni/config.ts";
import type { Logger } from "../../shared/log.ts";
import { type FileSource, type WhereaboutsConfig, loadConfig } from "./config.ts";
import type { Lock, Locks } from "./node/lock.ts";
import type { Context } from "./operations.ts";
import {
  type Allocation,
  type ClaimOutcome,
  type Pool,
  type PoolChange,
  type PoolId,
  type ReservationHolder,
  type WhereaboutsStore,
  sameHolder,
} from "./store/interface.ts";

/**
 * A store in memory. With `conflicts` > 0 it behaves like an optimistic store that loses that
 * many races per update: `change` runs, its result is thrown away, and it runs again.
 */
export class MemoryStore implements WhereaboutsStore {
  readonly pools = new Map<string, { range: string; allocations: Map<string, Allocation> }>();
  readonly reservations = new Map<string, ReservationHolder>();
  writes = 0;

  constructor(private conflicts = 0) {}

  async poolMoving(pool: PoolId, version: string): Promise<boolean> {
    return (await this.readPool(pool)).version !== version;
  }

  async readPool(pool: PoolId): Promise<Pool> {
    const stored = this.pools.get(pool.name);
    return stored ? { range: stored.range, allocations: new Map(stored.allocations) } : { range: pool.range, allocations: new Map() };
  }

  async updatePool<T>(pool: PoolId, change: (current: Pool) => Promise<PoolChange<T>>): Promise<T> {
    for (;;) {
      const current = await this.readPool(pool);
      const { allocations, value } = await change(current);
      if (this.conflicts > 0) {
        this.conflicts--;
        continue;
      }
      if (allocations !== undefined) {
        this.pools.set(pool.name, { range: current.range, allocations: new Map(allocations) });
        this.writes++;
      }
      return value;
    }
  }

  async cleanup<T>(work: () => Promise<T>): Promise<T> {
    return work();
  }

  async claimReservation(name: string, holder: ReservationHolder): Promise<ClaimOutcome> {
    const existing = this.reservations.get(name);
    if (existing) return sameHolder(existing, holder) ? "held" : { takenBy: { ...existing } };
    this.reservations.set(name, { ...holder });
    return "claimed";
  }

  async releaseReservation(name: string, holder: ReservationHolder): Promise<boolean> {
    const existing = this.reservations.get(name);
    if (!existing || !sameHolder(existing, holder)) return false;
    this.reservations.delete(name);
    return true;
  }

  async ping(): Promise<void> {}
  async close(): Promise<void> {}

  /** A pool's allocations as plain data, for assertions. */
  allocations(name: string): Record<string, Allocation> {
    return Object.fromEntries(this.pools.get(name)?.allocations ?? []);
  }
}

/**
 * Locks for unit tests, which cannot load flock (bun:ffi): they open the file as the real ones do
 * (`hold` creates it 0600, `tryHold` opens an existing one) and lock nothing. `tryHold` finds the
 * files whose path ends with a name in `busy` held by another process; `onHold` and `onRelease`
 * see each path (`onHold` may throw, as a lock that cannot be taken).
 */
export function testLocks(options: { busy?: ReadonlySet<string>; onHold?: (path: string) => void; onRelease?: (path: string) => void } = {}): Locks {
  const open = (path: string, mode: "a" | "r"): Lock => {
    const fd = openSync(path, mode, 0o600);
    return {
      fd,
      release: () => {
        closeSync(fd);
        options.onRelease?.(path);
      },
    };
  };
  return {
    hold(path) {
      options.onHold?.(path);
      return open(path, "a");
    },
    tryHold(path) {
      if ([...(options.busy ?? [])].some((name) => path.endsWith(name))) return undefined;
      return open(path, "r");
    },
  };
}

export interface RecordingLogger extends Logger {
  lines: string[];
}

export function recordingLogger(): RecordingLogger {
  const lines: string[] = [];
  const record = (level: string) => (message: string) => void lines.push(`${level}: ${message}`);
  return { lines, debug: record("debug"), info: record("info"), error: record("error") };
}

/** No flat file anywhere. */
export const NO_FILES: FileSource = { kind: () => undefined, read: () => "" };

/** A file system holding exactly `files` (path → content); `directories` exist as directories. */
export function fakeFiles(files: Record<string, string>, directories: string[] = []): FileSource {
  return {
    kind: (path) => (path in files ? "file" : directories.includes(path) ? "directory" : undefined),
    read: (path) => {
      const text = files[path];
      if (text === undefined) throw new Error(`ENOENT: ${path}`);
      return text;
    },
  };
}

/** A whereabouts config from an `ipam` section (datastore file unless given), as the plugin would load it. */
export function configOf(ipam: Record<string, unknown>, cniArgs = "", files: FileSource = NO_FILES, name = "net"): WhereaboutsConfig {
  const stdin = JSON.stringify({
    cniVersion: "1.1.0",
    name,
    type: "macvlan",
    ipam: { type: "whereabouts", datastore: "file", datastore_dir: "/var/lib/test", ...ipam },
  });
  return loadConfig(parseNetConf(stdin), cniArgs, files);
}

export function contextOf(store: WhereaboutsStore, ipam: Record<string, unknown>): Context & { log: RecordingLogger } {
  return { store, config: configOf(ipam), log: recordingLogger(), sleep: async () => {} };
}
