/**
 * What any thrown value says, whoever threw it (Node's or Bun's fs, the libc shim, the netlink
 * socket, a library): its message, and the errno it carries. Plain TypeScript with no project
 * imports, so that every layer (log, kube, cni, the kernel layer) can use it.
 */
import { constants } from "node:os";

const errnoNames = new Map<number, string>(Object.entries(constants.errno).map(([name, value]) => [value, name]));

/** The message of an Error, or the text of anything else that was thrown. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * The symbolic errno ("ENOENT") of a failed system call, or undefined. Node's and Bun's errors
 * carry it as the string `code` (their numeric `errno` is negative); ours (SyscallError,
 * NetlinkError, whose `code` is the CNI code) as a positive `errno`. A `code` that is no errno,
 * such as "ERR_INVALID_ARG_TYPE", gives undefined.
 */
export function errnoOf(err: unknown): string | undefined {
  if (!(err instanceof Error)) return undefined;
  if ("code" in err && typeof err.code === "string") return /^E[A-Z0-9]+$/.test(err.code) ? err.code : undefined;
  if ("errno" in err && typeof err.errno === "number" && err.errno > 0) return errnoName(err.errno) ?? `errno ${err.errno}`;
  return undefined;
}

/** "EEXIST" for 17; undefined for a number the platform has no name for. */
export function errnoName(errno: number): string | undefined {
  return errnoNames.get(errno);
}
