/**
 * whereabouts on the Kubernetes store: 500 pods on 10 nodes racing on one range, against a real
 * kube-apiserver and etcd (one cluster for the file); the same with half the nodes running
 * upstream v0.9.4's binary; and a mixed race where every pod fits. The mixed races are the
 * experiment that answers whether our plugin must take upstream's `whereabouts` Lease while
 * upstream nodes remain (docs/whereabouts-kubernetes.md#do-we-take-upstreams-lease): a duplicate
 * there would say yes.
 *
 * A node is a datastore_dir of its own. Every ADD is a separate process. The first two races use
 * a /24 (254 usable addresses) for 500 pods, so one race shows all three promises: every pod that
 * fits gets an address, none twice, and the pods that do not fit get a CNI error and write
 * nothing.
 *
 * Concurrency: each node runs IN_FLIGHT_PER_NODE ADD processes at a time (a kubelet starting
 * many pods at once), so 60 processes race on the pool at any moment: far more writers on one
 * pool than a real cluster sees. Not all 500 at once: this machine has two cores, shared with
 * the API server and etcd, and 500 simultaneous processes would measure its CPU queue.
 */
import { afterAll, beforeAll, beforeEach, expect, test } from "vitest";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Cluster } from "./kube/cluster.ts";
import { type AdminApi, racingNodeConfig } from "./kube/objects.ts";
import { cleanup, cniAsync, type CniOutput } from "./harness.ts";
import { UPSTREAM_WHEREABOUTS, WHEREABOUTS, call, startSideBySide } from "./whereabouts-cases.ts";

const NODES = 10;
const PODS = 500;
const IN_FLIGHT_PER_NODE = 6;

/** A range for the race: its CIDR, IPPool name, and how many addresses it has to give. */
interface RaceRange {
  cidr: string;
  pool: string;
  usable: number;
  /** "10.80.0.0" + offset → address. */
  address(offset: number): string;
}
const SLASH24: RaceRange = { cidr: "10.80.0.0/24", pool: "10.80.0.0-24", usable: 254, address: (o) => `10.80.0.${o}` };
const SLASH23: RaceRange = { cidr: "10.82.0.0/23", pool: "10.82.0.0-23", usable: 510, address: (o) => `10.82.${o >> 8}.${o & 255}` };

let cluster: Cluster;
let api: AdminApi;
let nodes: string[];
let flatFile: string;

beforeAll(async () => {
  ({ cluster, api, flatFile } = await startSideBySide());
});
beforeEach(async () => {
  await api.clear();
  nodes = Array.from({ length: NODES }, () => mkdtempSync(join(tmpdir(), "cnit-whereabouts-node-")));
  // The API server's first write of a whereabouts object is slow, and not part of the race
  // (docs/performance.md#the-whereabouts-conformance-races).
  await cniAsync(WHEREABOUTS, call("ADD", "warm-up"), config(0, SLASH24));
  await api.clear();
  return () => {
    for (const node of nodes) rmSync(node, { recursive: true, force: true });
  };
});
afterAll(async () => {
  api?.close();
  await cluster?.stop();
  cleanup();
});

function config(node: number, range: RaceRange): Record<string, unknown> {
  return racingNodeConfig({ name: "wbnet", cluster, flatFile, datastoreDir: nodes[node]!, range: range.cidr });
}

interface Outcome {
  pod: number;
  node: number;
  binary: "ours" | "upstream";
  out: CniOutput;
  address?: string;
  /** When the process exited, ms after the race began. */
  endedMs: number;
}

/** Which binary a node runs, how many pods it starts, and how many ADDs it runs at a time. */
interface NodePlan {
  binary: "ours" | "upstream";
  pods: number;
  inFlight: number;
}

/**
 * Pod n runs on node n % NODES (so pod names are unique across nodes); each node works through
 * its pods `inFlight` at a time, all nodes at once.
 */
/** How often the runtime tries one pod's ADD, and what counts as final. */
const RUNTIME_ATTEMPTS = 3;
const RANGE_FULL = /no free IP address left in range|Could not allocate IP in range/;
/** Retried ADDs per binary in the last race, for the log. */
const retries = { ours: 0, upstream: 0 };

async function race(range: RaceRange, planOf: (node: number) => NodePlan): Promise<Outcome[]> {
  retries.ours = 0;
  retries.upstream = 0;
  const outcomes: Outcome[] = [];
  const started = performance.now();
  await Promise.all(
    Array.from({ length: NODES }, async (_, node) => {
      const { binary, pods, inFlight } = planOf(node);
      const queue = Array.from({ length: pods }, (_, i) => node + i * NODES);
      await Promise.all(
        Array.from({ length: inFlight }, async () => {
          for (let pod = queue.shift(); pod !== undefined; pod = queue.shift()) {
            // A runtime retries a failed ADD (kubelet retries the sandbox; code 11 says "try again
            // later"): up to RUNTIME_ATTEMPTS times, except when the range is full, which is final.
            let out: CniOutput;
            for (let attempt = 1; ; attempt++) {
              out = await cniAsync(binary === "ours" ? WHEREABOUTS : UPSTREAM_WHEREABOUTS, call("ADD", pod), config(node, range));
              if (out.code === 0 || RANGE_FULL.test(String(out.json?.msg ?? "")) || attempt === RUNTIME_ATTEMPTS) break;
              retries[binary]++;
            }
            const address = out.code === 0 ? (out.json?.ips as { address: string }[] | undefined)?.[0]?.address.split("/")[0] : undefined;
            outcomes.push({ pod, node, binary, out, endedMs: performance.now() - started, ...(address ? { address } : {}) });
          }
        }),
      );
    }),
  );
  console.log(
    `race on ${range.pool}: ${outcomes.length} pods in ${((performance.now() - started) / 1000).toFixed(1)} s; ADDs retried by the runtime: ours ${retries.ours}, upstream ${retries.upstream}`,
  );
  return outcomes.sort((a, b) => a.pod - b.pod);
}

function describeOutcome(o: Outcome): string {
  return `pod-${o.pod} (${o.binary}, node ${o.node})`;
}

/** Every address handed out more than once, with who got it: empty when the race was clean. */
function duplicates(outcomes: Outcome[]): string[] {
  const byAddress = new Map<string, Outcome[]>();
  for (const o of outcomes) if (o.address) byAddress.set(o.address, [...(byAddress.get(o.address) ?? []), o]);
  return [...byAddress].filter(([, holders]) => holders.length > 1).map(([address, holders]) => `${address}: ${holders.map(describeOutcome).join(", ")}`);
}

/**
 * The promises of a race: no address twice; every pod that fits gets an address (the only
 * failures are the range being full); the pool and the reservations hold exactly the successful
 * ADDs (a failed one wrote nothing). Soft: one run reports every broken promise.
 */
async function expectCleanRace(range: RaceRange, outcomes: Outcome[], failureOf: (o: Outcome) => unknown): Promise<void> {
  const succeeded = outcomes.filter((o) => o.out.code === 0);
  const failed = outcomes.filter((o) => o.out.code !== 0);
  expect.soft(duplicates(outcomes), "addresses given to two pods").toEqual([]);
  expect.soft(summarise(failed.filter((o) => !matches(o.out.json, failureOf(o)))), "ADDs that failed for another reason than a full range").toEqual([]);
  expect.soft(succeeded.length, "pods that got an address").toBe(Math.min(range.usable, outcomes.length));
  const inRange = new Set(Array.from({ length: range.usable }, (_, i) => range.address(i + 1)));
  expect.soft(succeeded.filter((o) => !inRange.has(o.address!)).map(describeOutcome), "addresses outside the range").toEqual([]);
  const pool = (await api.pool(range.pool))?.spec.allocations ?? {};
  expect
    .soft(
      Object.entries(pool)
        .map(([key, a]) => `${range.address(Number(key))}=${a.podref} ${a.ifname} ${a.id}`)
        .sort(),
      "the pool",
    )
    .toEqual(succeeded.map((o) => `${o.address}=default/pod-${o.pod} net1 ctr-${o.pod}`).sort());
  expect
    .soft((await api.reservations()).map((r) => `${r.metadata.name}=${r.spec.podref} ${r.spec.ifname}`).sort(), "the reservations")
    .toEqual(succeeded.map((o) => `${o.address}=default/pod-${o.pod} net1`).sort());
}

/**
 * Failures grouped by binary and error, addresses and numbers taken out of the message, with a
 * count and the first pod: a readable failure message for hundreds of processes.
 */
function summarise(outcomes: Outcome[]): string[] {
  const groups = new Map<string, Outcome[]>();
  for (const o of outcomes) {
    const error = o.out.json ? `code ${String(o.out.json.code)}: ${String(o.out.json.msg)}` : `exit ${o.out.code}: ${o.out.stderr.split("\n")[0]}`;
    const key = `${o.binary} ${error.replace(/\d+(\.\d+){3}(\/\d+)?|\b\d{4,}\b/g, "N")}`;
    groups.set(key, [...(groups.get(key) ?? []), o]);
  }
  return [...groups].map(([key, group]) => `${group.length} × ${key.slice(0, 300)} (first: ${describeOutcome(group[0]!)})`);
}

function matches(actual: unknown, expected: unknown): boolean {
  try {
    expect(actual).toMatchObject(expected as Record<string, unknown>);
    return true;
  } catch {
    return false;
  }
}

const oursFull = { code: 102, msg: "no free IP address left in range 10.80.0.0/24 (10.80.0.1-10.80.0.254)" };
// Upstream's untyped error (whereabouts `pkg/allocate/allocate.go`'s, wrapped by
// `cmd/whereabouts.go`) comes out as code 999: containernetworking/cni `pkg/skel/skel.go` turns
// any error that is not a `types.Error` into ErrInternal.
const upstreamFull = {
  code: 999,
  msg: "error at storage engine: Could not allocate IP in range: ip: 10.80.0.1 / - 10.80.0.254 / range: 10.80.0.0/24 / excludeRanges: []",
};
const allOurs = (): NodePlan => ({ binary: "ours", pods: PODS / NODES, inFlight: IN_FLIGHT_PER_NODE });

/**
 * Upstream's nodes start 10 pods each, not 50: every upstream ADD, even one that finds the range
 * full, waits for upstream's Lease in turn, and the Lease changes hands slowly once our ADDs are
 * done: 250 upstream ADDs would keep the race going for minutes
 * (docs/performance.md#the-whereabouts-conformance-races). 50 of them still run from the first
 * second of the race to after its end.
 */
const UPSTREAM_PODS_PER_NODE = 10;
const upstreamHalf = (node: number): NodePlan =>
  node < NODES / 2
    ? { binary: "upstream", pods: UPSTREAM_PODS_PER_NODE, inFlight: IN_FLIGHT_PER_NODE }
    : { binary: "ours", pods: PODS / NODES, inFlight: IN_FLIGHT_PER_NODE };

function won(outcomes: Outcome[], binary: Outcome["binary"]): number {
  return outcomes.filter((o) => o.binary === binary && o.out.code === 0).length;
}

test(`${PODS} pods on ${NODES} nodes race for ${SLASH24.usable} addresses: ${SLASH24.usable} get one each, the rest code 102 and nothing stored`, async () => {
  const started = performance.now();
  const outcomes = await race(SLASH24, allOurs);
  console.log(`ours: ${PODS} racing ADDs in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  await expectCleanRace(SLASH24, outcomes, () => oursFull);
}, 300_000);

test(`the same with ${NODES / 2} of the ${NODES} nodes running upstream v0.9.4 (${UPSTREAM_PODS_PER_NODE} pods each; it takes its Lease, we do not)`, async () => {
  const started = performance.now();
  const outcomes = await race(SLASH24, upstreamHalf);
  const seconds = (performance.now() - started) / 1000;
  console.log(
    `mixed, /24: ${outcomes.length} racing ADDs in ${seconds.toFixed(1)} s; addresses: upstream ${won(outcomes, "upstream")}, ours ${won(outcomes, "ours")}`,
  );
  await expectCleanRace(SLASH24, outcomes, (o) => (o.binary === "ours" ? oursFull : upstreamFull));
  // Both really raced: each binary won some of the range.
  expect.soft(won(outcomes, "upstream")).toBeGreaterThan(0);
  expect.soft(won(outcomes, "ours")).toBeGreaterThan(0);
}, 300_000);

test(`the Lease experiment: 50 upstream and 250 of our ADDs on a range where all fit`, async () => {
  // In the /24 race our ADDs fill the range while upstream's wait for its Lease. Here every pod
  // fits and our nodes run one ADD at a time, to leave upstream's Lease holder room for its
  // writes. (Even so, upstream's ADDs mostly complete only after ours
  // (docs/performance.md#the-whereabouts-conformance-races); the console line counts them. The
  // interleavings that matter are forced one by one with sleep_for_race in
  // whereabouts-kube.test.ts.)
  const plan = (node: number): NodePlan =>
    node < NODES / 2 ? { binary: "upstream", pods: UPSTREAM_PODS_PER_NODE, inFlight: IN_FLIGHT_PER_NODE } : { binary: "ours", pods: PODS / NODES, inFlight: 1 };
  const started = performance.now();
  const outcomes = await race(SLASH23, plan);
  const seconds = (performance.now() - started) / 1000;
  const oursDone = Math.max(...outcomes.filter((o) => o.binary === "ours").map((o) => o.endedMs));
  const interleaved = outcomes.filter((o) => o.binary === "upstream" && o.out.code === 0 && o.endedMs < oursDone).length;
  console.log(
    `mixed, /23: ${outcomes.length} racing ADDs in ${seconds.toFixed(1)} s; addresses: upstream ${won(outcomes, "upstream")} ` +
      `(${interleaved} of them while ours were still allocating), ours ${won(outcomes, "ours")}`,
  );
  await expectCleanRace(SLASH23, outcomes, () => ({ never: "every pod fits" }));
}, 300_000);
