/**
 * `npm run bench`: whole-process cost of our plugins next to upstream's, on the same inputs, in
 * one run. Prints numbers; asserts nothing (speed targets are read, not tested).
 *
 * Each plugin process is spawned from inside a "node" namespace (our Netns.run around a
 * synchronous spawn: the child inherits the thread's namespace), so no `ip netns exec` start-up
 * is counted.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Netns } from "../shared/netns.ts";
import { benchIpvlanInGuest } from "./ipvlan.ts";
import { median } from "./stats.ts";
import { benchWhereaboutsKube } from "./kube.ts";
import { benchMultus } from "./multus.ts";
import { benchPods } from "./pods.ts";
import { benchStatus } from "./status.ts";

const ROOT = resolve(import.meta.dir, "..");
const BIN = join(ROOT, "bin");
const UPSTREAM = join(ROOT, ".cache/upstream/plugins-v1.9.1");
const RUNS = Number(process.env.BENCH_RUNS ?? 25);
const tag = `cnib${process.pid}`;

function sh(...args: string[]): void {
  const run = spawnSync(args[0]!, args.slice(1), { encoding: "utf8" });
  if (run.status !== 0) throw new Error(`${args.join(" ")}: ${run.stderr}`);
}

interface Sample {
  ms: number;
  maxRssKb: number;
}

function runIn(ns: Netns, binary: string, env: Record<string, string>, stdin: string): Sample {
  return ns.run(() => {
    const started = performance.now();
    const child = Bun.spawnSync([binary], { env: { PATH: process.env.PATH ?? "", ...env }, stdin: Buffer.from(stdin) });
    const ms = performance.now() - started;
    if (child.exitCode !== 0 && env.CNI_COMMAND !== undefined) {
      throw new Error(`${binary} ${env.CNI_COMMAND} failed: ${child.stdout.toString()}${child.stderr.toString()}`);
    }
    // Bun reports maxRSS in bytes.
    return { ms, maxRssKb: Math.round((child.resourceUsage?.maxRSS ?? 0) / 1024) };
  });
}

function fmt(ms: number): string {
  return `${ms.toFixed(1)} ms`;
}

/** ADD then DEL of one pod, repeated; returns per-cycle wall time and the larger max RSS. */
function addDelCycles(ns: Netns, binary: string, podPath: string, config: object): { ms: number[]; rssKb: number[] } {
  const stdin = JSON.stringify(config);
  const base = { CNI_CONTAINERID: "bench", CNI_NETNS: podPath, CNI_IFNAME: "net1", CNI_PATH: UPSTREAM };
  const ms: number[] = [];
  const rssKb: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const add = runIn(ns, binary, { ...base, CNI_COMMAND: "ADD" }, stdin);
    const del = runIn(ns, binary, { ...base, CNI_COMMAND: "DEL" }, stdin);
    ms.push(add.ms + del.ms);
    rssKb.push(Math.max(add.maxRssKb, del.maxRssKb));
  }
  return { ms, rssKb };
}

function benchMacvlan(): void {
  const nodeName = `${tag}-node`;
  const wireName = `${tag}-wire`;
  const podName = `${tag}-pod`;
  for (const name of [nodeName, wireName, podName]) sh("ip", "netns", "add", name);
  try {
    sh("ip", "-n", nodeName, "link", "add", "m0", "type", "veth", "peer", "name", "w0", "netns", wireName);
    sh("ip", "-n", nodeName, "link", "set", "m0", "up");
    sh("ip", "-n", wireName, "link", "set", "w0", "up");
    const nodeNs = Netns.open(`/run/netns/${nodeName}`);
    const config = {
      cniVersion: "1.0.0",
      name: "bench",
      type: "macvlan",
      master: "m0",
      ipam: { type: "static", addresses: [{ address: "10.30.0.5/24", gateway: "10.30.0.1" }], routes: [{ dst: "0.0.0.0/0" }] },
    };
    // Warm the page cache for both binaries before measuring.
    addDelCycles(nodeNs, join(BIN, "macvlan"), `/run/netns/${podName}`, config);
    addDelCycles(nodeNs, join(UPSTREAM, "macvlan"), `/run/netns/${podName}`, config);

    const ours = addDelCycles(nodeNs, join(BIN, "macvlan"), `/run/netns/${podName}`, config);
    const theirs = addDelCycles(nodeNs, join(UPSTREAM, "macvlan"), `/run/netns/${podName}`, config);

    // Where our time goes: the runtime alone (no CNI_COMMAND: prints the about line and exits,
    // after loading every module), and VERSION (adds reading stdin and the dispatcher).
    const about = Array.from({ length: RUNS }, () => runIn(nodeNs, join(BIN, "macvlan"), {}, "").ms);
    const version = Array.from({ length: RUNS }, () => runIn(nodeNs, join(BIN, "macvlan"), { CNI_COMMAND: "VERSION" }, "{}").ms);
    const staticIpam = Array.from({ length: RUNS }, () => runIn(nodeNs, join(UPSTREAM, "static"), { CNI_COMMAND: "VERSION" }, "{}").ms);
    nodeNs.close();

    const oursMs = median(ours.ms);
    const theirsMs = median(theirs.ms);
    console.log(`macvlan ADD+DEL (static IPAM), median of ${RUNS}, whole processes:`);
    console.log(`  ours      ${fmt(oursMs)}   peak RSS ${(Math.max(...ours.rssKb) / 1024).toFixed(1)} MiB`);
    console.log(`  upstream  ${fmt(theirsMs)}   peak RSS ${(Math.max(...theirs.rssKb) / 1024).toFixed(1)} MiB`);
    console.log(`  ratio     ${(oursMs / theirsMs).toFixed(2)}x upstream's time`);
    console.log(`  breakdown of one of our processes: start + module load ${fmt(median(about))}, VERSION ${fmt(median(version))};`);
    console.log(`    each ADD or DEL also execs static IPAM (~${fmt(median(staticIpam))}); the rest is netlink and the verb`);
  } finally {
    for (const name of [nodeName, wireName, podName]) spawnSync("ip", ["netns", "del", name]);
  }
}

/**
 * whereabouts on the file store. ADD+DEL of one pod, whole processes, in a /24 and in a /16 that
 * each hold 10 other leases (the cost must not follow the range's size); then 200 ADD processes
 * started at once on one node, each a different pod.
 */
async function benchWhereabouts(): Promise<void> {
  const binary = join(BIN, "whereabouts");
  const dir = mkdtempSync(join(tmpdir(), "cnib-whereabouts-"));
  const config = (range: string) =>
    JSON.stringify({ cniVersion: "1.0.0", name: "bench", type: "macvlan", ipam: { type: "whereabouts", datastore: "file", datastore_dir: dir, range } });
  const env = (command: string, pod: string): Record<string, string> => ({
    PATH: process.env.PATH ?? "",
    CNI_COMMAND: command,
    CNI_CONTAINERID: `ctr-${pod}`,
    CNI_NETNS: "/run/netns/bench-none",
    CNI_IFNAME: "net1",
    CNI_PATH: BIN,
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=${pod}`,
  });
  const run = (command: string, pod: string, stdin: string): Sample => {
    const started = performance.now();
    const child = Bun.spawnSync([binary], { env: env(command, pod), stdin: Buffer.from(stdin) });
    const ms = performance.now() - started;
    if (child.exitCode !== 0) throw new Error(`whereabouts ${command} failed: ${child.stdout.toString()}${child.stderr.toString()}`);
    return { ms, maxRssKb: Math.round((child.resourceUsage?.maxRSS ?? 0) / 1024) };
  };
  try {
    const cycles = (range: string): { ms: number[]; rssKb: number[] } => {
      const stdin = config(range);
      for (let i = 0; i < 10; i++) run("ADD", `tenant-${i}`, stdin);
      const ms: number[] = [];
      const rssKb: number[] = [];
      for (let i = 0; i < RUNS; i++) {
        const add = run("ADD", "bench", stdin);
        const del = run("DEL", "bench", stdin);
        ms.push(add.ms + del.ms);
        rssKb.push(Math.max(add.maxRssKb, del.maxRssKb));
      }
      return { ms, rssKb };
    };
    cycles("10.60.0.0/24"); // warm the page cache
    const small = cycles("10.61.0.0/24");
    const large = cycles("10.62.0.0/16");

    // 200 racing ADDs: all started before any is awaited; wall time from the first start to the last exit.
    const racers = 200;
    const stdin = config("10.63.0.0/16");
    const started = performance.now();
    const children = Array.from({ length: racers }, (_, i) =>
      Bun.spawn([binary], { env: env("ADD", `racer-${i}`), stdin: Buffer.from(stdin), stdout: "pipe", stderr: "ignore" }),
    );
    const outputs = await Promise.all(children.map(async (child) => ({ code: await child.exited, out: await new Response(child.stdout).text() })));
    const seconds = (performance.now() - started) / 1000;
    // What the same number of processes cost with no work at all: VERSION reads no store.
    const bareStarted = performance.now();
    await Promise.all(
      Array.from({ length: racers }, () => Bun.spawn([binary], { env: { CNI_COMMAND: "VERSION" }, stdin: Buffer.from("{}"), stdout: "ignore" }).exited),
    );
    const bareSeconds = (performance.now() - bareStarted) / 1000;
    const failures = outputs.filter((o) => o.code !== 0);
    if (failures.length > 0) throw new Error(`${failures.length} racing ADDs failed: ${failures[0]!.out}`);
    const stored = JSON.parse(readFileSync(join(dir, "default/ippools/10.63.0.0-16.json"), "utf8")) as { allocations: object };
    const distinct = new Set(outputs.map((o) => (JSON.parse(o.out) as { ips: { address: string }[] }).ips[0]!.address)).size;

    console.log(`whereabouts (file store) ADD+DEL, median of ${RUNS}, whole processes:`);
    console.log(`  /24 with 10 leases  ${fmt(median(small.ms))}   peak RSS ${(Math.max(...small.rssKb) / 1024).toFixed(1)} MiB`);
    console.log(`  /16 with 10 leases  ${fmt(median(large.ms))}`);
    console.log(
      `  upstream v0.9.4: no figure quoted; every ADD and DEL takes the cluster-wide Lease and makes ~6 API round trips (upstream pkg/storage/kubernetes/ipam.go, newLeaderElector)`,
    );
    console.log(`whereabouts (file store) ${racers} ADD processes started at once on one node:`);
    console.log(
      `  ours      ${(racers / seconds).toFixed(0)} allocations/s (${seconds.toFixed(2)} s; ${distinct} distinct addresses, ${Object.keys(stored.allocations).length} stored)`,
    );
    console.log(`  (${racers} VERSION processes started at once, no store: ${bareSeconds.toFixed(2)} s; the rest is the allocations)`);
    console.log(
      `  upstream  serialised by a Lease polled every 0.5-1.1 s (upstream pkg/storage/kubernetes/ipam.go, newLeaderElector): about 1-2 allocations/s under contention`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function binSize(): void {
  const seen = new Set<number>();
  let bytes = 0;
  for (const name of readdirSync(BIN)) {
    const stat = statSync(join(BIN, name));
    if (seen.has(stat.ino)) continue;
    seen.add(stat.ino);
    bytes += stat.size;
  }
  console.log(`bin/: ${(bytes / 1e6).toFixed(1)} MB on disk (${readdirSync(BIN).length} names, ${seen.size} file)`);
}

benchMacvlan();
await benchIpvlanInGuest(Math.min(RUNS, 15));
await benchWhereabouts();
await benchWhereaboutsKube();
await benchMultus();
await benchStatus();
await benchPods();
binSize();
