/**
 * The conformance cases of whereabouts that hold for every store: bin/whereabouts run as a
 * runtime runs an IPAM plugin, what it stored read back, races between real processes, and the
 * chain macvlan + whereabouts in real namespaces. conformance/whereabouts.test.ts runs them on
 * the file store, conformance/whereabouts-kube.test.ts on the Kubernetes store against a real
 * API server; each suite adds the cases only its store has.
 *
 * A suite describes its store as a StoreUnderTest: the ipam keys that pick it, and how to read
 * back what it holds, in upstream's IPPool and OverlappingRangeIPReservation shapes.
 */
import { afterEach, describe, expect, test } from "vitest";
import { spawn } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import {
  BIN,
  ROOT,
  addresses,
  cni,
  cniAsync,
  cniEnvironment,
  deleteNetns,
  link,
  netns,
  node,
  nsPath,
  routes,
  sweepStale,
  type CniCall,
  type CniOutput,
} from "./harness.ts";
import { startCluster, type Cluster } from "./kube/cluster.ts";
import { AdminApi, writeFlatFile } from "./kube/objects.ts";

export const WHEREABOUTS = join(BIN, "whereabouts");
/** Upstream v0.9.4's plugin, built by scripts/build-upstream.sh: the Kubernetes suites run it beside ours. */
export const UPSTREAM_WHEREABOUTS = join(ROOT, ".cache/upstream/whereabouts-v0.9.4/whereabouts");

/**
 * What a Kubernetes suite runs against: both binaries present, a real API server, its admin
 * client, and the flat file upstream refuses to run without (whereabouts `pkg/config/config.go`,
 * `GetFlatIPAM`).
 */
export async function startSideBySide(): Promise<{ cluster: Cluster; api: AdminApi; flatFile: string }> {
  sweepStale();
  for (const binary of [WHEREABOUTS, UPSTREAM_WHEREABOUTS]) {
    expect(existsSync(binary), `${binary} missing: run npm run build and scripts/build-upstream.sh`).toBe(true);
  }
  const cluster = await startCluster();
  return { cluster, api: new AdminApi(cluster), flatFile: writeFlatFile(cluster) };
}
const MACVLAN = join(BIN, "macvlan");

/** An IPPool's spec, as the file store writes it and the Kubernetes store's object holds it. */
export interface PoolSpec {
  range: string;
  allocations: Record<string, PoolEntry>;
}

/** Upstream's allocation entry, and what a store may add to it. */
interface PoolEntry {
  id: string;
  podref: string;
  ifname?: string;
  network?: string;
}

export interface StoreUnderTest {
  /** This test's node directory (datastore_dir), fresh for every test. */
  dir(): string;
  /** The ipam keys that pick and reach the store. */
  keys(): Record<string, unknown>;
  /** The pool's spec; throws when there is no such pool. `network`: the network_name ("default" when none). */
  pool(name: string, network?: string): Promise<PoolSpec>;
  /** A text that changes with every write of the pool: "nothing written" checks compare two. */
  poolVersion(name: string, network?: string): Promise<string>;
  /** The reservations' names, sorted. */
  reservations(network?: string): Promise<string[]>;
  /** Everything the store holds, and every file in dir(): empty when nothing was written. */
  stored(): Promise<string[]>;
  /**
   * The entry an ADD on CNI network `network` stores: upstream's {id, podref, ifname}, plus the
   * store's own fields (the file store records the network, for GC).
   */
  entry(upstream: PoolEntry, network: string): PoolEntry;
  /**
   * CNI_PATH for an interface plugin that runs inside a node's namespace and execs whereabouts
   * there. Default: bin/. A store that must be reached from the test's own namespace (the API
   * server listens on its loopback) gives a folder whose whereabouts runs there.
   */
  chainPath?(): string;
}

/**
 * A namespace for CNI_NETNS: IPAM never enters it, but ADD must name one other than its own.
 * Made on first use, and again if a test's cleanup removed it.
 */
let sandboxName: string | undefined;
function sandbox(): string {
  if (!sandboxName || !existsSync(nsPath(sandboxName))) sandboxName = netns("sbx");
  return nsPath(sandboxName);
}

/** The calls every whereabouts suite makes, on one store. */
export function driver(store: StoreUnderTest) {
  const ipam = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
    type: "whereabouts",
    ...store.keys(),
    range: "10.40.0.0/24",
    ...extra,
  });
  const conf = (ipamExtra: Record<string, unknown> = {}, top: Record<string, unknown> = {}): Record<string, unknown> => ({
    cniVersion: "1.0.0",
    name: "wbnet",
    type: "macvlan",
    ipam: ipam(ipamExtra),
    ...top,
  });
  const add = (n: number | string, config: Record<string, unknown> = conf(), extra: Partial<CniCall> = {}): CniOutput =>
    cni(WHEREABOUTS, call("ADD", n, extra), config);
  return { ipam, conf, add };
}

export function call(command: CniCall["command"], n: number | string, extra: Partial<CniCall> = {}): CniCall {
  return {
    command,
    containerId: `ctr-${n}`,
    netns: sandbox(),
    ifName: "net1",
    args: `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-${n};K8S_POD_UID=uid-${n}`,
    ...extra,
  };
}

/** The addresses of a successful ADD; fails the test with the plugin's output otherwise. */
export function ips(out: CniOutput): string[] {
  expect(out.code, out.stdout + out.stderr).toBe(0);
  return (out.json!.ips as { address: string }[]).map((ip) => ip.address);
}

/** Registers the shared cases; call at the top level of a suite that prepares `store` in beforeEach. */
export function whereaboutsCases(store: StoreUnderTest): void {
  const { ipam, conf, add } = driver(store);
  const pool = (name: string, network?: string) => store.pool(name, network);
  const reservations = (network?: string) => store.reservations(network);
  const entry = (n: number, network = "wbnet"): PoolEntry => store.entry({ id: `ctr-${n}`, podref: `default/pod-${n}`, ifname: "net1" }, network);

  describe("allocation", () => {
    test("lowest free first; the pool is the IPPool upstream would hold", async () => {
      expect(ips(add(1))).toEqual(["10.40.0.1/24"]);
      expect(ips(add(2))).toEqual(["10.40.0.2/24"]);
      expect(await pool("10.40.0.0-24")).toEqual({
        range: "10.40.0.0/24",
        allocations: { "1": entry(1), "2": entry(2) },
      });
      expect(await reservations()).toEqual(["10.40.0.1", "10.40.0.2"]);
    });

    test("exclusions (CIDRs and bare IPs), range_start and range_end", () => {
      const config = conf({ range: "10.40.0.0/24", range_start: "10.40.0.2", range_end: "10.40.0.9", exclude: ["10.40.0.0/30", "10.40.0.5"] });
      expect([1, 2, 3, 4, 5].map((n) => ips(add(n, config))[0])).toEqual(["10.40.0.4/24", "10.40.0.6/24", "10.40.0.7/24", "10.40.0.8/24", "10.40.0.9/24"]);
      expect(add(6, config).json).toMatchObject({ code: 102 });
    });

    test("A-B/P ranges, IPv4 and IPv6", async () => {
      expect(ips(add(1, conf({ range: "10.40.0.100-10.40.0.101/24" })))).toEqual(["10.40.0.100/24"]);
      expect(ips(add(2, conf({ range: "fd00:40::10-fd00:40::11/64" })))).toEqual(["fd00:40::10/64"]);
      expect(Object.keys((await pool("fd00-40---64")).allocations)).toEqual(["16"]);
    });

    test("a bad exclusion fails every verb at load, before anything is stored", async () => {
      const config = conf({ exclude: ["10.40.0.0/99"] });
      for (const command of ["ADD", "DEL"] as const) {
        const out = cni(WHEREABOUTS, call(command, 1), config);
        expect(out.code).toBe(1);
        expect(out.json).toMatchObject({ code: 7, msg: 'invalid exclude "10.40.0.0/99" in range 10.40.0.0/24: expected a CIDR or an IP address' });
      }
      expect(await store.stored()).toEqual([]);
    });

    test("dual stack: one address per range, the gateway on its own family only", async () => {
      const config = conf({ range: undefined, ipRanges: [{ range: "10.40.0.0/24" }, { range: "fd00:40::/64" }], gateway: "10.40.0.254" });
      const out = add(1, config);
      expect(out.json!.ips).toEqual([{ address: "10.40.0.1/24", gateway: "10.40.0.254" }, { address: "fd00:40::1/64" }]);
      expect((await pool("fd00-40---64")).allocations).toEqual({ "1": entry(1) });
      expect(await reservations()).toEqual(["10.40.0.1", "fd00-40--1"]);
    });

    test("the same pod and interface get their address back, from a new sandbox too", async () => {
      expect(ips(add(1))).toEqual(["10.40.0.1/24"]);
      expect(ips(add(1))).toEqual(["10.40.0.1/24"]);
      expect(ips(add(1, conf(), { containerId: "ctr-1-again" }))).toEqual(["10.40.0.1/24"]);
      expect((await pool("10.40.0.0-24")).allocations["1"]!.id).toBe("ctr-1-again");
      expect(ips(add(1, conf(), { ifName: "net2" }))).toEqual(["10.40.0.2/24"]);
    });

    test("an ADD without a pod name is refused: allocations are keyed by pod", () => {
      const out = add(1, conf(), { args: "IgnoreUnknown=1" });
      expect(out.json).toMatchObject({ code: 7, msg: expect.stringMatching(/K8S_POD_NAME/) });
    });
  });

  describe("result shapes", () => {
    const extra = { gateway: "10.40.0.254", routes: [{ dst: "172.31.0.0/16" }], dns: { nameservers: ["10.40.0.53"] } };

    test("1.0.0", () => {
      expect(add(1, conf(extra)).stdout).toBe(
        JSON.stringify(
          {
            cniVersion: "1.0.0",
            dns: { nameservers: ["10.40.0.53"] },
            ips: [{ address: "10.40.0.1/24", gateway: "10.40.0.254" }],
            routes: [{ dst: "172.31.0.0/16" }],
          },
          null,
          4,
        ),
      );
    });

    test("0.3.1", () => {
      expect(add(1, conf(extra, { cniVersion: "0.3.1" })).stdout).toBe(
        JSON.stringify(
          {
            cniVersion: "0.3.1",
            ips: [{ version: "4", address: "10.40.0.1/24", gateway: "10.40.0.254" }],
            routes: [{ dst: "172.31.0.0/16" }],
            dns: { nameservers: ["10.40.0.53"] },
          },
          null,
          4,
        ),
      );
    });

    test.each(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])("ADD answers in the config's version %s", (version) => {
      const out = add(1, conf({}, { cniVersion: version }));
      expect(out.code, out.stdout).toBe(0);
      expect(out.json!.cniVersion).toBe(version);
      expect(out.json!.ips).toEqual([{ ...(version.startsWith("0.") ? { version: "4" } : {}), address: "10.40.0.1/24" }]);
    });

    test("static addresses and CNI_ARGS IP= come after the allocated ones", () => {
      const out = add(1, conf({ addresses: [{ address: "192.168.9.9/24", gateway: "192.168.9.1" }] }), {
        args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-1;IP=192.168.8.8/24",
      });
      expect(out.json!.ips).toEqual([{ address: "10.40.0.1/24" }, { address: "192.168.9.9/24", gateway: "192.168.9.1" }, { address: "192.168.8.8/24" }]);
    });
  });

  describe("exhaustion", () => {
    test("a CNI error 102 naming the range, and nothing written", async () => {
      const config = conf({ range: "10.40.0.0/30" });
      ips(add(1, config));
      ips(add(2, config));
      const before = await store.poolVersion("10.40.0.0-30");
      const out = add(3, config);
      expect(out.code).toBe(1);
      expect(out.json).toEqual({ cniVersion: "1.0.0", code: 102, msg: "no free IP address left in range 10.40.0.0/30 (10.40.0.1-10.40.0.2)" });
      expect(await store.poolVersion("10.40.0.0-30")).toBe(before);
      expect(await reservations()).toEqual(["10.40.0.1", "10.40.0.2"]);
    });

    test("dual stack with the second range full: the first range's address is given back", async () => {
      const config = conf({ range: undefined, ipRanges: [{ range: "10.40.0.0/24" }, { range: "fd00:40::/126" }] });
      ips(add(1, config));
      ips(add(2, config));
      expect(add(3, config).json).toMatchObject({ code: 102 });
      expect(Object.keys((await pool("10.40.0.0-24")).allocations)).toEqual(["1", "2"]);
      expect(await reservations()).not.toContain("10.40.0.3");
    });
  });

  describe("DEL", () => {
    test("releases the address and its reservation; twice succeeds too", async () => {
      ips(add(1));
      const del = cni(WHEREABOUTS, call("DEL", 1), conf());
      expect(del.code, del.stdout).toBe(0);
      expect(del.stdout).toBe("");
      expect((await pool("10.40.0.0-24")).allocations).toEqual({});
      expect(await reservations()).toEqual([]);
      const again = cni(WHEREABOUTS, call("DEL", 1, { netns: undefined }), conf());
      expect(again.code, again.stdout).toBe(0);
    });

    test("in every range, also after a range where the container holds nothing", async () => {
      ips(add(1, conf({ range: "fd00:40::/64" })));
      const both = conf({ range: undefined, ipRanges: [{ range: "10.40.0.0/24" }, { range: "fd00:40::/64" }] });
      expect(cni(WHEREABOUTS, call("DEL", 1), both).code).toBe(0);
      expect((await pool("fd00-40---64")).allocations).toEqual({});
    });
  });

  describe("CHECK, GC, STATUS", () => {
    test("CHECK passes for the container's allocation and fails without one", () => {
      const out = add(1);
      const withPrev = conf({}, { prevResult: out.json });
      expect(cni(WHEREABOUTS, call("CHECK", 1), withPrev).code).toBe(0);
      const other = cni(WHEREABOUTS, call("CHECK", 2), conf());
      expect(other.code).toBe(1);
      expect(other.json!.msg).toBe("container ctr-2 has no address for net1 in range 10.40.0.0/24");
    });

    test("GC releases every allocation of the network on this node that is not a valid attachment", async () => {
      for (const n of [1, 2, 3]) ips(add(n));
      ips(add(2, conf(), { ifName: "net2" }));
      const gcConf = conf({}, { cniVersion: "1.1.0", "cni.dev/valid-attachments": [{ containerID: "ctr-2", ifname: "net1" }] });
      const out = cni(WHEREABOUTS, { command: "GC" }, gcConf);
      expect(out.code, out.stdout).toBe(0);
      expect((await pool("10.40.0.0-24")).allocations).toEqual({ "2": entry(2) });
      expect(await reservations()).toEqual(["10.40.0.2"]);
    });

    test("STATUS: ready while the range has room, code 50 once it is full", () => {
      const config = conf({ range: "10.40.0.0/30" }, { cniVersion: "1.1.0" });
      expect(cni(WHEREABOUTS, { command: "STATUS" }, config).code).toBe(0);
      ips(add(1, config));
      ips(add(2, config));
      const full = cni(WHEREABOUTS, { command: "STATUS" }, config);
      expect(full.json).toMatchObject({ code: 50, msg: "no free IP address left in range 10.40.0.0/30 (10.40.0.1-10.40.0.2)" });
    });
  });

  describe("networks and overlapping ranges", () => {
    test("network_name separates pools: the same range twice", async () => {
      expect(ips(add(1, conf({ network_name: "red" })))).toEqual(["10.40.0.1/24"]);
      expect(ips(add(2, conf({ network_name: "blue" })))).toEqual(["10.40.0.1/24"]);
      expect(Object.keys((await pool("red-10.40.0.0-24", "red")).allocations)).toEqual(["1"]);
      expect(Object.keys((await pool("blue-10.40.0.0-24", "blue")).allocations)).toEqual(["1"]);
      expect(await reservations("red")).toEqual(["red-10.40.0.1"]);
    });

    test("overlapping ranges never share an address while enable_overlapping_ranges is on", () => {
      expect(ips(add(1, conf({ range: "10.40.0.0/24" })))).toEqual(["10.40.0.1/24"]);
      expect(ips(add(2, conf({ range: "10.40.0.0/25" })))).toEqual(["10.40.0.2/25"]);
      expect(ips(add(3, conf({ range: "10.40.0.0/24" })))).toEqual(["10.40.0.3/24"]);
      expect(ips(add(4, conf({ range: "10.40.0.0/26", enable_overlapping_ranges: false })))).toEqual(["10.40.0.1/26"]);
    });
  });

  describe("races", () => {
    test("80 processes at once on 62 addresses: 62 succeed, 18 get code 102, no address twice", async () => {
      const config = conf({ range: "10.41.0.0/26" }); // .1 - .62
      const outs = await Promise.all(Array.from({ length: 80 }, (_, n) => cniAsync(WHEREABOUTS, call("ADD", n), config)));
      const succeeded = outs.filter((out) => out.code === 0);
      const failed = outs.filter((out) => out.code !== 0);
      expect(succeeded).toHaveLength(62);
      expect(failed.map((out) => out.json?.code)).toEqual(Array(18).fill(102));
      const given = succeeded.map((out) => ips(out)[0]!);
      expect(new Set(given).size).toBe(62);
      for (const address of given) expect(address).toMatch(/^10\.41\.0\.([1-9]|[1-5]\d|6[0-2])\/26$/);
      const stored = (await pool("10.41.0.0-26")).allocations;
      expect(Object.keys(stored)).toHaveLength(62);
      expect(new Set(Object.values(stored).map((a) => a.id)).size).toBe(62);
      expect(await reservations()).toHaveLength(62);
    });

    test("racing ADDs on overlapping pools, then racing DELs: nothing shared, nothing left", async () => {
      // 40 pods fit even if every one lands in the smaller pool's 62 addresses.
      const configs = [conf({ range: "10.41.0.0/25" }), conf({ range: "10.41.0.0/26" })];
      const outs = await Promise.all(Array.from({ length: 40 }, (_, n) => cniAsync(WHEREABOUTS, call("ADD", n), configs[n % 2])));
      const given = outs.map((out) => ips(out)[0]!.split("/")[0]);
      expect(new Set(given).size).toBe(40);
      const dels = await Promise.all(Array.from({ length: 40 }, (_, n) => cniAsync(WHEREABOUTS, call("DEL", n), configs[n % 2])));
      expect(dels.map((out) => out.code)).toEqual(Array(40).fill(0));
      expect((await pool("10.41.0.0-25")).allocations).toEqual({});
      expect((await pool("10.41.0.0-26")).allocations).toEqual({});
      expect(await reservations()).toEqual([]);
    });

    test("a process killed between reserving an address and writing the pool loses nothing: the next call frees the address", async () => {
      const config = conf({ range: "10.41.0.0/26" });
      ips(add(1, config));
      const before = await store.poolVersion("10.41.0.0-26");
      // sleep_for_race parks the ADD between claiming .2 and writing the pool (the file store
      // holds the pool's lock meanwhile).
      const slow = spawn(WHEREABOUTS, [], { env: cniEnvironment(call("ADD", 2)), stdio: ["pipe", "ignore", "ignore"] });
      slow.stdin.end(JSON.stringify(conf({ range: "10.41.0.0/26", sleep_for_race: 30 })));
      for (let waited = 0; !(await reservations()).includes("10.41.0.2"); waited += 20) {
        if (waited > 10_000) throw new Error("the slow ADD never reached its write");
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      slow.kill("SIGKILL");
      await new Promise((resolve) => slow.once("exit", resolve));
      expect(await store.poolVersion("10.41.0.0-26")).toBe(before);
      const started = performance.now();
      // The dead ADD logged its reservation of .2 in the node's journal before claiming it: the
      // next call on the node releases it (no pool entry backs it), and .2 is free again.
      expect(ips(add(3, config))).toEqual(["10.41.0.2/26"]);
      expect(performance.now() - started).toBeLessThan(5_000);
      expect(ips(add(2, config))).toEqual(["10.41.0.3/26"]);
      expect((await reservations()).sort()).toEqual(["10.41.0.1", "10.41.0.2", "10.41.0.3"]);
    });
  });

  describe("logging", () => {
    test("log_file gets the log (0600); stdout carries only the result", () => {
      const logFile = join(store.dir(), "whereabouts.log");
      const out = add(1, conf({ log_file: logFile, log_level: "debug" }));
      expect(JSON.parse(out.stdout)).toMatchObject({ ips: [{ address: "10.40.0.1/24" }] });
      expect(readFileSync(logFile, "utf8")).toMatch(/allocated 10\.40\.0\.1\/24 for default\/pod-1 net1/);
      expect(statSync(logFile).mode & 0o777).toBe(0o600);
    });
  });

  describe("macvlan + whereabouts in real namespaces", () => {
    const made: string[] = [];
    afterEach(() => {
      for (const name of made.splice(0)) deleteNetns(name);
    });

    test("the pod's net1 gets the allocated address, a gateway, and a route without gw via that gateway", async () => {
      const host = node();
      const pod = netns("pod");
      made.push(host.ns, host.wire, pod);
      const config = {
        cniVersion: "1.0.0",
        name: "storage",
        type: "macvlan",
        master: "m0",
        ipam: ipam({ range: "10.42.0.0/24", gateway: "10.42.0.1", routes: [{ dst: "172.31.0.0/16" }] }),
      };
      const path = store.chainPath?.() ?? BIN;
      const podCall = (command: CniCall["command"], n: number): CniCall => ({ ...call(command, n), netns: nsPath(pod), path });
      const out = cni(MACVLAN, podCall("ADD", 1), config, host.ns);
      expect(out.code, out.stdout + out.stderr).toBe(0);
      expect(out.json!.ips).toEqual([{ address: "10.42.0.2/24", gateway: "10.42.0.1", interface: 0 }]);
      expect(addresses(pod, "net1")).toEqual(["10.42.0.2/24"]);
      expect(routes(pod)).toContainEqual(expect.objectContaining({ dst: "172.31.0.0/16", gateway: "10.42.0.1", dev: "net1" }));
      expect((await pool("10.42.0.0-24")).allocations).toEqual({ "2": entry(1, "storage") });

      const check = cni(MACVLAN, podCall("CHECK", 1), { ...config, prevResult: out.json }, host.ns);
      expect(check.code, check.stdout).toBe(0);

      const del = cni(MACVLAN, podCall("DEL", 1), config, host.ns);
      expect(del.code, del.stdout).toBe(0);
      expect(link(pod, "net1")).toBeUndefined();
      expect((await pool("10.42.0.0-24")).allocations).toEqual({});
    });
  });
}
