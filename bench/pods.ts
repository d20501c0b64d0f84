/**
 * Real pods on real nodes, ours against upstream's, in one run (`npx bun bench/pods.ts`; also the
 * last part of `npm run bench`). Two nodes (containerd 2.2.9 + kubelet v1.36.3,
 * conformance/node/) on one API server; on each, upstream bridge + host-local v1.9.1 as the
 * primary network and, in front of it, the multus conf the installers write
 * (`00-multus.conf`: clusterNetwork the primary's conflist, the kubeconfig in `multus.d/`), and
 * whereabouts' flat file with its kubeconfig in `whereabouts.d/`. The implementation under test is
 * its binaries in the node's /opt/cni/bin: ours (bin/cni-plugins under the names multus, macvlan,
 * whereabouts) or upstream's (multus v4.3.0 thin, macvlan v1.9.1, whereabouts v0.9.4). One NAD,
 * macvlan-conf (macvlan bridge mode on a veth both nodes share, whereabouts on the Kubernetes
 * store, a /16), and every pod asks for it.
 *
 * Pods are API objects with nodeName (no scheduler), the node's pause image. A pod's time is from
 * its create call's answer to the first list (every 100 ms) that shows it Running. Per
 * implementation, after a warm-up pod per node: pods one at a time, then a batch created at once
 * over both nodes, then every pod deleted at once (until the API has none and the pool is empty). Prints numbers; asserts nothing.
 */
import { spawnSync } from "node:child_process";
import { copyFileSync, linkSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT, UPSTREAM_BIN } from "../conformance/harness.ts";
import { type Cluster, installerKubeconfigText, startCluster } from "../conformance/kube/cluster.ts";
import { createNad, multusKubeconfigText, podEvents } from "../conformance/kube/multus.ts";
import { AdminApi } from "../conformance/kube/objects.ts";
import { type KubeNode, startNode } from "../conformance/node/node.ts";
import { PRIMARY_CONFLIST, installPrimaryNetwork } from "../conformance/node/primary.ts";
import { percentile, tableLines } from "./stats.ts";

const ONE_AT_A_TIME = Number(process.env.BENCH_PODS_ONE_AT_A_TIME ?? 20);
/** Pods created at once, split over the two nodes. */
const BATCH = Number(process.env.BENCH_PODS_BATCH ?? 60);
const NAMESPACE = "default";
const RANGE = "192.168.0.0/16";
const POOL = "192.168.0.0-16";
const POLL_MS = 100;
/** Past this, a phase gives up: kubelet retries forever, a bench must end. */
const PHASE_TIMEOUT_MS = 600_000;
const MASTER = `bpm${process.pid % 100_000}`;

interface Impl {
  name: "ours" | "upstream";
  /** Each plugin name in the node's bin dir, and the file it is. */
  binaries: Record<"multus" | "macvlan" | "whereabouts", string>;
}

const IMPLS: Impl[] = [
  {
    name: "ours",
    binaries: { multus: join(ROOT, "bin/cni-plugins"), macvlan: join(ROOT, "bin/cni-plugins"), whereabouts: join(ROOT, "bin/cni-plugins") },
  },
  {
    name: "upstream",
    binaries: {
      multus: join(ROOT, ".cache/upstream/multus-v4.3.0/multus"),
      macvlan: join(UPSTREAM_BIN, "macvlan"),
      whereabouts: join(ROOT, ".cache/upstream/whereabouts-v0.9.4/whereabouts"),
    },
  },
];

interface PodList {
  items: { metadata: { name: string; deletionTimestamp?: string }; status?: { phase?: string } }[];
}

interface Phase {
  /** Milliseconds from each pod's create to Running. */
  ms: number[];
  seconds: number;
  /** FailedCreatePodSandBox events of the phase's pods. */
  failedSandboxes: number;
  /** Machine CPU seconds over the phase (all processes). */
  machineCpu: number;
}

interface ImplRun {
  oneAtATime: Phase;
  batch: Phase;
  deleteSeconds: number;
  /** Pool entries and reservations once every pod is gone. */
  left: { poolEntries: number; reservations: number };
}

const log = (line: string) => console.error(`pods: ${line}`);

/** Jiffies since boot over all CPUs, and how many of them idle (/proc/stat). */
function machineCpu(): { total: number; idle: number } {
  const fields = (readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "").trim().split(/\s+/).slice(1).map(Number);
  return { total: fields.reduce((a, b) => a + b, 0), idle: (fields[3] ?? 0) + (fields[4] ?? 0) };
}

function bridgeName(index: number): string {
  return `bpb${index}-${process.pid % 100_000}`;
}

function run(args: string[]): void {
  const result = spawnSync(args[0] ?? "", args.slice(1), { encoding: "utf8" });
  if (result.status !== 0) throw new Error(`${args.join(" ")}: ${result.stderr}`);
}

export async function benchPods(): Promise<void> {
  const missing = [...IMPLS.flatMap((i) => Object.values(i.binaries)), ...["bridge", "host-local", "loopback"].map((p) => join(UPSTREAM_BIN, p))].filter(
    (path) => spawnSync("test", ["-x", path]).status !== 0,
  );
  if (missing.length > 0) throw new Error(`missing: ${missing.join(", ")} (npm run build; scripts/build-upstream.sh)`);
  const cluster = await startCluster({ log });
  const api = new AdminApi(cluster);
  const nodes: KubeNode[] = [];
  const runs = new Map<Impl["name"], ImplRun>();
  try {
    run(["ip", "link", "add", MASTER, "type", "veth", "peer", "name", `${MASTER}p`]);
    for (const end of [MASTER, `${MASTER}p`]) run(["ip", "link", "set", end, "up"]);
    for (const [index, letter] of ["a", "b"].entries()) {
      const node = await startNode(cluster, { name: `bench${letter}-${process.pid}`, log });
      nodes.push(node);
      prepareNode(node, index, cluster);
    }
    await createNad(api, NAMESPACE, "macvlan-conf", {
      cniVersion: "1.0.0",
      name: "macvlan-conf",
      type: "macvlan",
      master: MASTER,
      mode: "bridge",
      ipam: { type: "whereabouts", range: RANGE },
    });
    for (const impl of IMPLS) {
      for (const node of nodes) install(node, impl);
      // containerd reads the conf dir again on its change; the first pod waits for nothing stale.
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      // Untimed: one pod per node started and deleted, so that neither side pays first-time costs
      // (the new executables' first reads, kubelet's and containerd's first sandbox of a config).
      log(`${impl.name}: a warm-up pod per node ...`);
      await phase(api, impl, "warm", nodes.length, nodes, false);
      await deleteAll(api);
      log(`${impl.name}: ${ONE_AT_A_TIME} pods one at a time ...`);
      const oneAtATime = await phase(api, impl, "one", ONE_AT_A_TIME, nodes, true);
      log(`${impl.name}: ${BATCH} pods at once over ${nodes.length} nodes ...`);
      const batch = await phase(api, impl, "batch", BATCH, nodes, false);
      log(`${impl.name}: every pod deleted ...`);
      const deleteSeconds = await deleteAll(api);
      const left = {
        poolEntries: Object.keys((await api.pool(POOL))?.spec.allocations ?? {}).length,
        reservations: (await api.reservations()).length,
      };
      runs.set(impl.name, { oneAtATime, batch, deleteSeconds, left });
      await api.clear();
    }
  } finally {
    for (const node of nodes) await node.stop().catch((err: unknown) => log(`stopping ${node.name}: ${err}`));
    for (const link of [MASTER, bridgeName(0), bridgeName(1)]) spawnSync("ip", ["link", "del", link]);
    api.close();
    await cluster.stop();
  }
  report(runs);
}

/** The node's primary network (conformance/node/primary.ts) and the installers' node files. */
function prepareNode(node: KubeNode, index: number, cluster: Cluster): void {
  installPrimaryNetwork(node, { index, bridge: bridgeName(index) });
  for (const folder of ["multus.d", "whereabouts.d"]) mkdirSync(join(node.cniConfDir, folder), { recursive: true });
  writeFileSync(join(node.cniConfDir, "multus.d/multus.kubeconfig"), multusKubeconfigText(cluster), { mode: 0o600 });
  writeFileSync(
    join(node.cniConfDir, "whereabouts.d/whereabouts.kubeconfig"),
    installerKubeconfigText({ ...cluster, token: cluster.adminToken, namespace: "kube-system" }),
    { mode: 0o600 },
  );
  writeFileSync(
    join(node.cniConfDir, "whereabouts.d/whereabouts.conf"),
    JSON.stringify({ datastore: "kubernetes", kubernetes: { kubeconfig: "/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig" }, log_level: "error" }),
    { mode: 0o600 },
  );
}

/** The implementation's binaries in the node's bin dir (ours: one file, a hard link per name), and the multus conf. */
function install(node: KubeNode, impl: Impl): void {
  const placed = new Map<string, string>();
  for (const [name, source] of Object.entries(impl.binaries)) {
    const target = join(node.cniBinDir, name);
    rmSync(target, { force: true });
    const first = placed.get(source);
    if (first) linkSync(first, target);
    else {
      copyFileSync(source, target);
      placed.set(source, target);
    }
  }
  writeFileSync(
    join(node.cniConfDir, "00-multus.conf"),
    JSON.stringify({
      cniVersion: "1.0.0",
      name: "multus-cni-network",
      type: "multus",
      kubeconfig: "/etc/cni/net.d/multus.d/multus.kubeconfig",
      clusterNetwork: PRIMARY_CONFLIST,
      logLevel: "error",
      logFile: "/var/log/multus.log",
    }),
  );
}

async function createPod(api: AdminApi, name: string, node: KubeNode): Promise<void> {
  const created = await api.send("POST", `/api/v1/namespaces/${NAMESPACE}/pods`, {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace: NAMESPACE, labels: { bench: "pods" }, annotations: { "k8s.v1.cni.cncf.io/networks": "macvlan-conf" } },
    spec: {
      nodeName: node.name,
      automountServiceAccountToken: false,
      enableServiceLinks: false,
      terminationGracePeriodSeconds: 0,
      containers: [{ name: "app", image: node.image, imagePullPolicy: "Never" }],
    },
  });
  if (!created) throw new Error(`pod ${name} not created`);
}

async function listPods(api: AdminApi): Promise<PodList["items"]> {
  return (await api.send<PodList>("GET", `/api/v1/namespaces/${NAMESPACE}/pods?labelSelector=bench%3Dpods`))?.items ?? [];
}

/**
 * `count` pods of `impl`, alternating the nodes: one at a time (each waited for before the next)
 * or all created at once; each one's time from its create call's answer to Running.
 */
async function phase(api: AdminApi, impl: Impl, tag: string, count: number, nodes: KubeNode[], sequential: boolean): Promise<Phase> {
  const created = new Map<string, number>();
  const runningAt = new Map<string, number>();
  const cpuBefore = machineCpu();
  const started = performance.now();
  const deadline = Date.now() + PHASE_TIMEOUT_MS;
  const poll = async (names: string[]) => {
    while (names.some((name) => !runningAt.has(name))) {
      if (Date.now() > deadline)
        throw new Error(`${impl.name} ${tag}: ${names.filter((n) => !runningAt.has(n)).length} pods not Running after ${PHASE_TIMEOUT_MS} ms`);
      const now = performance.now();
      for (const pod of await listPods(api)) if (pod.status?.phase === "Running" && !runningAt.has(pod.metadata.name)) runningAt.set(pod.metadata.name, now);
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  };
  const names = Array.from({ length: count }, (_, i) => `${impl.name}-${tag}-${i}`);
  if (sequential) {
    for (const [i, name] of names.entries()) {
      // kubelet notices a started container at its next relist (every second): a pod created right
      // after the previous one ran would keep the same phase to it, and every pod of a side would land
      // on the same side of a relist. A random pause spreads them over the second.
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 1_000));
      await createPod(api, name, nodes[i % nodes.length]!);
      created.set(name, performance.now());
      await poll([name]);
    }
  } else {
    for (const [i, name] of names.entries()) {
      await createPod(api, name, nodes[i % nodes.length]!);
      created.set(name, performance.now());
    }
    await poll(names);
  }
  const seconds = (performance.now() - started) / 1000;
  const cpuAfter = machineCpu();
  let failedSandboxes = 0;
  for (const name of names)
    failedSandboxes += (await podEvents(api, { namespace: NAMESPACE, name })).filter((e) => e.reason === "FailedCreatePodSandBox").length;
  return {
    ms: names.map((name) => runningAt.get(name)! - created.get(name)!),
    seconds,
    failedSandboxes,
    // Jiffies are 1/100 s.
    machineCpu: (cpuAfter.total - cpuAfter.idle - (cpuBefore.total - cpuBefore.idle)) / 100,
  };
}

/**
 * Every bench pod deleted at once; the seconds until the API lists none and the pool is empty.
 * Then waits up to 30 s more for the reservations (a DEL releases the pool entry before its
 * reservation): one still there is left behind, and reported.
 */
async function deleteAll(api: AdminApi): Promise<number> {
  const started = performance.now();
  await api.send("DELETE", `/api/v1/namespaces/${NAMESPACE}/pods?labelSelector=bench%3Dpods`);
  const deadline = Date.now() + PHASE_TIMEOUT_MS;
  let seconds: number | undefined;
  let settled = Number.POSITIVE_INFINITY;
  for (;;) {
    const pods = await listPods(api);
    const entries = Object.keys((await api.pool(POOL))?.spec.allocations ?? {}).length;
    if (seconds === undefined && pods.length === 0 && entries === 0) {
      seconds = (performance.now() - started) / 1000;
      settled = Date.now() + 30_000;
    }
    if (seconds !== undefined && ((await api.reservations()).length === 0 || Date.now() > settled)) return seconds;
    if (Date.now() > deadline) {
      log(`after ${PHASE_TIMEOUT_MS} ms: ${pods.length} pods listed, ${entries} pool entries`);
      return (performance.now() - started) / 1000;
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

function report(runs: Map<Impl["name"], ImplRun>): void {
  const ours = runs.get("ours");
  const upstream = runs.get("upstream");
  if (!ours || !upstream) return;
  const rows: string[][] = [];
  const sorted = (values: number[]) => [...values].sort((a, b) => a - b);
  const row = (label: string, value: (r: ImplRun) => number, digits: number, unit = "") => {
    const a = value(ours);
    const b = value(upstream);
    rows.push([label, `${a.toFixed(digits)}${unit}`, `${b.toFixed(digits)}${unit}`, b === 0 ? "" : `${(a / b).toFixed(2)}x`]);
  };
  const text = (label: string, value: (r: ImplRun) => string) => rows.push([label, value(ours), value(upstream), ""]);
  row("one at a time: create to Running, p50", (r) => percentile(sorted(r.oneAtATime.ms), 50), 0, " ms");
  row("one at a time: create to Running, p99", (r) => percentile(sorted(r.oneAtATime.ms), 99), 0, " ms");
  row(`${BATCH} at once: pods Running/s`, (r) => BATCH / r.batch.seconds, 2);
  row(`${BATCH} at once: create to Running, p50`, (r) => percentile(sorted(r.batch.ms), 50), 0, " ms");
  row(`${BATCH} at once: create to Running, p99`, (r) => percentile(sorted(r.batch.ms), 99), 0, " ms");
  row(`${BATCH} at once: machine CPU per pod`, (r) => (r.batch.machineCpu * 1000) / BATCH, 0, " ms");
  text("FailedCreatePodSandBox events (one at a time, at once)", (r) => `${r.oneAtATime.failedSandboxes}, ${r.batch.failedSandboxes}`);
  row("every pod deleted: until none listed and the pool empty", (r) => r.deleteSeconds, 1, " s");
  text("left: IPPool entries, reservations", (r) => `${r.left.poolEntries}, ${r.left.reservations}`);
  console.log(
    `pods on real nodes: 2 nodes (containerd 2.2.9 + kubelet), eth0 upstream bridge + host-local, net1 NAD macvlan-conf (macvlan + whereabouts, Kubernetes store);\n` +
      "  ours: bin/cni-plugins as multus, macvlan, whereabouts; upstream: multus v4.3.0 thin, macvlan v1.9.1, whereabouts v0.9.4; the time is create to Running (polled every 100 ms):",
  );
  for (const line of tableLines(["", "ours", "upstream", "ratio"], rows)) console.log(line);
}

if (import.meta.main) await benchPods();
