/** Unit tests of the multus conf reader (config.ts): upstream's defaults, every key, bad values. */
import { describe, expect, test } from "vitest";
import { thrown } from "../../shared/cni/test-util.ts";
import { loadMultusConfig, splitNamespaces } from "./config.ts";

function load(extra: Record<string, unknown>) {
  return loadMultusConfig(JSON.stringify({ cniVersion: "0.3.1", name: "multus-cni-network", type: "multus", ...extra }));
}

describe("multus conf", () => {
  test("defaults", () => {
    const config = load({ clusterNetwork: "flannel" });
    expect(config).toMatchObject({
      kubeconfig: "",
      clusterNetwork: "flannel",
      defaultNetworks: [],
      delegates: [],
      confDir: "/etc/cni/multus/net.d",
      cniDir: "/var/lib/cni/multus",
      binDir: "/opt/cni/bin",
      logFile: "",
      logLevel: "panic",
      logToStderr: true,
      logOptions: { maxAge: 5, maxSize: 100, maxBackups: 5, compress: true },
      readinessIndicatorFile: "",
      namespaceIsolation: false,
      globalNamespaces: ["default"],
      multusNamespace: "kube-system",
      systemNamespaces: ["kube-system"],
      retryDeleteOnError: false,
      auxiliaryCNIChainName: "",
      capabilities: {},
      runtimeConfig: {},
    });
    expect(config.unknownLogLevel).toBeUndefined();
    expect(config.prevResult).toBeUndefined();
  });

  test("upstream's docs example (clusterNetwork style)", () => {
    const config = load({
      name: "node-cni-network",
      kubeconfig: "/etc/kubernetes/node-kubeconfig.yaml",
      confDir: "/etc/cni/multus/net.d",
      cniDir: "/var/lib/cni/multus",
      binDir: "/opt/cni/bin",
      logFile: "/var/log/multus.log",
      logLevel: "debug",
      capabilities: { portMappings: true },
      namespaceIsolation: false,
      clusterNetwork: "/etc/cni/net.d/99-flannel.conf",
      defaultNetworks: ["sidecar"],
      systemNamespaces: ["kube-system"],
      multusNamespace: "kube-system",
    });
    expect(config).toMatchObject({
      name: "node-cni-network",
      kubeconfig: "/etc/kubernetes/node-kubeconfig.yaml",
      logFile: "/var/log/multus.log",
      logLevel: "debug",
      capabilities: { portMappings: true },
      clusterNetwork: "/etc/cni/net.d/99-flannel.conf",
      defaultNetworks: ["sidecar"],
    });
  });

  test("every other key", () => {
    const config = load({
      delegates: [{ type: "flannel", name: "cbr0" }],
      logLevel: "VERBOSE",
      logToStderr: false,
      logOptions: { maxAge: 1, compress: false },
      readinessindicatorfile: "/run/flannel/subnet.env",
      namespaceIsolation: true,
      globalNamespaces: " shared , infra,,",
      multusNamespace: "multus",
      systemNamespaces: [],
      retryDeleteOnError: true,
      auxiliaryCNIChainName: "aux",
      runtimeConfig: {
        portMappings: [{ hostPort: 8080, containerPort: 80, protocol: "tcp" }],
        bandwidth: { ingressRate: 1000 },
        ips: ["10.1.1.1/24"],
        mac: "02:00:00:00:00:01",
        infinibandGUID: "c2:11:22:33:44:55:66:77",
        deviceID: "0000:03:00.1",
        CNIDeviceInfoFile: "/var/run/k8s.cni.cncf.io/devinfo/x",
        dns: { nameservers: ["1.1.1.1"] },
        "io.kubernetes.cri.pod-annotations": { a: "b" },
      },
      prevResult: { cniVersion: "0.3.1", ips: [{ version: "4", address: "10.0.0.2/24" }] },
      allowTryDeleteOnErr: true,
      cniConf: "/etc/cni/multus/net.d",
    });
    expect(config).toMatchObject({
      delegates: [{ type: "flannel", name: "cbr0" }],
      logLevel: "verbose",
      logToStderr: false,
      logOptions: { maxAge: 1, maxSize: 100, maxBackups: 5, compress: false },
      readinessIndicatorFile: "/run/flannel/subnet.env",
      namespaceIsolation: true,
      globalNamespaces: ["shared", "infra"],
      multusNamespace: "multus",
      systemNamespaces: [],
      retryDeleteOnError: true,
      auxiliaryCNIChainName: "aux",
    });
    // Only the keys upstream parses survive.
    expect(config.runtimeConfig).toEqual({
      portMappings: [{ hostPort: 8080, containerPort: 80, protocol: "tcp" }],
      bandwidth: { ingressRate: 1000, ingressBurst: 0, egressRate: 0, egressBurst: 0 },
      ips: ["10.1.1.1/24"],
      mac: "02:00:00:00:00:01",
      infinibandGUID: "c2:11:22:33:44:55:66:77",
      deviceID: "0000:03:00.1",
      CNIDeviceInfoFile: "/var/run/k8s.cni.cncf.io/devinfo/x",
    });
    expect(config.prevResult?.ips).toEqual([{ address: "10.0.0.2/24" }]);
  });

  test("runtimeConfig as containerd sends it: Go's field names in any letter case, unknown keys dropped", () => {
    const config = load({
      clusterNetwork: "x",
      runtimeConfig: {
        portMappings: [{ HostPort: 8080, ContainerPort: 80, Protocol: "udp", HostIP: "" }],
        bandwidth: { IngressRate: 1000, IngressBurst: 4294967295, EgressRate: 2000, EgressBurst: 4294967295 },
        dns: { Servers: ["10.96.0.10"], Searches: ["svc.cluster.local"], Options: ["ndots:5"] },
        "io.kubernetes.cri.pod-annotations": { "k8s.v1.cni.cncf.io/networks": "macvlan-conf" },
      },
    });
    expect(config.runtimeConfig).toEqual({
      portMappings: [{ hostPort: 8080, containerPort: 80, protocol: "udp" }],
      bandwidth: { ingressRate: 1000, ingressBurst: 4294967295, egressRate: 2000, egressBurst: 4294967295 },
    });
  });

  test("clusterNetwork set: delegates ignored", () => {
    expect(load({ clusterNetwork: "x", delegates: [{ type: "bridge" }] }).delegates).toEqual([]);
  });

  test("neither clusterNetwork nor delegates", () => {
    expect(thrown(() => load({})).msg).toBe("at least one delegate/clusterNetwork must be specified");
    expect(thrown(() => load({ delegates: [] })).code).toBe(7);
  });

  test("unknown log level: kept at panic, reported", () => {
    const config = load({ clusterNetwork: "x", logLevel: "chatty" });
    expect(config.logLevel).toBe("panic");
    expect(config.unknownLogLevel).toBe("chatty");
  });

  test("empty strings take the defaults where upstream does", () => {
    const config = load({ clusterNetwork: "x", confDir: "", cniDir: "", binDir: "", multusNamespace: "", globalNamespaces: "" });
    expect(config).toMatchObject({
      confDir: "/etc/cni/multus/net.d",
      cniDir: "/var/lib/cni/multus",
      binDir: "/opt/cni/bin",
      multusNamespace: "kube-system",
      globalNamespaces: ["default"],
    });
  });

  test.each([
    [{ clusterNetwork: 1 }, '"clusterNetwork"'],
    [{ clusterNetwork: "x", defaultNetworks: "a" }, '"defaultNetworks"'],
    [{ delegates: ["x"] }, '"delegates[0]"'],
    [{ clusterNetwork: "x", globalNamespaces: ["a"] }, '"globalNamespaces"'],
    [{ clusterNetwork: "x", namespaceIsolation: "true" }, '"namespaceIsolation"'],
    [{ clusterNetwork: "x", logOptions: { maxAge: "5" } }, '"logOptions.maxAge"'],
    [{ clusterNetwork: "x", runtimeConfig: { ips: "10.0.0.1" } }, '"runtimeConfig.ips"'],
    [{ clusterNetwork: "x", runtimeConfig: { portMappings: [{ hostPort: "80" }] } }, '"runtimeConfig.portMappings[0].hostPort"'],
    [{ clusterNetwork: "x", runtimeConfig: { bandwidth: { egressRate: 1.5 } } }, '"runtimeConfig.bandwidth.egressRate"'],
  ])("bad value %j: code 7 naming the key", (extra, key) => {
    const err = thrown(() => load(extra));
    expect(err.code).toBe(7);
    expect(err.msg).toContain(key);
  });

  test("globalNamespaces items", () => {
    expect(splitNamespaces("a, b ,c")).toEqual(["a", "b", "c"]);
    expect(splitNamespaces(" ")).toEqual(["default"]);
  });
});
