import { describe, expect, test } from "vitest";
import { parseNetConf } from "../../shared/cni/config.ts";
import { thrown } from "../../shared/cni/test-util.ts";
import { DEFAULT_DATASTORE_DIR, FLAT_FILE_PATHS, canonicalKeys, loadConfig, mergeFlatFile } from "./config.ts";
import { formatAddress } from "./range.ts";
import { NO_FILES, configOf, fakeFiles } from "./test-util.ts";

const [KUBERNETES_PATH, CNI_PATH, HOST_PATH] = FLAT_FILE_PATHS as [string, string, string];

/** Loads an ipam section exactly as given (no datastore added). */
function raw(ipam: Record<string, unknown>, files = NO_FILES, cniArgs = "") {
  const stdin = JSON.stringify({ cniVersion: "1.0.0", name: "net", type: "macvlan", ipam: { type: "whereabouts", ...ipam } });
  return loadConfig(parseNetConf(stdin), cniArgs, files);
}

const cidrs = (config: ReturnType<typeof configOf>) => config.ranges.map((r) => r.cidr);

describe("keys and defaults", () => {
  test("a minimal config: every default", () => {
    const config = configOf({ range: "10.0.0.0/24" });
    expect(config).toMatchObject({
      name: "net",
      networkName: "",
      routes: [],
      addresses: [],
      overlappingRanges: true,
      store: { kind: "file", dir: "/var/lib/test" },
      leader: { leaseDurationMs: 1500, renewDeadlineMs: 1000, retryPeriodMs: 500 },
      sleepForRaceSeconds: 0,
      log: { level: "info" },
      pod: { namespace: "", name: "" },
      warnings: [],
    });
    expect(config.gateway).toBeUndefined();
    expect(config.dns).toBeUndefined();
    expect(config.nodeSliceSize).toBeUndefined();
    expect(config.pod.podRef).toBeUndefined();
    expect(config.flatFile).toBeUndefined();
  });

  test("datastore_dir defaults to /var/lib/cni/whereabouts and must be absolute", () => {
    expect(raw({ range: "10.0.0.0/24", datastore: "file" }).store).toEqual({ kind: "file", dir: DEFAULT_DATASTORE_DIR });
    expect(thrown(() => raw({ range: "10.0.0.0/24", datastore: "file", datastore_dir: "state" })).msg).toMatch(/not an absolute path/);
  });

  test("every key read", () => {
    const config = configOf({
      range: "10.0.0.0/24",
      gateway: "10.0.0.1",
      routes: [{ dst: "172.31.0.0/16" }, { dst: "0.0.0.0/0", gw: "10.0.0.254", priority: 10, table: 100, scope: 0, mtu: 1400, advmss: 1360 }],
      dns: { nameservers: ["10.0.0.53"], domain: "example.com", search: ["example.com"], options: ["ndots:2"] },
      addresses: [{ address: "192.168.5.5/24", gateway: "192.168.5.1" }],
      enable_overlapping_ranges: false,
      network_name: "storage",
      node_slice_size: "/26",
      configuration_path: "/nowhere",
      log_file: "/tmp/whereabouts.log",
      log_level: "DEBUG",
      leader_lease_duration: 3000,
      leader_renew_deadline: 2000,
      leader_retry_period: 1000,
      sleep_for_race: 2,
      reconciler_cron_expression: "30 4 * * *",
      etcd_host: "ignored",
    });
    expect(formatAddress(config.gateway!)).toBe("10.0.0.1");
    expect(config.routes).toEqual([
      { dst: "172.31.0.0/16" },
      { dst: "0.0.0.0/0", gw: "10.0.0.254", priority: 10, table: 100, scope: 0, mtu: 1400, advmss: 1360 },
    ]);
    expect(config.dns).toEqual({ nameservers: ["10.0.0.53"], domain: "example.com", search: ["example.com"], options: ["ndots:2"] });
    expect(config.addresses).toEqual([{ address: "192.168.5.5/24", gateway: "192.168.5.1" }]);
    expect(config.overlappingRanges).toBe(false);
    expect(config.networkName).toBe("storage");
    expect(config.nodeSliceSize).toBe("/26");
    expect(config.configurationPath).toBe("/nowhere");
    expect(config.log).toEqual({ file: "/tmp/whereabouts.log", level: "debug" });
    expect(config.leader).toEqual({ leaseDurationMs: 3000, renewDeadlineMs: 2000, retryPeriodMs: 1000 });
    expect(config.sleepForRaceSeconds).toBe(2);
  });

  test("keys match in any letter case, as Go's decoder matches them; the later spelling wins", () => {
    const config = configOf({ Range: "10.0.0.0/24", GATEWAY: "10.0.0.1", IPRanges: [{ RANGE: "fd00::/64" }], Network_Name: "a", network_name: "b" });
    expect(cidrs(config)).toEqual(["10.0.0.0/24", "fd00::/64"]);
    expect(formatAddress(config.gateway!)).toBe("10.0.0.1");
    expect(config.networkName).toBe("b");
  });

  test("unknown keys are ignored", () => {
    expect(cidrs(configOf({ range: "10.0.0.0/24", colour: "blue", PodName: "x" }))).toEqual(["10.0.0.0/24"]);
  });

  test.each([
    [{ level: "verbose" }, "info"],
    [{ level: "Error" }, "error"],
    [{ level: "panic" }, "error"],
    [{ level: "debug" }, "debug"],
  ])("log_level %j logs at %s", ({ level }, expected) => {
    expect(configOf({ range: "10.0.0.0/24", log_level: level }).log.level).toBe(expected);
  });

  test("an unknown log_level keeps the default and says so", () => {
    const config = configOf({ range: "10.0.0.0/24", log_level: "chatty" });
    expect(config.log.level).toBe("info");
    expect(config.warnings).toEqual(['unknown log_level "chatty" (expected debug, verbose, error or panic): logging at info']);
  });

  test("leader durations: 0 means the default; an order client-go refuses is an error at load", () => {
    expect(configOf({ range: "10.0.0.0/24", leader_lease_duration: 0 }).leader.leaseDurationMs).toBe(1500);
    expect(thrown(() => configOf({ range: "10.0.0.0/24", leader_lease_duration: 900 })).msg).toMatch(/leader_lease_duration.*must be greater/);
    expect(thrown(() => configOf({ range: "10.0.0.0/24", leader_retry_period: 900 })).msg).toMatch(/leader_renew_deadline.*1.2/);
  });

  test.each([
    [{ range: 5 }, 'invalid "ipam.range": expected a string, got 5'],
    [{ range: "10.0.0.0/24", gateway: "10.0.0.300" }, 'invalid "ipam.gateway": expected an IP address, got "10.0.0.300"'],
    [{ range: "10.0.0.0/24", enable_overlapping_ranges: "true" }, /enable_overlapping_ranges/],
    [{ range: "10.0.0.0/24", routes: [{ dst: "nope" }] }, 'invalid "ipam.routes[0].dst": expected a CIDR such as 172.31.0.0/16, got "nope"'],
    [{ range: "10.0.0.0/24", routes: [{ gw: "10.0.0.1" }] }, /ipam.routes\[0\].dst/],
    [{ range: "10.0.0.0/24", addresses: [{ address: "10.9.0.1" }] }, /ipam.addresses\[0\].address/],
    [{ range: "10.0.0.0/24", network_name: "a/b" }, /network_name/],
    [{ range: "10.0.0.0/24", network_name: ".." }, /network_name/],
    [{ range: "10.0.0.0/24", node_slice_size: "big" }, /node_slice_size/],
    [{ range: "10.0.0.0/24", sleep_for_race: -1 }, /sleep_for_race/],
    [{ ipRanges: [{ range_start: "10.0.0.1" }] }, /ipam.ipRanges\[0\].range/],
    [{}, 'no range configured: set "ipam.range" or "ipam.ipRanges"'],
    [{ exclude: ["10.0.0.1"] }, /no range configured/],
  ])("%j is refused with code 7", (ipam, message) => {
    const error = thrown(() => configOf(ipam));
    expect(error.code).toBe(7);
    expect(error.msg).toMatch(message);
  });

  test("the ipam section must be whereabouts'", () => {
    expect(thrown(() => loadConfig(parseNetConf('{"cniVersion":"1.0.0","name":"n","type":"macvlan"}'), "")).msg).toBe("IPAM config missing 'ipam' key");
    const hostLocal = parseNetConf('{"cniVersion":"1.0.0","name":"n","type":"macvlan","ipam":{"type":"host-local"}}');
    expect(thrown(() => loadConfig(hostLocal, "")).msg).toMatch(/only serves ipam type "whereabouts"/);
  });
});

describe("ranges", () => {
  test("the top-level range first, then ipRanges; the top-level exclude is the top-level range's", () => {
    const config = configOf({
      range: "10.0.0.0/24",
      exclude: ["10.0.0.0/28"],
      ipRanges: [{ range: "fd00::/64", exclude: ["fd00::1"] }, { range: "10.1.0.10-10.1.0.20/24" }],
    });
    expect(cidrs(config)).toEqual(["10.0.0.0/24", "fd00::/64", "10.1.0.0/24"]);
    expect(config.ranges.map((r) => r.exclude.length)).toEqual([1, 1, 0]);
  });

  test("top-level range_start and range_end apply to the top-level range", () => {
    const [r] = configOf({ range: "10.0.0.0/24", range_start: "10.0.0.50", range_end: "10.0.0.60" }).ranges;
    expect([formatAddress({ family: 4, value: r!.first }), formatAddress({ family: 4, value: r!.last })]).toEqual(["10.0.0.50", "10.0.0.60"]);
  });

  test("a bad exclusion fails the load, not the allocation", () => {
    const error = thrown(() => configOf({ ipRanges: [{ range: "10.0.0.0/24", exclude: ["10.0.0.0/99"] }] }));
    expect(error.code).toBe(7);
    expect(error.msg).toMatch(/invalid exclude "10.0.0.0\/99"/);
  });

  test("gateway and route addresses with leading zeros read as decimal and print canonically", () => {
    const config = configOf({ range: "10.0.0.0/24", gateway: "010.0.0.001", routes: [{ dst: "0172.031.0.0/16", gw: "010.0.0.2" }] });
    expect(formatAddress(config.gateway!)).toBe("10.0.0.1");
    expect(config.routes).toEqual([{ dst: "172.31.0.0/16", gw: "10.0.0.2" }]);
  });
});

describe("CNI_ARGS", () => {
  test("pod namespace and name make the podref", () => {
    const config = configOf(
      { range: "10.0.0.0/24" },
      "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=u;K8S_POD_INFRA_CONTAINER_ID=c",
    );
    expect(config.pod).toEqual({ namespace: "default", name: "web-0", podRef: "default/web-0" });
  });

  test("IP= adds static addresses after the config's; GATEWAY= goes to each one whose subnet holds it", () => {
    const config = configOf(
      { range: "10.0.0.0/24", addresses: [{ address: "192.168.5.5/24", gateway: "192.168.5.1" }] },
      "IP=192.168.6.6/24, fd00:1::6/64;GATEWAY=192.168.5.254,fd00:1::1",
    );
    expect(config.addresses).toEqual([
      { address: "192.168.5.5/24", gateway: "192.168.5.254" },
      { address: "192.168.6.6/24" },
      { address: "fd00:1::6/64", gateway: "fd00:1::1" },
    ]);
  });

  test("unknown keys need IgnoreUnknown", () => {
    expect(thrown(() => configOf({ range: "10.0.0.0/24" }, "FOO=bar")).msg).toBe('ARGS: unknown args ["FOO=bar"]');
    expect(configOf({ range: "10.0.0.0/24" }, "IgnoreUnknown=true;FOO=bar").pod.name).toBe("");
  });

  test.each(["IP=10.0.0.5", "IP=nope/24", "GATEWAY=10.0.0.300"])("%s is refused", (args) => {
    expect(thrown(() => configOf({ range: "10.0.0.0/24" }, args)).code).toBe(7);
  });
});

describe("stores", () => {
  test('"datastore": "file" picks the file store even with a kubeconfig', () => {
    expect(raw({ range: "10.0.0.0/24", datastore: "file", kubernetes: { kubeconfig: "/k" } }).store.kind).toBe("file");
  });

  test('"datastore": "kubernetes", or any kubeconfig, picks the Kubernetes store; other datastore values are ignored as upstream does', () => {
    expect(raw({ range: "10.0.0.0/24", datastore: "kubernetes" }).store).toEqual({
      kind: "kubernetes",
      kubeconfig: "",
      apiRoot: "",
      timeoutMs: 10_000,
      journalDir: "/var/lib/cni/whereabouts/journal",
      lockDir: "/var/lib/cni/whereabouts/locks",
      ledgerDir: "/var/lib/cni/whereabouts/attachments",
    });
    expect(raw({ range: "10.0.0.0/24", datastore_dir: "/d", kubernetes: { kubeconfig: "/k", k8s_api_root: "https://api", timeout_ms: 2500 } }).store).toEqual({
      kind: "kubernetes",
      kubeconfig: "/k",
      apiRoot: "https://api",
      timeoutMs: 2500,
      journalDir: "/d/journal",
      lockDir: "/d/locks",
      ledgerDir: "/d/attachments",
    });
    expect(thrown(() => raw({ range: "10.0.0.0/24", kubernetes: { kubeconfig: "/k", timeout_ms: 5 } })).code).toBe(7);
    expect(raw({ range: "10.0.0.0/24", datastore: "etcd", kubernetes: { kubeconfig: "/k" } }).store.kind).toBe("kubernetes");
  });

  test("no store named is an error naming both options, never a silent node-local store", () => {
    const error = thrown(() => raw({ range: "10.0.0.0/24" }));
    expect(error.code).toBe(7);
    expect(error.msg).toBe("no usable datastore: no kubeconfig is configured");
    expect(error.details).toMatch(/"datastore": "file".*"kubeconfig"/);
    expect(thrown(() => raw({ range: "10.0.0.0/24", datastore: "etcd" })).msg).toBe(
      'no usable datastore: datastore "etcd" is not supported and no kubeconfig is configured',
    );
  });
});

describe("the flat file", () => {
  const installerFile = JSON.stringify({
    datastore: "kubernetes",
    configuration_path: "/etc/cni/net.d/whereabouts.d",
    kubernetes: { kubeconfig: "/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig" },
    reconciler_cron_expression: "30 4 * * *",
  });

  test("missing everywhere is fine: it only supplies defaults (upstream fails ADD and DEL)", () => {
    expect(configOf({ range: "10.0.0.0/24" }).flatFile).toBeUndefined();
  });

  test("the standard paths are tried in upstream's order", () => {
    const files = { [HOST_PATH]: '{"network_name":"host"}', [CNI_PATH]: '{"network_name":"cni"}' };
    expect(configOf({ range: "10.0.0.0/24" }, "", fakeFiles(files)).networkName).toBe("cni");
    expect(configOf({ range: "10.0.0.0/24" }, "", fakeFiles({ ...files, [KUBERNETES_PATH]: '{"network_name":"kube"}' })).networkName).toBe("kube");
    expect(configOf({ range: "10.0.0.0/24" }, "", fakeFiles({ [HOST_PATH]: '{"network_name":"host"}' })).flatFile).toBe(HOST_PATH);
  });

  test("an inline configuration_path comes first; a missing one falls through; a directory means its whereabouts.conf", () => {
    const files = fakeFiles(
      { "/custom.conf": '{"network_name":"custom"}', [CNI_PATH]: '{"network_name":"cni"}', "/d/whereabouts.conf": '{"network_name":"dir"}' },
      ["/d"],
    );
    expect(configOf({ range: "10.0.0.0/24", configuration_path: "/custom.conf" }, "", files).networkName).toBe("custom");
    expect(configOf({ range: "10.0.0.0/24", configuration_path: "/missing.conf" }, "", files).networkName).toBe("cni");
    expect(configOf({ range: "10.0.0.0/24", configuration_path: "/d" }, "", files).networkName).toBe("dir");
  });

  test("the flat file's configuration_path is not followed", () => {
    const files = fakeFiles({ [CNI_PATH]: '{"configuration_path":"/other.conf"}', "/other.conf": '{"network_name":"other"}' });
    expect(configOf({ range: "10.0.0.0/24" }, "", files).networkName).toBe("");
  });

  test("upstream's installer file under a config with no store picks the Kubernetes store", () => {
    const config = raw({ range: "10.0.0.0/24" }, fakeFiles({ [CNI_PATH]: installerFile }));
    expect(config.store).toMatchObject({ kind: "kubernetes", kubeconfig: "/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig", apiRoot: "" });
    expect(config.configurationPath).toBe("/etc/cni/net.d/whereabouts.d");
  });

  test("an unreadable flat file is an error naming it", () => {
    expect(thrown(() => configOf({ range: "10.0.0.0/24" }, "", fakeFiles({ [CNI_PATH]: "{nope" }))).msg).toMatch(`flat file ${CNI_PATH} is not valid JSON`);
    expect(thrown(() => configOf({ range: "10.0.0.0/24" }, "", fakeFiles({ [CNI_PATH]: "[]" }))).msg).toBe(`flat file ${CNI_PATH} must hold a JSON object`);
    expect(thrown(() => configOf({ range: "10.0.0.0/24" }, "", fakeFiles({}, [CNI_PATH]))).msg).toBe(`flat file ${CNI_PATH} is a directory`);
  });

  test("the flat file's values fill in what the inline config leaves out", () => {
    const flat = JSON.stringify({ range: "10.9.0.0/16", gateway: "10.0.0.1", network_name: "flat", routes: [{ dst: "1.0.0.0/8" }], log_level: "error" });
    const config = configOf({ range: "10.0.0.0/24", network_name: "" }, "", fakeFiles({ [CNI_PATH]: flat }));
    expect(cidrs(config)).toEqual(["10.0.0.0/24"]);
    expect(formatAddress(config.gateway!)).toBe("10.0.0.1");
    expect(config.networkName).toBe("flat");
    expect(config.routes).toEqual([{ dst: "1.0.0.0/8" }]);
    expect(config.log.level).toBe("error");
    expect(config.flatFile).toBe(CNI_PATH);
  });
});

describe("merging, as mergo does it", () => {
  test('inline values win; Go zero values ("", 0, false, [], {}) are filled in', () => {
    const inline = { range: "10.0.0.0/24", gateway: "", sleep_for_race: 0, routes: [], dns: {}, exclude: ["10.0.0.1"] };
    const flat = { range: "10.9.0.0/16", gateway: "10.0.0.1", sleep_for_race: 3, routes: [{ dst: "1.0.0.0/8" }], dns: { domain: "d" }, exclude: ["10.0.0.2"] };
    expect(mergeFlatFile(inline, flat)).toEqual({
      range: "10.0.0.0/24",
      gateway: "10.0.0.1",
      sleep_for_race: 3,
      routes: [{ dst: "1.0.0.0/8" }],
      dns: { domain: "d" },
      exclude: ["10.0.0.1"],
    });
  });

  test("nested objects merge key by key; lists are taken whole", () => {
    const inline = { dns: { nameservers: ["10.0.0.53"] }, kubernetes: { k8s_api_root: "https://api" }, ipRanges: [{ range: "10.0.0.0/24" }] };
    const flat = {
      dns: { nameservers: ["9.9.9.9"], domain: "example" },
      kubernetes: { kubeconfig: "/k" },
      ipRanges: [{ range: "10.1.0.0/24" }, { range: "fd00::/64" }],
    };
    expect(mergeFlatFile(inline, flat)).toEqual({
      dns: { nameservers: ["10.0.0.53"], domain: "example" },
      kubernetes: { k8s_api_root: "https://api", kubeconfig: "/k" },
      ipRanges: [{ range: "10.0.0.0/24" }],
    });
  });

  test("enable_overlapping_ranges: set inline it wins even as false; left out inline, the flat file's counts", () => {
    expect(mergeFlatFile({ enable_overlapping_ranges: false }, { enable_overlapping_ranges: true })).toEqual({ enable_overlapping_ranges: false });
    expect(mergeFlatFile({}, { enable_overlapping_ranges: false })).toEqual({ enable_overlapping_ranges: false });
    const files = fakeFiles({ [CNI_PATH]: '{"enable_overlapping_ranges": false}' });
    expect(configOf({ range: "10.0.0.0/24" }, "", files).overlappingRanges).toBe(false);
    expect(configOf({ range: "10.0.0.0/24", enable_overlapping_ranges: true }, "", files).overlappingRanges).toBe(true);
  });

  test("keys of both sides are matched case-insensitively before merging", () => {
    expect(canonicalKeys({ DNS: { Domain: "d" }, Kubernetes: { KubeConfig: "/k" }, bogus: 1 })).toEqual({
      dns: { domain: "d" },
      kubernetes: { kubeconfig: "/k" },
    });
  });
});
