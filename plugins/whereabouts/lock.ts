/**
 * The file store's lock: flock(2) on a lock file, through the project's libc shim. Kept apart
 * from filestore.ts because it needs bun:ffi, which unit tests (Node) cannot load.
 *
 * Why flock and not proper-lockfile (measured by bench/locks.ts, numbers in the README): the
 * kernel queues waiters and wakes the next one at once, where proper-lockfile polls a lock
 * directory; and the kernel drops the lock when its holder dies, where proper-lockfile leaves it
 * until it is "stale" (10 s by default), stalling every ADD on the node after a crash.
 */
import { closeSync, openSync } from "node:fs";
import { LOCK_EX, SyscallError, flock } from "../../shared/netlink/libc.ts";

const EINTR = 4;

/**
 * Blocks until this process holds an exclusive lock on `path` (created 0600 if absent), and returns
 * the release. Closing the descriptor releases the lock, and the kernel closes it if we die.
 */
export function flockFile(path: string): () => void {
  const fd = openSync(path, "a", 0o600);
  try {
    for (;;) {
      try {
        flock(fd, LOCK_EX);
        break;
      } catch (err) {
        if (!(err instanceof SyscallError && err.errno === EINTR)) throw err;
      }
    }
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  return () => closeSync(fd);
}
