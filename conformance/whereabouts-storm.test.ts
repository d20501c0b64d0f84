/**
 * whereabouts on the Kubernetes store under a runtime's hands, against a real kube-apiserver and
 * etcd: nodes whose runtime starts many pod sandboxes at once, kills an ADD at its deadline (or
 * earlier, on purpose), tears the failed sandbox down with a DEL and tries the pod again with a
 * new sandbox, and polls STATUS as containerd 2 does (conformance/kube/runtime.ts).
 *
 * The promises, for every race: every pod ends with exactly one address, none twice; the pool
 * holds exactly one entry per pod, its last sandbox's; every reservation has its allocation
 * (none left by a killed process to block an address for good); no node's journal keeps an
 * entry. And the limit test (Spiderpool's benchmark): as many pods as the range has addresses,
 * then one more, which gets code 102 and writes nothing.
 */
import { afterAll, beforeAll, beforeEach, expect, test } from "vitest";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Cluster } from "./kube/cluster.ts";
import type { AdminApi } from "./kube/objects.ts";
import { type PodRun, type RuntimeNode, failedTries, installNode, nodeNetwork, runtimeRace } from "./kube/runtime.ts";
import { cleanup, cniAsync, netns, nsPath } from "./harness.ts";
import { WHEREABOUTS, startSideBySide } from "./whereabouts-cases.ts";

const NODES = 10;

let cluster: Cluster;
let api: AdminApi;
let nodes: RuntimeNode[];
let sandbox: string;

beforeAll(async () => {
  ({ cluster, api } = await startSideBySide());
  sandbox = nsPath(netns("storm"));
});
beforeEach(async () => {
  await api.clear();
  const dirs = Array.from({ length: NODES }, () => mkdtempSync(join(tmpdir(), "cnit-storm-node-")));
  nodes = dirs.map((dir, n) => installNode(cluster, dir, n));
  return () => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  };
});
afterAll(async () => {
  api?.close();
  await cluster?.stop();
  cleanup();
});

/** A range of exactly `size` addresses from 10.90.0.1. */
function limitRange(size: number): Record<string, unknown> {
  const last = size;
  return { range: "10.90.0.0/20", range_start: "10.90.0.1", range_end: `10.90.${last >> 8}.${last & 255}` };
}

/** Every promise of a race, soft: one run reports every broken one. */
async function expectSettled(pods: PodRun[], pool: string, offsetOf: (address: string) => number): Promise<void> {
  const started = pods.filter((p) => p.address);
  expect.soft(failedTries(pods.filter((p) => !p.address)), "pods that never got an address").toEqual([]);
  expect.soft(started.length, "pods that got an address").toBe(pods.length);
  expect.soft(new Set(started.map((p) => p.address)).size, "distinct addresses").toBe(started.length);
  const allocations = (await api.pool(pool))?.spec.allocations ?? {};
  const expected = started.map((p) => `${offsetOf(p.address!)}=default/pod-${p.pod} net1 ${p.tries.at(-1)!.containerId}`).sort();
  expect
    .soft(
      Object.entries(allocations)
        .map(([key, a]) => `${key}=${a.podref} ${a.ifname} ${a.id}`)
        .sort(),
      "the pool: one entry per pod, its last sandbox's",
    )
    .toEqual(expected);
  const reservations = (await api.reservations()).map((r) => `${r.metadata.name}=${r.spec.podref} ${r.spec.ifname}`).sort();
  expect
    .soft(reservations, "the reservations: one per pod, none without its allocation")
    .toEqual(started.map((p) => `${p.address}=default/pod-${p.pod} net1`).sort());
  const journals = nodes.flatMap((node) => {
    try {
      return readdirSync(join(node.dir, "journal")).map((file) => `node ${node.index}: ${file}`);
    } catch {
      return [];
    }
  });
  expect.soft(journals, "journal entries left on the nodes").toEqual([]);
}

/** 10.90.x.y → its offset from 10.90.0.0, the pool's allocation key. */
const offset90 = (address: string) => {
  const [, , x, y] = address.split(".").map(Number);
  return x! * 256 + y!;
};

test("the limit test: 1000 pods on 10 nodes for a range of exactly 1000 addresses, 1 in 10 first tries killed mid-ADD; then one pod more gets 102 and writes nothing", async () => {
  const ipam = limitRange(1000);
  const { pods, seconds } = await runtimeRace({
    binary: WHEREABOUTS,
    nodes,
    network: (node) => nodeNetwork(node, ipam),
    pods: 1000,
    inFlightPerNode: 25,
    deadlineMs: 120_000,
    backoffMs: 500,
    maxTries: 10,
    // Killed at some moment in its first second: before, during or after its claims and pool
    // write. (Once the nodes' queues flow, a try takes well under a second: later kill times
    // mostly found the process done.)
    killAfterMs: (pod, attempt) => (attempt === 1 && pod % 10 === 3 ? (pod * 37) % 1000 : undefined),
    netns: sandbox,
  });
  const killed = pods.flatMap((p) => p.tries).filter((t) => t.killed).length;
  console.log(`limit test: 1000 pods in ${seconds.toFixed(1)} s, ${killed} tries killed on purpose; failed tries: ${failedTries(pods).join("; ") || "none"}`);
  expect(killed, "tries killed mid-ADD").toBeGreaterThan(30);
  await expectSettled(pods, "10.90.0.0-20", offset90);

  const before = { pool: await api.pool("10.90.0.0-20"), reservations: await api.reservations() };
  const out = await cniAsync(
    WHEREABOUTS,
    { command: "ADD", containerId: "ctr-one-more", netns: sandbox, ifName: "net1", args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=one-more" },
    nodeNetwork(nodes[0]!, ipam),
  );
  expect(out.json).toMatchObject({ code: 102, msg: "no free IP address left in range 10.90.0.0/20 (10.90.0.1-10.90.3.232)" });
  expect((await api.pool("10.90.0.0-20"))?.spec.allocations).toEqual(before.pool?.spec.allocations);
  expect((await api.reservations()).map((r) => r.metadata.name).sort()).toEqual(before.reservations.map((r) => r.metadata.name).sort());
}, 600_000);

test("a storm: 500 pods at once (50 per node), 1 in 5 first tries killed mid-ADD, STATUS every 5 s: every kill torn down, every pod started once", async () => {
  const { pods, seconds, statusFailures } = await runtimeRace({
    binary: WHEREABOUTS,
    nodes,
    network: (node) => nodeNetwork(node, { range: "10.91.0.0/22" }, "1.1.0"),
    pods: 500,
    inFlightPerNode: 50,
    deadlineMs: 120_000,
    backoffMs: 500,
    maxTries: 10,
    // Killed at some moment in its first three seconds: with 500 processes on two cores, some
    // still waiting for a core, some queued behind their node's batch, some leading one.
    killAfterMs: (pod, attempt) => (attempt === 1 && pod % 5 === 2 ? (pod * 53) % 3000 : undefined),
    netns: sandbox,
    statusEveryMs: 5000,
  });
  const killed = pods.flatMap((p) => p.tries).filter((t) => t.killed).length;
  console.log(`storm: 500 pods in ${seconds.toFixed(1)} s, ${killed} tries killed on purpose; failed tries: ${failedTries(pods).join("; ") || "none"}`);
  expect(killed, "tries killed mid-ADD").toBeGreaterThan(50);
  await expectSettled(pods, "10.91.0.0-22", (address) => {
    const [, , x, y] = address.split(".").map(Number);
    return x! * 256 + y!;
  });
  // A STATUS that fails here would tell containerd the network is down while it works.
  expect(statusFailures.slice(0, 5), `STATUS calls that failed (${statusFailures.length})`).toEqual([]);
}, 600_000);
