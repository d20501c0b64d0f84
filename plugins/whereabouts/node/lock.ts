/**
 * whereabouts' locks: flock(2) on a file, through the project's libc shim (the file store's pool
 * lock, the node's batch and pool locks, the GC ledger's entries). Kept apart from the modules
 * that use them because it needs bun:ffi, which unit tests (Node) cannot load.
 *
 * Why flock and not proper-lockfile (measured by bench/locks.ts, numbers in the README): the
 * kernel queues waiters and wakes the next one at once, where proper-lockfile polls a lock
 * directory; and the kernel drops the lock when its holder dies, where proper-lockfile leaves it
 * until it is "stale" (10 s by default), stalling every ADD on the node after a crash.
 */
import { closeSync, openSync } from "node:fs";
import { errnoOf } from "../../../shared/errors.ts";
import { LOCK_EX, LOCK_NB, flock } from "../../../shared/sys/libc.ts";

/**
 * Blocks until this process holds an exclusive lock on `path` (created 0600 if absent), and returns
 * the release. Closing the descriptor releases the lock, and the kernel closes it if we die.
 */
export function flockFile(path: string): () => void {
  const fd = lockedFd(path, "a", true)!;
  return () => closeSync(fd);
}

/**
 * An open descriptor of `path` that holds an exclusive flock: `mode` opens it ("r" reads an
 * existing file, "a" creates it 0600); with `wait` false, undefined while another holds it.
 * Closing the descriptor releases the lock.
 */
export function lockedFd(path: string, mode: "r" | "a", wait: boolean): number | undefined {
  const fd = openSync(path, mode, 0o600);
  try {
    for (;;) {
      try {
        flock(fd, wait ? LOCK_EX : LOCK_EX | LOCK_NB);
        return fd;
      } catch (err) {
        // One errno on Linux (11), named EWOULDBLOCK by the runtime's table; EAGAIN is its other name.
        if (!wait && (errnoOf(err) === "EWOULDBLOCK" || errnoOf(err) === "EAGAIN")) {
          closeSync(fd);
          return undefined;
        }
        if (errnoOf(err) !== "EINTR") throw err;
      }
    }
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}
