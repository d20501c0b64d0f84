/**
 * multus in `npm run bench` (or alone: `npx bun bench/multus.ts`): pods ADDed and DELeted through
 * multus against one real API server, ours (bin/multus, bin/macvlan, bin/whereabouts) and then
 * upstream's (multus v4.3.0 thin, macvlan v1.9.1, whereabouts v0.9.4), in the same run. Both give
 * a pod the same two networks: eth0 from upstream ptp + host-local (a conflist file, multus'
 * `clusterNetwork`) and net1 from the NetworkAttachmentDefinition `macvlan-conf` (macvlan on the
 * node's m0, whereabouts on the Kubernetes store). Prints numbers; asserts nothing.
 *
 * Two shapes: pods one at a time (latency, CPU, API requests and memory per pod), and 500 pods
 * over 10 nodes at once, as kubelets starting a Deployment's pods would (throughput, failures,
 * duplicates, and after a DEL of every pod, what is left).
 *
 * A node is a network namespace with its master link m0 (conformance/harness.ts `node`) and a
 * mount namespace in which one folder, the whereabouts flat file's as the NAD names it, is the
 * node's own (upstream's installer writes one at the same path on every node; ours keeps its
 * node state in the `datastore_dir` it names). multus runs in both namespaces (`nsenter`, one
 * exec per call for either implementation), so every delegate finds m0 and leaves its host-side
 * links on the node, with no wrapper between multus and its delegates. The API server listens on
 * 127.0.0.1 of this process' namespace: each node reaches it at the same address through a relay,
 * a small process (conformance/kube/relay.ts) in the node's namespace that hands each
 * connection over a unix socket (not namespaced) to one in this namespace, bytes unchanged (TLS
 * goes end to end).
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { cleanup, deleteNetns, netns, node, nsPath, sweepStale, type Node } from "../conformance/harness.ts";
import { installerKubeconfigText, startCluster, type Cluster } from "../conformance/kube/cluster.ts";
import { RELAY_SCRIPT } from "../conformance/kube/relay.ts";
import { createNad, createPod, filesUnder, multusKubeconfigText, primaryNetwork } from "../conformance/kube/multus.ts";
import { AdminApi, requestsBetween } from "../conformance/kube/objects.ts";
import { median, percentile, tableLines } from "./stats.ts";

const ROOT = resolve(import.meta.dirname, "..");
const UPSTREAM_PLUGINS = join(ROOT, ".cache/upstream/plugins-v1.9.1");

interface Impl {
  name: "ours" | "upstream";
  multus: string;
  macvlan: string;
  whereabouts: string;
}

const OURS: Impl = { name: "ours", multus: join(ROOT, "bin/multus"), macvlan: join(ROOT, "bin/macvlan"), whereabouts: join(ROOT, "bin/whereabouts") };
const IMPLS: Impl[] = [
  OURS,
  {
    name: "upstream",
    multus: join(ROOT, ".cache/upstream/multus-v4.3.0/multus"),
    macvlan: join(UPSTREAM_PLUGINS, "macvlan"),
    whereabouts: join(ROOT, ".cache/upstream/whereabouts-v0.9.4/whereabouts"),
  },
];
/** The primary network, the same binaries for both. */
const PTP = join(UPSTREAM_PLUGINS, "ptp");
const HOST_LOCAL = join(UPSTREAM_PLUGINS, "host-local");

const NODES = 10;
/** Pods ADDed one at a time, then DELeted one at a time. */
const SEQUENTIAL_PODS = Number(process.env.BENCH_MULTUS_PODS ?? 40);
/** Pods started at once over the nodes, and how many each node runs at a time. */
const RACE_PODS = Number(process.env.BENCH_MULTUS_RACE_PODS ?? 500);
const IN_FLIGHT_PER_NODE = Number(process.env.BENCH_MULTUS_IN_FLIGHT ?? Math.ceil(RACE_PODS / NODES));
/**
 * Pods run after the timed ones with every delegate behind a script (watchedBinDir): each process'
 * peak RSS, and the CPU and time of each delegate's subtree. The scripts cost time, so these pods
 * are not in the latency figures.
 */
const PROBES = 5;
/** net1's range: room for every pod of the race. */
const RANGE = "192.168.0.0/16";
const POOL = "192.168.0.0-16";
const NAMESPACE = "default";
/** The CRI deadline kubelet gives a request (runtimeRequestTimeout): an ADD or DEL still running then is killed (containerd runs plugins under the request's context). */
const DEADLINE_MS = 120_000;
const BACKOFF_MS = 1000;
/** Tries before the bench gives a pod up (kubelet never does; a bound keeps a broken run finite). */
const MAX_TRIES = 20;
const NETWORKS = { "k8s.v1.cni.cncf.io/networks": "macvlan-conf" };

// ---- processes this bench keeps running --------------------------------------------------------

const helpers: ReturnType<typeof Bun.spawn>[] = [];
/** The relays' pids: their CPU is this bench's cost, not a plugin's. */
const relays: number[] = [];

/** utime + stime of a live process in seconds, from /proc (clock ticks of 1/100 s). */
function cpuSecondsOf(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}

/** CPU seconds of this process and its relays so far. */
function benchCpuSeconds(): number {
  const own = process.cpuUsage();
  return (own.user + own.system) / 1e6 + relays.reduce((n, pid) => n + cpuSecondsOf(pid), 0);
}

/** Starts a helper that prints "ready" when it is; it dies with this process (pdeathsig). */
async function startHelper(argv: string[]): Promise<number> {
  const child = Bun.spawn(["setpriv", "--pdeathsig", "SIGKILL", "--", ...argv], { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  helpers.push(child);
  const reader = child.stdout.getReader();
  let seen = "";
  while (!seen.includes("ready")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`${argv.join(" ")} exited before it was ready: ${await new Response(child.stderr).text()}`);
    seen += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  return child.pid;
}

function stopHelpers(): void {
  for (const child of helpers) child.kill("SIGKILL");
}

// ---- the site: nodes, binaries, configs ---------------------------------------------------------

interface BenchNode {
  index: number;
  name: string;
  host: Node;
  /** The mount namespace holder's pid (`nsenter --mount=/proc/<pid>/ns/mnt`). */
  holder: number;
  dir: string;
  cniDir: string;
  hostLocalDir: string;
  /** multus' conf as the runtime hands it, per implementation. */
  conf: Record<Impl["name"], string>;
}

interface Pod {
  name: string;
  uid: string;
  node: BenchNode;
  /** The sandbox's network namespace (a name under /run/netns). */
  ns: string;
}

interface Call {
  code: number;
  ms: number;
  /** User + system CPU of the whole process tree (multus and every process it waited for), from the kernel's rusage. */
  cpuMs: number;
  stdout: string;
  stderr: string;
  killed: boolean;
  /** Each process' own peak RSS (KiB) by name, polled every millisecond while the call runs, when asked for. */
  peaks?: Map<string, number>;
}

/** A folder of plugins for multus' binDir and CNI_PATH: each name a symlink to the binary (ours run the plugin named by argv[0]). */
function binDir(dir: string, impl: Impl): string {
  const bin = join(dir, `bin-${impl.name}`);
  mkdirSync(bin, { recursive: true });
  for (const [name, target] of [
    ["macvlan", impl.macvlan],
    ["whereabouts", impl.whereabouts],
    ["ptp", PTP],
    ["host-local", HOST_LOCAL],
  ] as const) {
    symlinkSync(target, join(bin, name));
  }
  return bin;
}

/**
 * The same plugins, each behind a bash script that starts it as a child, appends "<pid> <name>" to
 * `pids` (the bench reads that process' own peak RSS while it runs; GNU time would not do, since a
 * process' rusage counts its children's peak too, and macvlan waits for whereabouts), waits, and
 * appends "<name> <start> <end> ...", then a line "<user> <sys>", to `cpu`: wall clock in seconds,
 * and the CPU of the plugin and everything it waited for, to the millisecond (bash's `times`).
 */
function watchedBinDir(dir: string, impl: Impl, pids: string, cpu: string): string {
  const bin = join(dir, `bin-${impl.name}-watched`);
  mkdirSync(bin, { recursive: true });
  // Ours runs macvlan in multus' process (its file is multus' own executable): a script in
  // between would make it a process. It stays a link, and counts as multus'.
  if (impl.name === "ours") symlinkSync(impl.macvlan, join(bin, "macvlan"));
  for (const [name, target] of [
    ["macvlan", impl.macvlan],
    ["whereabouts", impl.whereabouts],
    ["ptp", PTP],
    ["host-local", HOST_LOCAL],
    ["true", "/bin/true"],
  ] as const) {
    if (existsSync(join(bin, name))) continue;
    // A background command's stdin is /dev/null unless redirected: `<&0` keeps the config on it.
    writeFileSync(
      join(bin, name),
      `#!/bin/bash\nstart=$EPOCHREALTIME\n${target} "$@" <&0 &\npid=$!\necho "$pid ${name}" >> ${pids}\nwait $pid\nrc=$?\n` +
        // `times` in this shell (a command substitution or a pipe would run it in a subshell, with no children):
        // two lines, the shell's own and its children's.
        `echo -n "${name} $start $EPOCHREALTIME " >> ${cpu}\ntimes >> ${cpu}\nexit $rc\n`,
    );
    chmodSync(join(bin, name), 0o755);
  }
  return bin;
}

/** bash's "1m2.345s" in milliseconds. */
function bashSeconds(text: string): number {
  const match = /^(\d+)m([\d.]+)s$/.exec(text);
  return match ? (Number(match[1]) * 60 + Number(match[2])) * 1000 : 0;
}

/** VmHWM in KiB: the peak RSS of the process' current address space (the one after its last exec). */
function peakRssKb(pid: number | string): number | undefined {
  try {
    const match = /VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

function multusConf(n: { kubeconfig: string; confDir: string; cniDir: string; logFile: string; primary: string }, bin: string): string {
  return JSON.stringify({
    cniVersion: "1.0.0",
    name: "multus-cni-network",
    type: "multus",
    kubeconfig: n.kubeconfig,
    confDir: n.confDir,
    cniDir: n.cniDir,
    binDir: bin,
    logFile: n.logFile,
    logLevel: "error",
    logToStderr: false,
    clusterNetwork: n.primary,
  });
}

/** The CNI error a call printed, or how it ended and the last line of its stderr. */
function errorText(call: Pick<Call, "stdout" | "stderr" | "code" | "killed">): string {
  try {
    const error = JSON.parse(call.stdout) as { code?: number; msg?: string; details?: string };
    return `code ${error.code}: ${error.msg}${error.details ? ` (${error.details})` : ""}`;
  } catch {
    return `exit ${call.code}${call.killed ? " (killed)" : ""}: ${call.stdout.trim().split("\n")[0] ?? ""} ${call.stderr.trim().split("\n").at(-1) ?? ""}`;
  }
}

/** Runs `work` over `items`, `width` at a time. */
async function eachLimited<T>(items: readonly T[], width: number, work: (item: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  await Promise.all(
    Array.from({ length: width }, async () => {
      for (let item = queue.shift(); item !== undefined; item = queue.shift()) await work(item);
    }),
  );
}

/** Jiffies since boot over all CPUs, and how many of them idle (/proc/stat). */
function machineCpu(): { total: number; idle: number } {
  const fields = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  return { total: fields.reduce((a, b) => a + b, 0), idle: (fields[3] ?? 0) + (fields[4] ?? 0) };
}

/** The IPv4 addresses in a namespace, per interface, as `ip -j` shows them. */
function addressesIn(ns: string): Map<string, string> {
  const run = spawnSync("ip", ["-n", ns, "-j", "-4", "addr", "show"], { encoding: "utf8" });
  const out = new Map<string, string>();
  for (const link of (JSON.parse(run.stdout || "[]") as { ifname: string; addr_info: { local: string }[] }[]) ?? []) {
    const address = link.addr_info[0]?.local;
    if (address) out.set(link.ifname, address);
  }
  return out;
}

function linksIn(ns: string, except: string[]): string[] {
  const run = spawnSync("ip", ["-n", ns, "-j", "link", "show"], { encoding: "utf8" });
  return (JSON.parse(run.stdout || "[]") as { ifname: string }[]).map((l) => l.ifname).filter((name) => !except.includes(name));
}

function ipv4Number(address: string): number {
  return address.split(".").reduce((n, octet) => n * 256 + Number(octet), 0);
}

// ---- the bench ---------------------------------------------------------------------------------

interface Sequential {
  adds: Call[];
  dels: Call[];
  addRequests: Map<string, number>;
  delRequests: Map<string, number>;
  /** API server and etcd CPU seconds over the ADDs. */
  serverCpu: number;
  /** Peak RSS per process name (KiB) over the probes: multus' own, and each delegate's. */
  rss: Map<string, number>;
  /** Per verb, the probes' mean CPU (ms) and wall time (ms) per process, each its own share (its subtree less its children's). */
  breakdown: Map<"ADD" | "DEL", { cpu: Map<string, number>; wall: Map<string, number> }>;
  /** What each failed DEL said. */
  delFailures: string[];
}

interface Try {
  containerId: string;
  code: number;
  ms: number;
  cpuMs: number;
  killed: boolean;
  message?: string;
  delCode?: number;
}

interface PodRun {
  pod: Pod;
  tries: Try[];
  /** The container ID of the try that started the pod. */
  started?: string;
  /** eth0's address from multus' result. */
  eth0?: string;
  endedMs: number;
}

interface Race {
  runs: PodRun[];
  seconds: number;
  requests: Map<string, number>;
  serverCpu: number;
  idleShare: number;
  /** CPU seconds of the whole machine (every process), and of this bench with its relays, during the ADDs. */
  machineCpu: number;
  benchCpu: number;
  /** After the ADDs. */
  poolEntries: number;
  poolPods: number;
  reservations: number;
  net1: string[];
  /** Pods whose net1 in the kernel is not the address the pool holds for them. */
  mismatched: number;
  /** network-status entries for net1 that differ from the kernel's. */
  statusMismatched: number;
  del: { calls: Call[]; seconds: number; failures: string[] };
  left: { poolEntries: number; reservations: number; podLinks: number; nodeLinks: number; leases: number; cniFiles: number };
  /** Releases the API could not take during the DELs, left in the nodes' whereabouts journals (ours). */
  journalled: number;
  /** The pool after one more call on each node, which replays its journal (ours). */
  leftAfterNext: { poolEntries: number; reservations: number };
}

export async function benchMultus(): Promise<void> {
  const missing = [...IMPLS.flatMap((i) => [i.multus, i.macvlan, i.whereabouts]), PTP, HOST_LOCAL].filter((path) => !existsSync(path));
  if (missing.length > 0) throw new Error(`missing: ${missing.join(", ")} (npm run build; bash scripts/build-upstream.sh)`);
  sweepStale();
  const cluster = await startCluster();
  const api = new AdminApi(cluster);
  const dir = mkdtempSync(join(tmpdir(), "cnib-multus-"));
  try {
    await run(cluster, api, dir);
  } finally {
    stopHelpers();
    api.close();
    await cluster.stop();
    cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function run(cluster: Cluster, api: AdminApi, dir: string): Promise<void> {
  const apiPort = new URL(cluster.server).port;
  const bins = Object.fromEntries(IMPLS.map((impl) => [impl.name, binDir(dir, impl)])) as Record<Impl["name"], string>;
  // The flat file's path as the NAD names it; each node mounts its own folder here.
  const flatDir = join(dir, "whereabouts.d");
  mkdirSync(flatDir);

  // Every namespace before the mount namespaces: a netns made later still reaches them (/run/netns
  // propagates to a slave), but there is no need to rely on it.
  const hosts = Array.from({ length: NODES }, () => node());
  const sandboxes = Array.from({ length: Math.max(RACE_PODS, SEQUENTIAL_PODS + PROBES + 1) }, () => netns("pod"));

  const relaySocket = join(dir, "api.sock");
  relays.push(await startHelper([process.execPath, RELAY_SCRIPT, relaySocket, `127.0.0.1:${apiPort}`]));
  const nodes: BenchNode[] = [];
  for (const [index, host] of hosts.entries()) {
    const nodeDir = join(dir, `node-${index}`);
    const path = (...parts: string[]) => join(nodeDir, ...parts);
    for (const folder of ["net.d", "multus.d", "multus", "networks", "whereabouts.d", "whereabouts", "log"]) mkdirSync(path(folder), { recursive: true });
    const kubeconfig = path("multus.d/multus.kubeconfig");
    writeFileSync(kubeconfig, multusKubeconfigText(cluster), { mode: 0o600 });
    const whereaboutsKubeconfig = path("whereabouts.d/whereabouts.kubeconfig");
    writeFileSync(whereaboutsKubeconfig, installerKubeconfigText({ ...cluster, token: cluster.adminToken, namespace: "kube-system" }), { mode: 0o600 });
    writeFileSync(
      path("whereabouts.d/whereabouts.conf"),
      JSON.stringify({ datastore: "kubernetes", kubernetes: { kubeconfig: whereaboutsKubeconfig }, datastore_dir: path("whereabouts"), log_level: "error" }),
      { mode: 0o600 },
    );
    const primary = path("net.d/10-ptp.conflist");
    writeFileSync(primary, JSON.stringify(primaryNetwork(path("networks"), index)));
    const files = { kubeconfig, confDir: path("multus"), cniDir: path("multus"), logFile: path("log/multus.log"), primary };
    const holder = await startHelper([
      "unshare",
      "--mount",
      "--propagation",
      "slave",
      "--",
      "sh",
      "-c",
      'mount --bind "$0" "$1" && echo ready && exec sleep infinity',
      path("whereabouts.d"),
      flatDir,
    ]);
    relays.push(await startHelper(["nsenter", `--net=${nsPath(host.ns)}`, "--", process.execPath, RELAY_SCRIPT, `127.0.0.1:${apiPort}`, relaySocket]));
    nodes.push({
      index,
      name: `node-${index}`,
      host,
      holder,
      dir: nodeDir,
      cniDir: files.cniDir,
      hostLocalDir: path("networks"),
      conf: { ours: multusConf(files, bins.ours), upstream: multusConf(files, bins.upstream) },
    });
  }
  await createNad(api, NAMESPACE, "macvlan-conf", {
    cniVersion: "1.0.0",
    name: "macvlan-conf",
    type: "macvlan",
    master: "m0",
    mode: "bridge",
    ipam: { type: "whereabouts", configuration_path: join(flatDir, "whereabouts.conf"), range: RANGE },
  });

  /** Our DELs, after a failed one, that failed too: what is left then is named in the report. */
  const cleanupFailures: string[] = [];

  /** One multus process for `pod`, as containerd runs it, in the pod's node. */
  async function call(
    impl: Impl,
    command: "ADD" | "DEL",
    pod: Pod,
    containerId: string,
    o: { killAfterMs?: number; conf?: string; path?: string; watch?: string } = {},
  ): Promise<Call> {
    const n = pod.node;
    const started = performance.now();
    const child = Bun.spawn(["nsenter", `--mount=/proc/${n.holder}/ns/mnt`, `--net=${nsPath(n.host.ns)}`, "--", impl.multus], {
      env: {
        PATH: process.env.PATH ?? "/usr/bin:/bin",
        CNI_COMMAND: command,
        CNI_CONTAINERID: containerId,
        CNI_NETNS: nsPath(pod.ns),
        CNI_IFNAME: "eth0",
        CNI_PATH: o.path ?? bins[impl.name],
        // containerd's order: IgnoreUnknown first, then the pod's namespace, name, infra container, UID.
        CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${NAMESPACE};K8S_POD_NAME=${pod.name};K8S_POD_INFRA_CONTAINER_ID=${containerId};K8S_POD_UID=${pod.uid}`,
      },
      stdin: Buffer.from(o.conf ?? n.conf[impl.name]),
      stdout: "pipe",
      stderr: "pipe",
    });
    let killed = false;
    const timer =
      o.killAfterMs === undefined
        ? undefined
        : setTimeout(() => {
            killed = true;
            child.kill("SIGKILL");
          }, o.killAfterMs);
    // Peaks: multus' (the child's pid, after nsenter's exec) and each delegate's that the watched
    // bin dir's scripts list in `o.watch`, read until the call ends (misses at most a delegate's last millisecond).
    const peaks = new Map<string, number>();
    let watching = o.watch !== undefined;
    const watcher = (async () => {
      while (watching) {
        const listed = existsSync(o.watch!) ? readFileSync(o.watch!, "utf8").trim().split("\n") : [];
        for (const [pid, name] of [[String(child.pid), "multus"], ...listed.map((line) => line.split(" "))]) {
          const kb = pid && name ? peakRssKb(pid) : undefined;
          if (kb !== undefined) peaks.set(name!, Math.max(peaks.get(name!) ?? 0, kb));
        }
        await Bun.sleep(1);
      }
    })();
    const [code, stdout, stderr] = await Promise.all([child.exited, new Response(child.stdout).text(), new Response(child.stderr).text()]);
    const ms = performance.now() - started;
    watching = false;
    await watcher;
    if (timer) clearTimeout(timer);
    const cpu = child.resourceUsage()?.cpuTime;
    const result: Call = { code, ms, cpuMs: cpu ? Number(cpu.user + cpu.system) / 1000 : 0, stdout, stderr, killed };
    if (o.watch) result.peaks = peaks;
    return result;
  }

  async function newPods(impl: Impl, prefix: string, count: number, first: number): Promise<Pod[]> {
    const pods: Pod[] = new Array(count);
    await eachLimited(
      Array.from({ length: count }, (_, i) => i),
      16,
      async (i) => {
        const n = nodes[i % NODES]!;
        const ref = await createPod(api, NAMESPACE, `${prefix}-${impl.name}-${i}`, n.name, NETWORKS);
        pods[i] = { name: ref.name, uid: ref.uid, node: n, ns: sandboxes[first + i]! };
      },
    );
    return pods;
  }

  /** A clean slate: no pods, events or whereabouts objects; then one pod ADDed and DELeted untimed (the API server's first writes are slow; the page cache). */
  async function fresh(impl: Impl): Promise<void> {
    await api.send("DELETE", `/api/v1/namespaces/${NAMESPACE}/pods?gracePeriodSeconds=0`);
    await api.send("DELETE", `/api/v1/namespaces/${NAMESPACE}/events`);
    await api.clear();
    const [warm] = await newPods(impl, "warm", 1, sandboxes.length - 1);
    const add = await call(impl, "ADD", warm!, "ctr-warm");
    if (add.code !== 0) throw new Error(`${impl.name} warm-up ADD: ${errorText(add)}`);
    await del(impl, warm!, "ctr-warm");
  }

  /**
   * A DEL through `impl`; when it fails, ours DELs what it left (untimed), so that the sandbox and
   * the node are clean for the next pod: upstream's DEL fails on every pod whose cluster network is
   * a conflist file (its cache re-marshals the conflist without ptp's ipam: upstream issues #1449,
   * #1454), leaving eth0, its host-side veth and host-local's lease.
   */
  async function del(impl: Impl, pod: Pod, containerId: string, o: { conf?: string; path?: string; watch?: string } = {}): Promise<Call> {
    const out = await call(impl, "DEL", pod, containerId, { killAfterMs: DEADLINE_MS, ...o });
    if (out.code !== 0) await cleanUp(pod, containerId);
    return out;
  }

  async function cleanUp(pod: Pod, containerId: string): Promise<void> {
    const out = await call(OURS, "DEL", pod, containerId, { killAfterMs: DEADLINE_MS });
    if (out.code !== 0) cleanupFailures.push(`${pod.name} ${containerId}: ${errorText(out)}`);
  }

  async function sequential(impl: Impl): Promise<Sequential> {
    await fresh(impl);
    const pods = await newPods(impl, "seq", SEQUENTIAL_PODS + PROBES, 0);
    const timed = pods.slice(0, SEQUENTIAL_PODS);
    const before = await api.requestCounts();
    const cpuBefore = cluster.cpuSeconds();
    const adds: Call[] = [];
    for (const pod of timed) {
      const out = await call(impl, "ADD", pod, `ctr-${pod.name}`);
      if (out.code !== 0) throw new Error(`${impl.name} ADD ${pod.name}: ${errorText(out)}`);
      adds.push(out);
    }
    const cpuAfter = cluster.cpuSeconds();
    const middle = await api.requestCounts();
    const dels: Call[] = [];
    for (const pod of timed) dels.push(await call(impl, "DEL", pod, `ctr-${pod.name}`));
    const after = await api.requestCounts();
    const delFailures: string[] = [];
    for (const [k, pod] of timed.entries()) {
      if (dels[k]!.code === 0) continue;
      delFailures.push(errorText(dels[k]!));
      await cleanUp(pod, `ctr-${pod.name}`);
    }
    // The probes: memory, and where CPU and time go, on pods of their own after the timed ones.
    const rss = new Map<string, number>();
    const pidLog = join(dir, `pids-${impl.name}`);
    const cpuLog = join(dir, `cpu-${impl.name}`);
    const watched = watchedBinDir(dir, impl, pidLog, cpuLog);
    // What a script costs around its plugin (bash, the subshell, true's own start): taken off its parent's share.
    const overhead = median(
      await Promise.all(
        Array.from({ length: 5 }, async () => {
          const child = Bun.spawn([join(watched, "true")], { stdout: "ignore", stderr: "ignore" });
          await child.exited;
          const cpu = child.resourceUsage()?.cpuTime;
          return cpu ? Number(cpu.user + cpu.system) / 1000 : 0;
        }),
      ),
    );
    const conf = (pod: Pod) => JSON.stringify({ ...(JSON.parse(pod.node.conf[impl.name]) as Record<string, unknown>), binDir: watched });
    const breakdown = new Map<"ADD" | "DEL", { cpu: Map<string, number>; wall: Map<string, number> }>();
    for (const pod of pods.slice(SEQUENTIAL_PODS)) {
      for (const command of ["ADD", "DEL"] as const) {
        rmSync(pidLog, { force: true });
        rmSync(cpuLog, { force: true });
        const o = { conf: conf(pod), path: watched, watch: pidLog };
        const out = command === "ADD" ? await call(impl, command, pod, `ctr-${pod.name}`, o) : await del(impl, pod, `ctr-${pod.name}`, o);
        if (command === "ADD" && out.code !== 0) throw new Error(`${impl.name} ADD ${pod.name} (probe): ${errorText(out)}`);
        for (const [name, kb] of out.peaks ?? []) rss.set(name, Math.max(rss.get(name) ?? 0, kb));
        // Subtrees: multus' from the kernel's rusage here, each delegate's from its script.
        const cpu = new Map<string, number>([["multus", out.cpuMs]]);
        const wall = new Map<string, number>([["multus", out.ms]]);
        const lines = existsSync(cpuLog) ? readFileSync(cpuLog, "utf8").trim().split("\n") : [];
        for (let k = 0; k + 1 < lines.length; k += 2) {
          const [name, start, end] = lines[k]!.split(" ");
          const [user, sys] = lines[k + 1]!.split(" ");
          if (!name || !user || sys === undefined) continue;
          cpu.set(name, (cpu.get(name) ?? 0) + bashSeconds(user!) + bashSeconds(sys));
          wall.set(name, (wall.get(name) ?? 0) + (Number(end) - Number(start)) * 1000);
        }
        // Own shares: a subtree less the subtrees (and scripts) it waited for.
        const children: Record<string, string[]> = { multus: ["ptp", "macvlan"], ptp: ["host-local"], macvlan: ["whereabouts"] };
        const entry = breakdown.get(command) ?? { cpu: new Map<string, number>(), wall: new Map<string, number>() };
        // A child that ran in its parent's process (no script line) passes its own children up.
        const kidsOf = (name: string): string[] => (children[name] ?? []).flatMap((kid) => (cpu.has(kid) ? [kid] : kidsOf(kid)));
        for (const [name, total] of cpu) {
          const kids = kidsOf(name);
          const own = total - kids.reduce((n, kid) => n + (cpu.get(kid) ?? 0) + overhead, 0);
          entry.cpu.set(name, (entry.cpu.get(name) ?? 0) + own / PROBES);
          const ownWall = (wall.get(name) ?? 0) - kids.reduce((n, kid) => n + (wall.get(kid) ?? 0), 0);
          entry.wall.set(name, (entry.wall.get(name) ?? 0) + ownWall / PROBES);
        }
        breakdown.set(command, entry);
      }
    }
    return {
      adds,
      dels,
      addRequests: requestsBetween(before, middle),
      delRequests: requestsBetween(middle, after),
      serverCpu: cpuAfter.apiserver - cpuBefore.apiserver + cpuAfter.etcd - cpuBefore.etcd,
      rss,
      breakdown,
      delFailures,
    };
  }

  async function race(impl: Impl): Promise<Race> {
    await fresh(impl);
    const pods = await newPods(impl, "race", RACE_PODS, 0);
    const before = await api.requestCounts();
    const cpuBefore = cluster.cpuSeconds();
    const machineBefore = machineCpu();
    const benchBefore = benchCpuSeconds();
    const runs: PodRun[] = [];
    const started = performance.now();
    // Each node works through its pods IN_FLIGHT_PER_NODE at a time (kubelet's pod workers).
    await Promise.all(
      nodes.map((n) =>
        eachLimited(
          pods.filter((p) => p.node === n),
          IN_FLIGHT_PER_NODE,
          async (pod) => {
            const podRun: PodRun = { pod, tries: [], endedMs: 0 };
            for (let attempt = 1; attempt <= MAX_TRIES; attempt++) {
              const containerId = `ctr-${pod.name}-${attempt}`;
              const add = await call(impl, "ADD", pod, containerId, { killAfterMs: DEADLINE_MS });
              const attemptRun: Try = { containerId, code: add.code, ms: add.ms, cpuMs: add.cpuMs, killed: add.killed };
              podRun.tries.push(attemptRun);
              if (add.code === 0) {
                podRun.started = containerId;
                const ips = (JSON.parse(add.stdout) as { ips?: { address: string }[] }).ips;
                podRun.eth0 = ips?.[0]?.address.split("/")[0];
                break;
              }
              if (!add.killed) attemptRun.message = errorText(add);
              // containerd tears a failed sandbox's network down with the same container ID and removes
              // its netns; kubelet's next try is a new sandbox with a new netns.
              attemptRun.delCode = (await del(impl, pod, containerId)).code;
              deleteNetns(pod.ns);
              pod.ns = netns("pod");
              await Bun.sleep(BACKOFF_MS * (0.5 + Math.random()));
            }
            podRun.endedMs = performance.now() - started;
            runs.push(podRun);
          },
        ),
      ),
    );
    const seconds = (performance.now() - started) / 1000;
    const cpuAfter = cluster.cpuSeconds();
    const machine = machineCpu();
    const benchCpu = benchCpuSeconds() - benchBefore;
    const requests = requestsBetween(before, await api.requestCounts());

    // What the ADDs left: the pool, the reservations, the kernel, the network-status annotations.
    const pool = await api.pool(POOL);
    const entries = Object.entries(pool?.spec.allocations ?? {});
    const base = ipv4Number(RANGE.split("/")[0]!);
    const poolByPod = new Map(entries.map(([offset, a]) => [a.podref, base + Number(offset)]));
    const net1: string[] = [];
    let mismatched = 0;
    const kernelNet1 = new Map<string, string>();
    for (const r of runs) {
      const address = addressesIn(r.pod.ns).get("net1");
      if (!address) continue;
      net1.push(address);
      kernelNet1.set(r.pod.name, address);
      if (poolByPod.get(`${NAMESPACE}/${r.pod.name}`) !== ipv4Number(address)) mismatched++;
    }
    const list = await api.send<{ items: { metadata: { name: string; annotations?: Record<string, string> } }[] }>(
      "GET",
      `/api/v1/namespaces/${NAMESPACE}/pods`,
    );
    let statusMismatched = 0;
    for (const item of list?.items ?? []) {
      const kernel = kernelNet1.get(item.metadata.name);
      if (!kernel) continue;
      const status = JSON.parse(item.metadata.annotations?.["k8s.v1.cni.cncf.io/network-status"] ?? "[]") as { interface?: string; ips?: string[] }[];
      if (status.find((s) => s.interface === "net1")?.ips?.[0] !== kernel) statusMismatched++;
    }
    const reservations = (await api.reservations()).length;

    // Every pod DELeted, all at once as a node drained would. A failed DEL is not tried again
    // here (kubelet would, and upstream's fails the same way each time: see del()).
    const delCalls: { run: PodRun; out: Call }[] = [];
    const delStarted = performance.now();
    await Promise.all(
      nodes.map((n) =>
        eachLimited(
          runs.filter((r) => r.pod.node === n && r.started),
          IN_FLIGHT_PER_NODE,
          async (r) => {
            delCalls.push({ run: r, out: await call(impl, "DEL", r.pod, r.started!, { killAfterMs: DEADLINE_MS }) });
          },
        ),
      ),
    );
    const delSeconds = (performance.now() - delStarted) / 1000;
    const left = {
      poolEntries: Object.keys((await api.pool(POOL))?.spec.allocations ?? {}).length,
      reservations: (await api.reservations()).length,
      podLinks: pods.reduce((sum, p) => sum + linksIn(p.ns, ["lo"]).length, 0),
      nodeLinks: nodes.reduce((sum, n) => sum + linksIn(n.host.ns, ["lo", n.host.master]).length, 0),
      leases: nodes.reduce((sum, n) => sum + filesUnder(n.hostLocalDir).filter((f) => /\d+\.\d+\.\d+\.\d+$/.test(f)).length, 0),
      cniFiles: nodes.reduce((sum, n) => sum + filesUnder(n.cniDir).length, 0),
    };
    // A DEL the API could not take succeeds and leaves the release in the node's journal, which
    // the node's next call replays: one DEL of a container that never was, per node.
    const journalled = nodes.reduce((sum, n) => sum + filesUnder(join(n.dir, "whereabouts/journal")).length, 0);
    await Promise.all(
      nodes.map(async (n) => {
        const run = runs.find((r) => r.pod.node === n);
        if (run) await call(impl, "DEL", run.pod, "ctr-next", { killAfterMs: DEADLINE_MS });
      }),
    );
    const leftAfterNext = {
      poolEntries: Object.keys((await api.pool(POOL))?.spec.allocations ?? {}).length,
      reservations: (await api.reservations()).length,
    };
    const failed = delCalls.filter((d) => d.out.code !== 0);
    await eachLimited(failed, 10, (d) => cleanUp(d.run.pod, d.run.started!));
    return {
      runs: runs.sort((a, b) => a.pod.name.localeCompare(b.pod.name)),
      seconds,
      requests,
      serverCpu: cpuAfter.apiserver - cpuBefore.apiserver + cpuAfter.etcd - cpuBefore.etcd,
      idleShare: (machine.idle - machineBefore.idle) / (machine.total - machineBefore.total),
      // Jiffies are 1/100 s.
      machineCpu: (machine.total - machine.idle - (machineBefore.total - machineBefore.idle)) / 100,
      benchCpu,
      poolEntries: entries.length,
      poolPods: poolByPod.size,
      reservations,
      net1,
      mismatched,
      statusMismatched,
      del: { calls: delCalls.map((d) => d.out), seconds: delSeconds, failures: failed.map((d) => errorText(d.out)) },
      left,
      journalled,
      leftAfterNext,
    };
  }

  const seq = new Map<Impl["name"], Sequential>();
  const races = new Map<Impl["name"], Race>();
  for (const impl of IMPLS) {
    console.log(`multus: ${impl.name}, ${SEQUENTIAL_PODS} pods one at a time ...`);
    seq.set(impl.name, await sequential(impl));
  }
  for (const impl of IMPLS) {
    console.log(`multus: ${impl.name}, ${RACE_PODS} pods over ${NODES} nodes at once (${IN_FLIGHT_PER_NODE} per node) ...`);
    races.set(impl.name, await race(impl));
  }
  report(seq, races);
  if (cleanupFailures.length > 0) console.log(`  our DEL of what a failed call left failed too: ${grouped(cleanupFailures)}`);
}

// ---- the report --------------------------------------------------------------------------------

/** The p-th percentile of unsorted values. */
function pct(values: number[], p: number): number {
  return percentile(
    [...values].sort((a, b) => a - b),
    p,
  );
}

/** Requests per pod: the total and each kind ("pods GET 1.0, pods UPDATE 1.0, ..."). */
function perPod(requests: Map<string, number>, pods: number): { total: number; detail: string } {
  // Not the plugins': the API server's own Lease (a PUT every 10 s) and this bench's /metrics reads.
  const plugin = [...requests].filter(([key]) => !key.startsWith("/ ") && !key.startsWith("coordination.k8s.io/leases UPDATE"));
  const total = plugin.reduce((n, [, v]) => n + v, 0) / pods;
  const detail = plugin
    .sort((a, b) => b[1] - a[1])
    .map(([key, v]) => `${key.replace(/^[^/]*\//, "")} ${(v / pods).toFixed(2)}`)
    .join(", ");
  return { total, detail };
}

/** Failure messages grouped, with counts, numbers and names masked. */
function grouped(messages: string[]): string {
  const groups = new Map<string, number>();
  for (const m of messages) {
    const what = m.replace(/\d+(\.\d+){3}(\/\d+)?|\b\d{2,}\b|ctr-\S+|(race|seq|warm)-\S+/g, "N").slice(0, 240);
    groups.set(what, (groups.get(what) ?? 0) + 1);
  }
  return [...groups].map(([what, n]) => `${n} × ${what}`).join("; ");
}

function report(seq: Map<Impl["name"], Sequential>, races: Map<Impl["name"], Race>): void {
  type Name = Impl["name"];
  const rows: string[][] = [];
  const row = (what: string, f: (impl: Name) => number, digits: number, unit = "") => {
    const [a, b] = [f("ours"), f("upstream")];
    rows.push([what, `${a.toFixed(digits)}${unit}`, `${b.toFixed(digits)}${unit}`, b ? `${(a / b).toFixed(2)}x` : ""]);
  };
  const text = (what: string, f: (impl: Name) => string) => rows.push([what, f("ours"), f("upstream"), ""]);
  const s = (impl: Name) => seq.get(impl)!;
  const r = (impl: Name) => races.get(impl)!;
  const addMs = (i: Name) => s(i).adds.map((c) => c.ms);
  const delMs = (i: Name) => s(i).dels.map((c) => c.ms);
  const started = (i: Name) => r(i).runs.filter((p) => p.started);
  const tries = (i: Name) => r(i).runs.flatMap((p) => p.tries);
  const rate = (i: Name) => started(i).length / r(i).seconds;

  row("one at a time: ADD p50", (i) => pct(addMs(i), 50), 1, " ms");
  row("one at a time: ADD p99", (i) => pct(addMs(i), 99), 1, " ms");
  row("one at a time: DEL p50", (i) => pct(delMs(i), 50), 1, " ms");
  row("one at a time: DEL p99", (i) => pct(delMs(i), 99), 1, " ms");
  text("one at a time: DELs failed", (i) => `${s(i).delFailures.length} of ${s(i).dels.length}`);
  row("CPU per ADD, process tree (median)", (i) => median(s(i).adds.map((c) => c.cpuMs)), 1, " ms");
  row("CPU per DEL, process tree (median)", (i) => median(s(i).dels.map((c) => c.cpuMs)), 1, " ms");
  row("CPU per ADD, API server + etcd", (i) => (s(i).serverCpu * 1000) / s(i).adds.length, 1, " ms");
  row("API requests per ADD", (i) => perPod(s(i).addRequests, s(i).adds.length).total, 1);
  row("API requests per DEL", (i) => perPod(s(i).delRequests, s(i).dels.length).total, 1);
  {
    const mib = (i: Name, name: string) => (s(i).rss.get(name) ?? 0) / 1024;
    row("peak RSS: multus", (i) => mib(i, "multus"), 1, " MiB");
    row("peak RSS: largest delegate", (i) => Math.max(...["macvlan", "whereabouts", "ptp", "host-local"].map((name) => mib(i, name))), 1, " MiB");
    row(
      "peak RSS: the tree (sum of the peaks of processes alive at once)",
      (i) => mib(i, "multus") + Math.max(mib(i, "macvlan") + mib(i, "whereabouts"), mib(i, "ptp") + mib(i, "host-local")),
      1,
      " MiB",
    );
  }
  const race = `${RACE_PODS} at once`;
  row(`${race}: pods started/s`, rate, 1);
  row(`${race}: total`, (i) => r(i).seconds, 1, " s");
  const okMs = (i: Name) =>
    tries(i)
      .filter((t) => t.code === 0)
      .map((t) => t.ms);
  const startedAfter = (i: Name) => started(i).map((p) => p.endedMs / 1000);
  row(`${race}: ADD that succeeded, p50`, (i) => pct(okMs(i), 50), 0, " ms");
  row(`${race}: ADD that succeeded, p99`, (i) => pct(okMs(i), 99), 0, " ms");
  row(`${race}: a pod started after, p50`, (i) => pct(startedAfter(i), 50), 1, " s");
  row(`${race}: a pod started after, p99`, (i) => pct(startedAfter(i), 99), 1, " s");
  row(`${race}: CPU per pod, process trees of all its tries`, (i) => tries(i).reduce((n, t) => n + t.cpuMs, 0) / RACE_PODS, 1, " ms");
  row(`${race}: CPU per pod, API server + etcd`, (i) => (r(i).serverCpu * 1000) / RACE_PODS, 1, " ms");
  row(`${race}: CPU per pod, this bench and its relays`, (i) => (r(i).benchCpu * 1000) / RACE_PODS, 1, " ms");
  row(`${race}: CPU per pod, the whole machine`, (i) => (r(i).machineCpu * 1000) / RACE_PODS, 1, " ms");
  row(`${race}: API requests per pod`, (i) => perPod(r(i).requests, RACE_PODS).total, 1);
  text(`${race}: started, failed tries`, (i) => `${started(i).length}, ${tries(i).filter((t) => t.code !== 0).length}`);
  text(`${race}: IPPool entries, pods in it, reservations`, (i) => `${r(i).poolEntries}, ${r(i).poolPods}, ${r(i).reservations}`);
  text(`${race}: net1 addresses, distinct`, (i) => `${r(i).net1.length}, ${new Set(r(i).net1).size}`);
  text(`${race}: net1 not the pool's, not network-status'`, (i) => `${r(i).mismatched}, ${r(i).statusMismatched}`);
  text(`${race}: machine idle`, (i) => `${(r(i).idleShare * 100).toFixed(0)}%`);
  row("DEL of all at once: DELs/s", (i) => r(i).del.calls.length / r(i).del.seconds, 1);
  const allDelMs = (i: Name) => r(i).del.calls.map((c) => c.ms);
  row("DEL of all at once: p99", (i) => pct(allDelMs(i), 99), 0, " ms");
  text("DEL of all at once: failed", (i) => String(r(i).del.failures.length));
  text("left after the DELs: IPPool entries, reservations", (i) => `${r(i).left.poolEntries}, ${r(i).left.reservations}`);
  text("left after the DELs: pod links, node links, host-local leases, cniDir files", (i) => {
    const left = r(i).left;
    return `${left.podLinks}, ${left.nodeLinks}, ${left.leases}, ${left.cniFiles}`;
  });
  text("left after the DELs: releases journalled for the node's next call", (i) => String(r(i).journalled));
  text("left after each node's next call: IPPool entries, reservations", (i) => `${r(i).leftAfterNext.poolEntries}, ${r(i).leftAfterNext.reservations}`);

  console.log(
    `multus: eth0 upstream ptp + host-local (a conflist file, clusterNetwork), net1 NAD macvlan-conf (macvlan + whereabouts, Kubernetes store, ${RANGE});\n` +
      "  ours: bin/multus, bin/macvlan (run in multus' process: its file is multus' own), bin/whereabouts; upstream: multus v4.3.0 thin, macvlan v1.9.1, whereabouts v0.9.4;\n" +
      `  ${SEQUENTIAL_PODS} pods one at a time, then ${RACE_PODS} over ${NODES} nodes at once (${IN_FLIGHT_PER_NODE} per node); one API server, 2 cores shared:`,
  );
  for (const line of tableLines(["", "ours", "upstream", "ratio"], rows)) console.log(line);
  for (const impl of IMPLS) {
    const i = impl.name;
    console.log(`  ${i}: API requests per ADD, one at a time: ${perPod(s(i).addRequests, s(i).adds.length).detail}`);
    console.log(`  ${i}: API requests per DEL, one at a time: ${perPod(s(i).delRequests, s(i).dels.length).detail}`);
    console.log(`  ${i}: API requests per pod, ${race}: ${perPod(r(i).requests, RACE_PODS).detail}`);
    console.log(`  ${i}: peak RSS per process: ${[...s(i).rss].map(([name, kb]) => `${name} ${(kb / 1024).toFixed(1)} MiB`).join(", ")}`);
    for (const [command, entry] of s(i).breakdown) {
      const each = (m: Map<string, number>) => [...m].map(([name, v]) => `${name} ${v.toFixed(1)}`).join(", ");
      console.log(`  ${i}: ${command} per process, own share (ms, mean of ${PROBES}): CPU ${each(entry.cpu)}; wall ${each(entry.wall)}`);
    }
    const failedTries = tries(i).filter((t) => t.code !== 0);
    if (failedTries.length > 0)
      console.log(`  ${i}: failed ADD tries: ${grouped(failedTries.map((t) => (t.killed ? "killed at the deadline" : (t.message ?? ""))))}`);
    const failedDels = [...s(i).delFailures, ...r(i).del.failures];
    if (failedDels.length > 0) console.log(`  ${i}: failed DELs (what they left, ours then DELeted, untimed): ${grouped(failedDels)}`);
  }
  console.log(
    `  one at a time, ADD p50: ours ${((pct(addMs("ours"), 50) / pct(addMs("upstream"), 50)) * 100).toFixed(0)}% of upstream's; ` +
      `${race}: ${(rate("ours") / rate("upstream")).toFixed(1)}x upstream's pods started/s`,
  );
}

if (import.meta.main) await benchMultus();
