/**
 * The conformance harness: real network namespaces and veth pairs, compiled plugin binaries run
 * with the CNI environment and stdin, and the kernel's own view read back with `ip -j`.
 *
 * Every namespace a test makes is named `cnit<pid>-...` and removed by `cleanup()`; a run also
 * sweeps namespaces left by an earlier run that was killed.
 */
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const ROOT = resolve(import.meta.dirname, "..");
export const BIN = join(ROOT, "bin");
export const UPSTREAM_BIN = join(ROOT, ".cache/upstream/plugins-v1.9.1");

const PREFIX = `cnit${process.pid}`;
let counter = 0;
const namespaces = new Set<string>();

export interface Execution {
  status: number;
  stdout: string;
  stderr: string;
}

/**
 * Where the harness runs commands: this machine, or a guest kernel (conformance/guest) for
 * cases the host kernel cannot run. Every helper below goes through the current executor, so a
 * suite written against them runs unchanged in either place.
 */
export interface Executor {
  run(argv: string[], options?: { env?: Record<string, string>; input?: string }): Execution;
  /**
   * A folder that this process and the executor's commands both see, at the same path (a guest's
   * read-write share): pluginDir() makes its folders there. Unset: the OS temp dir.
   */
  scratchDir?: string;
}

export const localExecutor: Executor = {
  run(argv, options = {}) {
    const run = spawnSync(argv[0]!, argv.slice(1), {
      input: options.input ?? "",
      encoding: "utf8",
      ...(options.env ? { env: options.env } : {}),
    });
    if (run.error) throw run.error;
    return { status: run.status ?? -1, stdout: run.stdout, stderr: run.stderr };
  },
};

let executor: Executor = localExecutor;

export function useExecutor(next: Executor): void {
  executor = next;
}

/** Runs a command, failing loudly with its output when it fails. */
export function sh(command: string, args: string[], input?: string): string {
  const run = executor.run([command, ...args], input === undefined ? {} : { input });
  if (run.status !== 0) {
    throw new Error(`${command} ${args.join(" ")} exited ${run.status}: ${run.stderr}${run.stdout}`);
  }
  return run.stdout;
}

export function ip<T = unknown>(ns: string | undefined, ...args: string[]): T {
  const out = sh("ip", [...(ns ? ["-n", ns] : []), "-j", "-d", ...args]);
  return (out.trim() ? JSON.parse(out) : []) as T;
}

function uniqueName(tag: string): string {
  return `${PREFIX}-${tag}${counter++}`;
}

/** A fresh network namespace; returns its name (the path is /run/netns/<name>). */
export function netns(tag: string): string {
  const name = uniqueName(tag);
  sh("ip", ["netns", "add", name]);
  namespaces.add(name);
  sh("ip", ["-n", name, "link", "set", "lo", "up"]);
  return name;
}

export function nsPath(name: string): string {
  return `/run/netns/${name}`;
}

export function deleteNetns(name: string): void {
  executor.run(["ip", "netns", "del", name]);
  namespaces.delete(name);
}

export function cleanup(): void {
  for (const name of [...namespaces]) deleteNetns(name);
}

/** Removes namespaces of earlier runs whose process is gone. */
export function sweepStale(): void {
  if (!existsSync("/run/netns")) return;
  for (const name of readdirSync("/run/netns")) {
    const match = /^cnit(\d+)-/.exec(name);
    if (match && !existsSync(`/proc/${match[1]}`)) spawnSync("ip", ["netns", "del", name]);
  }
}

/**
 * A "node": a namespace standing in for a host, with a master link `ifName` (a veth whose peer sits
 * in a "wire" namespace, so it has carrier) and an optional default route through it.
 */
export interface Node {
  ns: string;
  wire: string;
  master: string;
}

export function node(opts: { master?: string; mtu?: number; defaultRoute?: boolean } = {}): Node {
  const ns = netns("node");
  const wire = netns("wire");
  const master = opts.master ?? "m0";
  sh("ip", ["-n", ns, "link", "add", master, "type", "veth", "peer", "name", "w0", "netns", wire]);
  if (opts.mtu) {
    sh("ip", ["-n", ns, "link", "set", master, "mtu", String(opts.mtu)]);
    sh("ip", ["-n", wire, "link", "set", "w0", "mtu", String(opts.mtu)]);
  }
  sh("ip", ["-n", ns, "link", "set", master, "up"]);
  sh("ip", ["-n", wire, "link", "set", "w0", "up"]);
  if (opts.defaultRoute) {
    sh("ip", ["-n", ns, "addr", "add", "192.0.2.2/24", "dev", master]);
    sh("ip", ["-n", ns, "route", "add", "default", "via", "192.0.2.1"]);
  }
  return { ns, wire, master };
}

export interface CniCall {
  command: "ADD" | "DEL" | "CHECK" | "STATUS" | "GC" | "VERSION";
  containerId?: string;
  netns?: string;
  ifName?: string;
  args?: string;
  path?: string;
  /** Extra or overriding variables; `undefined` removes one. */
  env?: Record<string, string | undefined>;
}

export interface CniOutput {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout parsed as JSON, or undefined when empty or not JSON. */
  json: Record<string, unknown> | undefined;
}

/**
 * Runs a plugin binary as a runtime would. With `inNs`, the plugin runs inside that namespace
 * (`ip netns exec`), which then is its "host".
 */
export function cni(binary: string, call: CniCall, config: unknown, inNs?: string): CniOutput {
  const env = cniEnvironment(call);
  const input = typeof config === "string" ? config : JSON.stringify(config);
  const argv = inNs ? ["ip", "netns", "exec", inNs, binary] : [binary];
  const run = executor.run(argv, { input, env });
  let json: Record<string, unknown> | undefined;
  try {
    json = run.stdout.trim() ? (JSON.parse(run.stdout) as Record<string, unknown>) : undefined;
  } catch {
    json = undefined;
  }
  return { code: run.status ?? -1, stdout: run.stdout, stderr: run.stderr, json };
}

/** A temporary directory of plugins for CNI_PATH: our binaries, upstream's static IPAM, helpers. */
export function pluginDir(extra: Record<string, string> = {}): string {
  const dir = mkdtempSync(join(executor.scratchDir ?? tmpdir(), "cnit-path-"));
  for (const [name, script] of Object.entries(extra)) {
    writeFileSync(join(dir, name), script);
    chmodSync(join(dir, name), 0o755);
  }
  return dir;
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/**
 * An IPAM that logs every call ("<COMMAND> <containerId>") to `logFile` and then hands over to
 * upstream's static IPAM: lets a test see that an address was released.
 */
export function recordingIpam(logFile: string): string {
  return `#!/bin/sh\necho "$CNI_COMMAND $CNI_CONTAINERID" >> ${logFile}\nexec ${UPSTREAM_BIN}/static\n`;
}

/** An IPAM that always fails with a CNI error object, as a broken or exhausted IPAM does. */
export const FAILING_IPAM = `#!/bin/sh\ncat >/dev/null\necho '{"cniVersion":"1.0.0","code":11,"msg":"no addresses left"}'\nexit 1\n`;

export interface IpLink {
  ifname: string;
  ifindex: number;
  mtu: number;
  address: string;
  flags: string[];
  operstate: string;
  /** The parent's name when it is in the same namespace... */
  link?: string | null;
  /** ...or its index when it is in another. */
  link_index?: number;
  linkinfo?: { info_kind: string; info_data?: Record<string, unknown> };
}

interface IpAddr {
  ifname: string;
  addr_info: { family: string; local: string; prefixlen: number }[];
}

export interface IpRoute {
  dst: string;
  gateway?: string;
  dev?: string;
  scope?: string;
  protocol?: string;
  metric?: number;
  table?: string;
}

export function links(ns: string): IpLink[] {
  return ip<IpLink[]>(ns, "link", "show");
}

export function link(ns: string, name: string): IpLink | undefined {
  return links(ns).find((l) => l.ifname === name);
}

export function addresses(ns: string, name: string): string[] {
  const [entry] = ip<IpAddr[]>(ns, "addr", "show", "dev", name);
  return (entry?.addr_info ?? [])
    .filter((a) => !a.local.startsWith("fe80:"))
    .map((a) => `${a.local}/${a.prefixlen}`)
    .sort();
}

export function routes(ns: string, family: "4" | "6" = "4", table = "main"): IpRoute[] {
  return ip<IpRoute[]>(ns, `-${family}`, "route", "show", "table", table);
}

/** One ping from inside a namespace; true when answered. Throws when ping is not installed. */
export function ping(fromNs: string, address: string): boolean {
  const run = executor.run(["ip", "netns", "exec", fromNs, "ping", "-c", "1", "-W", "2", address]);
  if (/exec of "ping" failed/.test(run.stderr)) throw new Error("ping is not installed (Debian package iputils-ping)");
  return run.status === 0;
}

/** The environment `cni()` gives a plugin for `call`. */
export function cniEnvironment(call: CniCall): Record<string, string> {
  const env: Record<string, string> = { PATH: process.env.PATH ?? "/usr/bin:/bin", CNI_COMMAND: call.command };
  if (call.containerId !== undefined) env.CNI_CONTAINERID = call.containerId;
  if (call.netns !== undefined) env.CNI_NETNS = call.netns;
  if (call.ifName !== undefined) env.CNI_IFNAME = call.ifName;
  if (call.args !== undefined) env.CNI_ARGS = call.args;
  env.CNI_PATH = call.path ?? BIN;
  for (const [key, value] of Object.entries(call.env ?? {})) {
    if (value === undefined) delete env[key];
    else env[key] = value;
  }
  return env;
}

/**
 * `cni()` without waiting for the plugin, so that many run at once as racing runtimes would start
 * them. Always runs on this machine (a child process of the test), whatever the executor.
 */
export function cniAsync(binary: string, call: CniCall, config: unknown): Promise<CniOutput> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(binary, [], { env: cniEnvironment(call), stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    child.on("error", reject);
    child.on("close", (code) => {
      let json: Record<string, unknown> | undefined;
      try {
        json = stdout.trim() ? (JSON.parse(stdout) as Record<string, unknown>) : undefined;
      } catch {
        json = undefined;
      }
      resolvePromise({ code: code ?? -1, stdout, stderr, json });
    });
    child.stdin.end(typeof config === "string" ? config : JSON.stringify(config));
  });
}
