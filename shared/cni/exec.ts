/**
 * Running another CNI plugin: find it by type in a list of directories, exec it synchronously
 * with the CNI_* environment and a stdin, and read back its stdout or the error it reported. One
 * mechanism for every delegation: a plugin's IPAM (./ipam.ts) and a meta plugin's delegates
 * (./delegate.ts). Synchronous on purpose: the caller has nothing else to do while it waits.
 */
import { spawnSync } from "node:child_process";
import { accessSync, constants, statSync } from "node:fs";
import { basename, join } from "node:path";
import { env as processEnv } from "node:process";
import { errnoOf } from "../errors.ts";
import { writeAllSync } from "../log.ts";
import { CniError, ErrorCode } from "./errors.ts";
import { isJsonObject } from "./json.ts";
import type { CmdArgs, Verb } from "./types.ts";

/** The CNI_* values of one invocation besides CNI_COMMAND (empty strings where a verb has none). */
export type PluginEnv = Pick<CmdArgs, "containerId" | "netns" | "ifName" | "args" | "path">;

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
    throw new CniError(ErrorCode.InvalidConfig, `invalid plugin type ${JSON.stringify(type)}`, "a plugin type is a file name to look up in CNI_PATH");
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
export function execPlugin(binary: string, command: Verb, args: PluginEnv, stdin: string, options: ExecOptions = {}): string {
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
