/**
 * Delegation to the IPAM plugin named by `ipam.type`: find it in CNI_PATH, run it with our
 * stdin unchanged, and read back its result or error. Synchronous on purpose: a plugin calls
 * IPAM from the host namespace and has nothing else to do while it waits.
 */
import { spawnSync } from "node:child_process";
import { accessSync, constants, statSync } from "node:fs";
import { basename, join } from "node:path";
import { env as processEnv } from "node:process";
import { errnoOf, messageOf } from "../errors.ts";
import { CniError, ErrorCode } from "./errors.ts";
import { isJsonObject } from "./json.ts";
import type { CmdArgs, Result, Verb } from "./types.ts";
import { parseResult } from "./result.ts";
import { writeAllSync } from "../log.ts";

export interface ExecOptions {
  /** Where the delegate's stderr goes; default our own stderr. */
  writeStderr?: (text: string) => void;
}

/** Room for any sane result; Node's 1 MiB default would cut off a chatty plugin's stderr. */
const MAX_OUTPUT_BYTES = 16 * 1024 * 1024;

/** The first executable file named `type` in the `path` directories. */
export function findPlugin(type: string, path: readonly string[]): string {
  // A type with a directory part could run any binary on the host; the spec says "name".
  if (type === "" || type === "." || type === ".." || type.includes("/")) {
    throw new CniError(
      ErrorCode.InvalidConfig,
      `invalid plugin type ${JSON.stringify(type)}`,
      "a plugin type is a file name to look up in CNI_PATH",
    );
  }
  for (const dir of path) {
    const candidate = join(dir, type);
    if (isExecutableFile(candidate)) return candidate;
  }
  throw new CniError(ErrorCode.Delegate, `failed to find plugin ${JSON.stringify(type)} in path [${path.join(" ")}]`);
}

function isExecutableFile(file: string): boolean {
  try {
    if (!statSync(file).isFile()) return false;
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Runs a delegate plugin for `command` and returns its stdout. Its stderr is passed on. A
 * failure it reports as a CNI error object comes back as that CniError, code and all, so the
 * runtime sees the delegate's own error; anything else becomes code 101.
 */
export function execPlugin(
  binary: string,
  command: Verb,
  args: CmdArgs,
  stdin: string,
  options: ExecOptions = {},
): string {
  const name = basename(binary);
  const child = spawnSync(binary, [], {
    input: stdin,
    encoding: "utf8",
    maxBuffer: MAX_OUTPUT_BYTES,
    env: {
      ...processEnv,
      CNI_COMMAND: command,
      CNI_CONTAINERID: args.containerId,
      CNI_NETNS: args.netns,
      CNI_IFNAME: args.ifName,
      CNI_ARGS: args.args,
      CNI_PATH: args.path.join(":"),
    },
  });
  const stdout = child.stdout ?? "";
  const stderr = child.stderr ?? "";
  if (stderr !== "") (options.writeStderr ?? ((text: string) => writeAllSync(2, text)))(stderr);

  // A plugin may answer and exit without reading all of stdin (an error before parsing, say):
  // the write then fails with EPIPE, but the plugin's exit status and output are its answer.
  const brokenPipe = errnoOf(child.error) === "EPIPE" && child.status !== null;
  if (child.error && !brokenPipe) {
    throw new CniError(ErrorCode.Delegate, `plugin ${JSON.stringify(name)} failed: ${child.error.message}`);
  }
  if (child.status === 0) return stdout;

  const reported = parseErrorObject(stdout);
  if (reported) throw reported;
  const exit = child.status === null ? `killed by ${child.signal ?? "a signal"}` : `exit status ${child.status}`;
  const reason = firstLine(stderr) ?? firstLine(stdout) ?? exit;
  throw new CniError(ErrorCode.Delegate, `plugin ${JSON.stringify(name)} failed: ${reason}`);
}

function parseErrorObject(stdout: string): CniError | undefined {
  let decoded: unknown;
  try {
    decoded = JSON.parse(stdout);
  } catch {
    return undefined;
  }
  if (!isJsonObject(decoded)) return undefined;
  const { code, msg, details } = decoded;
  if (typeof code !== "number" || !Number.isInteger(code) || typeof msg !== "string") return undefined;
  return new CniError(code, msg, typeof details === "string" ? details : "");
}

function firstLine(text: string): string | undefined {
  const line = text.split("\n").find((candidate) => candidate.trim() !== "");
  return line?.trim();
}

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
    throw new CniError(
      ErrorCode.Delegate,
      `IPAM plugin ${JSON.stringify(type)} printed an unreadable result: ${reason}`,
    );
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
