/**
 * `npm run bench`: whole-process cost of our plugins next to upstream's, on the same inputs, in
 * one run. Prints numbers; asserts nothing (speed targets are read, not tested).
 *
 * Each plugin process is spawned from inside a "node" namespace (our Netns.run around a
 * synchronous spawn: the child inherits the thread's namespace), so no `ip netns exec` start-up
 * is counted.
 */
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { Netns } from "../shared/netns.ts";

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

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
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
    const staticIpam = Array.from({ length: RUNS }, () =>
      runIn(nodeNs, join(UPSTREAM, "static"), { CNI_COMMAND: "VERSION" }, "{}").ms,
    );
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
binSize();
