/** Unit tests of the pod annotations (annotations.ts): both forms of `networks`, default-network, network-status. */
import { describe, expect, test } from "vitest";
import { thrown } from "../../shared/cni/test-util.ts";
import type { Result } from "../../shared/cni/types.ts";
import { isGoMac, networkStatusText, parseDefaultNetworkAnnotation, parseNetworksAnnotation, statusEntries } from "./annotations.ts";

describe("networks annotation, short form", () => {
  test("name, ns/name, name@if, ns/name@if, whitespace", () => {
    expect(parseNetworksAnnotation(" net-a , other/net-b@data0,net-c@ eth9 , ns2 / net-d ", "pod-ns")).toEqual([
      { name: "net-a", namespace: "pod-ns" },
      { name: "net-b", namespace: "other", interface: "data0" },
      { name: "net-c", namespace: "pod-ns", interface: "eth9" },
      { name: "net-d", namespace: "ns2" },
    ]);
  });

  test("the same network twice attaches twice", () => {
    expect(parseNetworksAnnotation("net-a,net-a", "ns")).toHaveLength(2);
  });

  test("empty or blank: no networks", () => {
    expect(parseNetworksAnnotation("", "ns")).toEqual([]);
    expect(parseNetworksAnnotation("  ", "ns")).toEqual([]);
  });

  test.each([
    ["a/b/c", "failed at '/'"],
    ["a@b@c", "failed at '@'"],
    ["net.dotted", '"net.dotted" must consist of lower case'],
    ["Upper", '"Upper" must consist'],
    ["ns_x/net", '"ns_x" must consist'],
    ["net@0123456789abcdef", "at most 15 characters"],
    ["net-a,", "empty network name"],
  ])("%j is refused, the annotation quoted", (text, reason) => {
    const err = thrown(() => parseNetworksAnnotation(text, "ns"));
    expect(err.code).toBe(7);
    expect(err.msg).toContain(`k8s.v1.cni.cncf.io/networks annotation ${JSON.stringify(text)}`);
    expect(err.msg).toContain(reason);
  });
});

describe("networks annotation, JSON form", () => {
  test("the spec's example (§4.1.2)", () => {
    const text = JSON.stringify([
      { name: "net-a" },
      { name: "net-b", ips: ["10.2.2.42/24", "2001:db8::5/64"], mac: "02:23:45:67:89:01", interface: "data0" },
      { name: "net-c", namespace: "other-ns", "default-route": ["10.0.0.1"], "cni-args": { spoofchk: "on" } },
    ]);
    expect(parseNetworksAnnotation(text, "pod-ns")).toEqual([
      { name: "net-a", namespace: "pod-ns" },
      { name: "net-b", namespace: "pod-ns", ips: ["10.2.2.42/24", "2001:db8::5/64"], mac: "02:23:45:67:89:01", interface: "data0" },
      { name: "net-c", namespace: "other-ns", defaultRoute: ["10.0.0.1"], cniArgs: { spoofchk: "on" } },
    ]);
  });

  test("every key", () => {
    const text = JSON.stringify([
      {
        name: "sriov",
        interfaceRequest: "old0",
        ips: ["10.0.0.5"],
        "infiniband-guid": "c2:11:22:33:44:55:66:77",
        portMappings: [{ hostPort: 8080, containerPort: 80, protocol: "tcp", hostIP: "1.2.3.4" }],
        bandwidth: { ingressRate: 100, egressBurst: 5 },
        deviceID: "0000:03:00.1",
        unknownKey: true,
      },
    ]);
    expect(parseNetworksAnnotation(text, "ns")).toEqual([
      {
        name: "sriov",
        namespace: "ns",
        interface: "old0",
        ips: ["10.0.0.5"],
        infinibandGUID: "c2:11:22:33:44:55:66:77",
        portMappings: [{ hostPort: 8080, containerPort: 80, protocol: "tcp", hostIP: "1.2.3.4" }],
        bandwidth: { ingressRate: 100, ingressBurst: 0, egressRate: 0, egressBurst: 5 },
        deviceID: "0000:03:00.1",
      },
    ]);
  });

  test("interface wins over interfaceRequest", () => {
    expect(parseNetworksAnnotation('[{"name":"a","interface":"x","interfaceRequest":"y"}]', "ns")[0]?.interface).toBe("x");
  });

  test.each([
    ['{"name":"a"}', "expected a JSON array"],
    ['[{"name":"a"', "not JSON"],
    ["[null]", "element 0: expected an object"],
    ['[{"namespace":"x"}]', '"[0].name"'],
    ['[{"name":"a","mac":"02:00:00:00:00"}]', '"[0].mac"'],
    ['[{"name":"a","infiniband-guid":"zz"}]', '"[0].infiniband-guid"'],
    ['[{"name":"a","ips":["10.0.0.300"]}]', 'invalid IP address or CIDR "10.0.0.300"'],
    ['[{"name":"a","ips":["10.0.0.1/33"]}]', '"10.0.0.1/33"'],
    ['[{"name":"a","default-route":["gw"]}]', 'invalid IP address "gw"'],
    ['[{"name":"a","cni-args":"x"}]', '"[0].cni-args"'],
    ['[{"name":"a","bandwidth":{"ingressRate":"1"}}]', '"[0].bandwidth.ingressRate"'],
  ])("%s is refused", (text, reason) => {
    const err = thrown(() => parseNetworksAnnotation(text, "ns"));
    expect(err.msg).toContain(JSON.stringify(text));
    expect(err.msg).toContain(reason);
  });

  test("Go's MAC forms", () => {
    for (const mac of ["00:00:5e:00:53:01", "00-00-5E-00-53-01", "0000.5e00.5301", "02:00:5e:10:00:00:00:01", "0200.5e10.0000.0001", `00${":00".repeat(19)}`]) {
      expect(isGoMac(mac)).toBe(true);
    }
    for (const mac of ["00:00:5e:00:53", "00:00-5e:00:53:01", "0000.5e00.530", "", "000000005e005301"]) {
      expect(isGoMac(mac)).toBe(false);
    }
  });
});

describe("default-network annotation", () => {
  test("namespace defaults to multusNamespace", () => {
    expect(parseDefaultNetworkAnnotation("calico", "kube-system")).toEqual({ name: "calico", namespace: "kube-system" });
    expect(parseDefaultNetworkAnnotation('[{"name":"x","namespace":"n"}]', "kube-system")).toEqual({ name: "x", namespace: "n" });
  });

  test.each(["a,b", "[]", ""])("%j: exactly one", (text) => {
    expect(thrown(() => parseDefaultNetworkAnnotation(text, "kube-system")).msg).toContain("exactly one network");
  });
});

describe("network-status", () => {
  const flannel: Result = {
    cniVersion: "0.3.1",
    interfaces: [{ name: "eth0", mac: "86:1d:96:ff:55:0d", sandbox: "/var/run/netns/x" }],
    ips: [{ interface: 0, address: "10.244.1.73/24", gateway: "10.244.1.1" }],
    routes: [{ dst: "0.0.0.0/0", gw: "10.244.1.1" }],
  };
  const macvlan: Result = {
    cniVersion: "1.0.0",
    interfaces: [{ name: "net1", mac: "86:1d:96:ff:55:0e", sandbox: "/var/run/netns/x" }],
    ips: [{ interface: 0, address: "192.168.1.205/24" }],
  };

  test("the reference's example, byte for byte", () => {
    const text = networkStatusText([
      { name: "cbr0", result: flannel, isDefault: true },
      { name: "default/macvlan-conf", result: macvlan, isDefault: false },
    ]);
    expect(text).toBe(
      [
        "[{",
        '    "name": "cbr0",',
        '    "interface": "eth0",',
        '    "ips": [',
        '        "10.244.1.73"',
        "    ],",
        '    "mac": "86:1d:96:ff:55:0d",',
        '    "default": true,',
        '    "dns": {},',
        '    "gateway": [',
        '        "10.244.1.1"',
        "    ]",
        "},{",
        '    "name": "default/macvlan-conf",',
        '    "interface": "net1",',
        '    "ips": [',
        '        "192.168.1.205"',
        "    ],",
        '    "mac": "86:1d:96:ff:55:0e",',
        '    "dns": {}',
        "}]",
      ].join("\n"),
    );
  });

  test("a default route without a gateway: no '<nil>', no key", () => {
    const result: Result = { ...flannel, routes: [{ dst: "0.0.0.0/0" }, { dst: "::/0", gw: "2001:db8:0:0::1" }] };
    expect(statusEntries({ name: "n", result, isDefault: true })[0]?.gateway).toEqual(["2001:db8::1"]);
    expect(statusEntries({ name: "n", result: { ...flannel, routes: [{ dst: "0.0.0.0/0" }] }, isDefault: true })[0]).not.toHaveProperty("gateway");
  });

  test("mtu, dns and device-info in order; escapes as Go", () => {
    const result: Result = {
      cniVersion: "1.0.0",
      interfaces: [{ name: "eth0", mtu: 1400, sandbox: "/n" }],
      dns: { nameservers: ["10.96.0.10"], search: ["a<b>&c"] },
    };
    const text = networkStatusText([
      { name: "n", result, isDefault: false, deviceInfo: { type: "pci", version: "1.1.0", pci: { "pci-address": "0000:03:00.1" } } },
    ]);
    expect(Object.keys(JSON.parse(text)[0])).toEqual(["name", "interface", "mtu", "dns", "device-info"]);
    expect(text).toContain('"search": [\n            "a\\u003cb\\u003e\\u0026c"');
  });

  test("several interfaces: sandbox ones only, IPs by index, unindexed IPs to the last, default by gateway", () => {
    const result: Result = {
      cniVersion: "1.0.0",
      interfaces: [{ name: "host-veth" }, { name: "eth0", sandbox: "/n" }, { name: "eth1", sandbox: "/n" }],
      ips: [
        { interface: 1, address: "10.0.0.2/24" },
        { interface: 2, address: "10.1.0.2/24", gateway: "10.1.0.1" },
        { address: "fd00::2/64" },
        { interface: 0, address: "169.254.1.1/32" },
      ],
    };
    const entries = statusEntries({ name: "n", result, isDefault: true });
    expect(entries).toEqual([
      { name: "n", interface: "eth0", ips: ["10.0.0.2"], dns: {} },
      { name: "n", interface: "eth1", ips: ["10.1.0.2", "fd00::2"], default: true, dns: {} },
    ]);
    const noGateway = statusEntries({ name: "n", result: { ...result, ips: [] }, isDefault: true });
    expect(noGateway.map((entry) => entry.default)).toEqual([true, undefined]);
  });

  test("one interface takes every IP; no interfaces, no entry", () => {
    const result: Result = { cniVersion: "1.0.0", interfaces: [{ name: "eth0", sandbox: "/n" }], ips: [{ interface: 3, address: "10.0.0.2/24" }] };
    expect(statusEntries({ name: "n", result, isDefault: false })[0]?.ips).toEqual(["10.0.0.2"]);
    expect(statusEntries({ name: "n", result: { cniVersion: "1.0.0", ips: [{ address: "10.0.0.2/24" }] }, isDefault: true })).toEqual([]);
    expect(networkStatusText([])).toBe("[]");
  });
});
