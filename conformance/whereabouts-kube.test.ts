/**
 * whereabouts on the Kubernetes store, against a real kube-apiserver and etcd (conformance/kube,
 * one cluster for the whole file): the cases every store passes (whereabouts-cases.ts), the
 * objects as kubectl shows them, side by side with upstream v0.9.4 on the same API server, the
 * API server failing under the plugin, and the plugin running as its service account with the
 * ClusterRole of deploy/rbac.yaml. The 500-pod races are in whereabouts-races.test.ts.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from "vitest";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { KUBE_BIN, installerKubeconfigText, kubeconfigText, type Cluster } from "./kube/cluster.ts";
import { type AdminApi, NAMESPACE, WHEREABOUTS_API, type IPPool, type Reservation } from "./kube/objects.ts";
import { ROOT, cleanup, cni, cniAsync, deleteNetns, ip, netns, pluginDir, removeDir, type CniOutput } from "./harness.ts";
import { UPSTREAM_WHEREABOUTS, WHEREABOUTS, call, driver, ips, startSideBySide, whereaboutsCases, type StoreUnderTest } from "./whereabouts-cases.ts";

let cluster: Cluster;
let api: AdminApi;
/** This test's node: its datastore_dir (the DEL journal lives in it), fresh for every test. */
let dir: string;
/** A CNI_PATH whose whereabouts runs in this process's network namespace, where the API server is. */
let chainDir: string;
/** Upstream refuses to run without a flat file (whereabouts `pkg/config/config.go`, `GetFlatIPAM`): one naming the same kubeconfig. */
let flatFile: string;

const kubeStore: StoreUnderTest = {
  dir: () => dir,
  keys: () => ({ datastore: "kubernetes", kubernetes: { kubeconfig: cluster.kubeconfig }, datastore_dir: dir }),
  async pool(name) {
    const object = await api.pool(name);
    if (!object) throw new Error(`no IPPool ${name}`);
    return object.spec;
  },
  async poolVersion(name) {
    // resourceVersion changes with every write, including one that leaves the spec as it was.
    return JSON.stringify(await api.pool(name));
  },
  async reservations(network) {
    // One namespace holds every network's reservations; a named network's carry its prefix.
    const names = (await api.reservations()).map((r) => r.metadata.name);
    return names.filter((name) => !network || network === "default" || name.startsWith(`${network}-`)).sort();
  },
  async stored() {
    const objects = [...(await api.pools()), ...(await api.reservations())].map((o) => `${o.kind}/${o.metadata.name}`);
    // locks/ holds the node-local lock files that serialise this node's writers of a pool, and
    // their queues: no data. attachments/ is the node's ledger for GC, one file per attachment.
    const ledger = existsSync(join(dir, "attachments")) ? readdirSync(join(dir, "attachments")).map((name) => `attachments/${name}`) : [];
    return [...readdirSync(dir).filter((name) => name !== "locks" && name !== "attachments"), ...ledger, ...objects];
  },
  // Exactly upstream's fields: the CRD's schema would prune anything else.
  entry: (upstream) => upstream,
  chainPath: () => chainDir,
};

const { conf, add } = driver(kubeStore);

beforeAll(async () => {
  ({ cluster, api, flatFile } = await startSideBySide());
  chainDir = pluginDir({ whereabouts: `#!/bin/sh\nexec nsenter --net=/proc/${process.pid}/ns/net ${WHEREABOUTS}\n` });
});
beforeEach(async () => {
  await api.clear();
  dir = mkdtempSync(join(tmpdir(), "cnit-whereabouts-kube-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});
afterAll(async () => {
  api?.close();
  await cluster?.stop();
  if (chainDir) removeDir(chainDir);
  cleanup();
});

whereaboutsCases(kubeStore);

/** Starts the stopped API server again and waits until it serves whereabouts' resources. */
async function startApiServer(): Promise<void> {
  await cluster.startApiServer();
  await api.ready();
}

/** Upstream's config for the same network: the flat file it requires, the same kubeconfig. */
function upstreamConf(ipamExtra: Record<string, unknown> = {}): Record<string, unknown> {
  return conf({ configuration_path: flatFile, log_level: "error", ...ipamExtra });
}

function upstreamAdd(n: number | string, config: Record<string, unknown>, ifName = "net1"): CniOutput {
  return cni(UPSTREAM_WHEREABOUTS, call("ADD", n, { ifName }), config);
}

function del(binary: string, n: number | string, config: Record<string, unknown>, ifName = "net1"): void {
  const out = cni(binary, call("DEL", n, { ifName, netns: undefined }), config);
  expect(out.code, `${binary} DEL ctr-${n} ${ifName}: ${out.stdout}${out.stderr}`).toBe(0);
}

/** A pool's allocations as "<key>=<podref> <ifname> <id>", sorted: readable in a failure. */
async function entries(pool: string): Promise<string[]> {
  const object = await api.pool(pool);
  return Object.entries(object?.spec.allocations ?? {})
    .map(([key, a]) => `${key}=${a.podref} ${a.ifname ?? ""} ${a.id}`)
    .sort();
}

async function reservationHolders(): Promise<string[]> {
  return (await api.reservations()).map((r) => `${r.metadata.name}=${r.spec.podref} ${r.spec.ifname ?? ""}`).sort();
}

describe("objects on the API server", () => {
  test("kubectl get ippools,overlappingrangeipreservations -A -o json: upstream's objects, ours and upstream's alike", () => {
    // Upstream's README example range (192.168.2.225/28), dual stack, and a named network: every
    // naming rule of upstream's `IPPoolName` and `NormalizeIP` (whereabouts
    // `pkg/storage/kubernetes/ipam.go`; docs/whereabouts-kubernetes.md#objects). web-0 is ours,
    // web-1 upstream's, in the same pools.
    const addAs = (binary: "ours" | "upstream", pod: string, containerId: string, extra: Record<string, unknown>) =>
      ips(
        cni(
          binary === "ours" ? WHEREABOUTS : UPSTREAM_WHEREABOUTS,
          call("ADD", pod, { containerId, args: `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=${pod}` }),
          binary === "ours" ? conf({ log_level: "error", ...extra }) : upstreamConf(extra),
        ),
      );
    const dualStack = { range: undefined, ipRanges: [{ range: "192.168.2.225/28" }, { range: "fd00:0:0:10::/64" }] };
    expect(addAs("ours", "web-0", "0c85e190", dualStack)).toEqual(["192.168.2.225/28", "fd00:0:0:10::1/64"]);
    expect(addAs("upstream", "web-1", "9f3a11aa", dualStack)).toEqual(["192.168.2.226/28", "fd00:0:0:10::2/64"]);
    const named = { range: "10.0.0.0/8", network_name: "net-a" };
    expect(addAs("ours", "web-0", "0c85e190", named)).toEqual(["10.0.0.1/8"]);
    expect(addAs("upstream", "web-1", "9f3a11aa", named)).toEqual(["10.0.0.2/8"]);

    const list = JSON.parse(cluster.kubectl(["get", "ippools,overlappingrangeipreservations", "-A", "-o", "json"])) as { items: (IPPool | Reservation)[] };
    const server = { creationTimestamp: expect.any(String), generation: expect.any(Number), resourceVersion: expect.any(String), uid: expect.any(String) };
    const web0 = { id: "0c85e190", podref: "default/web-0", ifname: "net1" };
    const web1 = { id: "9f3a11aa", podref: "default/web-1", ifname: "net1" };
    const pool = (name: string, range: string, allocations: Record<string, unknown>) => ({
      apiVersion: "whereabouts.cni.cncf.io/v1alpha1",
      kind: "IPPool",
      metadata: { name, namespace: "kube-system", ...server },
      spec: { range, allocations },
    });
    const reservation = (name: string, podref: string) => ({
      apiVersion: "whereabouts.cni.cncf.io/v1alpha1",
      kind: "OverlappingRangeIPReservation",
      metadata: { name, namespace: "kube-system", ...server },
      spec: { podref, ifname: "net1" },
    });
    const byName = (a: { kind: string; metadata: { name: string } }, b: { kind: string; metadata: { name: string } }) =>
      `${a.kind}/${a.metadata.name}`.localeCompare(`${b.kind}/${b.metadata.name}`);
    expect([...list.items].sort(byName)).toEqual(
      [
        pool("192.168.2.224-28", "192.168.2.224/28", { "1": web0, "2": web1 }),
        pool("fd00-0-0-10---64", "fd00:0:0:10::/64", { "1": web0, "2": web1 }),
        pool("net-a-10.0.0.0-8", "10.0.0.0/8", { "1": web0, "2": web1 }),
        reservation("192.168.2.225", "default/web-0"),
        reservation("192.168.2.226", "default/web-1"),
        reservation("fd00-0-0-10--1", "default/web-0"),
        reservation("fd00-0-0-10--2", "default/web-1"),
        reservation("net-a-10.0.0.1", "default/web-0"),
        reservation("net-a-10.0.0.2", "default/web-1"),
      ].sort(byName),
    );
  });

  test("the API server's JSON Patch, which our pool writes rely on: a test for null passes for an absent entry only", async () => {
    ips(add(1));
    const path = `${WHEREABOUTS_API}/namespaces/${NAMESPACE}/ippools/10.40.0.0-24`;
    const patch = (key: string) =>
      api.raw(
        "PATCH",
        path,
        [
          { op: "test", path: `/spec/allocations/${key}`, value: null },
          { op: "add", path: `/spec/allocations/${key}`, value: { id: "ctr-x", podref: "default/x", ifname: "net1" } },
        ],
        "application/json-patch+json",
      );
    // .1 is pod-1's: a second writer of it is refused, and pod-1 keeps it.
    expect((await patch("1")).status).toBe(422);
    expect(await entries("10.40.0.0-24")).toEqual(["1=default/pod-1 net1 ctr-1"]);
    // .5 is free: the write goes in, whatever else was written since it was read.
    expect((await patch("5")).status).toBe(200);
    expect(await entries("10.40.0.0-24")).toEqual(["1=default/pod-1 net1 ctr-1", "5=default/x net1 ctr-x"]);
  });

  test("objects live in the namespace of the kubeconfig's current context", () => {
    cluster.kubectl(["create", "namespace", "cni-ns"]);
    const kubeconfig = join(dir, "ns.kubeconfig");
    writeFileSync(
      kubeconfig,
      kubeconfigText({ server: cluster.server, caFile: cluster.caFile, token: cluster.adminToken, namespace: "cni-ns", user: "admin" }),
    );
    ips(add(1, conf({ kubernetes: { kubeconfig } })));
    expect(cluster.kubectl(["get", "ippools,overlappingrangeipreservations", "-n", "cni-ns", "-o", "name"]).split("\n").filter(Boolean).sort()).toEqual([
      "ippool.whereabouts.cni.cncf.io/10.40.0.0-24",
      "overlappingrangeipreservation.whereabouts.cni.cncf.io/10.40.0.1",
    ]);
    cluster.kubectl(["delete", "namespace", "cni-ns", "--wait=false"]);
  });
});

describe("the connection to the API server (TLS, as the kubeconfig says)", () => {
  /** Beside the node's folder, whose contents the cases check. */
  const changedKubeconfig = () => `${dir}.kubeconfig`;
  afterEach(() => rmSync(changedKubeconfig(), { force: true }));

  /** The cluster's kubeconfig with its cluster entry (server, CA, insecure-skip-tls-verify) or its user entry replaced. */
  function kubeconfigWith(change: { cluster?: Record<string, unknown>; user?: Record<string, string> }): string {
    const kubeconfig = JSON.parse(readFileSync(cluster.kubeconfig, "utf8")) as {
      clusters: { cluster: Record<string, unknown> }[];
      users: { user: Record<string, string> }[];
    };
    if (change.cluster) kubeconfig.clusters[0]!.cluster = change.cluster;
    if (change.user) kubeconfig.users[0]!.user = change.user;
    const path = changedKubeconfig();
    writeFileSync(path, JSON.stringify(kubeconfig), { mode: 0o600 });
    return path;
  }

  test("a server certificate no CA of the kubeconfig signed is refused: code 11, the certificate named, nothing written", async () => {
    // Real roots (Debian's bundle), none of which signed the test cluster's certificate.
    const kubeconfig = kubeconfigWith({ cluster: { server: cluster.server, "certificate-authority": "/etc/ssl/certs/ca-certificates.crt" } });
    const out = add(1, conf({ kubernetes: { kubeconfig, timeout_ms: 3000 } }));
    expect(out.json, out.stderr).toMatchObject({ code: 11, msg: expect.stringMatching(/certificate/) });
    expect(await kubeStore.stored()).toEqual([]);
  });

  test("the server's name is checked: its certificate does not name localhost, so https://localhost is refused", async () => {
    const kubeconfig = kubeconfigWith({ cluster: { server: cluster.server.replace("127.0.0.1", "localhost"), "certificate-authority": cluster.caFile } });
    const out = add(1, conf({ kubernetes: { kubeconfig, timeout_ms: 3000 } }));
    expect(out.json, out.stderr).toMatchObject({ code: 11, msg: expect.stringMatching(/certificate/) });
    expect(await kubeStore.stored()).toEqual([]);
  });

  test("the kubeconfig upstream's installer writes: YAML, the CA inline as certificate-authority-data", () => {
    const path = changedKubeconfig();
    writeFileSync(path, installerKubeconfigText({ server: cluster.server, caFile: cluster.caFile, token: cluster.adminToken, namespace: NAMESPACE }), {
      mode: 0o600,
    });
    expect(ips(add(1, conf({ kubernetes: { kubeconfig: path } })))).toEqual(["10.40.0.1/24"]);
  });

  test("a kubeconfig that is neither JSON nor YAML is code 7, naming the file", () => {
    const path = changedKubeconfig();
    writeFileSync(path, "clusters: [\n  - {name: local\n", { mode: 0o600 });
    const out = add(1, conf({ kubernetes: { kubeconfig: path } }));
    expect(out.json, out.stderr).toMatchObject({ code: 7, msg: expect.stringMatching(/not valid YAML/) });
    expect(out.json!.msg).toContain(path);
  });

  test("a client certificate instead of a token: files, or inline as -data", () => {
    const files = kubeconfigWith({ user: { "client-certificate": cluster.clientCertFile, "client-key": cluster.clientKeyFile } });
    expect(ips(add(1, conf({ kubernetes: { kubeconfig: files } })))).toEqual(["10.40.0.1/24"]);
    const inline = kubeconfigWith({
      user: {
        "client-certificate-data": readFileSync(cluster.clientCertFile).toString("base64"),
        "client-key-data": readFileSync(cluster.clientKeyFile).toString("base64"),
      },
    });
    expect(ips(add(2, conf({ kubernetes: { kubeconfig: inline } })))).toEqual(["10.40.0.2/24"]);
    // Without credentials the request is anonymous's, whom RBAC refuses: no address.
    const anonymous = kubeconfigWith({ user: {} });
    const refused = add(3, conf({ kubernetes: { kubeconfig: anonymous } }));
    expect(refused.json, refused.stderr).toMatchObject({ code: 999, msg: expect.stringMatching(/refused a request.*"system:anonymous"/) });
  });

  test("insecure-skip-tls-verify: no CA, no check, and the ADD goes through", () => {
    const kubeconfig = kubeconfigWith({ cluster: { server: cluster.server, "insecure-skip-tls-verify": true } });
    expect(ips(add(1, conf({ kubernetes: { kubeconfig } })))).toEqual(["10.40.0.1/24"]);
  });
});

describe("GC on a cluster-wide store", () => {
  test("GC releases this node's garbage, never what another node allocated", async () => {
    // A runtime's valid-attachments list names its own node's attachments only: the other
    // nodes' pods in the same pool are not garbage, whatever the list says. Each node goes by
    // its ledger of what its own ADDs allocated.
    const otherNode = mkdtempSync(join(tmpdir(), "cnit-whereabouts-kube-"));
    const gc = (valid: number[], extra: Record<string, unknown> = {}) => {
      const out = cni(
        WHEREABOUTS,
        { command: "GC" },
        conf(extra, { cniVersion: "1.1.0", "cni.dev/valid-attachments": valid.map((n) => ({ containerID: `ctr-${n}`, ifname: "net1" })) }),
      );
      expect(out.code, out.stdout + out.stderr).toBe(0);
    };
    try {
      ips(add(1, conf({ datastore_dir: otherNode })));
      ips(add(2));
      ips(add(3));
      gc([2]);
      expect(await entries("10.40.0.0-24")).toEqual(["1=default/pod-1 net1 ctr-1", "2=default/pod-2 net1 ctr-2"]);
      expect(await reservationHolders()).toEqual(["10.40.0.1=default/pod-1 net1", "10.40.0.2=default/pod-2 net1"]);
      expect(readdirSync(join(kubeStore.dir(), "attachments"))).toEqual(["wbnet:ctr-2:net1.attachment.json"]);
      expect(statSync(join(kubeStore.dir(), "attachments", "wbnet:ctr-2:net1.attachment.json")).mode & 0o777).toBe(0o600);
      // The other node's runtime has nothing valid left: its pod goes, this node's stays.
      gc([], { datastore_dir: otherNode });
      expect(await entries("10.40.0.0-24")).toEqual(["2=default/pod-2 net1 ctr-2"]);
      // DEL takes the attachment out of the ledger.
      expect(cni(WHEREABOUTS, call("DEL", 2), conf()).code).toBe(0);
      expect(readdirSync(join(kubeStore.dir(), "attachments"))).toEqual([]);
      // An ADD still running is in no runtime's list yet: GC leaves it alone.
      const slow = cniAsync(WHEREABOUTS, call("ADD", 4), conf({ sleep_for_race: 2 }));
      for (let waited = 0; !existsSync(join(kubeStore.dir(), "attachments", "wbnet:ctr-4:net1.attachment.json")); waited += 20) {
        if (waited > 10_000) throw new Error("the slow ADD never recorded its attachment");
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      gc([]);
      expect(ips(await slow)).toEqual(["10.40.0.1/24"]);
      expect(await entries("10.40.0.0-24")).toEqual(["1=default/pod-4 net1 ctr-4"]);
      expect(readdirSync(join(kubeStore.dir(), "attachments")), "still recorded for a later GC").toEqual(["wbnet:ctr-4:net1.attachment.json"]);
    } finally {
      rmSync(otherNode, { recursive: true, force: true });
    }
  });
});

describe("side by side with upstream v0.9.4 on one API server", () => {
  test("alternating ADDs from one range: the lowest free address each time, none twice; each DELs what the other allocated", async () => {
    const ours = conf({ range: "10.60.0.0/24", log_level: "error" });
    const theirs = upstreamConf({ range: "10.60.0.0/24" });
    for (let n = 1; n <= 10; n++) {
      const out = n % 2 ? add(n, ours) : upstreamAdd(n, theirs);
      expect(ips(out), `pod-${n} (${n % 2 ? "ours" : "upstream"})`).toEqual([`10.60.0.${n}/24`]);
    }
    expect(await entries("10.60.0.0-24")).toEqual(Array.from({ length: 10 }, (_, i) => `${i + 1}=default/pod-${i + 1} net1 ctr-${i + 1}`).sort());
    expect(await reservationHolders()).toEqual(Array.from({ length: 10 }, (_, i) => `10.60.0.${i + 1}=default/pod-${i + 1} net1`).sort());

    // Cross DEL: ours releases upstream's pods, upstream releases ours.
    for (let n = 1; n <= 10; n++) del(n % 2 ? UPSTREAM_WHEREABOUTS : WHEREABOUTS, n, n % 2 ? theirs : ours);
    expect(await entries("10.60.0.0-24")).toEqual([]);
    expect(await reservationHolders()).toEqual([]);

    // What either freed, the other hands out again, lowest first.
    expect(ips(upstreamAdd(11, theirs))).toEqual(["10.60.0.1/24"]);
    expect(ips(add(12, ours))).toEqual(["10.60.0.2/24"]);
  });

  test("DEL goes by container ID and interface: one pod's two interfaces, each released by the other binary", async () => {
    const ours = conf({ range: "10.60.0.0/24", log_level: "error" });
    const theirs = upstreamConf({ range: "10.60.0.0/24" });
    expect(ips(add(20, ours, { ifName: "net1" }))).toEqual(["10.60.0.1/24"]);
    expect(ips(upstreamAdd(20, theirs, "net2"))).toEqual(["10.60.0.2/24"]);
    del(UPSTREAM_WHEREABOUTS, 20, theirs, "net1");
    expect(await entries("10.60.0.0-24")).toEqual(["2=default/pod-20 net2 ctr-20"]);
    expect(await reservationHolders()).toEqual(["10.60.0.2=default/pod-20 net2"]);
    del(WHEREABOUTS, 20, ours, "net2");
    expect(await entries("10.60.0.0-24")).toEqual([]);
    expect(await reservationHolders()).toEqual([]);
  });

  test("overlapping ranges: each binary honours the other's reservations", async () => {
    // Two pools over the same addresses; with enable_overlapping_ranges (the default) an
    // address held in one is off limits in the other, whoever wrote the reservation.
    const wide = { range: "10.61.0.0/24", enable_overlapping_ranges: true };
    const narrow = { range: "10.61.0.0/25", enable_overlapping_ranges: true };
    expect(ips(add(1, conf({ ...wide, log_level: "error" })))).toEqual(["10.61.0.1/24"]);
    expect(ips(upstreamAdd(2, upstreamConf(narrow))), "upstream skips ours").toEqual(["10.61.0.2/25"]);
    expect(ips(upstreamAdd(3, upstreamConf(wide))), "upstream skips its own in the other pool").toEqual(["10.61.0.3/24"]);
    expect(ips(add(4, conf({ ...narrow, log_level: "error" }))), "ours skips upstream's").toEqual(["10.61.0.4/25"]);
    expect(await entries("10.61.0.0-24")).toEqual(["1=default/pod-1 net1 ctr-1", "3=default/pod-3 net1 ctr-3"]);
    expect(await entries("10.61.0.0-25")).toEqual(["2=default/pod-2 net1 ctr-2", "4=default/pod-4 net1 ctr-4"]);
    expect(await reservationHolders()).toEqual([
      "10.61.0.1=default/pod-1 net1",
      "10.61.0.2=default/pod-2 net1",
      "10.61.0.3=default/pod-3 net1",
      "10.61.0.4=default/pod-4 net1",
    ]);
    // Released the other way round, the reservations go with the allocations.
    del(UPSTREAM_WHEREABOUTS, 1, upstreamConf(wide));
    del(WHEREABOUTS, 2, conf(narrow));
    expect(await reservationHolders()).toEqual(["10.61.0.3=default/pod-3 net1", "10.61.0.4=default/pod-4 net1"]);
    expect(ips(upstreamAdd(5, upstreamConf(narrow)))).toEqual(["10.61.0.1/25"]);
    expect(ips(add(6, conf(wide)))).toEqual(["10.61.0.2/24"]);
  });
});

/**
 * Upstream serialises its ADDs through a Lease; we take none, so an upstream ADD can run at the
 * same time as ours. sleep_for_race (both binaries: after choosing an address, before writing
 * the pool; upstream after reading the address's reservation, we after claiming it) holds one
 * of them in the middle of its ADD while the other runs, forcing each interleaving the Lease
 * would have prevented. None may hand out an address twice.
 */
describe("interleavings a shared Lease would prevent", () => {
  const range = "10.63.0.0/24";
  const ours = (extra: Record<string, unknown> = {}) =>
    conf({ range, log_level: "error", kubernetes: { kubeconfig: cluster.kubeconfig, timeout_ms: 20_000 }, ...extra });
  const theirs = (extra: Record<string, unknown> = {}) => upstreamConf({ range, ...extra });

  async function until(what: string, condition: () => Promise<boolean>): Promise<void> {
    for (let waited = 0; !(await condition()); waited += 20) {
      if (waited > 10_000) throw new Error(`waited 10 s for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
  const leaseHolder = async () =>
    (await api.send<{ spec: { holderIdentity?: string } }>("GET", `/apis/coordination.k8s.io/v1/namespaces/${NAMESPACE}/leases/whereabouts`))?.spec
      .holderIdentity;
  const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  beforeEach(() => {
    // The pool exists and holds .1: every case below chooses .2 first.
    expect(ips(add(0, ours()))).toEqual(["10.63.0.1/24"]);
  });

  test("upstream writes a pool it read before our write: its resourceVersion test fails and it takes the next address", async () => {
    const upstream = cniAsync(UPSTREAM_WHEREABOUTS, call("ADD", "u"), theirs({ sleep_for_race: 2 }));
    // Upstream holds the Lease, has read the pool and .2's reservation, and sleeps.
    await until("upstream to hold its Lease", async () => (await leaseHolder()) === "default/pod-u");
    await pause(500);
    expect(ips(add("o", ours()))).toEqual(["10.63.0.2/24"]);
    expect(ips(await upstream)).toEqual(["10.63.0.3/24"]);
    expect(await entries("10.63.0.0-24")).toEqual(["1=default/pod-0 net1 ctr-0", "2=default/pod-o net1 ctr-o", "3=default/pod-u net1 ctr-u"]);
    expect(await reservationHolders()).toEqual(["10.63.0.1=default/pod-0 net1", "10.63.0.2=default/pod-o net1", "10.63.0.3=default/pod-u net1"]);
  });

  test("we claim an address and have not written the pool yet: upstream skips the address, and our write of another entry goes in", async () => {
    const oursAdd = cniAsync(WHEREABOUTS, call("ADD", "o"), ours({ sleep_for_race: 3 }));
    await until("our claim of 10.63.0.2", async () => (await kubeStore.reservations()).includes("10.63.0.2"));
    expect(ips(upstreamAdd("u", theirs()))).toEqual(["10.63.0.3/24"]);
    expect(ips(await oursAdd)).toEqual(["10.63.0.2/24"]);
    expect(await entries("10.63.0.0-24")).toEqual(["1=default/pod-0 net1 ctr-0", "2=default/pod-o net1 ctr-o", "3=default/pod-u net1 ctr-u"]);
    expect(await reservationHolders()).toEqual(["10.63.0.1=default/pod-0 net1", "10.63.0.2=default/pod-o net1", "10.63.0.3=default/pod-u net1"]);
  });

  test("we claim the address upstream checked a moment before: upstream's ADD fails after writing its entry (its IPManagementKubernetesUpdate, whereabouts pkg/storage/kubernetes/ipam.go), and its retry heals", async () => {
    const upstream = cniAsync(UPSTREAM_WHEREABOUTS, call("ADD", "u"), theirs({ sleep_for_race: 2 }));
    await until("upstream to hold its Lease", async () => (await leaseHolder()) === "default/pod-u");
    // Upstream found .2 free and unreserved, and sleeps before its pool write; we claim .2 now.
    await pause(300);
    const oursAdd = cniAsync(WHEREABOUTS, call("ADD", "o"), ours({ sleep_for_race: 4 }));
    await until("our claim of 10.63.0.2", async () => (await kubeStore.reservations()).includes("10.63.0.2"));
    const failed = await upstream;
    expect(failed.json, failed.stderr).toMatchObject({
      code: 999,
      msg: 'error at storage engine: overlappingrangeipreservations.whereabouts.cni.cncf.io "10.63.0.2" already exists',
    });
    // Upstream's pool write went in; ours, stale now, is redone on the next free address.
    expect(ips(await oursAdd)).toEqual(["10.63.0.3/24"]);
    expect(await entries("10.63.0.0-24")).toEqual(["1=default/pod-0 net1 ctr-0", "2=default/pod-u net1 ctr-u", "3=default/pod-o net1 ctr-o"]);
    expect(await reservationHolders(), "ours released .2 when it moved to .3").toEqual(["10.63.0.1=default/pod-0 net1", "10.63.0.3=default/pod-o net1"]);
    // The runtime retries the failed ADD: upstream finds the pod's entry and reserves it.
    expect(ips(upstreamAdd("u", theirs()))).toEqual(["10.63.0.2/24"]);
    expect(await reservationHolders()).toEqual(["10.63.0.1=default/pod-0 net1", "10.63.0.2=default/pod-u net1", "10.63.0.3=default/pod-o net1"]);
  });
});

describe("the API server failing", () => {
  afterEach(async () => {
    // A failed test must not leave the next one without an API server.
    if ((await api.raw("GET", "/readyz").catch(() => ({ status: 0 }))).status !== 200) await startApiServer();
  });

  test("ADD with the API server down fails fast with code 11 and writes nothing; STATUS answers 50", async () => {
    await cluster.stopApiServer();
    const started = performance.now();
    const out = add(1, conf({ kubernetes: { kubeconfig: cluster.kubeconfig, timeout_ms: 2000 } }));
    const elapsed = performance.now() - started;
    expect(out.code, out.stdout + out.stderr).toBe(1);
    expect(out.json).toMatchObject({ code: 11, msg: expect.stringMatching(/try again later/) });
    expect(elapsed).toBeLessThan(2000 + 1000);
    const status = cni(WHEREABOUTS, { command: "STATUS" }, conf({ kubernetes: { kubeconfig: cluster.kubeconfig, timeout_ms: 2000 } }, { cniVersion: "1.1.0" }));
    expect(status.json).toMatchObject({ code: 50 });
    await startApiServer();
    expect(await kubeStore.stored()).toEqual([]);
  });

  test("ADD against an API server that never answers gives up with code 11 after timeout_ms", async () => {
    // A listener that accepts connections and never says a word: a hung API server.
    const sockets: Socket[] = [];
    const silent: Server = createServer((socket) => {
      // The plugin hangs up when it gives up: a reset is expected, not an error of the test.
      socket.on("error", () => {});
      sockets.push(socket);
    });
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const address = silent.address();
    const port = typeof address === "object" && address ? address.port : 0;
    const kubeconfig = join(dir, "silent.kubeconfig");
    writeFileSync(kubeconfig, kubeconfigText({ server: `https://127.0.0.1:${port}`, caFile: cluster.caFile, token: "t", namespace: NAMESPACE, user: "u" }));
    try {
      for (const timeout of [500, 1500]) {
        const started = performance.now();
        const out = await cniAsync(WHEREABOUTS, call("ADD", 1), conf({ kubernetes: { kubeconfig, timeout_ms: timeout } }));
        const elapsed = performance.now() - started;
        expect(out.json, out.stderr).toMatchObject({ code: 11 });
        expect(elapsed, `timeout_ms ${timeout}`).toBeGreaterThanOrEqual(timeout);
        expect(elapsed, `timeout_ms ${timeout}`).toBeLessThan(timeout + 1000);
      }
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  test("ADD against an API server address that drops every packet exits with code 11 after timeout_ms", () => {
    // The plugin's namespace reaches 10.99.0.2 through a veth whose other end, in a namespace
    // of its own, has no such address and drops every SYN (a static neighbour entry: no ARP to
    // fail fast). The connection never opens, and the plugin must not linger in its attempt.
    const ns = netns("blackhole");
    const peer = netns("hole");
    try {
      ip(ns, "link", "add", "hole0", "type", "veth", "peer", "name", "hole1", "netns", peer);
      ip(ns, "addr", "add", "10.99.0.1/24", "dev", "hole0");
      ip(ns, "link", "set", "hole0", "up");
      ip(peer, "link", "set", "hole1", "up");
      ip(ns, "neigh", "add", "10.99.0.2", "lladdr", "02:00:00:00:99:02", "dev", "hole0", "nud", "permanent");
      const kubeconfig = join(dir, "blackhole.kubeconfig");
      writeFileSync(kubeconfig, kubeconfigText({ server: "https://10.99.0.2:6443", caFile: cluster.caFile, token: "t", namespace: NAMESPACE, user: "u" }));
      const started = performance.now();
      const out = cni(WHEREABOUTS, call("ADD", 1), conf({ kubernetes: { kubeconfig, timeout_ms: 500 } }), ns);
      const elapsed = performance.now() - started;
      expect(out.json, out.stderr).toMatchObject({ code: 11, msg: expect.stringMatching(/timed out/) });
      expect(elapsed).toBeLessThan(500 + 1000);
    } finally {
      // The veth goes with its namespaces.
      deleteNetns(ns);
      deleteNetns(peer);
    }
  });

  test("DEL with the API server down succeeds and journals the release (0600); the next call replays it", async () => {
    const config = conf({ kubernetes: { kubeconfig: cluster.kubeconfig, timeout_ms: 2000 } });
    expect(ips(add(1, config))).toEqual(["10.40.0.1/24"]);
    expect(ips(add(2, config))).toEqual(["10.40.0.2/24"]);
    await cluster.stopApiServer();
    const started = performance.now();
    const out = cni(WHEREABOUTS, call("DEL", 1), config);
    expect(out.code, out.stdout + out.stderr).toBe(0);
    expect(out.stdout).toBe("");
    expect(performance.now() - started).toBeLessThan(2000 + 1000);
    const journal = join(dir, "journal");
    const pending = readdirSync(journal);
    expect(pending).toHaveLength(1);
    expect(statSync(join(journal, pending[0]!)).mode & 0o777).toBe(0o600);
    // Still down: a call that cannot reach the API keeps the entry.
    expect(cni(WHEREABOUTS, { command: "STATUS" }, { ...config, cniVersion: "1.1.0" }).json).toMatchObject({ code: 50 });
    expect(readdirSync(journal)).toEqual(pending);

    await startApiServer();
    expect(await entries("10.40.0.0-24")).toEqual(["1=default/pod-1 net1 ctr-1", "2=default/pod-2 net1 ctr-2"]);
    // The next invocation on this node, whatever its verb, replays the journal first.
    expect(cni(WHEREABOUTS, { command: "STATUS" }, { ...config, cniVersion: "1.1.0" }).code).toBe(0);
    expect(readdirSync(journal)).toEqual([]);
    expect(await entries("10.40.0.0-24")).toEqual(["2=default/pod-2 net1 ctr-2"]);
    expect(await reservationHolders()).toEqual(["10.40.0.2=default/pod-2 net1"]);
    expect(ips(add(3, config))).toEqual(["10.40.0.1/24"]);
  });

  test.each(["ADD", "DEL", "GC", "CHECK"] as const)("a journalled DEL is replayed by the node's next %s", async (verb) => {
    const config = conf({ kubernetes: { kubeconfig: cluster.kubeconfig, timeout_ms: 2000 } }, { cniVersion: "1.1.0" });
    expect(ips(add(1, config))).toEqual(["10.40.0.1/24"]);
    expect(ips(add(2, config))).toEqual(["10.40.0.2/24"]);
    await cluster.stopApiServer();
    expect(cni(WHEREABOUTS, call("DEL", 1), config).code).toBe(0);
    await startApiServer();
    // One node = one datastore_dir: a call on another node leaves this node's journal alone.
    const otherNode = mkdtempSync(join(tmpdir(), "cnit-whereabouts-kube-"));
    try {
      expect(ips(add(3, conf({ datastore_dir: otherNode })))).toEqual(["10.40.0.3/24"]);
    } finally {
      rmSync(otherNode, { recursive: true, force: true });
    }
    expect(readdirSync(join(dir, "journal"))).toHaveLength(1);
    const out =
      verb === "GC"
        ? cni(WHEREABOUTS, { command: "GC" }, { ...config, "cni.dev/valid-attachments": [2, 3].map((n) => ({ containerID: `ctr-${n}`, ifname: "net1" })) })
        : cni(WHEREABOUTS, call(verb, verb === "DEL" ? 9 : 2), config);
    expect(out.code, out.stdout + out.stderr).toBe(0);
    expect(readdirSync(join(dir, "journal"))).toEqual([]);
    expect(await entries("10.40.0.0-24")).toEqual(["2=default/pod-2 net1 ctr-2", "3=default/pod-3 net1 ctr-3"]);
    expect(await reservationHolders()).toEqual(["10.40.0.2=default/pod-2 net1", "10.40.0.3=default/pod-3 net1"]);
  });

  test("the API server stopped during a race and started again: no address twice, no allocation lost, nothing leaked after the retries", async () => {
    const pods = 60;
    // Ten nodes, each its own datastore_dir (and so its own journal).
    const nodes = Array.from({ length: 10 }, () => mkdtempSync(join(tmpdir(), "cnit-whereabouts-node-")));
    const config = (n: number) =>
      conf({ range: "10.62.0.0/24", datastore_dir: nodes[n % 10], kubernetes: { kubeconfig: cluster.kubeconfig, timeout_ms: 3000 }, log_level: "error" });
    try {
      const racing = Array.from({ length: pods }, (_, n) => cniAsync(WHEREABOUTS, call("ADD", n), config(n)));
      // Pull the API server out from under the race once some allocations are in.
      for (let waited = 0; Object.keys((await api.pool("10.62.0.0-24"))?.spec.allocations ?? {}).length < 10; waited += 20) {
        if (waited > 30_000) throw new Error("the race never got 10 allocations in");
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      await cluster.stopApiServer();
      const outs = await Promise.all(racing);
      await startApiServer();

      const succeeded = new Map<number, string>();
      outs.forEach((out, n) => {
        if (out.code === 0) succeeded.set(n, ips(out)[0]!.split("/")[0]!);
        // The only acceptable failure: "try again later".
        else expect(out.json, `pod-${n}: ${out.stdout}${out.stderr}`).toMatchObject({ code: 11 });
      });
      expect(succeeded.size, "some ADDs finished before the API server stopped").toBeGreaterThanOrEqual(10);
      expect(succeeded.size, "some ADDs were cut off").toBeLessThan(pods);
      expect(new Set(succeeded.values()).size, "no address given twice").toBe(succeeded.size);

      // Every success is stored as the pod's; an ADD that failed may have its entry stored too
      // (its write reached etcd, the answer did not reach the plugin), never a second one.
      const stored = (await api.pool("10.62.0.0-24"))!.spec.allocations;
      const holder = new Map<string, string>(Object.entries(stored).map(([key, a]) => [`10.62.0.${key}`, a.podref]));
      for (const [n, address] of succeeded) expect(holder.get(address), `pod-${n}'s ${address}`).toBe(`default/pod-${n}`);
      const podrefs = Object.values(stored).map((a) => a.podref);
      expect(new Set(podrefs).size, "one entry per pod").toBe(podrefs.length);

      // The runtime retries the failed ADDs: each gets an address (its stored one if it has one),
      // and afterwards the pool and the reservations hold exactly one address per pod. One at a
      // time: what is checked here is what the outage left, not contention (that was the race).
      outs.forEach((first, n) => {
        if (first.code === 0) return;
        const out = cni(WHEREABOUTS, call("ADD", n), config(n));
        const address = ips(out)[0]!.split("/")[0]!;
        const before = [...holder].find(([, podref]) => podref === `default/pod-${n}`)?.[0];
        if (before) expect(address, `pod-${n} gets back the address its lost answer held`).toBe(before);
        succeeded.set(n, address);
      });
      expect(succeeded.size).toBe(pods);
      expect(new Set(succeeded.values()).size).toBe(pods);
      const final = (await api.pool("10.62.0.0-24"))!.spec.allocations;
      expect(
        Object.entries(final)
          .map(([key, a]) => `10.62.0.${key}=${a.podref}`)
          .sort(),
      ).toEqual([...succeeded].map(([n, address]) => `${address}=default/pod-${n}`).sort());
      expect(await reservationHolders(), "no reservation left behind by a cut-off ADD").toEqual(
        [...succeeded].map(([n, address]) => `${address}=default/pod-${n} net1`).sort(),
      );
    } finally {
      for (const node of nodes) rmSync(node, { recursive: true, force: true });
    }
  }, 120_000);
});

describe("RBAC: the plugin as its service account, with deploy/rbac.yaml", () => {
  const RBAC = join(ROOT, "deploy/rbac.yaml");
  const SA = "system:serviceaccount:kube-system:whereabouts";
  let saKubeconfig: string;

  interface Rule {
    apiGroups: string[];
    resources: string[];
    verbs: string[];
  }
  interface ClusterRole {
    kind: string;
    metadata: { name: string };
    rules: Rule[];
  }
  const role = (): ClusterRole => {
    const found = parseAllDocuments(readFileSync(RBAC, "utf8"))
      .map((doc) => doc.toJSON() as ClusterRole)
      .find((doc) => doc.kind === "ClusterRole");
    if (!found) throw new Error(`${RBAC} has no ClusterRole`);
    return found;
  };

  /** kubectl with the service account's kubeconfig (or impersonating it), not failing on a refusal. */
  function kubectlAsSa(args: string[]): { status: number; out: string } {
    const run = spawnSync(join(KUBE_BIN, "kubectl"), [`--kubeconfig=${saKubeconfig}`, ...args], { encoding: "utf8" });
    return { status: run.status ?? -1, out: run.stdout + run.stderr };
  }

  function canI(verb: string, resource: string): boolean {
    const run = spawnSync(join(KUBE_BIN, "kubectl"), [`--kubeconfig=${cluster.kubeconfig}`, "auth", "can-i", verb, resource, "-n", NAMESPACE, `--as=${SA}`], {
      encoding: "utf8",
    });
    return run.stdout.trim() === "yes";
  }

  /** Waits until the authorizer's cache has the role as applied (it follows the API by a watch). */
  async function until(verb: string, resource: string, allowed: boolean): Promise<void> {
    for (let waited = 0; canI(verb, resource) !== allowed; waited += 100) {
      if (waited > 10_000) throw new Error(`can-i ${verb} ${resource} is still ${!allowed} after 10 s`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  const saConf = (extra: Record<string, unknown> = {}, top: Record<string, unknown> = {}) =>
    conf({ kubernetes: { kubeconfig: saKubeconfig }, log_level: "error", ...extra }, top);

  beforeAll(async () => {
    cluster.kubectl(["apply", "-f", RBAC]);
    const token = cluster.kubectl(["create", "token", "whereabouts", "-n", "kube-system", "--duration=1h"]).trim();
    saKubeconfig = join(cluster.dir, "whereabouts-sa.kubeconfig");
    writeFileSync(saKubeconfig, kubeconfigText({ server: cluster.server, caFile: cluster.caFile, token, namespace: NAMESPACE, user: "whereabouts" }), {
      mode: 0o600,
    });
    await until("patch", "ippools.whereabouts.cni.cncf.io", true);
  });

  test("every verb works as the service account: ADD, CHECK, STATUS, GC, DEL, overlapping ranges and a journal replay", async () => {
    const config = saConf({}, { cniVersion: "1.1.0" });
    const first = add(1, config);
    expect(ips(first)).toEqual(["10.40.0.1/24"]);
    expect(ips(add(1, config)), "an idempotent re-ADD reads the pod's reservation").toEqual(["10.40.0.1/24"]);
    expect(ips(add(2, config))).toEqual(["10.40.0.2/24"]);
    expect(ips(add(3, saConf({ range: "10.40.0.0/25" }, { cniVersion: "1.1.0" }))), "the reservation of .1 and .2 is read in another pool").toEqual([
      "10.40.0.3/25",
    ]);
    expect(cni(WHEREABOUTS, call("CHECK", 1), { ...config, prevResult: first.json }).code).toBe(0);
    expect(cni(WHEREABOUTS, { command: "STATUS" }, config).code).toBe(0);
    // What GC releases is the shared GC case's business; here, that the role lets it run.
    const gc = cni(WHEREABOUTS, { command: "GC" }, { ...config, "cni.dev/valid-attachments": [{ containerID: "ctr-1", ifname: "net1" }] });
    expect(gc.code, gc.stdout).toBe(0);
    expect(await entries("10.40.0.0-24")).toContain("1=default/pod-1 net1 ctr-1");
    del(WHEREABOUTS, 1, config);
    del(WHEREABOUTS, 2, config);
    expect(await entries("10.40.0.0-24")).toEqual([]);
    expect(await reservationHolders()).toEqual(["10.40.0.3=default/pod-3 net1"]);

    ips(add(4, config));
    await cluster.stopApiServer();
    expect(cni(WHEREABOUTS, call("DEL", 4), config).code).toBe(0);
    await startApiServer();
    expect(cni(WHEREABOUTS, { command: "STATUS" }, config).code).toBe(0);
    expect(await entries("10.40.0.0-24")).toEqual([]);
  });

  test("the service account is refused what the plugin does not do", () => {
    ips(add(1, saConf())); // a pool to refuse deleting
    const refused = [
      ["get", "pods", "-A"],
      ["get", "nodes"],
      ["get", "leases", "-n", NAMESPACE],
      ["get", "secrets", "-n", NAMESPACE],
      ["get", "nodeslicepools", "-n", NAMESPACE],
      ["delete", "ippool", "10.40.0.0-24", "-n", NAMESPACE],
      ["delete", "ippools", "--all", "-n", NAMESPACE],
      ["create", "namespace", "x"],
    ];
    for (const args of refused) {
      const run = kubectlAsSa(args);
      expect(run.status, `kubectl ${args.join(" ")}: ${run.out}`).not.toBe(0);
      expect(run.out, `kubectl ${args.join(" ")}`).toMatch(/Forbidden|forbidden/);
    }
    expect(kubectlAsSa(["get", "ippools", "-n", NAMESPACE]).status, "what it may do, it can").toBe(0);
  });

  /**
   * Minimal: every verb the role grants is one the plugin needs. Each case applies the role
   * without one verb and shows the plugin failing (or, for DEL, which never fails, leaving the
   * reservation behind) where it succeeds with the whole role.
   */
  describe("every verb of the ClusterRole is needed", () => {
    function applyRoleWithout(resource: string, verb: string): void {
      const reduced = role();
      reduced.rules = reduced.rules.map((rule) => (rule.resources.includes(resource) ? { ...rule, verbs: rule.verbs.filter((v) => v !== verb) } : rule));
      cluster.kubectl(["apply", "-f", "-"], JSON.stringify(reduced));
    }

    afterEach(async () => {
      cluster.kubectl(["apply", "-f", RBAC]);
      for (const rule of role().rules)
        for (const resource of rule.resources) for (const verb of rule.verbs) await until(verb, `${resource}.whereabouts.cni.cncf.io`, true);
    });

    test("the role is what these cases cover", () => {
      expect(role().rules.map((r) => `${r.apiGroups.join(",")} ${r.resources.join(",")}: ${[...r.verbs].sort().join(",")}`)).toEqual([
        "whereabouts.cni.cncf.io ippools: create,get,list,patch",
        "whereabouts.cni.cncf.io overlappingrangeipreservations: create,delete,get",
      ]);
    });

    const refusedAdd = (out: CniOutput) => {
      expect(out.code, out.stdout).toBe(1);
      expect(out.json!.msg).toMatch(/forbidden/i);
    };

    test("ippools get: ADD", async () => {
      applyRoleWithout("ippools", "get");
      await until("get", "ippools.whereabouts.cni.cncf.io", false);
      refusedAdd(add(1, saConf()));
    });

    test("ippools list: STATUS", async () => {
      applyRoleWithout("ippools", "list");
      await until("list", "ippools.whereabouts.cni.cncf.io", false);
      expect(cni(WHEREABOUTS, { command: "STATUS" }, saConf({}, { cniVersion: "1.1.0" })).json).toMatchObject({
        code: 50,
        msg: expect.stringMatching(/forbidden/i),
      });
    });

    test("ippools create: the first ADD in a range", async () => {
      applyRoleWithout("ippools", "create");
      await until("create", "ippools.whereabouts.cni.cncf.io", false);
      refusedAdd(add(1, saConf()));
      expect(await kubeStore.reservations(), "the reservation claimed first is released").toEqual([]);
    });

    test("ippools patch: an ADD into an existing pool", async () => {
      ips(add(1, saConf()));
      applyRoleWithout("ippools", "patch");
      await until("patch", "ippools.whereabouts.cni.cncf.io", false);
      refusedAdd(add(2, saConf()));
      expect(await reservationHolders()).toEqual(["10.40.0.1=default/pod-1 net1"]);
    });

    test("overlappingrangeipreservations get: the re-ADD of a pod that holds its address", async () => {
      ips(add(1, saConf()));
      applyRoleWithout("overlappingrangeipreservations", "get");
      await until("get", "overlappingrangeipreservations.whereabouts.cni.cncf.io", false);
      refusedAdd(add(1, saConf()));
    });

    test("overlappingrangeipreservations create: ADD", async () => {
      applyRoleWithout("overlappingrangeipreservations", "create");
      await until("create", "overlappingrangeipreservations.whereabouts.cni.cncf.io", false);
      refusedAdd(add(1, saConf()));
      expect(await entries("10.40.0.0-24")).toEqual([]);
    });

    test("overlappingrangeipreservations delete: DEL (which succeeds, but leaves the reservation)", async () => {
      ips(add(1, saConf()));
      applyRoleWithout("overlappingrangeipreservations", "delete");
      await until("delete", "overlappingrangeipreservations.whereabouts.cni.cncf.io", false);
      del(WHEREABOUTS, 1, saConf());
      expect(await entries("10.40.0.0-24")).toEqual([]);
      expect(await reservationHolders()).toEqual(["10.40.0.1=default/pod-1 net1"]);
    });
  });
});
