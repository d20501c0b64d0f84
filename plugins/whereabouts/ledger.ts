/**
 * The node's ledger of the attachments its ADDs allocated for on the Kubernetes store: what GC
 * may release there. The pools are cluster-wide, and a runtime's list of valid attachments names
 * only its own node's, so GC must never judge a pool entry by that list alone: it releases the
 * attachments this ledger holds and the list does not, and nothing another node allocated.
 *
 * An entry is written before the ADD allocates (an ADD that dies midway is still found) and
 * removed by DEL, or by GC once released; one file per attachment, 0600, written atomically and
 * durably (GC typically runs after a restart).
 */
import { mkdirSync, readFileSync, readdirSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomically } from "./atomic.ts";

export interface Attached {
  network: string;
  containerId: string;
  ifName: string;
}

const SUFFIX = ".attachment.json";

export class AttachmentLedger {
  constructor(readonly dir: string) {}

  record(attached: Attached): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const path = this.path(attached);
    writeFileAtomically(path, JSON.stringify({ ...attached, recordedAt: new Date().toISOString() }), `${path}.${process.pid}.tmp`);
  }

  forget(attached: Attached): void {
    try {
      unlinkSync(this.path(attached));
    } catch (err) {
      // Never recorded (an ADD from before the ledger, or a file-store config), or forgotten already.
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
  }

  /** The network's attachments recorded on this node; unreadable entries are skipped. */
  attachments(network: string): Attached[] {
    let names: string[];
    try {
      names = readdirSync(this.dir).filter((name) => name.endsWith(SUFFIX));
    } catch {
      return [];
    }
    const found: Attached[] = [];
    for (const name of names) {
      try {
        const entry = JSON.parse(readFileSync(join(this.dir, name), "utf8")) as Attached;
        if (entry.network === network) found.push({ network: entry.network, containerId: entry.containerId, ifName: entry.ifName });
      } catch {
        // Forgotten by a concurrent DEL, or damaged: nothing to release by it.
      }
    }
    return found;
  }

  private path({ network, containerId, ifName }: Attached): string {
    // Network names and container IDs match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$ and interface names hold
    // no '/' or ':' (the CNI spec): joined by ':' they make a file name no other triple makes.
    return join(this.dir, `${network}:${containerId}:${ifName}${SUFFIX}`);
  }
}
