/**
 * The node's journal of releases the Kubernetes API could not take: a DEL must neither block pod
 * teardown nor lose the release, so it records the release here (one file per attachment, 0600,
 * written atomically) and succeeds; later invocations on the node replay and remove the entries.
 * An ADD that could not take back a reservation it claimed (the API went away midway) records
 * that reservation the same way.
 */
import { mkdirSync, readFileSync, readdirSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomically } from "./atomic.ts";
import { attachmentFileName } from "./ledger.ts";
import type { UnreleasedReservation } from "./operations.ts";

export interface PendingRelease {
  /** The network configuration the DEL received (stdin), to open the same store and ranges. */
  config: string;
  cniArgs: string;
  containerId: string;
  ifName: string;
  recordedAt: string;
  /** Only this reservation, not the attachment's allocations. */
  reservation?: UnreleasedReservation;
}

export interface JournalEntry {
  path: string;
  release: PendingRelease;
}

const SUFFIX = ".release.json";

export class ReleaseJournal {
  constructor(readonly dir: string) {}

  /** Records a release; the same attachment recorded twice is one entry. */
  record(network: string, release: PendingRelease): string {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    // The temporary name is per process: there is no lock.
    const attachment = attachmentFileName({ network, containerId: release.containerId, ifName: release.ifName });
    const path = join(this.dir, `${release.reservation ? `${attachment}:${release.reservation.address}` : attachment}${SUFFIX}`);
    writeFileAtomically(path, JSON.stringify(release), `${path}.${process.pid}.tmp`);
    return path;
  }

  /** The entries waiting, oldest first; unreadable ones are skipped (and left for a human). */
  pending(): JournalEntry[] {
    let names: string[];
    try {
      names = readdirSync(this.dir).filter((name) => name.endsWith(SUFFIX));
    } catch {
      return [];
    }
    const entries: JournalEntry[] = [];
    for (const name of names) {
      const path = join(this.dir, name);
      try {
        entries.push({ path, release: JSON.parse(readFileSync(path, "utf8")) as PendingRelease });
      } catch {
        // Another process replayed and removed it meanwhile, or it is damaged.
      }
    }
    return entries.sort((a, b) => a.release.recordedAt.localeCompare(b.release.recordedAt));
  }

  forget(entry: JournalEntry): void {
    try {
      unlinkSync(entry.path);
    } catch {
      // Replayed by another process at the same time: already gone.
    }
  }
}
