/**
 * CNI error codes (containernetworking/cni `SPEC.md`, "Error"; `pkg/types/types.go`) and the
 * error type every plugin throws.
 * Codes below 100 are the spec's; 100 and up are this project's own.
 */
import { messageOf } from "../errors.ts";

export const ErrorCode = {
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  UnknownContainer: 3,
  InvalidEnvironment: 4,
  IOFailure: 5,
  DecodingFailure: 6,
  InvalidConfig: 7,
  /** Not in the spec table; upstream skel uses it for a bad CNI_NETNS. */
  InvalidNetns: 8,
  TryAgainLater: 11,
  Unavailable: 50,
  UnavailableLimitedConnectivity: 51,
  /** A kernel (netlink, sysctl, namespace) operation failed. */
  Kernel: 100,
  /** A delegated plugin (IPAM) could not be found or run, or answered garbage. */
  Delegate: 101,
  /** An address range has no free address left. */
  RangeExhausted: 102,
  /** Anything we did not anticipate. */
  Internal: 999,
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export class CniError extends Error {
  constructor(
    readonly code: number,
    msg: string,
    readonly details: string = "",
  ) {
    super(msg);
    this.name = "CniError";
  }

  /** The spec's error object; `cniVersion` is the version of the request being answered. */
  toJSON(cniVersion: string): { cniVersion: string; code: number; msg: string; details?: string } {
    const out: { cniVersion: string; code: number; msg: string; details?: string } = {
      cniVersion,
      code: this.code,
      msg: this.message,
    };
    if (this.details) out.details = this.details;
    return out;
  }
}

/** Wraps any thrown value as a CniError, keeping the code of one that already is. */
export function asCniError(err: unknown): CniError {
  if (err instanceof CniError) return err;
  return new CniError(ErrorCode.Internal, messageOf(err));
}

/**
 * Renders a list the way upstream Go messages do (`%q` of a []string): `["a" "b"]`. Callers
 * and tests compare these messages with upstream's, so the spacing matters.
 */
export function quoteList(items: readonly string[]): string {
  return `[${items.map((item) => JSON.stringify(item)).join(" ")}]`;
}
