/**
 * whereabouts' one lock: an exclusive flock(2) on a file. `Locks` is what every module that locks
 * takes as a parameter (the file store's pools and reservations, the Kubernetes store's node-local
 * pool lock, the node's batch queues, journal entries and ledger entries); `flocks` is the
 * plugin's, through the project's libc shim. Unit tests (Node, which cannot load bun:ffi) import
 * the types only and pass their own (test-util.ts).
 *
 * Why flock and not proper-lockfile (measured by bench/locks.ts,
 * docs/performance.md#the-file-stores-lock): the kernel queues waiters and wakes the next one at
 * once, where proper-lockfile polls a lock directory; and the kernel drops the lock when its
 * holder dies, where proper-lockfile leaves it until it is "stale" (10 s by default), stalling
 * every ADD on the node after a crash.
 */
import { closeSync, openSync } from "node:fs";
import { errnoOf } from "../../../shared/errors.ts";
import { LOCK_EX, LOCK_NB, flock } from "../../../shared/sys/libc.ts";

/** A held lock: the locked file's descriptor, and its release. */
export interface Lock {
  /** Open for appending (`hold`) or for reading (`tryHold`). */
  readonly fd: number;
  /** Closes the descriptor, which releases the lock; the kernel does the same when the process dies. */
  release(): void;
}

export interface Locks {
  /** Blocks until this process holds the lock of `path`, the file created 0600 if absent. */
  hold(path: string): Lock;
  /** The lock of the existing file `path`, or undefined while another process holds it; throws ENOENT when there is no file. */
  tryHold(path: string): Lock | undefined;
}

export const flocks: Locks = {
  hold(path) {
    const fd = openSync(path, "a", 0o600);
    lock(fd, false);
    return held(fd);
  },
  tryHold(path) {
    const fd = openSync(path, "r");
    return lock(fd, true) ? held(fd) : undefined;
  },
};

function held(fd: number): Lock {
  return { fd, release: () => closeSync(fd) };
}

/** Locks `fd`, retrying when a signal interrupts the wait: false when `nonBlocking` and another process holds it. Closes `fd` unless held. */
function lock(fd: number, nonBlocking: boolean): boolean {
  try {
    for (;;) {
      try {
        flock(fd, nonBlocking ? LOCK_EX | LOCK_NB : LOCK_EX);
        return true;
      } catch (err) {
        // One errno on Linux (11), named EWOULDBLOCK by the runtime's table; EAGAIN is its other name.
        if (nonBlocking && (errnoOf(err) === "EWOULDBLOCK" || errnoOf(err) === "EAGAIN")) {
          closeSync(fd);
          return false;
        }
        if (errnoOf(err) !== "EINTR") throw err;
      }
    }
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}
