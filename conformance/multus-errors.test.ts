/**
 * multus given bad input, against a real kube-apiserver and the real kernel: each ADD must answer
 * a CNI error object that names the cause, and leave nothing behind (no link in the pod or on the
 * node, no host-local lease, no IPPool entry, no file in cniDir). Also the API server unreachable:
 * ADD fails, DEL still succeeds from the cache. The NAD nodeSelector annotation is ours only.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cleanup, deleteNetns, sh, sweepStale } from "./harness.ts";
import { startCluster, type Cluster } from "./kube/cluster.ts";
import { AdminApi } from "./kube/objects.ts";
import {
  createNad,
  createNode,
  ensureNamespace,
  leftovers,
  macvlanWhereabouts,
  multusConf,
  multusNode,
  newSandbox,
  poolEntries,
  requiredBinaries,
  runMultus,
  site,
  type MultusNode,
  type Sandbox,
  type Site,
} from "./kube/multus.ts";

const NETWORKS = "k8s.v1.cni.cncf.io/networks";
const NOTHING = { podLinks: [], hostLinks: [], leases: [], cniDir: [] };

let cluster: Cluster;
let api: AdminApi;
let dir: string;
let where: Site;
let nodes = 0;

beforeAll(async () => {
  sweepStale();
  expect(requiredBinaries(), "run npm run build and scripts/build-upstream.sh").toEqual([]);
  cluster = await startCluster();
  api = new AdminApi(cluster);
  dir = mkdtempSync(join(tmpdir(), "cnit-multus-errors-"));
  where = site(cluster, dir);
  await createNad(api, "default", "macvlan-conf", macvlanWhereabouts(where));
}, 120_000);
afterAll(async () => {
  cleanup();
  api?.close();
  await cluster?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function freshNode(name = "node-0"): MultusNode {
  return multusNode({ ...where, dir: mkdtempSync(join(dir, "node-")) }, name, nodes++ % 200);
}

/** ADD must fail with `code` and a message matching `msg`, and leave nothing; returns the message. */
async function expectRefused(sandbox: Sandbox, conf: Record<string, unknown>, msg: RegExp, code = 1): Promise<string> {
  const out = runMultus("ours", sandbox, "ADD", conf);
  expect(out.code, `${out.stdout}${out.stderr}`).toBe(1);
  expect(out.json, out.stdout).toMatchObject({ code: expect.any(Number), msg: expect.stringMatching(msg) });
  if (code !== 1) expect(out.json?.code).toBe(code);
  expect(leftovers(sandbox), "left behind").toEqual(NOTHING);
  expect(await poolEntries(api), "IPPool entries").toEqual([]);
  deleteNetns(sandbox.ns);
  return String(out.json?.msg);
}

/** A port nothing listens on: bound, then closed. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  if (!address || typeof address !== "object") throw new Error("no port");
  return address.port;
}

describe("networks that cannot be had", () => {
  test("a missing NAD: the error names it and its namespace", async () => {
    const node = freshNode();
    const sandbox = await newSandbox(api, node, "pod-missing", { [NETWORKS]: "missing-net" });
    await expectRefused(
      sandbox,
      multusConf(node, "ours"),
      /cannot find a network-attachment-definition \(missing-net\) in namespace \(default\): .*"missing-net" not found/,
      7,
    );
  });

  test("a malformed networks annotation: the error quotes it", async () => {
    const node = freshNode();
    const annotation = '[{"name": "macvlan-conf"';
    const sandbox = await newSandbox(api, node, "pod-malformed", { [NETWORKS]: annotation });
    const msg = await expectRefused(sandbox, multusConf(node, "ours"), /not JSON/, 7);
    expect(msg).toContain(`invalid k8s.v1.cni.cncf.io/networks annotation ${JSON.stringify(annotation)}`);
  });

  test("an invalid spec.config: the error names the NAD", async () => {
    const node = freshNode();
    await createNad(api, "default", "broken-config", "{not json");
    const sandbox = await newSandbox(api, node, "pod-broken", { [NETWORKS]: "broken-config" });
    await expectRefused(
      sandbox,
      multusConf(node, "ours"),
      /NetworkAttachmentDefinition default\/broken-config: failed to parse spec\.config: JSON Parse error/,
      6,
    );
  });

  test("a NAD whose config has neither type nor plugins: the error says so and names the NAD", async () => {
    const node = freshNode();
    await createNad(api, "default", "typeless", { cniVersion: "1.0.0", name: "typeless" });
    const sandbox = await newSandbox(api, node, "pod-notype", { [NETWORKS]: "typeless" });
    await expectRefused(sandbox, multusConf(node, "ours"), /default\/typeless.*delegate must have the 'type' or 'plugin' field/, 7);
  });

  test("namespace isolation: a pod referring to a NAD in another namespace is refused, naming both namespaces", async () => {
    const node = freshNode();
    await ensureNamespace(api, "tenant-a");
    await ensureNamespace(api, "other");
    await createNad(api, "other", "macvlan-conf", macvlanWhereabouts(where));
    const sandbox = await newSandbox(api, node, "pod-isolated", { [NETWORKS]: "other/macvlan-conf" }, "tenant-a");
    await expectRefused(
      sandbox,
      multusConf(node, "ours", { namespaceIsolation: true }),
      /namespace isolation enabled, annotation violates permission, pod is in namespace tenant-a but refers to target namespace other/,
      7,
    );
  });

  test("a NAD nodeSelector (k8s.v1.cni.cncf.io/nodeSelector) the pod's node does not match: refused, naming NAD, selector and node; a matching node is served", async () => {
    const node = freshNode("node-sel");
    await createNad(api, "default", "zoned", macvlanWhereabouts(where, "zoned"), { "k8s.v1.cni.cncf.io/nodeSelector": "zone=a" });
    await createNode(api, "node-sel", { zone: "b" });
    const refused = await newSandbox(api, node, "pod-zoned", { [NETWORKS]: "zoned" });
    await expectRefused(
      refused,
      multusConf(node, "ours"),
      /NetworkAttachmentDefinition default\/zoned does not apply to node node-sel: its k8s\.v1\.cni\.cncf\.io\/nodeSelector "zone=a" does not match/,
      7,
    );

    await createNode(api, "node-sel", { zone: "a" });
    const served = await newSandbox(api, node, "pod-zoned", { [NETWORKS]: "zoned" });
    const add = runMultus("ours", served, "ADD", multusConf(node, "ours"));
    expect(add.code, add.stdout).toBe(0);
    expect(await poolEntries(api)).toEqual(["192.168.20.10=default/pod-zoned net1"]);
    expect(runMultus("ours", served, "DEL", multusConf(node, "ours")).code).toBe(0);
    expect(leftovers(served)).toEqual(NOTHING);
    expect(await poolEntries(api)).toEqual([]);
    deleteNetns(served.ns);
  });
});

describe("delegates that fail", () => {
  test("macvlan with a master that does not exist: the error names the network, the plugin and the master; eth0 is taken back", async () => {
    const node = freshNode();
    await createNad(api, "default", "bad-master", { ...macvlanWhereabouts(where, "bad-master"), master: "nope0" });
    const sandbox = await newSandbox(api, node, "pod-badmaster", { [NETWORKS]: "bad-master" });
    await expectRefused(
      sandbox,
      multusConf(node, "ours"),
      /error adding container to network "default\/bad-master" \(plugin macvlan\): .*master "nope0" not found/,
    );
  });

  test("an interface name already in use in the pod: refused naming it, the pod's own link left alone", async () => {
    const node = freshNode();
    const sandbox = await newSandbox(api, node, "pod-taken", { [NETWORKS]: "macvlan-conf" });
    sh("ip", ["-n", sandbox.ns, "link", "add", "net1", "type", "veth", "peer", "name", "peer1"]);
    const out = runMultus("ours", sandbox, "ADD", multusConf(node, "ours"));
    expect(out.code).toBe(1);
    expect(out.json?.msg).toMatch(/error adding container to network "default\/macvlan-conf" \(plugin macvlan\): .*net1 already exists/);
    expect(leftovers(sandbox)).toEqual({ ...NOTHING, podLinks: ["net1", "peer1"] });
    expect(await poolEntries(api)).toEqual([]);
    deleteNetns(sandbox.ns);
  });
});

describe("the API server unreachable", () => {
  function deadKubeconfig(node: MultusNode, port: number): string {
    const path = join(node.dir, "dead.kubeconfig");
    writeFileSync(
      path,
      JSON.stringify({
        apiVersion: "v1",
        kind: "Config",
        clusters: [{ name: "dead", cluster: { server: `https://127.0.0.1:${port}`, "certificate-authority": cluster.caFile } }],
        users: [{ name: "multus", user: { token: cluster.adminToken } }],
        contexts: [{ name: "dead", context: { cluster: "dead", user: "multus" } }],
        "current-context": "dead",
      }),
      { mode: 0o600 },
    );
    return path;
  }

  test("on ADD: an error naming the server; nothing added", async () => {
    const node = freshNode();
    const port = await closedPort();
    const sandbox = await newSandbox(api, node, "pod-noapi", { [NETWORKS]: "macvlan-conf" });
    await expectRefused(
      sandbox,
      multusConf(node, "ours", { kubeconfig: deadKubeconfig(node, port) }),
      new RegExp(`Kubernetes API unavailable: GET https://127\\.0\\.0\\.1:${port}/api/v1/namespaces/default/pods/pod-noapi`),
      11,
    );
  });

  test("on DEL: DEL still succeeds from the cache and leaves nothing", async () => {
    const node = freshNode();
    const sandbox = await newSandbox(api, node, "pod-noapi-del", { [NETWORKS]: "macvlan-conf" });
    const add = runMultus("ours", sandbox, "ADD", multusConf(node, "ours"));
    expect(add.code, add.stdout).toBe(0);
    // multus' own API access is gone (whereabouts keeps its own kubeconfig, from the flat file).
    const del = runMultus("ours", sandbox, "DEL", multusConf(node, "ours", { kubeconfig: deadKubeconfig(node, await closedPort()) }));
    expect(del.code, `${del.stdout}${del.stderr}`).toBe(0);
    expect(leftovers(sandbox)).toEqual(NOTHING);
    expect(await poolEntries(api)).toEqual([]);
    deleteNetns(sandbox.ns);
  });
});
