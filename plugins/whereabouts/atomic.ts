/**
 * Durable file replacement: a crash at any point leaves the old file or the new one, never a mix.
 */
import { closeSync, fsyncSync, openSync, renameSync, writeSync } from "node:fs";
import { dirname } from "node:path";

/**
 * Replaces `path` with `text` (mode 0600) through `temporary`, then makes the rename durable.
 * Writers that hold a lock may use a fixed temporary name; others need one of their own.
 */
export function writeFileAtomically(path: string, text: string, temporary = `${path}.tmp`): void {
  const fd = openSync(temporary, "w", 0o600);
  try {
    let pending = Buffer.from(text, "utf8");
    while (pending.length > 0) pending = pending.subarray(writeSync(fd, pending));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temporary, path);
  syncDir(dirname(path));
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
