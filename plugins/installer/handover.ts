/**
 * Which installer of a node takes the multus conf away at exit: the last one running. A DaemonSet
 * updated with maxSurge starts the new pod before it stops the old one; if the old one removed
 * the conf on its SIGTERM, pods created until the new one's next round would get no multus at
 * all. So every running installer holds a shared flock on one file in the conf dir, and at exit
 * removes the conf only if it can turn its lock exclusive, that is, if no other installer holds
 * one. The lock goes with the process, however it ends.
 */
import { closeSync, mkdirSync, openSync } from "node:fs";
import { dirname } from "node:path";
import { errnoOf } from "../../shared/errors.ts";
import { flock, LOCK_EX, LOCK_NB } from "../../shared/sys/libc.ts";

/** flock(2)'s LOCK_SH, which shared/sys/libc.ts does not name. */
const LOCK_SH = 1;

function open(path: string): number {
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  return openSync(path, "a", 0o600);
}

/** One errno on Linux (11), named EWOULDBLOCK by the runtime's table; EAGAIN is its other name. */
function heldElsewhere(err: unknown): boolean {
  const errno = errnoOf(err);
  return errno === "EWOULDBLOCK" || errno === "EAGAIN";
}

/**
 * Joins the installers running on this node; returns the descriptor that holds the shared lock.
 * Polled rather than blocking: the JS thread stays free for the SIGTERM handler. It waits only
 * while an exiting installer holds the lock exclusively, for the moment it takes to remove the conf.
 */
export async function joinInstallers(path: string): Promise<number> {
  const fd = open(path);
  for (;;) {
    try {
      flock(fd, LOCK_SH | LOCK_NB);
      return fd;
    } catch (err) {
      if (!heldElsewhere(err) && errnoOf(err) !== "EINTR") {
        closeSync(fd);
        throw err;
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * Whether this is the only installer running on the node (`fd`: ours from join, or undefined
 * when we exit before joining). Answering true, it keeps the lock exclusive until the process
 * exits, so that an installer starting meanwhile waits for the removal before writing the conf.
 */
export function isLast(path: string, fd: number | undefined): boolean {
  const mine = fd ?? open(path);
  try {
    flock(mine, LOCK_EX | LOCK_NB);
    return true;
  } catch (err) {
    if (heldElsewhere(err)) return false;
    throw err;
  }
}
