/**
 * The node's journal of what the store is still owed: releases that later invocations on the
 * node replay. Two kinds of entry, one file each, 0600:
 *
 * - `<network>:<container>:<ifname>.release.json`: a DEL the Kubernetes API could not take. A DEL
 *   must neither block pod teardown nor lose the release, so it records the release here and
 *   succeeds; the replay releases the attachment's allocations.
 * - `<network>:<container>:<ifname>.<pid>-<n>.reservations`: an invocation's reservation log. Every
 *   reservation an invocation may leave behind is logged before it is claimed, and marked
 *   settled once a pool entry backs it or it is released. The invocation holds an flock on its
 *   log while it runs and removes the log when everything is settled. A log left behind (the
 *   process was killed, as a runtime kills an ADD past its deadline, or a release failed) is
 *   unlocked: the replay releases each unsettled reservation unless the pool gives its address
 *   to its holder (operations.ts releaseOrphan). This is what keeps a killed ADD from blocking an
 *   address for good.
 *
 * Whoever replays an entry holds its flock meanwhile, so concurrent invocations never replay one
 * entry twice, and an entry that cannot be locked (in flight or being replayed) is passed over.
 */
import { fstatSync, ftruncateSync, linkSync, mkdirSync, readFileSync, readdirSync, statSync, unlinkSync, writeSync } from "node:fs";
import { join } from "node:path";
import { isJsonObject } from "../../../shared/cni/json.ts";
import { errnoOf } from "../../../shared/errors.ts";
import { writeFileAtomically } from "./atomic.ts";
import { hasStrings, parseJson } from "./json.ts";
import { attachmentFileName } from "./ledger.ts";
import type { Lock, Locks } from "./lock.ts";
import type { UnreleasedReservation } from "../store/interface.ts";

/** The invocation an entry comes from: enough to open the same store and ranges again. */
export interface Origin {
  /** The network configuration the invocation received (stdin). */
  config: string;
  cniArgs: string;
  containerId: string;
  ifName: string;
}

/** What a replay owes: the attachment's allocations (a DEL), or only these reservations. */
export type JournalEntry =
  | { kind: "attachment"; path: string; origin: Origin; recordedAt: string }
  | { kind: "reservations"; path: string; origin: Origin; recordedAt: string; reservations: UnreleasedReservation[] };

/** An entry held (locked) for replay: `done` removes it, `leave` keeps it for a later replay. */
export interface HeldEntry {
  entry: JournalEntry;
  done(): void;
  leave(): void;
}

const RELEASE = ".release.json";
/** Logs this process opened so far. */
let logs = 0;
const RESERVATIONS = ".reservations";

/** A release entry as written; `reservation` is what entries before the reservation logs carried. */
interface ReleaseFile extends Origin {
  recordedAt: string;
  reservation?: UnreleasedReservation;
}

type LogLine = { origin: Origin; recordedAt: string } | { track: UnreleasedReservation } | { settle: UnreleasedReservation };

export class ReleaseJournal {
  constructor(
    readonly dir: string,
    private readonly locks: Locks,
  ) {}

  /** Records a DEL's release of the attachment's allocations; the same attachment recorded twice is one entry. */
  record(network: string, origin: Origin): string {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const path = join(this.dir, `${attachmentFileName({ network, containerId: origin.containerId, ifName: origin.ifName })}${RELEASE}`);
    // The temporary name is per process: there is no lock.
    writeFileAtomically(path, JSON.stringify({ ...origin, recordedAt: new Date().toISOString() } satisfies ReleaseFile), `${path}.${process.pid}.tmp`);
    return path;
  }

  /** This invocation's reservation log, created with its first reservation. */
  log(network: string, origin: Origin): ReservationLog {
    // The process and a counter: an invocation may open a log for a replayed entry of its own attachment.
    const name = `${attachmentFileName({ network, containerId: origin.containerId, ifName: origin.ifName })}.${process.pid}-${++logs}`;
    return new ReservationLog(this.dir, name, origin, this.locks);
  }

  /**
   * The entries nobody holds, each locked as it is handed out: the caller replays it and calls
   * `done` or `leave` (an entry the caller does neither with is unlocked when it asks for the
   * next one or stops). Entries another process holds, and entries that cannot be read (left
   * for a human), are passed over.
   */
  *take(): Generator<HeldEntry> {
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch {
      return;
    }
    for (const name of names) if (name.endsWith(`${RESERVATIONS}.tmp`)) removeStaleTemporary(join(this.dir, name), this.locks);
    names = names.filter((name) => name.endsWith(RELEASE) || name.endsWith(RESERVATIONS));
    for (const name of names) {
      const path = join(this.dir, name);
      let lock: Lock | undefined;
      try {
        lock = this.locks.tryHold(path);
      } catch (err) {
        if (errnoOf(err) === "ENOENT") continue; // Replayed and removed by another process meanwhile.
        throw err;
      }
      if (lock === undefined) continue;
      const held = lock;
      let open = true;
      const unlock = () => {
        if (open) held.release();
        open = false;
      };
      try {
        // Replayed and removed by another process between our open and our lock.
        if (fstatSync(held.fd).nlink === 0) continue;
        let entry: JournalEntry | undefined;
        try {
          entry = readEntry(path, readFileSync(held.fd, "utf8"));
        } catch {
          entry = undefined; // Unreadable: left for a human, like a damaged one.
        }
        if (!entry) continue;
        yield {
          entry,
          done: () => {
            // Only the file we replayed: a DEL may have recorded the attachment again meanwhile.
            if (sameFile(path, held.fd)) unlinkQuietly(path);
            unlock();
          },
          leave: unlock,
        };
      } finally {
        unlock();
      }
    }
  }
}

/**
 * One invocation's log of the reservations it may leave behind (see the file's opening comment).
 * Lines of JSON, appended: a track line cut short by a kill is the reservation it was about to
 * log, which was not claimed yet; a settle line cut short leaves the reservation tracked, and the
 * replay's pool check keeps it where an entry backs it (or finds it released already).
 */
export class ReservationLog {
  private lock: Lock | undefined;
  private readonly open = new Map<string, UnreleasedReservation>();

  constructor(
    private readonly dir: string,
    private name: string,
    private readonly origin: Origin,
    private readonly locks: Locks,
  ) {}

  /** Logs `reservation` as one this invocation may leave behind: before it is claimed, or when its release failed. */
  track(reservation: UnreleasedReservation): void {
    const key = keyOf(reservation);
    if (this.open.has(key)) return;
    this.append({ track: reservation });
    this.open.set(key, reservation);
  }

  /** The reservation is backed by a pool entry, released, or not ours after all. */
  settle(reservation: UnreleasedReservation): void {
    const key = keyOf(reservation);
    if (!this.open.delete(key)) return;
    this.append({ settle: reservation });
  }

  /** What is still tracked. */
  unsettled(): UnreleasedReservation[] {
    return [...this.open.values()];
  }

  /** At the invocation's end: the log goes when all is settled, and stays, unlocked, for a replay otherwise. */
  close(): void {
    if (this.lock === undefined) return;
    if (this.open.size === 0) unlinkQuietly(join(this.dir, `${this.name}${RESERVATIONS}`));
    this.lock.release();
    this.lock = undefined;
  }

  private append(line: LogLine): void {
    this.lock ??= this.create();
    const bytes = Buffer.from(`${JSON.stringify(line)}\n`);
    for (let off = 0; off < bytes.length; ) off += writeSync(this.lock.fd, bytes, off);
  }

  /**
   * Created under a temporary name, locked and given its header there, then linked into place
   * (the lock goes with the file): a replay never finds it unlocked or without its origin while
   * this process lives. Not
   * synced: it guards against this process dying, not the node (whose reboot ends every ADD
   * anyway, and whose pool entries outlive it).
   */
  private create(): Lock {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const temporary = join(this.dir, `${this.name}${RESERVATIONS}.tmp`);
    const lock = this.locks.hold(temporary);
    try {
      // A dead process of the same pid may have left this temporary file with its own header.
      ftruncateSync(lock.fd, 0);
      const header = Buffer.from(`${JSON.stringify({ origin: this.origin, recordedAt: new Date().toISOString() } satisfies LogLine)}\n`);
      for (let off = 0; off < header.length; ) off += writeSync(lock.fd, header, off);
      // A link, not a rename: it never replaces a log a dead process of the same pid left.
      for (let suffix = ""; ; suffix += "+") {
        try {
          linkSync(temporary, join(this.dir, `${this.name}${suffix}${RESERVATIONS}`));
          this.name += suffix;
          break;
        } catch (err) {
          if (errnoOf(err) !== "EEXIST") throw err;
        }
      }
      unlinkSync(temporary);
    } catch (err) {
      lock.release();
      throw err;
    }
    return lock;
  }
}

function keyOf(r: UnreleasedReservation): string {
  return `${r.range}\0${r.address}\0${r.holder.podref}\0${r.holder.ifname ?? ""}`;
}

function readEntry(path: string, text: string): JournalEntry | undefined {
  if (path.endsWith(RELEASE)) {
    const file = parseJson(text);
    if (!isReleaseFile(file)) return undefined;
    const origin = { config: file.config, cniArgs: file.cniArgs, containerId: file.containerId, ifName: file.ifName };
    return file.reservation
      ? { kind: "reservations", path, origin, recordedAt: file.recordedAt, reservations: [file.reservation] }
      : { kind: "attachment", path, origin, recordedAt: file.recordedAt };
  }
  let header: { origin: Origin; recordedAt: string } | undefined;
  const open = new Map<string, UnreleasedReservation>();
  for (const row of text.split("\n")) {
    const line = parseJson(row);
    if (!header) {
      if (!(hasStrings(line, ["recordedAt"]) && isOrigin(line.origin))) return undefined;
      header = { origin: line.origin, recordedAt: line.recordedAt };
    } else if (isJsonObject(line) && isReservation(line.track)) {
      open.set(keyOf(line.track), line.track);
    } else if (isJsonObject(line) && isReservation(line.settle)) {
      open.delete(keyOf(line.settle));
    }
    // Anything else is the line a kill cut short.
  }
  return header && { kind: "reservations", path, origin: header.origin, recordedAt: header.recordedAt, reservations: [...open.values()] };
}

function isOrigin(value: unknown): value is Origin {
  return hasStrings(value, ["config", "cniArgs", "containerId", "ifName"]);
}

function isReservation(value: unknown): value is UnreleasedReservation {
  if (!(hasStrings(value, ["range", "address"]) && hasStrings(value.holder, ["podref"]))) return false;
  const { ifname } = value.holder;
  return ifname === undefined || typeof ifname === "string";
}

function isReleaseFile(value: unknown): value is ReleaseFile {
  return isOrigin(value) && hasStrings(value, ["recordedAt"]) && (value.reservation === undefined || isReservation(value.reservation));
}

/** Whether `path` is still the file open as `fd`. */
function sameFile(path: string, fd: number): boolean {
  try {
    return statSync(path).ino === fstatSync(fd).ino;
  } catch (err) {
    if (errnoOf(err) === "ENOENT") return false;
    throw err;
  }
}

/** How long a log's temporary file may stand unlocked before it is taken for a dead process's. */
const STALE_TEMPORARY_MS = 60_000;

/** A temporary log whose creator died between creating and renaming it (nobody holds it, and it is old). */
function removeStaleTemporary(path: string, locks: Locks): void {
  try {
    if (Date.now() - statSync(path).mtimeMs < STALE_TEMPORARY_MS) return;
    const lock = locks.tryHold(path);
    if (!lock) return;
    try {
      unlinkQuietly(path);
    } finally {
      lock.release();
    }
  } catch (err) {
    if (errnoOf(err) !== "ENOENT") throw err;
  }
}

function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch (err) {
    if (errnoOf(err) !== "ENOENT") throw err;
  }
}
