/**
 * Delegation to the IPAM plugin named by `ipam.type`: find it in CNI_PATH, run it (./exec.ts) with
 * our stdin unchanged, and read back its result or error. Synchronous on purpose: a plugin calls
 * IPAM from the host namespace and has nothing else to do while it waits.
 */
import { messageOf } from "../errors.ts";
import { CniError, ErrorCode } from "./errors.ts";
import { type ExecOptions, execPlugin, findPlugin } from "./exec.ts";
import type { CmdArgs, Result } from "./types.ts";
import { parseResult } from "./result.ts";

// ---- the IPAM verbs ----------------------------------------------------------------------------
// Each takes the IPAM type from args.conf.ipam and sends args.conf.bytes as stdin: the IPAM
// plugin reads the same network configuration we did, and for GC that carries the runtime's
// `cni.dev/valid-attachments`.

/** The IPAM plugin's result in our model. A result without IPs is returned as is: callers decide. */
export function ipamAdd(args: CmdArgs, options?: ExecOptions): Result {
  const { binary, type } = ipamBinary(args);
  const stdout = execPlugin(binary, "ADD", args, args.conf.bytes, options);
  let decoded: unknown;
  try {
    decoded = JSON.parse(stdout);
  } catch (err) {
    const reason = messageOf(err);
    throw new CniError(ErrorCode.Delegate, `IPAM plugin ${JSON.stringify(type)} printed an unreadable result: ${reason}`);
  }
  return parseResult(decoded, "IPAM result", args.conf.cniVersion);
}

export function ipamDel(args: CmdArgs, options?: ExecOptions): void {
  execPlugin(ipamBinary(args).binary, "DEL", args, args.conf.bytes, options);
}

export function ipamCheck(args: CmdArgs, options?: ExecOptions): void {
  execPlugin(ipamBinary(args).binary, "CHECK", args, args.conf.bytes, options);
}

export function ipamStatus(args: CmdArgs, options?: ExecOptions): void {
  execPlugin(ipamBinary(args).binary, "STATUS", args, args.conf.bytes, options);
}

export function ipamGc(args: CmdArgs, options?: ExecOptions): void {
  execPlugin(ipamBinary(args).binary, "GC", args, args.conf.bytes, options);
}

function ipamBinary(args: CmdArgs): { binary: string; type: string } {
  const type = args.conf.ipam?.type;
  if (!type) throw new CniError(ErrorCode.InvalidConfig, 'no IPAM plugin configured: "ipam.type" is missing');
  return { binary: findPlugin(type, args.path), type };
}
