/**
 * multus beyond upstream v4.3.0 (docs/multus.md, "Differences from upstream"), against a real
 * kube-apiserver and the real kernel, on the nodes of conformance/kube/multus.ts: CHECK runs every
 * delegate's CHECK, STATUS runs the cluster network's, GC honours the runtime's
 * `cni.dev/valid-attachments`, events (NoNetworkFound; a Warning naming the network and plugin of
 * a failed ADD), and a delegate's error code kept where upstream answers 999. Where upstream's
 * binary behaves otherwise on the same input, the case runs it too and says what it does.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { mkdtempSync, rmSync, unlinkSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cleanup, cni, cniAsync, deleteNetns, netns, sh, sweepStale } from "./harness.ts";
import { startCluster, type Cluster } from "./kube/cluster.ts";
import { AdminApi } from "./kube/objects.ts";
import {
  MULTUS,
  addPlugin,
  createNad,
  deleteEvents,
  deletePod,
  filesUnder,
  leftovers,
  macvlanWhereabouts,
  multusCall,
  multusConf,
  multusNode,
  newSandbox,
  podAnnotations,
  podEvents,
  podKernel,
  poolEntries,
  primaryNetwork,
  requiredBinaries,
  runMultus,
  site,
  type MultusNode,
  type Sandbox,
  type Site,
} from "./kube/multus.ts";

const NETWORKS = "k8s.v1.cni.cncf.io/networks";
/** GC leaves a container younger than this alone (its ADD may still run): plugins/multus/main.ts GC_GRACE_MS. */
const GC_GRACE_MS = 10 * 60_000;

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
  dir = mkdtempSync(join(tmpdir(), "cnit-multus-beyond-"));
  where = site(cluster, dir);
  await createNad(api, "default", "macvlan-conf", macvlanWhereabouts(where));
}, 120_000);
afterAll(async () => {
  cleanup();
  api?.close();
  await cluster?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A node of its own for each case: nothing one case leaves can pass for another's. */
function freshNode(): MultusNode {
  return multusNode({ ...where, dir: mkdtempSync(join(dir, "node-")) }, "node-0", nodes++ % 200);
}

function add(sandbox: Sandbox, conf: Record<string, unknown>): Record<string, unknown> {
  const out = runMultus("ours", sandbox, "ADD", conf);
  expect(out.code, `ADD ${sandbox.pod.name}: ${out.stdout}${out.stderr}`).toBe(0);
  return out.json ?? {};
}

/** DEL, then nothing of the sandbox may be left on the pod, the node or the API server. */
async function delAndExpectNothingLeft(sandboxes: Sandbox[], conf: (s: Sandbox) => Record<string, unknown>): Promise<void> {
  for (const sandbox of sandboxes) {
    const out = runMultus("ours", sandbox, "DEL", conf(sandbox));
    expect(out.code, `DEL ${sandbox.pod.name}: ${out.stdout}${out.stderr}`).toBe(0);
  }
  for (const sandbox of sandboxes) {
    expect(leftovers(sandbox), sandbox.pod.name).toEqual({ podLinks: [], hostLinks: [], leases: [], cniDir: [] });
    deleteNetns(sandbox.ns);
  }
  expect(await poolEntries(api)).toEqual([]);
}

describe("CHECK", () => {
  test("runs every delegate's CHECK: passes after ADD, fails naming net1's network once net1 is gone; upstream's CHECK (clusterNetwork: no delegate checked) passes anyway", async () => {
    const node = freshNode();
    const sandbox = await newSandbox(api, node, "pod-check", { [NETWORKS]: "macvlan-conf" });
    const conf = multusConf(node, "ours");
    const result = add(sandbox, conf);
    // containerd sends the ADD's result as prevResult.
    const check = runMultus("ours", sandbox, "CHECK", { ...conf, prevResult: result });
    expect(check, "CHECK right after ADD").toMatchObject({ code: 0, stdout: "" });

    sh("ip", ["-n", sandbox.ns, "link", "del", "net1"]);
    const broken = runMultus("ours", sandbox, "CHECK", { ...conf, prevResult: result });
    expect(broken.code).toBe(1);
    expect(broken.json?.msg).toMatch(/^\[default\/pod-check\/[0-9a-f-]{36}:default\/macvlan-conf\]: CHECK of network "default\/macvlan-conf" on net1: .*net1/);
    const upstream = runMultus("upstream", sandbox, "CHECK", { ...multusConf(node, "upstream"), prevResult: result });
    expect(upstream, "upstream v4.3.0 checks nothing with clusterNetwork").toMatchObject({ code: 0, stdout: "" });

    await delAndExpectNothingLeft([sandbox], () => conf);
  });
});

describe("STATUS", () => {
  test("cniVersion 1.1.0: the cluster network's STATUS; a plugin of it that cannot be found is an error naming it", () => {
    const node = freshNode();
    const conflist = join(node.netDir, "10-ptp-1.1.conflist");
    writeFileSync(conflist, JSON.stringify({ ...primaryNetwork(node.hostLocalDir, node.index), cniVersion: "1.1.0" }));
    const status = (clusterNetwork: string) =>
      cni(MULTUS, { command: "STATUS", path: node.binDir("ours") }, multusConf(node, "ours", { cniVersion: "1.1.0", clusterNetwork }));
    expect(status(conflist)).toMatchObject({ code: 0, stdout: "" });

    const missing = join(node.netDir, "20-missing.conflist");
    writeFileSync(missing, JSON.stringify({ cniVersion: "1.1.0", name: "missing", plugins: [{ type: "no-such-plugin" }] }));
    const failed = status(missing);
    expect(failed.code).toBe(1);
    expect(failed.json?.msg).toMatch(/no-such-plugin/);
  });

  test("cniVersion 1.0.0 has no STATUS: refused with code 1, as libcni's skel refuses it", () => {
    const node = freshNode();
    const out = cni(MULTUS, { command: "STATUS", path: node.binDir("ours") }, multusConf(node, "ours"));
    expect(out.json, out.stdout + out.stderr).toMatchObject({ code: 1, msg: "config version does not allow STATUS" });
  });
});

describe("GC", () => {
  test("cni.dev/valid-attachments: an attachment not listed and older than the grace is deleted whole (links, IPPool entry, caches); a listed one and a young one stay", async () => {
    const node = freshNode();
    const conf = multusConf(node, "ours", { cniVersion: "1.1.0" });
    const keep = await newSandbox(api, node, "pod-keep", { [NETWORKS]: "macvlan-conf" });
    const stale = await newSandbox(api, node, "pod-stale", { [NETWORKS]: "macvlan-conf" });
    const young = await newSandbox(api, node, "pod-young", { [NETWORKS]: "macvlan-conf" });
    for (const sandbox of [keep, stale, young]) add(sandbox, conf);
    const old = new Date(Date.now() - GC_GRACE_MS - 60_000);
    for (const sandbox of [keep, stale]) utimesSync(join(node.cniDir, sandbox.containerId), old, old);

    const gc = cni(
      MULTUS,
      { command: "GC", path: node.binDir("ours") },
      { ...conf, "cni.dev/valid-attachments": [{ containerID: keep.containerId, ifname: "eth0" }] },
    );
    expect(gc, `GC: ${gc.stdout}${gc.stderr}`).toMatchObject({ code: 0, stdout: "" });

    expect(podKernel(stale.ns).links.map((l) => l.ifname)).toEqual(["lo"]);
    for (const sandbox of [keep, young]) expect(podKernel(sandbox.ns).links.map((l) => l.ifname)).toEqual(["eth0", "lo", "net1"]);
    expect(await poolEntries(api)).toEqual(["192.168.20.10=default/pod-keep net1", "192.168.20.12=default/pod-young net1"]);
    expect(filesUnder(node.cniDir)).toEqual([
      "ctr-pod-keep",
      "ctr-pod-young",
      "results/macvlan-conf-ctr-pod-keep-net1",
      "results/macvlan-conf-ctr-pod-young-net1",
      "results/podnet-ctr-pod-keep-eth0",
      "results/podnet-ctr-pod-young-eth0",
    ]);
    // stale's host-side veth and host-local lease went with it.
    expect(leftovers(keep).hostLinks).toHaveLength(2);
    expect(leftovers(keep).leases).toHaveLength(2);

    deleteNetns(stale.ns);
    await delAndExpectNothingLeft([keep, young], () => conf);
  });
});

describe("events and error codes", () => {
  test("a missing NAD: a Warning NoNetworkFound event on the pod, written before the plugin exits (upstream's thin binary exits before its broadcaster sends it)", async () => {
    await deleteEvents(api, "default");
    const node = freshNode();
    const sandbox = await newSandbox(api, node, "pod-nonad", { [NETWORKS]: "missing-net" });
    const out = runMultus("ours", sandbox, "ADD", multusConf(node, "ours"));
    expect(out.code).toBe(1);
    expect(await podEvents(api, sandbox.pod)).toEqual([
      {
        type: "Warning",
        reason: "NoNetworkFound",
        message: expect.stringMatching(/^cannot find a network-attachment-definition \(missing-net\) in namespace \(default\): .*not found/),
        component: "multus",
      },
    ]);
    expect(leftovers(sandbox)).toEqual({ podLinks: [], hostLinks: [], leases: [], cniDir: [] });
    deleteNetns(sandbox.ns);
  });

  test("a failing delegate: its CNI code kept (upstream: 999), the error and a Warning ErrorAddingInterface event name the network and plugin; nothing left", async () => {
    const node = freshNode();
    // An IPAM that fails ADD as an exhausted one does (code 11); its DEL, with nothing to release, succeeds.
    addPlugin(
      node,
      "failing-ipam",
      `#!/bin/sh\ncat >/dev/null\n[ "$CNI_COMMAND" = ADD ] || exit 0\necho '{"cniVersion":"1.0.0","code":11,"msg":"no addresses left"}'\nexit 1\n`,
    );
    await createNad(api, "default", "exhausted", { cniVersion: "1.0.0", name: "exhausted", type: "macvlan", master: "m0", ipam: { type: "failing-ipam" } });
    await deleteEvents(api, "default");
    const sandbox = await newSandbox(api, node, "pod-exhausted", { [NETWORKS]: "exhausted" });

    const out = runMultus("ours", sandbox, "ADD", multusConf(node, "ours"));
    expect(out.code).toBe(1);
    expect(out.json).toMatchObject({
      code: 11,
      msg: expect.stringMatching(
        /^\[default\/pod-exhausted\/[0-9a-f-]{36}:default\/exhausted\]: error adding container to network "default\/exhausted" \(plugin macvlan\): .*no addresses left/,
      ),
    });
    expect(await podEvents(api, sandbox.pod)).toEqual([
      { type: "Normal", reason: "AddedInterface", message: expect.stringMatching(/^Add eth0 \[10\.244\.\d+\.2\/24\] from podnet$/), component: "multus" },
      { type: "Warning", reason: "ErrorAddingInterface", message: expect.stringContaining('"default/exhausted" (plugin macvlan)'), component: "multus" },
    ]);
    expect(leftovers(sandbox)).toEqual({ podLinks: [], hostLinks: [], leases: [], cniDir: [] });

    deleteNetns(sandbox.ns);

    // upstream, on a node of its own: what its failed ADD leaves for the runtime's DEL goes with
    // the node's and pod's namespaces (its DEL of a conflist file's network fails: conformance/multus.test.ts).
    const upstreamNode = freshNode();
    addPlugin(
      upstreamNode,
      "failing-ipam",
      `#!/bin/sh\ncat >/dev/null\n[ "$CNI_COMMAND" = ADD ] || exit 0\necho '{"cniVersion":"1.0.0","code":11,"msg":"no addresses left"}'\nexit 1\n`,
    );
    const upstreamSandbox = { ...sandbox, node: upstreamNode, ns: netns("pod") };
    const upstream = runMultus("upstream", upstreamSandbox, "ADD", multusConf(upstreamNode, "upstream"));
    expect(upstream.json, "upstream v4.3.0").toMatchObject({ code: 999, msg: expect.stringContaining("no addresses left") });
    deleteNetns(upstreamSandbox.ns);
    for (const ns of [upstreamNode.host.ns, upstreamNode.host.wire]) deleteNetns(ns);
  });
});

describe("DEL without multus' cache", () => {
  test("pod deleted and the scratch cache gone: ours DELs from libcni's result cache and leaves nothing; upstream returns success and leaks the pod's links and addresses", async () => {
    const left = new Map<string, ReturnType<typeof leftovers>>();
    for (const impl of ["upstream", "ours"] as const) {
      const node = freshNode();
      // The cluster network from a NAD: from a conflist file upstream's DEL fails anyway (multus.test.ts).
      await createNad(api, "kube-system", "podnet", primaryNetwork(node.hostLocalDir, node.index));
      const conf = multusConf(node, impl, { clusterNetwork: "podnet" });
      const sandbox = await newSandbox(api, node, `pod-nocache-${impl}`, { [NETWORKS]: "macvlan-conf" });
      expect(runMultus(impl, sandbox, "ADD", conf).code, impl).toBe(0);
      unlinkSync(join(node.cniDir, sandbox.containerId));
      await deletePod(api, "default", sandbox.pod.name);
      const del = runMultus(impl, sandbox, "DEL", conf);
      expect(del, impl).toMatchObject({ code: 0, stdout: "" });
      left.set(impl, leftovers(sandbox));
      if (impl === "upstream") {
        expect(await poolEntries(api), "upstream leaks the IPPool entry").toEqual([`192.168.20.10=default/${sandbox.pod.name} net1`]);
        // Ours, run next on the same node, cleans up what upstream left: an in-place upgrade after the leak.
        expect(runMultus("ours", sandbox, "DEL", multusConf(node, "ours", { clusterNetwork: "podnet" })).code).toBe(0);
      }
      expect(leftovers(sandbox), impl).toEqual({ podLinks: [], hostLinks: [], leases: [], cniDir: [] });
      expect(await poolEntries(api), impl).toEqual([]);
      deleteNetns(sandbox.ns);
    }
    expect(left.get("upstream"), "what upstream v4.3.0's DEL left").toEqual({
      podLinks: ["eth0", "net1"],
      hostLinks: [expect.stringMatching(/^veth/)],
      leases: [expect.stringMatching(/^podnet\/10\.244\.\d+\.2$/)],
      cniDir: ["results/macvlan-conf-ctr-pod-nocache-upstream-net1", "results/podnet-ctr-pod-nocache-upstream-eth0"],
    });
    expect(left.get("ours")).toEqual({ podLinks: [], hostLinks: [], leases: [], cniDir: [] });
  });
});

describe("many at once", () => {
  test("12 pods on two nodes added at once: distinct addresses, each pod's own network-status; all DELs at once leave nothing", async () => {
    const nodes = [freshNode(), freshNode()];
    const sandboxes: Sandbox[] = [];
    for (let i = 0; i < 12; i++) sandboxes.push(await newSandbox(api, nodes[i % 2]!, `pod-many-${i}`, { [NETWORKS]: "macvlan-conf" }));
    const conf = (s: Sandbox) => multusConf(s.node, "ours");
    const adds = await Promise.all(sandboxes.map((s) => cniAsync(MULTUS, multusCall("ours", s, "ADD"), conf(s))));
    for (const [i, out] of adds.entries()) expect(out.code, `ADD ${i}: ${out.stdout}${out.stderr}`).toBe(0);

    const entries = await poolEntries(api);
    expect(entries).toHaveLength(12);
    expect(new Set(entries.map((e) => e.split("=")[0])).size).toBe(12);
    for (const sandbox of sandboxes) {
      const net1 = podKernel(sandbox.ns).links.find((l) => l.ifname === "net1");
      const address = net1?.addresses[0]?.split("/")[0];
      expect(entries, sandbox.pod.name).toContain(`${address}=default/${sandbox.pod.name} net1`);
      const status = (await podAnnotations(api, sandbox.pod))["k8s.v1.cni.cncf.io/network-status"] ?? "";
      expect(status, sandbox.pod.name).toContain(`"${address}"`);
      expect(status, sandbox.pod.name).toContain(`"mac": "${net1?.address}"`);
    }

    const dels = await Promise.all(sandboxes.map((s) => cniAsync(MULTUS, multusCall("ours", s, "DEL"), conf(s))));
    for (const [i, out] of dels.entries()) expect(out.code, `DEL ${i}: ${out.stdout}${out.stderr}`).toBe(0);
    for (const sandbox of sandboxes) {
      expect(leftovers(sandbox), sandbox.pod.name).toEqual({ podLinks: [], hostLinks: [], leases: [], cniDir: [] });
      deleteNetns(sandbox.ns);
    }
    expect(await poolEntries(api)).toEqual([]);
  }, 120_000);
});
