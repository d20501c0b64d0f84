/**
 * The few libc calls the project needs, through bun:ffi: sockets for netlink (shared/netlink/),
 * setns for namespaces (shared/netns.ts), flock for locks (whereabouts). This is the project's one
 * module that imports `bun:*` for kernel access, so that everything above it stays plain TypeScript
 * (and unit tests, which run on Node, can load it all but this).
 *
 * Every call is synchronous on the calling (JS) thread: that is what makes `setns` safe to use,
 * because the thread that switched namespaces is the one that does the work and switches back.
 */
import { dlopen, FFIType, read, CString } from "bun:ffi";
import { errnoName } from "../errors.ts";

const lib = dlopen("libc.so.6", {
  socket: { args: [FFIType.i32, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
  send: { args: [FFIType.i32, FFIType.ptr, FFIType.u64, FFIType.i32], returns: FFIType.i64 },
  recv: { args: [FFIType.i32, FFIType.ptr, FFIType.u64, FFIType.i32], returns: FFIType.i64 },
  setsockopt: {
    args: [FFIType.i32, FFIType.i32, FFIType.i32, FFIType.ptr, FFIType.u32],
    returns: FFIType.i32,
  },
  close: { args: [FFIType.i32], returns: FFIType.i32 },
  setns: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
  flock: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
  strerror: { args: [FFIType.i32], returns: FFIType.ptr },
  __errno_location: { args: [], returns: FFIType.ptr },
});
const c = lib.symbols;

export const SOCK_RAW = 3;
export const SOCK_CLOEXEC = 0o2000000;
export const CLONE_NEWNET = 0x40000000;
export const LOCK_EX = 2;
export const LOCK_NB = 4;

/** A failed libc call: the errno (named by errnoOf, shared/errors.ts) and libc's description of it. */
class SyscallError extends Error {
  constructor(
    readonly call: string,
    readonly errno: number,
  ) {
    super(`${call}: ${describeErrno(errno)}`);
    this.name = "SyscallError";
  }
}

/** "file exists (EEXIST)": what strerror says, plus the name people search for. */
export function describeErrno(errno: number): string {
  const text = c.strerror(errno);
  const message = text ? new CString(text).toString().toLowerCase() : `errno ${errno}`;
  const name = errnoName(errno);
  return name ? `${message} (${name})` : message;
}

function lastErrno(): number {
  const where = c.__errno_location();
  return where ? read.i32(where, 0) : 0;
}

function check(call: string, ret: number | bigint): number {
  const n = Number(ret);
  if (n < 0) throw new SyscallError(call, lastErrno());
  return n;
}

export function socket(domain: number, type: number, protocol: number): number {
  return check("socket", c.socket(domain, type, protocol));
}

export function setsockoptInt(fd: number, level: number, option: number, value: number): void {
  const v = new Int32Array([value]);
  check("setsockopt", c.setsockopt(fd, level, option, v, 4));
}

export function send(fd: number, data: Uint8Array): number {
  return check("send", c.send(fd, data, data.byteLength, 0));
}

export function recv(fd: number, into: Uint8Array, flags = 0): number {
  return check("recv", c.recv(fd, into, into.byteLength, flags));
}

export function close(fd: number): void {
  c.close(fd);
}

/** Moves the calling thread (the JS thread) into the namespace `fd` refers to. */
export function setns(fd: number, nstype: number): void {
  check("setns", c.setns(fd, nstype));
}

export function flock(fd: number, operation: number): void {
  check("flock", c.flock(fd, operation));
}
