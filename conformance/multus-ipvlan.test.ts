/**
 * multus with an ipvlan NAD (ipvlan + whereabouts on the Kubernetes store), compiled, side by side
 * with upstream multus v4.3.0's thin plugin, in a kernel with IPVLAN: the qemu guest of
 * conformance/guest, since the development machine's kernel has none (docs/ipvlan.md).
 *
 * Where each piece lives. The API server and etcd run here, on 127.0.0.1; the NADs and the pod are
 * objects in it, written and read back from here. Everything a node does runs in the guest: multus
 * (ours, upstream's), the delegates (ipvlan, upstream ptp + host-local for eth0) and whereabouts,
 * which all talk to the API server through the guest's one forward (guest.ts, forwardPort:
 * 10.0.2.100:<port> in the guest is 127.0.0.1:<port> here), whose address the serving certificate
 * holds (startCluster's advertiseAddress). The node's files sit in the scratch folder both sides see
 * at one path, so the log, cniDir and host-local leases are read here.
 *
 * The scenario of conformance/multus.test.ts's first describe, for an ipvlan NAD and one pod:
 * upstream ADDs and ours DELs (in-place upgrade), ours ADDs and upstream DELs (downgrade); each ADD
 * checked (result, the pod's kernel state with `ip -j`, network-status byte for byte, events, log,
 * IPPool), both ADDs compared, and nothing left after DEL. TCG is slow: one pod per side.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { GUEST_FORWARD_ADDRESS, bootGuest, type GuestExecutor } from "./guest/guest.ts";
import { BIN, ROOT, cleanup, deleteNetns, link, localExecutor, netns, nsPath, sweepStale, useExecutor } from "./harness.ts";
import { startCluster, type Cluster } from "./kube/cluster.ts";
import { AdminApi } from "./kube/objects.ts";
import {
  createNad,
  createPod,
  deleteEvents,
  filesUnder,
  leftovers,
  macvlanWhereabouts,
  multusConf,
  multusNode,
  podAnnotations,
  podEvents,
  podKernel,
  poolEntries,
  requiredBinaries,
  runMultus,
  site,
  type Impl,
  type MultusNode,
  type PodEvent,
  type PodKernel,
  type Sandbox,
  type Site,
} from "./kube/multus.ts";

const NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status";
const UPSTREAM_WHEREABOUTS = join(ROOT, ".cache/upstream/whereabouts-v0.9.4/whereabouts");
const POOL = "192.168.30.0-24";
const POD = "pod-ipvlan";
const ETH0 = "10.244.0.2/24";
const NET1 = "192.168.30.10/24";

let cluster: Cluster | undefined;
let api: AdminApi;
let guest: GuestExecutor | undefined;
let dir: string | undefined;
let where: Site;
let runs = 0;
/** The API server's port: 127.0.0.1:<port> here, GUEST_FORWARD_ADDRESS:<port> in the guest. */
let port = 0;
/** Milliseconds per step, printed at the end: what the case costs under TCG. */
const timings: string[] = [];

async function timed<T>(what: string, work: () => Promise<T> | T): Promise<T> {
  const started = Date.now();
  const result = await work();
  timings.push(`${what} ${Date.now() - started} ms`);
  return result;
}

beforeAll(async () => {
  sweepStale();
  expect(requiredBinaries(), "run npm run build and scripts/build-upstream.sh").toEqual([]);
  const apiServer = await timed("API server", () => startCluster({ advertiseAddress: GUEST_FORWARD_ADDRESS }));
  cluster = apiServer;
  api = new AdminApi(apiServer);
  port = Number(new URL(apiServer.server).port);
  // Never skipped: without qemu, the kernel or the forward, this throws and says why.
  guest = await timed("guest boot", () => bootGuest({ forwardPort: port }));
  useExecutor(guest);
  dir = mkdtempSync(join(guest.scratchDir, "cnit-multus-ipvlan-"));
  // The kubeconfigs the node's multus and whereabouts get: the API server at the guest's end of the forward.
  where = site({ ...apiServer, server: `https://${GUEST_FORWARD_ADDRESS}:${port}` }, dir);
  await createNad(api, "default", "ipvlan-conf", {
    cniVersion: "1.0.0",
    name: "ipvlan-conf",
    type: "ipvlan",
    master: "m0",
    mode: "l2",
    ipam: {
      ...(macvlanWhereabouts(where).ipam as Record<string, unknown>),
      range: "192.168.30.0/24",
      range_start: "192.168.30.10",
      range_end: "192.168.30.100",
      gateway: "192.168.30.1",
    },
  });
}, 240_000);
afterAll(async () => {
  // The namespaces are the guest's: removed there, before the harness goes back to this machine.
  if (guest) cleanup();
  useExecutor(localExecutor);
  await guest?.shutdown();
  api?.close();
  await cluster?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
  if (timings.length) console.log(`multus ipvlan in the guest: ${timings.join(", ")}`);
});

/**
 * A fresh node in the guest. Its whereabouts wrappers go back to the guest's root namespace (pid 1's,
 * where eth0 reaches the API server), not to this process's as conformance/kube/multus.ts's do.
 */
function guestNode(): MultusNode {
  const node = multusNode({ ...where, dir: mkdtempSync(join(where.dir, `run-${runs++}-`)) }, "node-0", 0);
  for (const impl of ["ours", "upstream"] as const) {
    const binary = impl === "ours" ? join(BIN, "whereabouts") : UPSTREAM_WHEREABOUTS;
    writeFileSync(
      join(node.binDir(impl), "whereabouts"),
      `#!/bin/sh\nexec unshare --mount sh -c 'mount --bind "$0" "$1" && exec nsenter --net="$2" "$3"' ${join(node.dir, "whereabouts.d")} ${where.flatDir} /proc/1/ns/net ${binary}\n`,
    );
  }
  return node;
}

/** What one ADD produced, everything read back. */
interface Seen {
  result: unknown;
  kernel: PodKernel;
  ipvlan: unknown;
  status: string | undefined;
  events: PodEvent[];
  log: string[];
  cached: string[];
  pool: string[];
}

/** MACs, ptp's host-side veth name and the sandbox path differ from run to run: placeholders. */
function normalized(value: unknown, sandbox: Sandbox): unknown {
  if (typeof value === "string") {
    if (/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(value)) return "<mac>";
    if (/^veth[0-9a-f]{8}$/.test(value)) return "<veth>";
    if (value === nsPath(sandbox.ns)) return "<netns>";
    return value;
  }
  if (Array.isArray(value)) return value.map((v) => normalized(v, sandbox));
  if (value && typeof value === "object") return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, normalized(v, sandbox)]));
  return value;
}

function macOf(kernel: PodKernel, ifname: string): string {
  const found = kernel.links.find((l) => l.ifname === ifname);
  if (!found) throw new Error(`no ${ifname} in the pod`);
  return found.address;
}

/** Events arrive after the plugin exits with upstream (client-go's broadcaster): wait for `count`. */
async function eventsOf(sandbox: Sandbox, count: number): Promise<PodEvent[]> {
  for (let waited = 0; ; waited += 100) {
    const events = await podEvents(api, sandbox.pod);
    if (events.length >= count || waited > 5000) return events;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** The pod through `impl` on a fresh node in the guest: ADD, then everything read back. */
async function add(impl: Impl): Promise<{ sandbox: Sandbox; seen: Seen }> {
  const node = guestNode();
  await deleteEvents(api, "default");
  const pod = await createPod(api, "default", POD, node.name, { "k8s.v1.cni.cncf.io/networks": "ipvlan-conf" });
  const sandbox = { pod, node, ns: netns("pod"), containerId: `ctr-${POD}` };
  const out = await timed(`${impl} ADD`, () => runMultus(impl, sandbox, "ADD", multusConf(node, impl)));
  expect(out.code, `${impl} ADD: ${out.stdout}${out.stderr}`).toBe(0);
  const net1 = link(sandbox.ns, "net1");
  const data = net1?.linkinfo?.info_data ?? {};
  return {
    sandbox,
    seen: {
      result: normalized(out.json, sandbox),
      kernel: podKernel(sandbox.ns),
      // ipvlan's own state: its mode and flag, and its master (not named from inside the pod).
      ipvlan: { mode: data.mode, bridge: data.bridge, master: net1?.link_index === link(node.host.ns, "m0")?.ifindex },
      status: (await podAnnotations(api, pod))[NETWORK_STATUS],
      events: await eventsOf(sandbox, 2),
      log: readFileSync(node.logFile, "utf8")
        .split("\n")
        .filter((line) => line.includes(`:${POD}:`)),
      cached: filesUnder(node.cniDir),
      pool: await poolEntries(api, POOL),
    },
  };
}

/** upstream's network-status text (NAD client `CreateNetworkStatuses`): each entry indented by 4, joined by ",". */
function statusText(entries: Record<string, unknown>[]): string {
  return `[${entries.map((e) => JSON.stringify(e, null, 4)).join(",")}]`;
}

/** What the pod must show after ADD, whichever multus made it. */
function expectPod(s: Seen): void {
  expect(s.result).toEqual({
    cniVersion: "1.0.0",
    interfaces: [
      { name: "<veth>", mac: "<mac>" },
      { name: "eth0", mac: "<mac>", sandbox: "<netns>" },
    ],
    ips: [{ address: ETH0, gateway: "10.244.0.1", interface: 1 }],
    routes: [{ dst: "0.0.0.0/0", gw: "10.244.0.1" }],
  });
  expect(withoutMacs(s.kernel)).toEqual({
    links: [
      { ifname: "eth0", kind: "veth", mtu: 1500, operstate: "UP", address: "<mac>", addresses: [ETH0] },
      { ifname: "lo", kind: "", mtu: 65536, operstate: "UNKNOWN", address: "00:00:00:00:00:00", addresses: ["127.0.0.1/8"] },
      // ipvlan reports no carrier state of its own: the kernel shows UNKNOWN (macvlan's is UP).
      { ifname: "net1", kind: "ipvlan", mtu: 1500, operstate: "UNKNOWN", address: "<mac>", addresses: [NET1] },
    ],
    routes: [
      "10.244.0.0/24 via 10.244.0.1 dev eth0 scope global",
      "10.244.0.1 dev eth0 scope link",
      "192.168.30.0/24 dev net1 scope link",
      "default via 10.244.0.1 dev eth0 scope global",
    ],
  });
  expect(s.ipvlan).toEqual({ mode: "l2", bridge: true, master: true });
  // Byte for byte, the MACs being the kernel's (net1's is the master's: ipvlan shares it).
  expect(s.status).toBe(
    statusText([
      { name: "podnet", interface: "eth0", ips: ["10.244.0.2"], mac: macOf(s.kernel, "eth0"), default: true, dns: {}, gateway: ["10.244.0.1"] },
      { name: "default/ipvlan-conf", interface: "net1", ips: ["192.168.30.10"], mac: macOf(s.kernel, "net1"), dns: {} },
    ]),
  );
  expect(s.events).toEqual([
    { type: "Normal", reason: "AddedInterface", message: `Add eth0 [${ETH0}] from podnet`, component: "multus" },
    { type: "Normal", reason: "AddedInterface", message: `Add net1 [${NET1}] from default/ipvlan-conf`, component: "multus" },
  ]);
  // upstream's log line per delegate: `<RFC 3339> [verbose] Add: <ns>:<pod>:<uid>:<name>(<network name>):<ifname> <result>`.
  const stamp = String.raw`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \[verbose\] Add: default:${POD}:[0-9a-f-]{36}:`;
  expect(s.log.map((line) => line.replace(/ \{.*$/, ""))).toEqual([
    expect.stringMatching(new RegExp(`${stamp}podnet\\(podnet\\):eth0$`)),
    expect.stringMatching(new RegExp(`${stamp}default\\/ipvlan-conf\\(ipvlan-conf\\):net1$`)),
  ]);
  expect(s.pool).toEqual([`192.168.30.10=default/${POD} net1`]);
}

function withoutMacs(kernel: PodKernel): PodKernel {
  return { ...kernel, links: kernel.links.map((l) => ({ ...l, address: l.ifname === "lo" ? l.address : "<mac>" })) };
}

/** DEL through `by`, then again through ours (a repeated DEL succeeds); then nothing may be left. */
async function del(by: Impl, sandbox: Sandbox): Promise<void> {
  for (const impl of [by, "ours"] as const) {
    const out = await timed(`${impl} DEL`, () => runMultus(impl, sandbox, "DEL", multusConf(sandbox.node, impl)));
    expect(out.code, `${impl} DEL: ${out.stdout}${out.stderr}`).toBe(0);
  }
  expect(leftovers(sandbox)).toEqual({ podLinks: [], hostLinks: [], leases: [], cniDir: [] });
  expect(await poolEntries(api, POOL), "IPPool entries").toEqual([]);
  deleteNetns(sandbox.ns);
}

describe("the guest's network", () => {
  /** Whether a TCP connection from the guest's root namespace to address:port opens within 3 s. */
  const connects = (address: string, port: number): boolean =>
    guest?.run(["timeout", "3", "bash", "-c", 'exec 3<>"/dev/tcp/$0/$1"', address, String(port)]).status === 0;

  test("reaches the API server through its one forward, and nothing else: not the host (10.0.2.2), not another port", () => {
    expect(connects(GUEST_FORWARD_ADDRESS, port)).toBe(true);
    expect(connects("10.0.2.2", port)).toBe(false);
    expect(connects(GUEST_FORWARD_ADDRESS, port + 1)).toBe(false);
  });
});

describe("an ipvlan NAD (ipvlan + whereabouts on the Kubernetes store), in the guest", () => {
  let upstreamSeen: Seen | undefined;

  test("upstream v4.3.0 ADD: result, kernel, IPPool, network-status, events, log; then our DEL of its attachment (in-place upgrade) leaves nothing", async () => {
    const { sandbox, seen } = await add("upstream");
    expectPod(seen);
    // upstream's scratch cache and libcni's result cache, which our DEL must read.
    expect(seen.cached).toEqual([`ctr-${POD}`, `results/ipvlan-conf-ctr-${POD}-net1`, `results/podnet-ctr-${POD}-eth0`]);
    upstreamSeen = seen;
    await del("ours", sandbox);
  }, 180_000);

  test("ours ADD: the same as upstream's; then upstream's DEL of ours (downgrade) leaves nothing", async () => {
    const { sandbox, seen } = await add("ours");
    expectPod(seen);
    if (!upstreamSeen) throw new Error("upstream's run did not complete: nothing to compare with");
    const upstream = upstreamSeen;
    const comparable = (s: Seen) => ({
      result: s.result,
      kernel: withoutMacs(s.kernel),
      ipvlan: s.ipvlan,
      status: s.status?.replace(/"mac": "[0-9a-f:]+"/g, '"mac": "<mac>"'),
      events: s.events,
      log: s.log.length,
      results: s.cached.filter((file) => file.startsWith("results/")),
      pool: s.pool,
    });
    expect(comparable(seen)).toEqual(comparable(upstream));
    await del("upstream", sandbox);
  }, 180_000);
});
