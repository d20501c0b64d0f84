/**
 * whereabouts on the Kubernetes store, in `npm run bench`: racing ADDs across 10 nodes against
 * one real API server (conformance/kube), ours and then upstream v0.9.4's, on the same server in
 * the same run. Prints numbers; asserts nothing (the conformance suites check correctness).
 *
 * A node is a datastore_dir of its own (ours keeps its DEL journal there); each node runs
 * IN_FLIGHT_PER_NODE ADD processes at a time, as a kubelet starting many pods at once would, so
 * 10 × that many processes race on one pool at any moment. Both binaries get the same pods, the
 * same range (a /22: every pod fits) and the same schedule.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { AdminApi, NAMESPACE, racingNodeConfig, requestsBetween, writeFlatFile } from "../conformance/kube/objects.ts";
import { installerKubeconfigText, startCluster } from "../conformance/kube/cluster.ts";
import { cleanup, netns, nsPath } from "../conformance/harness.ts";
import { type PodRun, failedTries, installNode, nodeNetwork, runtimeRace } from "../conformance/kube/runtime.ts";
import { percentile } from "./stats.ts";

const ROOT = resolve(import.meta.dirname, "..");
const OURS = join(ROOT, "bin/whereabouts");
const UPSTREAM = join(ROOT, ".cache/upstream/whereabouts-v0.9.4/whereabouts");
const NODES = 10;
/**
 * ADD processes each node runs at a time, one race per figure: 6 (a node starting a few pods at
 * once) and 50 (all 500 pods at once, 50 per node: a Deployment scaled up, a node drained).
 */
const IN_FLIGHT_PER_NODE = (process.env.BENCH_KUBE_IN_FLIGHT ?? "6,50").split(",").map(Number);
const PODS = Number(process.env.BENCH_KUBE_PODS ?? 500);
/** Upstream serialises every ADD through one Lease; set lower if 500 of them take too long here. */
const UPSTREAM_PODS = Number(process.env.BENCH_KUBE_UPSTREAM_PODS ?? PODS);
const RANGE = "10.70.0.0/22";
/** GNU time (Debian package "time"), for each process's peak RSS; without it RSS is not reported. */
const TIME = existsSync("/usr/bin/time") ? "/usr/bin/time" : undefined;
/**
 * Peak RSS is measured after the race, on ADDs that each lead alone on the full pool (the whole
 * pool read, parsed and written), not during it: an exec of GNU time per ADD cost the 2 cores
 * ~1 ms of CPU per ADD (~4% of the race, with perf), out of the budget the plugins race for.
 * (With time on every ADD, the largest of ours in a race was 50-54 MiB: a leader serving a batch.)
 */
const RSS_PROBES = 5;
const RSS_MARK = "\nbench-maxrss-kb=";

interface Add {
  code: number;
  ms: number;
  maxRssKb: number;
  /** User + system CPU of the plugin process. */
  cpuMs: number;
  address?: string;
  error?: string;
}

interface Run {
  pods: number;
  seconds: number;
  adds: Add[];
  requests: Map<string, number>;
  stored: number;
  /** CPU seconds the API server and etcd spent during the race. */
  serverCpu: { apiserver: number; etcd: number };
  /** CPU seconds of this bench process (spawning, piping, parsing); not the plugins'. */
  benchCpu: number;
  /** The share of the machine's CPU time that was idle during the race. */
  idleShare: number;
  /** Peak RSS of an ADD leading alone on the full pool, after the race. */
  maxRssKb: number;
}

function ipv4Number(address: string): number {
  return address.split(".").reduce((n, octet) => n * 256 + Number(octet), 0);
}

/** Jiffies since boot over all CPUs, and how many of them idle (/proc/stat). */
function machineCpu(): { total: number; idle: number } {
  const fields = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  return { total: fields.reduce((a, b) => a + b, 0), idle: (fields[3] ?? 0) + (fields[4] ?? 0) };
}

/** The CNI error's code and message, or the first line of stderr. */
function errorText(stdout: string, stderr: string): string {
  try {
    const error = JSON.parse(stdout) as { code?: number; msg?: string };
    return `code ${error.code}: ${error.msg}`;
  } catch {
    return stderr.trim().split("\n")[0] ?? "";
  }
}

export async function benchWhereaboutsKube(): Promise<void> {
  const cluster = await startCluster();
  const api = new AdminApi(cluster);
  const sandbox = nsPath(netns("sbx"));
  const nodes = Array.from({ length: NODES }, () => mkdtempSync(join(tmpdir(), "cnib-whereabouts-node-")));
  // Every node's kubeconfig as upstream's installer writes it (YAML), for both binaries.
  const kubeconfig = join(cluster.dir, "installer.kubeconfig");
  writeFileSync(kubeconfig, installerKubeconfigText({ server: cluster.server, caFile: cluster.caFile, token: cluster.adminToken, namespace: NAMESPACE }), {
    mode: 0o600,
  });
  // Upstream refuses to run without a flat file (`pkg/config/config.go`, `GetFlatIPAM`, `LoadIPAMConfig`).
  const flatFile = writeFlatFile(cluster, kubeconfig);
  const config = (node: number) => JSON.stringify(racingNodeConfig({ name: "bench", cluster, flatFile, datastoreDir: nodes[node]!, range: RANGE, kubeconfig }));
  const env = (pod: string): Record<string, string> => ({
    PATH: process.env.PATH ?? "",
    CNI_COMMAND: "ADD",
    CNI_CONTAINERID: `ctr-${pod}`,
    CNI_NETNS: sandbox,
    CNI_IFNAME: "net1",
    CNI_PATH: join(ROOT, "bin"),
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=${pod}`,
  });

  async function add(binary: string, pod: string, node: number, measureRss = false): Promise<Add> {
    const started = performance.now();
    // Peak RSS through GNU time, not Bun's resourceUsage(): Linux keeps a process's peak across
    // exec, and Bun's children start as copies of this (large) bench process, so every child
    // would report at least the bench's own RSS. time's children start as copies of time.
    const argv = TIME && measureRss ? [TIME, "-f", `${RSS_MARK}%M`, binary] : [binary];
    const child = Bun.spawn(argv, { env: env(pod), stdin: Buffer.from(config(node)), stdout: "pipe", stderr: "pipe" });
    const [code, out, stderr] = await Promise.all([child.exited, new Response(child.stdout).text(), new Response(child.stderr).text()]);
    const ms = performance.now() - started;
    const mark = stderr.lastIndexOf(RSS_MARK);
    const maxRssKb = mark >= 0 ? Number(stderr.slice(mark + RSS_MARK.length).trim()) : 0;
    // CPU from the kernel's rusage of the child (for an RSS probe, time's, which includes the
    // plugin it waited for) in microseconds: GNU time prints whole hundredths, which undercounts a 20 ms process.
    const cpuTime = child.resourceUsage()?.cpuTime;
    const cpuMs = cpuTime ? Number(cpuTime.user + cpuTime.system) / 1000 : 0;
    const err = mark >= 0 ? stderr.slice(0, mark) : stderr;
    if (code !== 0) return { code, ms, maxRssKb, cpuMs, error: errorText(out, err) };
    const address = (JSON.parse(out) as { ips: { address: string }[] }).ips[0]?.address;
    return { code, ms, maxRssKb, cpuMs, ...(address ? { address } : {}) };
  }

  async function race(binary: string, pods: number, inFlight: number): Promise<Run> {
    await api.clear();
    // One untimed ADD first: the API server's first write of a whereabouts object takes ~2 s.
    await add(binary, "warm-up", 0);
    await api.clear();
    const before = await api.requestCounts();
    const cpuBefore = cluster.cpuSeconds();
    const benchBefore = process.cpuUsage();
    const machineBefore = machineCpu();
    const adds: Add[] = new Array(pods);
    const started = performance.now();
    // Pod n belongs to node n % NODES; each node works through its pods `inFlight` at a time.
    await Promise.all(
      Array.from({ length: NODES }, async (_, node) => {
        const mine = Array.from({ length: Math.ceil((pods - node) / NODES) }, (_, i) => node + i * NODES);
        await Promise.all(
          Array.from({ length: inFlight }, async () => {
            for (let pod = mine.shift(); pod !== undefined; pod = mine.shift()) adds[pod] = await add(binary, `pod-${pod}`, node);
          }),
        );
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    const cpuAfter = cluster.cpuSeconds();
    const bench = process.cpuUsage(benchBefore);
    const machine = machineCpu();
    const benchCpu = (bench.user + bench.system) / 1e6;
    const idleShare = (machine.idle - machineBefore.idle) / (machine.total - machineBefore.total);
    const serverCpu = { apiserver: cpuAfter.apiserver - cpuBefore.apiserver, etcd: cpuAfter.etcd - cpuBefore.etcd };
    const requests = requestsBetween(before, await api.requestCounts());
    const stored = Object.keys((await api.pool(RANGE.replace("/", "-")))?.spec.allocations ?? {}).length;
    let maxRssKb = 0;
    for (let n = 0; n < RSS_PROBES; n++) maxRssKb = Math.max(maxRssKb, (await add(binary, `rss-probe-${n}`, 0, true)).maxRssKb);
    return { pods, seconds, adds, requests, stored, serverCpu, benchCpu, idleShare, maxRssKb };
  }

  function report(name: string, run: Run): number {
    const ok = run.adds.filter((a) => a.code === 0);
    const failed = run.adds.filter((a) => a.code !== 0);
    const distinct = new Set(ok.map((a) => a.address)).size;
    const ms = run.adds.map((a) => a.ms).sort((a, b) => a - b);
    const sum = (filter: (key: string) => boolean) => [...run.requests].filter(([key]) => filter(key)).reduce((n, [, v]) => n + v, 0);
    const whereabouts = sum((key) => key.startsWith("whereabouts.cni.cncf.io/"));
    // Upstream's Lease traffic; the API server's own Lease adds one PUT every 10 s to either run.
    const leases = sum((key) => key.startsWith("coordination.k8s.io/leases"));
    const rate = ok.length / run.seconds;
    console.log(
      `  ${name.padEnd(9)} ${run.pods} ADDs in ${run.seconds.toFixed(1)} s: ${rate.toFixed(1)} allocations/s; per ADD (failed ones too) p50 ${percentile(ms, 50).toFixed(0)} ms, p99 ${percentile(ms, 99).toFixed(0)} ms`,
    );
    console.log(
      `            API requests per ADD: ${(whereabouts / run.pods).toFixed(1)} whereabouts` +
        `${leases ? ` + ${(leases / run.pods).toFixed(1)} Lease` : ""} (${[...run.requests]
          .filter(([key]) => key.startsWith("whereabouts") || key.startsWith("coordination"))
          .sort((a, b) => b[1] - a[1])
          .map(([key, v]) => `${key.replace(/^[^/]*\//, "")} ${v}`)
          .join(", ")})`,
    );
    console.log(
      `            peak RSS of an ADD leading alone on the full pool ${TIME ? `${(run.maxRssKb / 1024).toFixed(1)} MiB` : "not measured (no /usr/bin/time)"}; ` +
        `${ok.length} succeeded, ${distinct} distinct addresses, ${run.stored} stored, ${failed.length} failed`,
    );
    const pluginCpu = run.adds.reduce((n, a) => n + a.cpuMs, 0) / run.pods;
    console.log(
      `            CPU per ADD: plugin process ${pluginCpu.toFixed(1)} ms, ` +
        `API server ${((run.serverCpu.apiserver * 1000) / run.pods).toFixed(1)} ms, etcd ${((run.serverCpu.etcd * 1000) / run.pods).toFixed(1)} ms (2 cores in all)`,
    );
    console.log(
      `            this bench process ${((run.benchCpu * 1000) / run.pods).toFixed(1)} ms per ADD; the machine was idle ${(run.idleShare * 100).toFixed(0)}% of the race`,
    );
    if (failed.length > 0) {
      const codes = new Map<string, number>();
      for (const a of failed) {
        const code = a.error?.match(/^code (\d+)/)?.[1] ?? `exit ${a.code}`;
        codes.set(code, (codes.get(code) ?? 0) + 1);
      }
      console.log(`            failed, by CNI error code: ${[...codes].map(([code, n]) => `${code} × ${n}`).join(", ")}; the first: ${failed[0]!.error}`);
    }
    return rate;
  }

  /**
   * The same pods started the way a node's runtime starts them (conformance/kube/runtime.ts):
   * nodes set up as upstream's installer does, a new sandbox per try, a DEL of a failed one, and
   * kubelet's retry; the CRI deadline kubelet gives a sandbox (2 minutes). Two shapes: a storm
   * (every pod at once, 50 per node, a range with room) and the limit test (as many pods as
   * addresses, 25 per node).
   */
  async function runtimeShaped(binary: string, shape: { pods: number; inFlight: number; ipam: Record<string, unknown>; pool: string }) {
    await api.clear();
    const dirs = Array.from({ length: NODES }, () => mkdtempSync(join(tmpdir(), "cnib-runtime-node-")));
    try {
      const runtimeNodes = dirs.map((dir, n) => installNode(cluster, dir, n));
      const race = await runtimeRace({
        binary,
        nodes: runtimeNodes,
        network: (node) => nodeNetwork(node, shape.ipam),
        pods: shape.pods,
        inFlightPerNode: shape.inFlight,
        deadlineMs: 120_000,
        backoffMs: 1000,
        maxTries: 20,
        netns: sandbox,
      });
      const pool = await api.pool(shape.pool);
      const keys = new Set(Object.keys(pool?.spec.allocations ?? {}));
      const base = ipv4Number(pool?.spec.range.split("/")[0] ?? "0.0.0.0");
      // A reservation's name is its address; the pool's keys are offsets from the range's base.
      const orphans = (await api.reservations()).filter((r) => !keys.has(String(ipv4Number(r.metadata.name) - base))).length;
      return { ...race, entries: keys.size, orphans };
    } finally {
      for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
    }
  }

  function reportRuntime(name: string, run: Awaited<ReturnType<typeof runtimeShaped>>): number {
    const started = run.pods.filter((p: PodRun) => p.address);
    const rate = started.length / run.seconds;
    const tries = run.pods.reduce((n, p) => n + p.tries.length, 0);
    const ends = run.pods.map((p) => p.endedMs).sort((a, b) => a - b);
    console.log(
      `  ${name.padEnd(9)} ${run.pods.length} pods in ${run.seconds.toFixed(1)} s: ${rate.toFixed(1)} pods started/s; pod started after p50 ${(percentile(ends, 50) / 1000).toFixed(1)} s, p99 ${(percentile(ends, 99) / 1000).toFixed(1)} s`,
    );
    console.log(
      `            ${started.length} started, ${new Set(started.map((p) => p.address)).size} distinct addresses, ${run.pods.filter((p) => p.full).length} found the range full; ` +
        `${tries} tries; ${run.entries} pool entries, ${run.orphans} reservations without an allocation`,
    );
    const failed = failedTries(run.pods);
    if (failed.length > 0) console.log(`            failed tries: ${failed.join("; ")}`);
    return rate;
  }

  try {
    const shapes = [
      { title: "a storm: 500 pods at once, 50 per node, range 10.70.0.0/22", pods: 500, inFlight: 50, ipam: { range: RANGE }, pool: RANGE.replace("/", "-") },
      {
        title: "the limit test: 1000 pods for a range of exactly 1000 addresses, 25 per node",
        pods: 1000,
        inFlight: 25,
        ipam: { range: "10.90.0.0/20", range_start: "10.90.0.1", range_end: "10.90.3.232" },
        pool: "10.90.0.0-20",
      },
    ];
    for (const shape of shapes) {
      console.log(`whereabouts (Kubernetes store) started as a node's runtime starts pods, ${NODES} nodes: ${shape.title}:`);
      const ours = reportRuntime("ours", await runtimeShaped(OURS, shape));
      const theirs = reportRuntime("upstream", await runtimeShaped(UPSTREAM, shape));
      console.log(`  throughput ratio: ${(ours / theirs).toFixed(1)}x upstream's pods started/s`);
    }
    for (const inFlight of IN_FLIGHT_PER_NODE) {
      console.log(`whereabouts (Kubernetes store, one real kube-apiserver): racing ADDs, ${NODES} nodes × ${inFlight} processes in flight, range ${RANGE}:`);
      const ours = report("ours", await race(OURS, PODS, inFlight));
      if (UPSTREAM_PODS < PODS) console.log(`  upstream runs ${UPSTREAM_PODS} ADDs, not ${PODS}: its Lease makes ${PODS} too slow for a benchmark`);
      const theirs = report("upstream", await race(UPSTREAM, UPSTREAM_PODS, inFlight));
      console.log(`  throughput ratio: ${(ours / theirs).toFixed(1)}x upstream's allocations/s`);
    }
  } finally {
    api.close();
    await cluster.stop();
    for (const node of nodes) rmSync(node, { recursive: true, force: true });
    cleanup();
  }
}

if (import.meta.main) await benchWhereaboutsKube();
