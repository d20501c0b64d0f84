/** Unit tests of the multus scratch cache (cache.ts): our round trip, upstream-written files, bad files. */
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { Buffer } from "node:buffer";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, test } from "vitest";
import { thrown } from "../../shared/cni/test-util.ts";
import {
  cachedDelegate,
  decodeScratchCache,
  encodeScratchCache,
  podDelegatesFromCache,
  readScratchCache,
  removeScratchCache,
  scratchCachePath,
  writeScratchCache,
} from "./cache.ts";
import { planDelegates } from "./delegates.ts";
import { delegateFromConfig } from "./nad.ts";

// A conflist loaded from a file, with a plugin-specific nested key upstream's re-marshal lost (#1449).
const calico =
  '{"name":"k8s-pod-network","cniVersion":"0.3.1","plugins":[{"type":"calico","kubernetes":{"kubeconfig":"/etc/cni/net.d/calico-kubeconfig"},"ipam":{"type":"calico-ipam"}},{"type":"portmap","capabilities":{"portMappings":true}}]}';
const macvlan = '{"cniVersion":"0.3.1","name":"macvlan-conf","type":"macvlan","master":"eth0","ipam":{"type":"static"}}';

function plan() {
  return planDelegates(
    { systemNamespaces: [] },
    {
      base: [delegateFromConfig(calico)],
      defaultNetworks: [],
      podNamespace: "app",
      networks: [
        {
          conf: delegateFromConfig(macvlan, "app/macvlan-conf"),
          selection: { name: "macvlan-conf", namespace: "app", interface: "data0", mac: "02:00:00:00:00:01", ips: ["10.1.1.5/24"], defaultRoute: ["10.1.1.1"] },
          deviceID: "0000:03:00.1",
          resourceName: "intel.com/vf",
        },
      ],
    },
    "eth0",
  );
}

/** What upstream v4.3.0 writes for the same two delegates (Go field names, CNINetworkConfigList included). */
const upstreamFile = JSON.stringify([
  {
    Conf: { ipam: {}, dns: {} },
    ConfList: {
      cniVersion: "0.3.1",
      name: "k8s-pod-network",
      plugins: [
        { type: "calico", ipam: { type: "calico-ipam" }, dns: {} },
        { type: "portmap", capabilities: { portMappings: true }, ipam: {}, dns: {} },
      ],
    },
    CNINetworkConfigList: {
      Name: "k8s-pod-network",
      CNIVersion: "0.3.1",
      DisableCheck: false,
      DisableGC: false,
      LoadOnlyInlinedPlugins: false,
      Plugins: null,
      Bytes: null,
    },
    Name: "k8s-pod-network",
    IsFilterV4Gateway: true,
    IsFilterV6Gateway: true,
    Bytes: Buffer.from(calico).toString("base64"),
  },
  {
    Conf: { cniVersion: "0.3.1", name: "macvlan-conf", type: "macvlan", ipam: { type: "static" }, dns: {} },
    ConfList: { dns: {} },
    CNINetworkConfigList: { Name: "", CNIVersion: "", DisableCheck: false, DisableGC: false, LoadOnlyInlinedPlugins: false, Plugins: null, Bytes: null },
    Name: "app/macvlan-conf",
    ifnameRequest: "data0",
    macRequest: "02:00:00:00:00:01",
    infinibandGUIDRequest: "c2:11:22:33:44:55:66:77",
    ipRequest: ["10.1.1.5/24"],
    "default-route": ["10.1.1.1"],
    IsFilterV4Gateway: false,
    IsFilterV6Gateway: true,
    deviceID: "0000:03:00.1",
    resourceName: "intel.com/vf",
    Bytes: Buffer.from(macvlan).toString("base64"),
  },
]);

describe("encoding", () => {
  test("round trip keeps the delegate's bytes exactly", () => {
    const delegates = plan();
    const text = encodeScratchCache(delegates.map(cachedDelegate));
    const back = decodeScratchCache(text);
    expect(back[0]?.bytes).toBe(calico);
    expect(back[0]?.isConfList).toBe(true);
    const again = podDelegatesFromCache(back, "eth0");
    expect(again.map((d) => [d.conf.name, d.ifName, d.master, d.conf.isConfList])).toEqual([
      ["k8s-pod-network", "eth0", true, true],
      ["app/macvlan-conf", "data0", false, false],
    ]);
    expect(again[1]).toMatchObject({
      mac: "02:00:00:00:00:01",
      ips: ["10.1.1.5/24"],
      defaultRoute: ["10.1.1.1"],
      deviceID: "0000:03:00.1",
      resourceName: "intel.com/vf",
    });
    expect(again[1]?.conf.bytes).toBe(delegates[1]?.conf.bytes);
    expect(again.map((d) => [d.filterV4Gateway, d.filterV6Gateway])).toEqual(delegates.map((d) => [d.filterV4Gateway, d.filterV6Gateway]));
  });

  test("upstream's key order and names, so that upstream reads ours", () => {
    const [first, second] = JSON.parse(encodeScratchCache(plan().map(cachedDelegate)));
    expect(Object.keys(first)).toEqual(["Conf", "ConfList", "Name", "IsFilterV4Gateway", "IsFilterV6Gateway", "Bytes"]);
    expect(first.ConfList.plugins).toHaveLength(2);
    expect(Object.keys(second)).toEqual([
      "Conf",
      "ConfList",
      "Name",
      "ifnameRequest",
      "macRequest",
      "ipRequest",
      "default-route",
      "IsFilterV4Gateway",
      "IsFilterV6Gateway",
      "deviceID",
      "resourceName",
      "Bytes",
    ]);
    expect(second.Conf.type).toBe("macvlan");
  });

  test("a file written by upstream v4.3.0", () => {
    const cached = decodeScratchCache(upstreamFile);
    expect(cached).toEqual([
      { name: "k8s-pod-network", bytes: calico, isConfList: true, filterV4Gateway: true, filterV6Gateway: true },
      {
        name: "app/macvlan-conf",
        bytes: macvlan,
        isConfList: false,
        ifnameRequest: "data0",
        mac: "02:00:00:00:00:01",
        infinibandGUID: "c2:11:22:33:44:55:66:77",
        ips: ["10.1.1.5/24"],
        defaultRoute: ["10.1.1.1"],
        filterV4Gateway: false,
        filterV6Gateway: true,
        deviceID: "0000:03:00.1",
        resourceName: "intel.com/vf",
      },
    ]);
    const delegates = podDelegatesFromCache(cached, "eth0");
    expect(delegates[0]?.conf.list.plugins.map((p) => p.type)).toEqual(["calico", "portmap"]);
  });

  test.each([
    ["not json", "multus cache:"],
    ["[]", "non-empty array"],
    ["{}", "non-empty array"],
    ["[1]", "delegate 0: expected an object"],
    ['[{"Name":"x"}]', '"[0].Bytes"'],
    ['[{"Name":"x","Bytes":"***"}]', '"[0].Bytes"'],
    ['[{"Name":1,"Bytes":"e30="}]', '"[0].Name"'],
    ['[{"Name":"x","Bytes":"e30=","IsFilterV4Gateway":"yes"}]', '"[0].IsFilterV4Gateway"'],
    ['[{"Name":"x","Bytes":"e30=","default-route":["nope"]}]', '"[0].default-route"'],
    ['[{"Name":"x","Bytes":"e30=","ConfList":{"plugins":{}}}]', '"[0].ConfList.plugins"'],
  ])("%s is refused (code 6)", (text, message) => {
    const err = thrown(() => decodeScratchCache(text));
    expect(err.code).toBe(6);
    expect(err.msg).toContain(message);
  });
});

describe("the file", () => {
  let dir = "";
  afterEach(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("write (0700 dir, 0600 file), read, remove", () => {
    dir = mkdtempSync(join(tmpdir(), "multus-cache-"));
    const cniDir = join(dir, "var/lib/cni/multus");
    expect(readScratchCache(cniDir, "cid1")).toBeUndefined();
    writeScratchCache(cniDir, "cid1", plan());
    expect(statSync(cniDir).mode & 0o777).toBe(0o700);
    expect(statSync(join(cniDir, "cid1")).mode & 0o777).toBe(0o600);
    expect(readScratchCache(cniDir, "cid1")?.[0]?.bytes).toBe(calico);
    writeFileSync(join(cniDir, "cid2"), upstreamFile);
    expect(readScratchCache(cniDir, "cid2")).toHaveLength(2);
    removeScratchCache(cniDir, "cid1");
    removeScratchCache(cniDir, "cid1");
    expect(readScratchCache(cniDir, "cid1")).toBeUndefined();
    expect(readFileSync(join(cniDir, "cid2"), "utf8")).toBe(upstreamFile);
  });

  test("a container ID that is not a file name is refused", () => {
    expect(thrown(() => scratchCachePath("/var/lib/cni/multus", "../etc")).code).toBe(4);
  });
});
