/**
 * The node's ledger of the attachments its ADDs allocated for on the Kubernetes store: what GC
 * may release there. The pools are cluster-wide, and a runtime's list of valid attachments names
 * only its own node's, so GC must never judge a pool entry by that list alone: it releases the
 * attachments this ledger holds and the list does not, and nothing another node allocated.
 *
 * An entry is written before the ADD allocates (an ADD that dies midway is still found) and
 * removed by DEL, or by GC once released; one file per attachment, 0600. The ADD holds an flock
 * on its entry until it is done, and GC passes over entries it cannot lock: an attachment whose
 * ADD is still running is in no runtime's list yet, and is not garbage.
 */
import { fsyncSync, ftruncateSync, mkdirSync, readFileSync, readdirSync, unlinkSync, writeSync } from "node:fs";
import { join } from "node:path";
import { errnoOf } from "../../../shared/errors.ts";
import { hasStrings, parseJson } from "./json.ts";
import type { Lock, Locks } from "./lock.ts";

export interface Attached {
  network: string;
  containerId: string;
  ifName: string;
}

/**
 * A node-local file name for an attachment, as the ledger and the release journal name theirs.
 * Network names and container IDs match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$ and interface names hold no
 * '/' or ':' (the CNI spec): joined by ':' they make a file name no other triple makes.
 */
export function attachmentFileName({ network, containerId, ifName }: Attached): string {
  return `${network}:${containerId}:${ifName}`;
}

const SUFFIX = ".attachment.json";

export class AttachmentLedger {
  constructor(
    readonly dir: string,
    private readonly locks: Locks,
  ) {}

  /** Records the attachment, locked until the returned release (when its ADD is done). */
  record(attached: Attached): () => void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const lock = this.locks.hold(this.path(attached));
    try {
      ftruncateSync(lock.fd, 0);
      writeSync(lock.fd, JSON.stringify({ ...attached, recordedAt: new Date().toISOString() }));
      // GC typically runs after a restart: the entry must outlive a crash.
      fsyncSync(lock.fd);
    } catch (err) {
      lock.release();
      throw err;
    }
    return () => lock.release();
  }

  forget(attached: Attached): void {
    try {
      unlinkSync(this.path(attached));
    } catch (err) {
      // Never recorded (an ADD from before the ledger), or forgotten already.
      if (errnoOf(err) !== "ENOENT") throw err;
    }
  }

  /**
   * Runs `release` for each of the network's attachments that `garbage` picks, and forgets it
   * once released. Entries whose ADD is running (locked) or that cannot be read are passed over.
   */
  async collect(network: string, garbage: (attached: Attached) => boolean, release: (attached: Attached) => Promise<void>): Promise<void> {
    let names: string[];
    try {
      names = readdirSync(this.dir).filter((name) => name.endsWith(SUFFIX));
    } catch {
      return;
    }
    for (const name of names) {
      let lock: Lock | undefined;
      try {
        lock = this.locks.tryHold(join(this.dir, name));
      } catch {
        continue; // Forgotten by a DEL meanwhile.
      }
      if (lock === undefined) continue;
      try {
        let entry: unknown;
        try {
          entry = parseJson(readFileSync(lock.fd, "utf8"));
        } catch {
          continue;
        }
        // Unreadable: its ADD died while writing it, and there is no attachment to speak of.
        if (!hasStrings(entry, ["network", "containerId", "ifName"])) continue;
        const attached = { network: entry.network, containerId: entry.containerId, ifName: entry.ifName };
        if (attached.network !== network || !garbage(attached)) continue;
        await release(attached);
        this.forget(attached);
      } finally {
        lock.release();
      }
    }
  }

  private path(attached: Attached): string {
    return join(this.dir, `${attachmentFileName(attached)}${SUFFIX}`);
  }
}
