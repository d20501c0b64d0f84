/**
 * Nodes whose container runtime drives whereabouts as containerd and kubelet do, reduced to the
 * CNI calls: the storm and limit tests of the Kubernetes store, and the bench's runtime-shaped
 * race. Every ADD and DEL is a process of its own with the CNI environment.
 *
 * - A node is set up as upstream's installer sets it up: a flat file `whereabouts.d/whereabouts.conf`
 *   naming a YAML kubeconfig with a token, and the network config pointing at it with
 *   `configuration_path` (the node's own `datastore_dir` is in the flat file too: upstream's
 *   binary ignores the key).
 * - A pod sandbox has a new container ID per try. An ADD that has not answered by the runtime's
 *   deadline is killed with SIGKILL (containerd runs plugins under the CRI request's context);
 *   a try may also be killed earlier on purpose (`killAfterMs`), as a runtime restarting would.
 * - A sandbox whose ADD failed or was killed is torn down with a DEL of the same container ID
 *   (containerd's teardown after a failed RunPodSandbox, under a context of its own, not the
 *   expired one), then kubelet tries the pod again with a
 *   new sandbox after a backoff. A full range (code 102, or upstream's message for it) ends the
 *   pod's tries here; kubelet would go on trying.
 * - containerd 2 asks every plugin of the network for STATUS about every 5 s, on every node.
 *
 * Runs under Node (vitest) and Bun (bench): node: modules only.
 */
import { spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { installerKubeconfigText, type Cluster } from "./cluster.ts";
import { NAMESPACE } from "./objects.ts";

export interface RuntimeNode {
  index: number;
  /** The node's whereabouts state (`datastore_dir`). */
  dir: string;
  /** The flat file, as upstream's installer writes it. */
  flatFile: string;
}

/** Writes a node's kubeconfig (YAML, CA inline, a token) and flat file under `dir`, as upstream's installer does. */
export function installNode(cluster: Pick<Cluster, "server" | "caFile" | "adminToken">, dir: string, index: number): RuntimeNode {
  const conf = join(dir, "whereabouts.d");
  mkdirSync(conf, { recursive: true, mode: 0o700 });
  const kubeconfig = join(conf, "whereabouts.kubeconfig");
  writeFileSync(kubeconfig, installerKubeconfigText({ server: cluster.server, caFile: cluster.caFile, token: cluster.adminToken, namespace: NAMESPACE }), {
    mode: 0o600,
  });
  const flatFile = join(conf, "whereabouts.conf");
  const datastoreDir = join(dir, "state");
  writeFileSync(flatFile, JSON.stringify({ datastore: "kubernetes", kubernetes: { kubeconfig }, datastore_dir: datastoreDir }), { mode: 0o600 });
  return { index, dir: datastoreDir, flatFile };
}

/**
 * The network config a node's runtime hands the plugin: the NAD's IPAM, pointing at the node's
 * flat file. STATUS needs version 1.1.0.
 */
export function nodeNetwork(node: RuntimeNode, ipam: Record<string, unknown>, cniVersion = "1.0.0"): string {
  return JSON.stringify({
    cniVersion,
    name: "storm",
    type: "macvlan",
    ipam: { type: "whereabouts", configuration_path: node.flatFile, log_level: "error", ...ipam },
  });
}

/** One try of a pod: its sandbox's ADD, and the DEL that tore it down when the ADD did not succeed. */
interface Try {
  containerId: string;
  code: number;
  /** The CNI error's code, when the plugin answered one. */
  cniCode?: number;
  message?: string;
  killed: "deadline" | "on purpose" | undefined;
  address?: string;
  ms: number;
  /** The teardown DEL's exit code; undefined when the ADD succeeded. */
  delCode?: number;
}

export interface PodRun {
  pod: number;
  node: number;
  tries: Try[];
  /** The address the pod ended with, if it started. */
  address?: string;
  /** The range was full (final). */
  full: boolean;
  /** When the pod started (or gave up), ms after the race began. */
  endedMs: number;
}

export interface RuntimeOptions {
  binary: string;
  nodes: RuntimeNode[];
  /** The network config for a node. */
  network: (node: RuntimeNode) => string;
  pods: number;
  /** Sandboxes a node starts at once (kubelet's parallel pod workers). */
  inFlightPerNode: number;
  /** The CRI deadline after which the runtime kills an ADD. */
  deadlineMs: number;
  /** kubelet's backoff before a pod's next sandbox. */
  backoffMs: number;
  /** Tries before the harness gives a pod up (kubelet never does; a bound keeps a broken run finite). */
  maxTries: number;
  /** When to kill a try on purpose (ms after its start), or undefined to let it run. */
  killAfterMs?: (pod: number, attempt: number) => number | undefined;
  /** The pod name of pod n (namespace "default"). */
  podName?: (pod: number) => string;
  /** CNI_NETNS: whereabouts never enters it, any existing path will do. */
  netns: string;
  /** How often each node's runtime asks for STATUS during the race, and once after it (containerd 2: ~5 s); undefined: never. */
  statusEveryMs?: number;
}

/** containerd's STATUS calls and its teardown after a failed sandbox run under contexts of their own (a minute for the teardown). */
const OWN_DEADLINE_MS = 60_000;

const FULL = /no free IP address left in range|Could not allocate IP in range/;

interface Exit {
  code: number;
  stdout: string;
  stderr: string;
  killed: boolean;
}

function run(binary: string, env: Record<string, string>, input: string, killAfterMs: number | undefined): Promise<Exit> {
  return new Promise((resolve, reject) => {
    const child = spawn(binary, [], { env, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    let killed = false;
    const timer =
      killAfterMs === undefined
        ? undefined
        : setTimeout(() => {
            killed = true;
            child.kill("SIGKILL");
          }, killAfterMs);
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    child.on("error", reject);
    child.on("close", (code) => {
      if (timer) clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr, killed });
    });
    child.stdin.on("error", () => {});
    child.stdin.end(input);
  });
}

function parse(stdout: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(stdout) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

/** Runs every pod through its node's runtime, all nodes at once; resolves when every pod started or gave up. */
export async function runtimeRace(o: RuntimeOptions): Promise<{ pods: PodRun[]; seconds: number; statusFailures: string[] }> {
  const started = performance.now();
  const runs: PodRun[] = [];
  let racing = true;
  const statusFailures: string[] = [];
  const podName = o.podName ?? ((n: number) => `pod-${n}`);
  const env = (command: string, containerId: string, pod: number): Record<string, string> => ({
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    CNI_COMMAND: command,
    CNI_CONTAINERID: containerId,
    CNI_NETNS: o.netns,
    CNI_IFNAME: "net1",
    CNI_PATH: "/nonexistent",
    // containerd's order: IgnoreUnknown first, then the pod's namespace, name, infra container, UID.
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=${podName(pod)};K8S_POD_INFRA_CONTAINER_ID=${containerId};K8S_POD_UID=uid-${pod}`,
  });
  const statusPolls = o.nodes.map(async (node) => {
    const every = o.statusEveryMs;
    if (every === undefined) return;
    const statusEnv = { PATH: process.env.PATH ?? "/usr/bin:/bin", CNI_COMMAND: "STATUS", CNI_PATH: "/nonexistent" };
    // On after the race too, once: the runtime goes on asking.
    for (let last = false; !last; ) {
      last = !racing;
      if (!last) await new Promise((resolve) => setTimeout(resolve, every * (0.5 + Math.random())));
      const status = await run(o.binary, statusEnv, o.network(node), OWN_DEADLINE_MS);
      if (status.code !== 0) statusFailures.push(`node ${node.index}: exit ${status.code} ${status.stdout.trim() || status.stderr.trim()}`);
    }
  });
  await Promise.all(
    o.nodes.map(async (node) => {
      const config = o.network(node);
      const mine = Array.from({ length: Math.ceil((o.pods - node.index) / o.nodes.length) }, (_, i) => node.index + i * o.nodes.length);
      await Promise.all(
        Array.from({ length: o.inFlightPerNode }, async () => {
          for (let pod = mine.shift(); pod !== undefined; pod = mine.shift()) {
            const podRun: PodRun = { pod, node: node.index, tries: [], full: false, endedMs: 0 };
            for (let attempt = 1; attempt <= o.maxTries; attempt++) {
              const containerId = `ctr-${pod}-${attempt}`;
              const onPurpose = o.killAfterMs?.(pod, attempt);
              const kill = onPurpose === undefined ? o.deadlineMs : Math.min(onPurpose, o.deadlineMs);
              const t0 = performance.now();
              const add = await run(o.binary, env("ADD", containerId, pod), config, kill);
              const ms = performance.now() - t0;
              const json = add.killed ? undefined : parse(add.stdout);
              const attemptRun: Try = {
                containerId,
                code: add.code,
                killed: add.killed ? (onPurpose !== undefined && onPurpose < o.deadlineMs ? "on purpose" : "deadline") : undefined,
                ms,
              };
              if (add.code === 0 && json) {
                const address = (json.ips as { address: string }[] | undefined)?.[0]?.address.split("/")[0];
                if (address) attemptRun.address = address;
                podRun.tries.push(attemptRun);
                podRun.address = address;
                break;
              }
              if (json && typeof json.code === "number") attemptRun.cniCode = json.code;
              if (json && typeof json.msg === "string") attemptRun.message = json.msg;
              else if (!add.killed) attemptRun.message = add.stderr.trim().split("\n")[0];
              // containerd tears the failed sandbox's network down with the same container ID.
              attemptRun.delCode = (await run(o.binary, env("DEL", containerId, pod), config, OWN_DEADLINE_MS)).code;
              podRun.tries.push(attemptRun);
              if (FULL.test(attemptRun.message ?? "")) {
                podRun.full = true;
                break;
              }
              await new Promise((resolve) => setTimeout(resolve, o.backoffMs * (0.5 + Math.random())));
            }
            podRun.endedMs = performance.now() - started;
            runs.push(podRun);
          }
        }),
      );
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  racing = false;
  await Promise.all(statusPolls);
  return { pods: runs.sort((a, b) => a.pod - b.pod), seconds, statusFailures };
}

/** Failed tries grouped by what they said, with counts: a readable line for hundreds of processes. */
export function failedTries(pods: readonly PodRun[]): string[] {
  const groups = new Map<string, number>();
  for (const pod of pods) {
    for (const t of pod.tries) {
      if (t.code === 0) continue;
      const what = t.killed
        ? `killed (${t.killed})`
        : `code ${t.cniCode ?? `exit ${t.code}`}: ${(t.message ?? "").replace(/\d+(\.\d+){3}(\/\d+)?|\b\d{2,}\b|ctr-\S+/g, "N").slice(0, 160)}`;
      groups.set(what, (groups.get(what) ?? 0) + 1);
    }
  }
  return [...groups].sort((a, b) => b[1] - a[1]).map(([what, n]) => `${n} × ${what}`);
}
