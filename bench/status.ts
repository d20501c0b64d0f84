/**
 * What containerd 2's STATUS polling costs a node, in `npm run bench` (or alone: `bun
 * bench/status.ts`): containerd calls STATUS on every plugin of its default network about every
 * 5 s, and on a node our installer set up that network is the multus conf, whose STATUS runs the
 * primary network's plugins' STATUS in turn. Ours (bin/multus) against upstream multus v4.3.0 thin,
 * both with the conf their installers write (clusterNetwork: the primary's conflist on the node,
 * upstream bridge + host-local v1.9.1, the same binaries for both), each call a process as
 * containerd runs it (CNI_COMMAND=STATUS, CNI_PATH, the other CNI_* empty, stdin the plugin's
 * config). Prints numbers; asserts nothing.
 *
 * CPU is the kernel's rusage of the whole process tree (multus and the delegates it waited for).
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { median, percentile } from "./stats.ts";

const ROOT = resolve(import.meta.dir, "..");
const UPSTREAM_PLUGINS = join(ROOT, ".cache/upstream/plugins-v1.9.1");
const CALLS = Number(process.env.BENCH_STATUS_CALLS ?? 60);
/** containerd 2's period between two STATUS rounds (its CRI plugin's network status check). */
const PERIOD_S = 5;

interface Impl {
  name: "ours" | "upstream";
  multus: string;
}

const IMPLS: Impl[] = [
  { name: "ours", multus: join(ROOT, "bin/multus") },
  { name: "upstream", multus: join(ROOT, ".cache/upstream/multus-v4.3.0/multus") },
];

interface Sample {
  wallMs: number;
  cpuMs: number;
  rssKb: number;
}

function statusCall(impl: Impl, binDir: string, conf: string): Sample {
  const started = performance.now();
  const child = Bun.spawnSync([impl.multus], {
    env: { PATH: process.env.PATH ?? "", CNI_COMMAND: "STATUS", CNI_PATH: binDir, CNI_CONTAINERID: "", CNI_NETNS: "", CNI_IFNAME: "", CNI_ARGS: "" },
    stdin: Buffer.from(conf),
  });
  const wallMs = performance.now() - started;
  if (child.exitCode !== 0) throw new Error(`${impl.name} multus STATUS failed (${child.exitCode}): ${child.stdout.toString()}${child.stderr.toString()}`);
  const usage = child.resourceUsage;
  return {
    wallMs,
    cpuMs: usage ? Number(usage.cpuTime.user + usage.cpuTime.system) / 1000 : 0,
    rssKb: Math.round((usage?.maxRSS ?? 0) / 1024),
  };
}

export async function benchStatus(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "cnib-status-"));
  try {
    // The node: its primary conflist, a bin dir with the primary's plugins and each multus, and a
    // kubeconfig (STATUS reads it and asks the API nothing: the cluster network is a file).
    const binDir = join(dir, "bin");
    const confDir = join(dir, "net.d");
    Bun.spawnSync(["mkdir", "-p", binDir, confDir]);
    for (const plugin of ["bridge", "host-local", "loopback"]) Bun.spawnSync(["ln", "-s", join(UPSTREAM_PLUGINS, plugin), join(binDir, plugin)]);
    const primary = join(confDir, "10-bridge.conflist");
    writeFileSync(
      primary,
      JSON.stringify({
        cniVersion: "1.1.0",
        name: "podnet",
        plugins: [
          {
            type: "bridge",
            bridge: "cnib0",
            isGateway: true,
            ipMasq: false,
            ipam: { type: "host-local", ranges: [[{ subnet: "10.88.0.0/16" }]], dataDir: join(dir, "host-local") },
          },
        ],
      }),
    );
    const kubeconfig = join(dir, "multus.kubeconfig");
    writeFileSync(
      kubeconfig,
      JSON.stringify({
        apiVersion: "v1",
        kind: "Config",
        clusters: [{ name: "local", cluster: { server: "https://127.0.0.1:1", "insecure-skip-tls-verify": true } }],
        users: [{ name: "multus", user: { token: "unused" } }],
        contexts: [{ name: "multus-context", context: { cluster: "local", user: "multus" } }],
        "current-context": "multus-context",
      }),
      { mode: 0o600 },
    );
    // The one plugin of the installer's 00-multus.conflist, as containerd hands it to STATUS.
    const conf = JSON.stringify({
      cniVersion: "1.1.0",
      name: "multus-cni-network",
      type: "multus",
      kubeconfig,
      clusterNetwork: primary,
      cniDir: join(dir, "multus-cache"),
      binDir,
      logFile: join(dir, "multus.log"),
      logLevel: "error",
    });

    const samples = new Map<Impl["name"], Sample[]>(IMPLS.map((impl) => [impl.name, []]));
    for (const impl of IMPLS) statusCall(impl, binDir, conf); // page cache
    // Interleaved, so both see the same machine.
    for (let i = 0; i < CALLS; i++) for (const impl of IMPLS) samples.get(impl.name)?.push(statusCall(impl, binDir, conf));

    const row = (label: string, f: (s: Sample[]) => number, unit: string, digits = 1) => {
      const [ours, upstream] = IMPLS.map((impl) => f(samples.get(impl.name) ?? []));
      console.log(
        `  ${label.padEnd(52)} ${`${ours!.toFixed(digits)} ${unit}`.padStart(12)} ${`${upstream!.toFixed(digits)} ${unit}`.padStart(12)}   ${(ours! / upstream!).toFixed(2)}x`,
      );
    };
    const sorted = (s: Sample[], key: keyof Sample) => s.map((x) => x[key]).sort((a, b) => a - b);
    const perMinute = 60 / PERIOD_S;
    console.log(
      `multus STATUS as containerd 2 polls it (every ${PERIOD_S} s; clusterNetwork upstream bridge + host-local v1.9.1), ${CALLS} calls each, interleaved:`,
    );
    console.log(`  ${"".padEnd(52)} ${"ours".padStart(12)} ${"upstream".padStart(12)}   ratio`);
    row("wall per call, p50", (s) => median(s.map((x) => x.wallMs)), "ms");
    row("wall per call, p99", (s) => percentile(sorted(s, "wallMs"), 99), "ms");
    row("CPU per call, process tree, median", (s) => median(s.map((x) => x.cpuMs)), "ms");
    row("peak RSS of multus", (s) => Math.max(...s.map((x) => x.rssKb)) / 1024, "MiB");
    row(`CPU per node per minute (${perMinute} calls)`, (s) => (median(s.map((x) => x.cpuMs)) * perMinute) / 1000, "s", 3);
    row("share of one core", (s) => (median(s.map((x) => x.cpuMs)) * perMinute) / 600, "%", 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) await benchStatus();
