/** Unit tests of the pod's delegate plan (delegates.ts): order, interface names, CNI_ARGS, capability args. */
import { describe, expect, test } from "vitest";
import { thrown } from "../../shared/cni/test-util.ts";
import type { NetworkSelection } from "./annotations.ts";
import { type DelegateSources, type Invocation, capabilityArgs, delegateArgs, planDelegates, runtimeConfFor, withCniArgs, withDeviceId } from "./delegates.ts";
import { type DelegateConf, delegateFromConfig } from "./nad.ts";

const conf = (name: string, display = name): DelegateConf => delegateFromConfig(JSON.stringify({ cniVersion: "0.3.1", name, type: "bridge" }), display);
const list = (name: string): DelegateConf =>
  delegateFromConfig(
    JSON.stringify({ cniVersion: "1.0.0", name, plugins: [{ type: "macvlan", args: { cni: { a: "nad", b: "nad" } } }, { type: "tuning" }] }),
    `ns/${name}`,
  );
const network = (name: string, selection: Partial<NetworkSelection> = {}) => ({
  conf: conf(name, `ns/${name}`),
  selection: { name, namespace: "ns", ...selection },
});
const config = { systemNamespaces: ["kube-system"] };

function sources(extra: Partial<DelegateSources>): DelegateSources {
  return { base: [conf("cbr0")], defaultNetworks: [conf("sidecar")], podNamespace: "app", networks: [], ...extra };
}

describe("order and interface names", () => {
  test("clusterNetwork, defaultNetworks, annotation networks, auxiliary; net<i> by position", () => {
    const plan = planDelegates(
      config,
      sources({ networks: [network("a"), network("b", { interface: "data0" }), network("c")], auxiliary: conf("aux") }),
      "eth0",
    );
    expect(plan.map((d) => [d.conf.name, d.ifName, d.master])).toEqual([
      ["cbr0", "eth0", true],
      ["sidecar", "net1", false],
      ["ns/a", "net2", false],
      ["ns/b", "data0", false],
      ["ns/c", "net4", false],
      ["aux", "net5", false],
    ]);
    expect(plan[3]?.ifnameRequest).toBe("data0");
  });

  test("system namespace or unknown pod: no defaultNetworks", () => {
    expect(planDelegates(config, sources({ podNamespace: "kube-system", networks: [network("a")] }), "eth0").map((d) => d.ifName)).toEqual(["eth0", "net1"]);
    expect(planDelegates(config, sources({ podNamespace: undefined }), "eth0")).toHaveLength(1);
  });

  test("default-network annotation replaces the master, its interface request honoured", () => {
    const plan = planDelegates(config, sources({ defaultNetwork: network("calico", { interface: "eth5" }) }), "eth0");
    expect(plan.map((d) => [d.conf.name, d.ifName, d.master])).toEqual([
      ["ns/calico", "eth5", true],
      ["sidecar", "net1", false],
    ]);
  });

  test("inline delegates: the first is the master", () => {
    const plan = planDelegates(config, sources({ base: [conf("one"), conf("two")], defaultNetworks: [] }), "eth0");
    expect(plan.map((d) => [d.ifName, d.master])).toEqual([
      ["eth0", true],
      ["net1", false],
    ]);
  });
});

describe("default-route", () => {
  test("filters: each delegate drops the families its own list lacks", () => {
    const plan = planDelegates(config, sources({ networks: [network("a", { defaultRoute: ["10.0.0.1"] }), network("b", { defaultRoute: [] })] }), "eth0");
    expect(plan.map((d) => [d.filterV4Gateway, d.filterV6Gateway])).toEqual([
      [true, true],
      [true, true],
      [false, true],
      [true, true],
    ]);
    expect(planDelegates(config, sources({}), "eth0").every((d) => !d.filterV4Gateway && !d.filterV6Gateway)).toBe(true);
  });

  test("more than one gateway of a family is ECMP", () => {
    const two = sources({ networks: [network("a", { defaultRoute: ["10.0.0.1"] }), network("b", { defaultRoute: ["10.1.0.1", "fd00::1"] })] });
    expect(thrown(() => planDelegates(config, two, "eth0")).msg).toBe("multus does not support ECMP for default-route");
  });
});

describe("config injections", () => {
  test("cni-args merged over each plugin's args.cni, annotation wins", () => {
    const merged = withCniArgs(list("l"), { b: "pod", c: "pod" });
    expect(JSON.parse(merged.bytes).plugins.map((p: { args: unknown }) => p.args)).toEqual([
      { cni: { a: "nad", b: "pod", c: "pod" } },
      { cni: { b: "pod", c: "pod" } },
    ]);
    expect(merged.name).toBe("ns/l");
    const single = withCniArgs(conf("s"), { spoofchk: "on" });
    expect(single.raw.args).toEqual({ cni: { spoofchk: "on" } });
    expect(thrown(() => withCniArgs(delegateFromConfig('{"name":"x","type":"t","args":"no"}'), {})).msg).toContain('"args" is "no"');
  });

  test("deviceID and pciBusID", () => {
    const withDevice = withDeviceId(list("l"), "0000:03:00.1");
    expect(withDevice.list.plugins.map((p) => [p.raw.deviceID, p.raw.pciBusID])).toEqual([
      ["0000:03:00.1", "0000:03:00.1"],
      ["0000:03:00.1", "0000:03:00.1"],
    ]);
  });

  test("a resource's device wins over the annotation's deviceID", () => {
    const plan = planDelegates(
      config,
      sources({
        networks: [
          { ...network("sriov", { deviceID: "from-annotation" }), deviceID: "0000:03:00.1", resourceName: "intel.com/vf" },
          network("x", { deviceID: "dev2" }),
        ],
      }),
      "eth0",
    );
    expect(plan[2]).toMatchObject({ deviceID: "0000:03:00.1", resourceName: "intel.com/vf" });
    expect(plan[2]?.conf.raw.deviceID).toBe("0000:03:00.1");
    expect(plan[3]?.deviceID).toBe("dev2");
    expect(plan[3]?.conf.raw.deviceID).toBeUndefined();
  });
});

describe("CNI_ARGS", () => {
  const pod = { namespace: "app", name: "web-0", infraContainerId: "abc", uid: "u-1" };
  const [master, second] = planDelegates(
    config,
    sources({ defaultNetworks: [], networks: [network("a", { mac: "02:00:00:00:00:01", ips: ["10.1.1.5/24", "fd00::5/64"] })] }),
    "eth0",
  );

  test("order; the runtime's keys not repeated, empty ones filled; MAC and IP on ADD", () => {
    if (second === undefined) throw new Error("no delegate");
    const runtime = "IgnoreUnknown=1;K8S_POD_NAMESPACE=app;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1;EXTRA=a=b;bad";
    expect(delegateArgs({ ...pod, uid: "" }, runtime, second, true)).toEqual([
      ["IgnoreUnknown", "true"],
      ["K8S_POD_NAMESPACE", "app"],
      ["K8S_POD_NAME", "web-0"],
      ["K8S_POD_INFRA_CONTAINER_ID", "abc"],
      ["K8S_POD_UID", "u-1"],
      ["EXTRA", "a=b"],
      ["MAC", "02:00:00:00:00:01"],
      ["IP", "10.1.1.5/24,fd00::5/64"],
    ]);
    expect(delegateArgs(pod, "", second, false).map(([key]) => key)).not.toContain("MAC");
  });

  test("capability args: the master gets the runtime's, others the annotation's over it", () => {
    if (master === undefined || second === undefined) throw new Error("no delegate");
    const invocation: Invocation = {
      containerId: "cid",
      netns: "/var/run/netns/x",
      args: "",
      pod,
      runtimeConfig: { portMappings: [{ hostPort: 80, containerPort: 8080 }], mac: "02:00:00:00:00:99", deviceID: "dev0" },
      cniDir: "/var/lib/cni/multus",
    };
    const forMaster = runtimeConfFor(invocation, master, true);
    expect(forMaster).toMatchObject({ containerId: "cid", netns: "/var/run/netns/x", ifName: "eth0", cacheDir: "/var/lib/cni/multus" });
    expect(forMaster.capabilityArgs).toEqual({
      portMappings: [{ hostPort: 80, containerPort: 8080 }],
      mac: "02:00:00:00:00:99",
      deviceID: "dev0",
      CNIDeviceInfoFile: "/var/run/k8s.cni.cncf.io/devinfo/cni/cbr0-cid_eth0",
    });
    expect(runtimeConfFor(invocation, second, true).capabilityArgs).toEqual({
      portMappings: [{ hostPort: 80, containerPort: 8080 }],
      ips: ["10.1.1.5/24", "fd00::5/64"],
      mac: "02:00:00:00:00:01",
      deviceID: "dev0",
      CNIDeviceInfoFile: "/var/run/k8s.cni.cncf.io/devinfo/cni/ns-a-cid_net1",
    });
  });

  test("empty values are not passed", () => {
    expect(capabilityArgs({ ips: [], portMappings: [], mac: "" })).toEqual({});
    expect(capabilityArgs({ bandwidth: { ingressRate: 1, ingressBurst: 2, egressRate: 0, egressBurst: 0 } })).toEqual({
      bandwidth: { ingressRate: 1, ingressBurst: 2, egressRate: 0, egressBurst: 0 },
    });
  });
});
