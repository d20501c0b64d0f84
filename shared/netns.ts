/**
 * Network namespaces, as upstream's pkg/ns: open one by path, run a synchronous block inside it,
 * always come back.
 *
 * `setns` moves only the calling thread. Everything here runs on the JS thread and refuses async
 * work inside a namespace, so nothing can interleave while the thread is elsewhere. Netlink
 * sockets are created inside the target namespace and keep acting on it after we switch back.
 */
import { closeSync, openSync, readFileSync, statfsSync, writeFileSync, writeSync } from "node:fs";
import { CniError, ErrorCode } from "./cni/errors.ts";
import { errnoOf, messageOf } from "./errors.ts";
import { Netlink } from "./netlink/socket.ts";
import * as libc from "./sys/libc.ts";

/** CNI_NETNS names nothing (the pod sandbox is gone): DEL treats this as "already cleaned up". */
class NetnsNotFoundError extends CniError {
  constructor(readonly path: string) {
    super(ErrorCode.UnknownContainer, `network namespace "${path}" does not exist`);
  }
}

/**
 * CNI_NETNS is a file but no namespace: typically the bind mount of a sandbox that is gone (an
 * unmounted /run/netns entry left behind). DEL treats this as "already cleaned up" too.
 */
class NetnsInvalidError extends CniError {
  constructor(readonly path: string) {
    super(ErrorCode.InvalidNetns, `"${path}" is not a network namespace`);
  }
}

/** For DEL: the pod's namespace is gone, so is everything a plugin made inside it. */
export function isNetnsGone(err: unknown): boolean {
  return err instanceof NetnsNotFoundError || err instanceof NetnsInvalidError;
}

const NSFS_MAGIC = 0x6e736673;
const PROC_SUPER_MAGIC = 0x9fa0;

export class Netns {
  private closed = false;

  private constructor(
    readonly fd: number,
    readonly path: string,
  ) {}

  /** Opens a namespace file (a bind mount under /run/netns, or /proc/<pid>/ns/net). */
  static open(path: string): Netns {
    let fd: number;
    try {
      fd = openSync(path, "r");
    } catch (err) {
      if (errnoOf(err) === "ENOENT") throw new NetnsNotFoundError(path);
      throw new CniError(ErrorCode.InvalidNetns, `failed to open network namespace "${path}": ${messageOf(err)}`);
    }
    // Namespace files live on nsfs (or procfs, for /proc/<pid>/ns/net on old kernels). A file
    // elsewhere, e.g. a stale path re-created as a plain file, is not a namespace.
    let magic: number;
    try {
      magic = statfsSync(path).type;
    } catch (err) {
      closeSync(fd);
      // Unmounted between our open and our look: as gone as it gets.
      if (errnoOf(err) === "ENOENT") throw new NetnsNotFoundError(path);
      throw new CniError(ErrorCode.InvalidNetns, `failed to inspect network namespace "${path}": ${messageOf(err)}`);
    }
    if (magic !== NSFS_MAGIC && magic !== PROC_SUPER_MAGIC) {
      closeSync(fd);
      throw new NetnsInvalidError(path);
    }
    return new Netns(fd, path);
  }

  /** The namespace of the calling thread, i.e. the one the plugin was started in. */
  static current(): Netns {
    return Netns.open("/proc/thread-self/ns/net");
  }

  /** Runs `work` with the JS thread inside this namespace and returns to where it was. */
  run<T>(work: () => T): T {
    const origin = openSync("/proc/thread-self/ns/net", "r");
    try {
      libc.setns(this.fd, libc.CLONE_NEWNET);
      try {
        const result = work();
        if (result instanceof Promise) {
          throw new Error("Netns.run needs synchronous work: awaiting inside a namespace is unsafe");
        }
        return result;
      } finally {
        returnHome(origin);
      }
    } finally {
      closeSync(origin);
    }
  }

  /**
   * Serialises plugins working on the same namespace: an exclusive flock on the namespace's own
   * inode, held until close(). Nothing is created at the namespace path (upstream sbr's O_CREAT
   * lock file re-creates a vanished netns path as a plain file and then breaks DEL).
   */
  lock(): void {
    libc.flock(this.fd, libc.LOCK_EX);
  }

  /** A netlink handle acting on this namespace, usable after we are back home. */
  netlink(): Netlink {
    return this.run(() => Netlink.open());
  }

  close(): void {
    if (!this.closed) closeSync(this.fd);
    this.closed = true;
  }
}

/**
 * Opens `path`, hands a netlink handle on it to `work`, and closes both. The sockets's namespace
 * is fixed at creation, so `work` may do netlink calls without being inside the namespace; use
 * `ns.run` for anything else that depends on the thread's namespace (sysctl).
 */
export function withNetns<T>(path: string, work: (ns: Netns, nl: Netlink) => T): T {
  const ns = Netns.open(path);
  try {
    const nl = ns.netlink();
    try {
      return work(ns, nl);
    } finally {
      nl.close();
    }
  } finally {
    ns.close();
  }
}

/**
 * sysctl read/write through /proc/sys, which answers for the namespace of the thread that opens
 * the file: call these inside `Netns.run`. Names use '/' separators; a name with a '.' before
 * its first '/' is taken as dotted ("net.ipv4.ip_forward"), so interface names with dots work.
 */
export function sysctlGet(name: string): string {
  return readFileSync(sysctlPath(name), "utf8").trim();
}

export function sysctlSet(name: string, value: string): void {
  writeFileSync(sysctlPath(name), value);
}

function sysctlPath(name: string): string {
  const slash = name.indexOf("/");
  const dot = name.indexOf(".");
  const path = dot >= 0 && (slash < 0 || dot < slash) ? name.replaceAll(".", "/") : name;
  return `/proc/sys/${path}`;
}

/**
 * Switches the thread back. If that fails the thread is stuck in the other namespace, and any
 * further work (an IPAM exec, a cleanup) would act there: the process ends at once, with the
 * error object a runtime expects.
 */
function returnHome(origin: number): void {
  try {
    libc.setns(origin, libc.CLONE_NEWNET);
  } catch (err) {
    const error = new CniError(ErrorCode.Kernel, `cannot return to the plugin's own network namespace: ${messageOf(err)}`);
    writeSync(1, JSON.stringify(error.toJSON("1.1.0"), null, 4));
    writeSync(2, `${error.message}\n`);
    process.exit(1);
  }
}
