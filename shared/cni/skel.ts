/**
 * The dispatcher every plugin's entry point calls: reads the CNI_* environment and stdin,
 * validates them, runs the verb, and prints exactly one result or error object on stdout
 * (containernetworking/cni `pkg/skel/skel.go`; the error object is `Error` in
 * `pkg/types/types.go`). The order of the checks follows upstream skel, so the same bad request
 * gets the same error from our plugins and from upstream's.
 */
import { readFileSync, statSync } from "node:fs";
import process from "node:process";
import { messageOf } from "../errors.ts";
import { asCniError, CniError, ErrorCode } from "./errors.ts";
import { gcAttachments, parseNetConf } from "./config.ts";
import { readEnvironment } from "./env.ts";
import { isJsonObject } from "./json.ts";
import type { Attachment, CmdArgs, Result } from "./types.ts";
import { resultToVersion } from "./result.ts";
import { LATEST, SUPPORTED_VERSIONS, checkConfigVersion, versionOutput } from "./version.ts";
import { createLogger, writeAllSync } from "../log.ts";

export interface PluginVerbs {
  /** "macvlan": names the plugin in the about text and in logs. */
  name: string;
  /** Shown in the about text; upstream prints "version unknown" for builds without one. */
  version?: string;
  /**
   * ADD's result is printed in the version it carries rather than the config's: a meta plugin
   * (multus) hands on its master delegate's result as that delegate gave it.
   */
  keepsResultVersion?: boolean;
  add(args: CmdArgs): Promise<Result> | Result;
  del(args: CmdArgs): Promise<void> | void;
  check(args: CmdArgs): Promise<void> | void;
  /** Absent: always ready (exit 0, no output). */
  status?(args: CmdArgs): Promise<void> | void;
  /** Absent: nothing to collect (exit 0, no output). */
  gc?(args: CmdArgs, valid: Attachment[]): Promise<void> | void;
}

/** The process's side of the protocol, replaceable so tests can run a plugin in memory. */
export interface PluginIO {
  env: Record<string, string | undefined>;
  readStdin(): string;
  writeStdout(text: string): void;
  writeStderr(text: string): void;
}

/** The network namespace this process runs in. */
const OWN_NETNS = "/proc/self/ns/net";

/** Returns the exit code; the caller exits with it (plugins/main.ts). */
export async function runPlugin(verbs: PluginVerbs, io: PluginIO = processIO()): Promise<number> {
  const log = createLogger({ sink: (line) => io.writeStderr(line) }, verbs.name);
  // The version errors are answered in: the request's, once we know it and speak it.
  let replyVersion = LATEST;
  try {
    const environment = readEnvironment(io.env);
    if (environment === null) {
      io.writeStderr(
        `CNI ${verbs.name} plugin ${verbs.version ?? "version unknown"}\n` + `CNI protocol versions supported: ${SUPPORTED_VERSIONS.join(", ")}\n`,
      );
      return 0;
    }
    if (environment.command === "VERSION") {
      // Upstream ignores stdin here and prints compact JSON with a newline, unlike every other answer.
      io.writeStdout(`${JSON.stringify(versionOutput())}\n`);
      return 0;
    }

    const stdin = readStdin(io);
    replyVersion = requestVersion(stdin) ?? LATEST;
    const conf = parseNetConf(stdin, { lenientPrevResult: environment.command === "DEL" });
    checkConfigVersion(environment.command, conf.cniVersion);
    const args: CmdArgs = { ...environment, conf };
    // Upstream checks this only after the verb ran; by then an ADD has already configured the
    // plugin's own namespace. Checking first keeps a misdirected request harmless.
    if (args.command === "ADD" || args.command === "CHECK" || (args.command === "DEL" && args.netns !== "")) {
      refuseOwnNetns(args.netns, io.env.CNI_NETNS_OVERRIDE);
    }
    await dispatch(verbs, args, io);
    return 0;
  } catch (err) {
    const error = asCniError(err);
    const details = error.details ? ` (${error.details})` : "";
    log.error(`error ${error.code}: ${error.message}${details}`);
    io.writeStdout(JSON.stringify(error.toJSON(replyVersion), null, 4));
    return 1;
  }
}

async function dispatch(verbs: PluginVerbs, args: CmdArgs, io: PluginIO): Promise<void> {
  switch (args.command) {
    case "ADD": {
      const result = await verbs.add(args);
      // Pretty-printed with no trailing newline, byte for byte what upstream prints.
      const version = verbs.keepsResultVersion && result.cniVersion ? result.cniVersion : args.conf.cniVersion;
      io.writeStdout(JSON.stringify(resultToVersion(result, version), null, 4));
      return;
    }
    case "DEL":
      return verbs.del(args);
    case "CHECK":
      return verbs.check(args);
    case "STATUS":
      return verbs.status?.(args);
    case "GC":
      if (verbs.gc) await verbs.gc(args, gcAttachments(args.conf.raw));
      return;
    case "VERSION":
      return; // answered before stdin was read
  }
}

function readStdin(io: PluginIO): string {
  try {
    return io.readStdin();
  } catch (err) {
    const reason = messageOf(err);
    throw new CniError(ErrorCode.IOFailure, `error reading from stdin: ${reason}`);
  }
}

/** The request's cniVersion if we support it, read leniently so even a rejected config gets it. */
function requestVersion(stdin: string): string | undefined {
  try {
    const decoded: unknown = JSON.parse(stdin);
    if (!isJsonObject(decoded)) return undefined;
    const version = decoded.cniVersion;
    return typeof version === "string" && SUPPORTED_VERSIONS.includes(version) ? version : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A runtime bug can hand us our own namespace; configuring it would break the host's network.
 * A netns we cannot stat is left for the verb to report, with its own message.
 */
function refuseOwnNetns(netns: string, override: string | undefined): void {
  if (override !== undefined && /^(1|true)$/i.test(override)) return;
  if (!sameFile(netns, OWN_NETNS)) return;
  throw new CniError(ErrorCode.InvalidNetns, "plugin's netns and netns from CNI_NETNS should not be the same");
}

function sameFile(a: string, b: string): boolean {
  try {
    const left = statSync(a, { bigint: true });
    const right = statSync(b, { bigint: true });
    return left.dev === right.dev && left.ino === right.ino;
  } catch {
    return false;
  }
}

/** The real process: environment, fd 0, and synchronous writes to fds 1 and 2. */
function processIO(): PluginIO {
  return {
    env: process.env,
    readStdin: () => readFileSync(0, "utf8"),
    // Synchronous, so the answer is complete even if the caller exits right after.
    writeStdout: (text) => writeAllSync(1, text),
    writeStderr: (text) => writeAllSync(2, text),
  };
}

/** An in-memory PluginIO for tests: stdout and stderr accumulate; a stdin Error is thrown on read. */
export interface MemoryIO extends PluginIO {
  stdout: string;
  stderr: string;
}

export function memoryIO(env: Record<string, string | undefined>, stdin: string | Error = ""): MemoryIO {
  const io: MemoryIO = {
    env,
    stdout: "",
    stderr: "",
    readStdin: () => {
      if (stdin instanceof Error) throw stdin;
      return stdin;
    },
    writeStdout: (text) => {
      io.stdout += text;
    },
    writeStderr: (text) => {
      io.stderr += text;
    },
  };
  return io;
}
