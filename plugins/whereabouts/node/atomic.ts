/**
 * Durable file replacement: a crash at any point leaves the old file or the new one, never a mix.
 */
import { closeSync, fsyncSync, openSync, renameSync, writeSync } from "node:fs";
import { dirname } from "node:path";

/**
 * Replaces `path` with `text` (mode 0600) through `temporary`, then makes the rename durable.
 * Writers that hold a lock may use a fixed temporary name; others need one of their own.
 * `durable: false` skips the syncs, for files that matter only as long as their processes live:
 * readers still never see half a file.
 */
export function writeFileAtomically(path: string, text: string, temporary = `${path}.tmp`, durable = true): void {
  const fd = openSync(temporary, "w", 0o600);
  try {
    let pending = Buffer.from(text, "utf8");
    while (pending.length > 0) pending = pending.subarray(writeSync(fd, pending));
    if (durable) fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temporary, path);
  if (durable) syncDir(dirname(path));
}

/** Makes a rename or unlink in `dir` durable. */
export function syncDir(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
