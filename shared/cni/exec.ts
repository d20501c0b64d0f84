/**
 * Running another CNI plugin: find it by type in a list of directories, run it with the CNI_*
 * environment and a stdin, and read back its stdout or the error it reported. One mechanism for
 * every delegation: a plugin's IPAM (./ipam.ts, exec'd synchronously: the interface plugins call it
 * from synchronous code and have nothing else to do while it waits) and a meta plugin's delegates
 * (./delegate.ts, runDelegate). A delegate that is this very executable under the name of a plugin
 * it carries (a hard link of it in the bin dir) runs in this process, through the dispatcher it
 * would run under as a process (skel.ts runPlugin, its IO in memory): the same answer, without the
 * start of another runtime. Any other file, an upgraded copy of ours included, is exec'd.
 */
import { spawnSync } from "node:child_process";
import { accessSync, constants, statSync } from "node:fs";
import { basename, join } from "node:path";
import { env as processEnv } from "node:process";
import { errnoOf, messageOf } from "../errors.ts";
import { writeAllSync } from "../log.ts";
import { CniError, ErrorCode } from "./errors.ts";
import { isJsonObject } from "./json.ts";
import { type PluginVerbs, runPlugin } from "./skel.ts";
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

/** The plugins this executable carries, by name; set by the entry point (plugins/main.ts). */
let ownPlugins: Readonly<Record<string, () => Promise<PluginVerbs>>> = {};

/** Lets runDelegate run these plugins in this process when a delegate is this executable. */
export function carryPlugins(plugins: Readonly<Record<string, () => Promise<PluginVerbs>>>): void {
  ownPlugins = plugins;
}

/**
 * Runs a delegate plugin for `command` and returns its stdout, as execPlugin does; in this
 * process when `binary` is this executable under the name of a plugin it carries.
 */
export async function runDelegate(binary: string, command: Verb, args: PluginEnv, stdin: string, options: ExecOptions = {}): Promise<string> {
  const load = Object.hasOwn(ownPlugins, basename(binary)) && isOwnExecutable(binary) ? ownPlugins[basename(binary)] : undefined;
  if (!load) return execPlugin(binary, command, args, stdin, options);
  let verbs: PluginVerbs;
  try {
    verbs = await load();
  } catch (err) {
    throw new CniError(ErrorCode.Delegate, `plugin ${JSON.stringify(basename(binary))} failed to load: ${messageOf(err)}`);
  }
  let stdout = "";
  let stderr = "";
  const status = await runPlugin(verbs, {
    env: pluginEnvironment(command, args),
    readStdin: () => stdin,
    writeStdout: (text) => {
      stdout += text;
    },
    writeStderr: (text) => {
      stderr += text;
    },
  });
  return answerOf(basename(binary), { status, stdout, stderr }, options);
}

/** Whether `file` is the executable this process runs (the same inode: a hard link of it counts). */
function isOwnExecutable(file: string): boolean {
  try {
    const own = statSync("/proc/self/exe", { bigint: true });
    const other = statSync(file, { bigint: true });
    return own.dev === other.dev && own.ino === other.ino;
  } catch {
    return false;
  }
}

/** The delegate's environment: ours, with the CNI_* variables of its call. */
function pluginEnvironment(command: Verb, args: PluginEnv): Record<string, string | undefined> {
  return {
    ...processEnv,
    CNI_COMMAND: command,
    CNI_CONTAINERID: args.containerId,
    CNI_NETNS: args.netns,
    CNI_IFNAME: args.ifName,
    CNI_ARGS: args.args,
    CNI_PATH: args.path.join(":"),
  };
}

/**
 * Runs a plugin process for `command` and returns its stdout. Its stderr is passed on. A
 * failure it reports as a CNI error object comes back as that CniError, code and all, so the
 * runtime sees the delegate's own error; anything else becomes code 101.
 */
export function execPlugin(binary: string, command: Verb, args: PluginEnv, stdin: string, options: ExecOptions = {}): string {
  const name = basename(binary);
  const child = spawnSync(binary, [], {
    input: stdin,
    encoding: "utf8",
    maxBuffer: MAX_OUTPUT_BYTES,
    env: pluginEnvironment(command, args),
  });
  // A plugin may answer and exit without reading all of stdin (an error before parsing, say):
  // the write then fails with EPIPE, but the plugin's exit status and output are its answer.
  const brokenPipe = errnoOf(child.error) === "EPIPE" && child.status !== null;
  if (child.error && !brokenPipe) {
    throw new CniError(ErrorCode.Delegate, `plugin ${JSON.stringify(name)} failed: ${child.error.message}`);
  }
  return answerOf(name, { status: child.status, signal: child.signal, stdout: child.stdout ?? "", stderr: child.stderr ?? "" }, options);
}

/** A plugin run's answer: its stdout on success, else the error it reported or how it ended. Its stderr is passed on. */
function answerOf(name: string, run: { status: number | null; signal?: NodeJS.Signals | null; stdout: string; stderr: string }, options: ExecOptions): string {
  const { stdout, stderr } = run;
  if (stderr !== "") (options.writeStderr ?? ((text: string) => writeAllSync(2, text)))(stderr);
  if (run.status === 0) return stdout;

  const reported = parseErrorObject(stdout);
  if (reported) throw reported;
  const exit = run.status === null ? `killed by ${run.signal ?? "a signal"}` : `exit status ${run.status}`;
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
