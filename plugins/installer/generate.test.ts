/**
 * The installer's pure parts: which conf is the primary, the multus conf generated from it, the
 * kubeconfigs (read back by shared/kube's own kubeconfig reader, as the plugins read them) and
 * whereabouts' flat file.
 */
import { describe, expect, test } from "vitest";
import { resolveKubeconfig } from "../../shared/kube/config.ts";
import {
  kubeconfig,
  MULTUS_CONF,
  MULTUS_CONFLIST,
  multusConf,
  PrimaryConfError,
  primaryCandidates,
  readPrimary,
  serverUrl,
  whereaboutsFlatFile,
} from "./generate.ts";

const OPTIONS = {
  confDirHost: "/etc/cni/net.d/",
  kubeconfigFileHost: "/etc/cni/net.d/multus.d/multus.kubeconfig",
  logFile: "/var/log/multus.log",
  logLevel: "error",
  logToStderr: true,
  namespaceIsolation: false,
  globalNamespaces: "",
  readinessIndicatorFile: "",
  overrideNetworkName: false,
};

const FLANNEL = JSON.stringify({
  cniVersion: "0.3.1",
  name: "cbr0",
  plugins: [
    { type: "flannel", delegate: { hairpinMode: true } },
    { type: "portmap", capabilities: { portMappings: true } },
    { type: "bandwidth", capabilities: { bandwidth: true, ignored: false } },
  ],
});

describe("the primary conf", () => {
  test("the first conf in byte order, as the runtime picks it; ours and other extensions left out", () => {
    const names = ["99-z.conf", "10-b.conflist", "00-multus.conf", "00-multus.conflist", "00-multus.conf.new", "05-a.json", "01-x.txt", "Z.conf", "a.conf"];
    expect(primaryCandidates(names, "")).toEqual(["05-a.json", "10-b.conflist", "99-z.conf", "Z.conf", "a.conf"]);
  });

  test("--multus-master-cni-file-name picks that file alone, or none while it is absent", () => {
    expect(primaryCandidates(["05-a.conf", "10-b.conflist"], "10-b.conflist")).toEqual(["10-b.conflist"]);
    expect(primaryCandidates(["05-a.conf"], "10-b.conflist")).toEqual([]);
  });

  test("a conflist: its version, name and the union of its plugins' true capabilities", () => {
    expect(readPrimary("10-flannel.conflist", FLANNEL)).toEqual({
      fileName: "10-flannel.conflist",
      cniVersion: "0.3.1",
      name: "cbr0",
      capabilities: ["bandwidth", "portMappings"],
    });
  });

  test("a single-plugin conf", () => {
    const conf = JSON.stringify({ cniVersion: "0.4.0", name: "net", type: "bridge", capabilities: { ips: true } });
    expect(readPrimary("10-bridge.conf", conf).capabilities).toEqual(["ips"]);
  });

  test("a file half written is waited for; someone else's multus conf is skipped", () => {
    const problem = (text: string): PrimaryConfError => {
      try {
        readPrimary("10-x.conf", text);
      } catch (err) {
        if (err instanceof PrimaryConfError) return err;
      }
      throw new Error("no PrimaryConfError");
    };
    expect(problem('{"cniVersion": "0.3.1", "na')).toMatchObject({ skip: false, message: expect.stringContaining("not valid JSON") });
    expect(problem("")).toMatchObject({ skip: false });
    expect(problem('{"name": "n", "type": "bridge"}')).toMatchObject({ skip: false, message: "10-x.conf has no cniVersion" });
    expect(problem('{"cniVersion": "1.0.0", "name": "n", "plugins": []}')).toMatchObject({ skip: false, message: "10-x.conf has no plugins" });
    expect(problem('{"cniVersion": "0.3.1", "name": "m", "type": "multus", "clusterNetwork": "x"}')).toMatchObject({ skip: true });
    expect(problem('{"cniVersion": "1.0.0", "name": "m", "plugins": [{"type": "multus-shim"}]}')).toMatchObject({ skip: true });
  });
});

describe("the multus conf", () => {
  test("before 1.0.0: a .conf with the primary's version and capabilities, the primary as clusterNetwork by its path on the node", () => {
    const { fileName, text } = multusConf(readPrimary("10-flannel.conflist", FLANNEL), OPTIONS);
    expect(fileName).toBe(MULTUS_CONF);
    expect(JSON.parse(text)).toEqual({
      cniVersion: "0.3.1",
      name: "multus-cni-network",
      type: "multus",
      capabilities: { bandwidth: true, portMappings: true },
      kubeconfig: "/etc/cni/net.d/multus.d/multus.kubeconfig",
      clusterNetwork: "/etc/cni/net.d/10-flannel.conflist",
      logFile: "/var/log/multus.log",
      logLevel: "error",
    });
  });

  test("1.0.0 and later: a .conflist with multus its one plugin, as upstream writes it", () => {
    const primary = readPrimary("10-x.conflist", JSON.stringify({ cniVersion: "1.1.0", name: "x", plugins: [{ type: "ptp" }] }));
    const { fileName, text } = multusConf(primary, { ...OPTIONS, logFile: "", logLevel: "" });
    expect(fileName).toBe(MULTUS_CONFLIST);
    expect(JSON.parse(text)).toEqual({
      cniVersion: "1.1.0",
      name: "multus-cni-network",
      plugins: [{ type: "multus", kubeconfig: "/etc/cni/net.d/multus.d/multus.kubeconfig", clusterNetwork: "/etc/cni/net.d/10-x.conflist" }],
    });
  });

  test("the optional keys, written only when they change multus' defaults", () => {
    const primary = readPrimary("10-x.conf", JSON.stringify({ cniVersion: "0.4.0", name: "primary-net", type: "bridge" }));
    const conf = JSON.parse(
      multusConf(primary, {
        ...OPTIONS,
        logToStderr: false,
        namespaceIsolation: true,
        globalNamespaces: "default,infra",
        readinessIndicatorFile: "/run/ready",
        overrideNetworkName: true,
      }).text,
    );
    expect(conf).toMatchObject({
      name: "primary-net",
      logToStderr: false,
      namespaceIsolation: true,
      globalNamespaces: "default,infra",
      readinessindicatorfile: "/run/ready",
    });
    expect(conf).not.toHaveProperty("capabilities");
  });
});

describe("kubeconfigs", () => {
  const CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

  test("the server from the service's environment, IPv6 in brackets", () => {
    expect(serverUrl({ protocol: "https", host: "10.96.0.1", port: "443" })).toBe("https://10.96.0.1:443");
    expect(serverUrl({ protocol: "https", host: "fd00:10:96::1", port: "443" })).toBe("https://[fd00:10:96::1]:443");
    expect(serverUrl({ protocol: "http", host: "[::1]", port: "8080" })).toBe("http://[::1]:8080");
  });

  test("read back by the plugins' kubeconfig reader: server, CA, token and namespace", () => {
    const text = kubeconfig({ server: "https://10.96.0.1:443", ca: CA, token: 'ey"J\\', user: "whereabouts", namespace: "kube-system" });
    expect(resolveKubeconfig(JSON.parse(text), "/k")).toEqual({
      server: "https://10.96.0.1:443",
      ca: CA,
      insecureSkipTlsVerify: false,
      token: 'ey"J\\',
      namespace: "kube-system",
    });
  });

  test("upstream's names (cluster local, user and context after the plugin); no CA means skip verification", () => {
    const document = JSON.parse(kubeconfig({ server: "https://a:6443", ca: undefined, token: "t", user: "multus" }));
    expect(document).toEqual({
      apiVersion: "v1",
      kind: "Config",
      clusters: [{ name: "local", cluster: { server: "https://a:6443", "insecure-skip-tls-verify": true } }],
      users: [{ name: "multus", user: { token: "t" } }],
      contexts: [{ name: "multus-context", context: { cluster: "local", user: "multus" } }],
      "current-context": "multus-context",
    });
    expect(resolveKubeconfig(document, "/k").insecureSkipTlsVerify).toBe(true);
  });
});

test("whereabouts' flat file: the Kubernetes store through the kubeconfig on the node, the log file", () => {
  expect(
    JSON.parse(
      whereaboutsFlatFile({ kubeconfigFileHost: "/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig", logFile: "/var/log/w.log", logLevel: "debug" }),
    ),
  ).toEqual({
    datastore: "kubernetes",
    kubernetes: { kubeconfig: "/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig" },
    log_file: "/var/log/w.log",
    log_level: "debug",
  });
  expect(JSON.parse(whereaboutsFlatFile({ kubeconfigFileHost: "/k", logFile: "", logLevel: "" }))).toEqual({
    datastore: "kubernetes",
    kubernetes: { kubeconfig: "/k" },
  });
});
