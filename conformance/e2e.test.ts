/**
 * The seeds' scenario end to end on real nodes: two nodes (containerd + kubelet, conformance/node/)
 * registered to the test API server, whose kube-controller-manager runs the product's DaemonSet
 * (deploy/, applied with kubectl as an operator would) from the product's image (scripts/image.ts,
 * imported into each node's containerd). The DaemonSet's installer puts the executable in each
 * node's /opt/cni/bin and the multus conf in its /etc/cni/net.d in front of the node's primary
 * network (upstream bridge + host-local v1.9.1, standing in for the cluster's own CNI). Then pods
 * are created as objects with `nodeName` (no scheduler) and annotated with the NADs of the seeds'
 * scenario; kubelet asks containerd for each sandbox, containerd runs our multus, which runs
 * bridge for eth0 and macvlan + whereabouts + sbr for net1. What a user sees is read back: the pod
 * Running, `network-status`, pod events, the kernel inside each pod (through the sandbox's netns),
 * pings across nodes, the IPPool.
 *
 * The nodes share this machine's network namespace: each node's bridge has a name and subnet of
 * its own, and every pod's net1 is a macvlan (bridge mode) on one master (a veth), so pods of both
 * nodes reach each other over net1 as on one VLAN. ipvlan is not here: this machine's kernel has
 * no IPVLAN (the multus + ipvlan NAD runs in the qemu guest, conformance/multus-ipvlan.test.ts).
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { ROOT, sweepStale } from "./harness.ts";
import { type Cluster, KUBE_BIN, startCluster } from "./kube/cluster.ts";
import { createNad, filesUnder, podEvents, poolEntries } from "./kube/multus.ts";
import { AdminApi } from "./kube/objects.ts";
import { type ServiceProxy, startServiceProxy } from "./kube/service-proxy.ts";
import { type KubeNode, startNode } from "./node/node.ts";
import { PRIMARY_CONFLIST, installPrimaryNetwork } from "./node/primary.ts";
import { buildImage } from "../scripts/image.ts";

const NAMESPACE = "default";
const NETWORKS = "k8s.v1.cni.cncf.io/networks";
const NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status";
/** Links of the host namespace this run makes, named after its pid (another run may be going on). */
const MASTER = `e2em${process.pid % 100_000}`;
const SERVICE_LINK = `e2es${process.pid % 100_000}`;
const RANGE = { range: "192.168.20.0/24", range_start: "192.168.20.10", range_end: "192.168.20.100", gateway: "192.168.20.1" };
const POOL = "192.168.20.0-24";
const log = (line: string) => console.log(`[e2e] ${line}`);

let cluster: Cluster;
let api: AdminApi;
let proxy: ServiceProxy;
let image: { name: string; archive: string };
const nodes: KubeNode[] = [];

interface Pod {
  name: string;
  node: KubeNode;
}

/** The seeds' NAD macvlan-conf (macvlan + whereabouts on the Kubernetes store), sbr chained. */
function macvlanConf(name: string, master = MASTER, ipam: Record<string, unknown> = RANGE): Record<string, unknown> {
  return {
    cniVersion: "1.0.0",
    name,
    plugins: [{ type: "macvlan", master, mode: "bridge", ipam: { type: "whereabouts", ...ipam } }, { type: "sbr" }],
  };
}

beforeAll(async () => {
  sweepStale();
  cluster = await startCluster({ controllerManager: true, log });
  api = new AdminApi(cluster);
  proxy = await startServiceProxy(cluster, SERVICE_LINK);
  // A veth pair (this kernel has no dummy links), both ends up: the macvlans need its carrier.
  run(["ip", "link", "add", MASTER, "type", "veth", "peer", "name", `${MASTER}p`]);
  for (const end of [MASTER, `${MASTER}p`]) run(["ip", "link", "set", end, "up"]);
  image = buildImage({ log });
  for (const [index, letter] of ["a", "b"].entries()) {
    const node = await startNode(cluster, { name: `e2e${letter}-${process.pid}`, log });
    nodes.push(node);
    node.ctr(["images", "import", image.archive]);
    installPrimaryNetwork(node, { index, bridge: bridgeName(index) });
  }
  cluster.kubectl(["apply", "-f", join(ROOT, "deploy/crds")]);
  cluster.kubectl(["apply", "-f", join(ROOT, "deploy")]);
  await until("the DaemonSet's pod Running on each node, the multus conf written", 180_000, () =>
    nodes.every((node) => existsSync(join(node.cniConfDir, "00-multus.conflist"))),
  );
  await createNad(api, NAMESPACE, "macvlan-conf", macvlanConf("macvlan-conf"));
}, 600_000);

afterAll(async () => {
  if (cluster) {
    try {
      cluster.kubectl(["-n", NAMESPACE, "delete", "pods", "--all", "--wait=true", "--timeout=90s"]);
    } catch (err) {
      log(`deleting pods: ${err}`);
    }
  }
  for (const node of nodes) await node.stop().catch((err: unknown) => log(`stopping ${node.name}: ${err}`));
  // The bridges of the nodes' primary networks: upstream bridge makes them and never deletes them.
  for (const link of [MASTER, bridgeName(0), bridgeName(1)]) spawnSync("ip", ["link", "del", link]);
  await proxy?.stop();
  api?.close();
  await cluster?.stop();
}, 300_000);

/** The bridge of node `index`'s primary network: 15 characters at most, this run's own. */
function bridgeName(index: number): string {
  return `e2eb${index}-${process.pid % 100_000}`;
}

// ---- pods ----------------------------------------------------------------------------------------

function createPod(name: string, node: KubeNode, networks?: string): Pod {
  cluster.kubectl(
    ["apply", "-f", "-"],
    JSON.stringify({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name, namespace: NAMESPACE, annotations: networks === undefined ? {} : { [NETWORKS]: networks } },
      spec: {
        nodeName: node.name,
        automountServiceAccountToken: false,
        terminationGracePeriodSeconds: 1,
        containers: [{ name: "app", image: node.image, imagePullPolicy: "Never" }],
      },
    }),
  );
  return { name, node };
}

async function running(pod: Pod, timeoutMs = 120_000): Promise<void> {
  await until(`pod ${pod.name} Running`, timeoutMs, () => jsonpath(pod.name, "{.status.phase}") === "Running");
}

function jsonpath(pod: string, path: string): string {
  const result = spawnSync(join(KUBE_BIN, "kubectl"), [`--kubeconfig=${cluster.kubeconfig}`, "-n", NAMESPACE, "get", "pod", pod, "-o", `jsonpath=${path}`], {
    encoding: "utf8",
  });
  return result.status === 0 ? result.stdout.trim() : "";
}

interface StatusEntry {
  name: string;
  interface?: string;
  ips?: string[];
  mac?: string;
  default?: boolean;
}

async function networkStatus(pod: Pod): Promise<StatusEntry[]> {
  const object = await api.send<{ metadata: { annotations?: Record<string, string> } }>("GET", `/api/v1/namespaces/${NAMESPACE}/pods/${pod.name}`);
  const text = object?.metadata.annotations?.[NETWORK_STATUS];
  return text === undefined ? [] : (JSON.parse(text) as StatusEntry[]);
}

/** A command of this machine run in the pod's network namespace. */
function inPod(pod: Pod, args: string[]): { status: number; stdout: string } {
  const pid = pod.node.sandboxPid(jsonpath(pod.name, "{.metadata.uid}"));
  const result = spawnSync("nsenter", [`--net=/proc/${pid}/ns/net`, "--", ...args], { encoding: "utf8" });
  return { status: result.status ?? -1, stdout: `${result.stdout}${result.stderr}` };
}

function podAddresses(pod: Pod): Map<string, string[]> {
  const out = inPod(pod, ["ip", "-j", "-4", "addr", "show"]);
  const links = JSON.parse(out.stdout) as { ifname: string; addr_info: { local: string; prefixlen: number }[] }[];
  return new Map(links.map((l) => [l.ifname, l.addr_info.map((a) => `${a.local}/${a.prefixlen}`)]));
}

function run(args: string[]): string {
  const result = spawnSync(args[0] ?? "", args.slice(1), { encoding: "utf8" });
  if (result.status !== 0) throw new Error(`${args.join(" ")}: ${result.stderr}${result.stdout}`);
  return result.stdout;
}

/** kubectl without blocking this process (cluster.kubectl waits): its stdout, or its failure. */
function kubectlAsync(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(join(KUBE_BIN, "kubectl"), [`--kubeconfig=${cluster.kubeconfig}`, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (out += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code) => (code === 0 ? resolve(out) : reject(new Error(`kubectl ${args.join(" ")}: ${out}`))));
  });
}

async function until(what: string, timeoutMs: number, done: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await done())) {
    if (Date.now() > deadline) throw new Error(`${what}: not after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

// ---- the scenario ----------------------------------------------------------------------------------

describe("the DaemonSet on two nodes", () => {
  test("each node has the executable, every plugin a hard link of it, and the multus conf in front of its primary", () => {
    for (const node of nodes) {
      const executable = statSync(join(node.cniBinDir, "cni-plugins"));
      for (const plugin of ["multus", "macvlan", "ipvlan", "sbr", "whereabouts", "passthru"]) {
        expect(statSync(join(node.cniBinDir, plugin)).ino, `${node.name} ${plugin}`).toBe(executable.ino);
      }
      const conf = JSON.parse(readFileSync(join(node.cniConfDir, "00-multus.conflist"), "utf8")) as { plugins: Record<string, unknown>[] };
      expect(conf.plugins[0]).toMatchObject({ type: "multus", clusterNetwork: PRIMARY_CONFLIST });
      for (const file of ["multus.d/multus.kubeconfig", "whereabouts.d/whereabouts.kubeconfig", "whereabouts.d/whereabouts.conf"]) {
        expect(statSync(join(node.cniConfDir, file)).mode & 0o777, `${node.name} ${file}`).toBe(0o600);
      }
    }
  });
});

describe("the seeds' pods", () => {
  let pods: Pod[];
  beforeAll(async () => {
    pods = [createPod("pod0", nodes[0]!, "macvlan-conf"), createPod("pod1", nodes[0]!, "macvlan-conf"), createPod("pod2", nodes[1]!, "macvlan-conf")];
    for (const pod of pods) await running(pod);
  }, 300_000);

  test("Running with eth0 from the primary and net1 from macvlan-conf, as network-status says and the IPPool holds", async () => {
    const entries = await poolEntries(api, POOL);
    for (const [index, pod] of pods.entries()) {
      const status = await networkStatus(pod);
      expect(status.map((s) => [s.name, s.interface, s.default ?? false])).toEqual([
        ["podnet", "eth0", true],
        [`${NAMESPACE}/macvlan-conf`, "net1", false],
      ]);
      const addresses = podAddresses(pod);
      const subnet = pod.node === nodes[0] ? "10.244.1." : "10.244.2.";
      expect(addresses.get("eth0")?.[0], `${pod.name} eth0`).toMatch(new RegExp(`^${subnet.replaceAll(".", "\\.")}\\d+/24$`));
      const net1 = addresses.get("net1")?.[0] ?? "";
      expect(net1, `${pod.name} net1`).toMatch(/^192\.168\.20\.\d+\/24$/);
      const address = net1.split("/")[0]!;
      expect(Number(address.split(".")[3])).toBeGreaterThanOrEqual(10);
      expect(Number(address.split(".")[3])).toBeLessThanOrEqual(100);
      expect(status[1]?.ips).toEqual([address]);
      expect(entries, `${pod.name} in the pool`).toContain(`${address}=${NAMESPACE}/${pod.name} net1`);
      log(`pod${index} on ${pod.node.name}: eth0 ${addresses.get("eth0")}, net1 ${net1}`);
    }
    expect(entries).toHaveLength(3);
  });

  test("pod0 reaches pod1 (same node) and pod2 (the other node) over net1", () => {
    const [pod0, pod1, pod2] = pods;
    for (const target of [pod1!, pod2!]) {
      const address = podAddresses(target).get("net1")?.[0]?.split("/")[0] ?? "";
      const ping = inPod(pod0!, ["ping", "-c", "1", "-W", "2", "-I", "net1", address]);
      expect(ping.status, `pod0 → ${target.name} ${address}: ${ping.stdout}`).toBe(0);
    }
  });

  test("sbr: traffic from net1's address leaves through net1, by its own table", () => {
    const [pod0] = pods;
    const address = podAddresses(pod0!).get("net1")?.[0]?.split("/")[0] ?? "";
    const rules = inPod(pod0!, ["ip", "-j", "rule", "show"]);
    const rule = (JSON.parse(rules.stdout) as { src?: string; table?: string }[]).find((r) => r.src === address);
    expect(rule, rules.stdout).toBeDefined();
    const route = inPod(pod0!, ["ip", "-j", "route", "get", "198.51.100.7", "from", address]);
    expect((JSON.parse(route.stdout) as { dev: string }[])[0]?.dev, route.stdout).toBe("net1");
    const main = inPod(pod0!, ["ip", "-j", "route", "get", "198.51.100.7"]);
    expect((JSON.parse(main.stdout) as { dev: string }[])[0]?.dev, main.stdout).toBe("eth0");
  });
});

describe("failures as users see them", () => {
  async function failedSandboxEvent(pod: Pod, pattern: RegExp): Promise<string> {
    let message = "";
    await until(`an event of pod ${pod.name} matching ${pattern}`, 120_000, async () => {
      const events = await podEvents(api, { namespace: NAMESPACE, name: pod.name });
      message = events.find((e) => e.reason === "FailedCreatePodSandBox" && pattern.test(e.message))?.message ?? "";
      return message !== "";
    });
    return message;
  }

  test("a NAD whose master does not exist: an event naming the NAD and the cause; fixed, kubelet's retry brings the pod up", async () => {
    await createNad(
      api,
      NAMESPACE,
      "bad-master",
      macvlanConf("bad-master", "nosuchlink0", {
        ...RANGE,
        range: "192.168.21.0/24",
        gateway: "192.168.21.1",
        range_start: "192.168.21.10",
        range_end: "192.168.21.100",
      }),
    );
    const pod = createPod("pod-bad-master", nodes[0]!, "bad-master");
    const message = await failedSandboxEvent(pod, /bad-master/);
    expect(message).toMatch(/nosuchlink0/);
    expect(await poolEntries(api, "192.168.21.0-24")).toEqual([]);
    await createNad(
      api,
      NAMESPACE,
      "bad-master",
      macvlanConf("bad-master", MASTER, {
        ...RANGE,
        range: "192.168.21.0/24",
        gateway: "192.168.21.1",
        range_start: "192.168.21.10",
        range_end: "192.168.21.100",
      }),
    );
    await running(pod, 180_000);
    expect(await poolEntries(api, "192.168.21.0-24")).toHaveLength(1);
  }, 400_000);

  test("a missing NAD: an event naming it; created, the pod comes up", async () => {
    const pod = createPod("pod-missing-nad", nodes[1]!, "not-yet");
    const message = await failedSandboxEvent(pod, /not-yet/);
    expect(message).toMatch(/not found|NotFound|cannot find/i);
    await createNad(
      api,
      NAMESPACE,
      "not-yet",
      macvlanConf("not-yet", MASTER, {
        ...RANGE,
        range: "192.168.22.0/24",
        gateway: "192.168.22.1",
        range_start: "192.168.22.10",
        range_end: "192.168.22.100",
      }),
    );
    await running(pod, 180_000);
  }, 400_000);

  test("a full range: the next pod's event says so and nothing is taken; a pod deleted, it comes up", async () => {
    await createNad(
      api,
      NAMESPACE,
      "tiny",
      macvlanConf("tiny", MASTER, { range: "192.168.23.0/24", range_start: "192.168.23.10", range_end: "192.168.23.10" }),
    );
    const first = createPod("pod-tiny-1", nodes[0]!, "tiny");
    await running(first);
    const second = createPod("pod-tiny-2", nodes[1]!, "tiny");
    await failedSandboxEvent(second, /tiny/);
    expect(await poolEntries(api, "192.168.23.0-24")).toEqual([`192.168.23.10=${NAMESPACE}/pod-tiny-1 net1`]);
    cluster.kubectl(["-n", NAMESPACE, "delete", "pod", first.name, "--wait=true", "--timeout=60s"]);
    await running(second, 180_000);
    expect(await poolEntries(api, "192.168.23.0-24")).toEqual([`192.168.23.10=${NAMESPACE}/pod-tiny-2 net1`]);
  }, 400_000);
});

// ---- the pods' lifecycle on the nodes ----------------------------------------------------------------

/** The IDs of every sandbox containerd keeps for the pod (kubelet's labels), however many tries it took. */
function sandboxIds(pod: Pod, uid: string): string[] {
  const filter = `labels."io.cri-containerd.kind"==sandbox,labels."io.kubernetes.pod.uid"==${JSON.stringify(uid)}`;
  return pod.node.ctr(["containers", "list", "--quiet", filter]).split("\n").filter(Boolean);
}

/** Every file under the node's /var/lib/cni (multus' and libcni's caches, host-local's leases). */
function cniState(node: KubeNode): string[] {
  return filesUnder(node.hostPath("/var/lib/cni"));
}

/** The host-side links on the node's bridge (a veth per pod). */
function bridgePorts(index: number): string[] {
  const out = run(["ip", "-j", "link", "show", "master", bridgeName(index)]);
  return (JSON.parse(out || "[]") as { ifname: string }[]).map((l) => l.ifname);
}

async function gone(pod: Pod, timeoutMs = 120_000): Promise<void> {
  await until(`pod ${pod.name} gone`, timeoutMs, () => jsonpath(pod.name, "{.metadata.name}") === "");
}

describe("pods deleted, kubelet restarted", () => {
  test("a deleted pod leaves nothing: its pool entry, its eth0 lease, its veth, every cache of its sandbox", async () => {
    const pod = createPod("pod-del", nodes[0]!, "macvlan-conf");
    await running(pod);
    const uid = jsonpath(pod.name, "{.metadata.uid}");
    const [sandbox] = sandboxIds(pod, uid);
    expect(sandbox).toBeDefined();
    const eth0 = podAddresses(pod).get("eth0")?.[0]?.split("/")[0] ?? "";
    const before = cniState(pod.node);
    expect(before.filter((f) => f.includes(sandbox!)).length, before.join("\n")).toBeGreaterThan(0);
    expect(before).toContain(`networks/podnet/${eth0}`);
    const ports = bridgePorts(0).length;
    expect((await poolEntries(api, POOL)).some((e) => e.endsWith(`/${pod.name} net1`))).toBe(true);

    cluster.kubectl(["-n", NAMESPACE, "delete", "pod", pod.name, "--wait=true", "--timeout=90s"]);
    await gone(pod);
    await until("the pod's pool entry released", 30_000, async () => !(await poolEntries(api, POOL)).some((e) => e.endsWith(`/${pod.name} net1`)));
    const after = cniState(pod.node);
    // All but the DEL's tombstone in whereabouts' queue, which stops an ADD of the sandbox still
    // alive from allocating after it; later ADDs on the node remove it after an hour (node/batch.ts).
    expect(
      after.filter((f) => f.includes(sandbox!)),
      "files of the sandbox",
    ).toEqual([`whereabouts/locks/${POOL}.queue/${sandbox}:net1.withdrawn`]);
    expect(after).not.toContain(`networks/podnet/${eth0}`);
    expect(bridgePorts(0)).toHaveLength(ports - 1);
    expect((await api.reservations()).filter((r) => r.spec.podref === `${NAMESPACE}/${pod.name}`)).toEqual([]);
  }, 300_000);

  test("kubelet stopped: a pod deleted meanwhile is released and one created meanwhile comes up once it is back", async () => {
    const node = nodes[1]!;
    const old = createPod("pod-restart-old", node, "macvlan-conf");
    await running(old);
    await node.stopKubelet();
    try {
      cluster.kubectl(["-n", NAMESPACE, "delete", "pod", old.name, "--wait=false"]);
      const fresh = createPod("pod-restart-new", node, "macvlan-conf");
      // Nothing happens on the node while its kubelet is away.
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      expect(jsonpath(old.name, "{.metadata.name}")).toBe(old.name);
      expect(jsonpath(fresh.name, "{.status.phase}")).not.toBe("Running");
      await node.startKubelet();
      await gone(old, 180_000);
      await running(fresh, 180_000);
      await until("the deleted pod's pool entry released", 30_000, async () => !(await poolEntries(api, POOL)).some((e) => e.endsWith(`/${old.name} net1`)));
      expect((await poolEntries(api, POOL)).filter((e) => e.endsWith(`/${fresh.name} net1`))).toHaveLength(1);
      expect((await networkStatus(fresh)).map((s) => s.interface)).toEqual(["eth0", "net1"]);
    } finally {
      await node.startKubelet().catch(() => {});
    }
  }, 400_000);
});

describe("the DaemonSet updated in place, then removed", () => {
  test("a new image rolled out while pods are created: every pod comes up, none fails its sandbox", async () => {
    const next = image.name.replace(/:[^:]+$/, ":0.1.0-next");
    for (const node of nodes) node.ctr(["images", "tag", image.name, next]);
    const installerPods = () =>
      cluster.kubectl([
        "-n",
        "kube-system",
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=cni-plugins",
        "-o",
        'jsonpath={range .items[*]}{.spec.containers[0].image} {.status.phase}{"\\n"}{end}',
      ]);
    cluster.kubectl(["-n", "kube-system", "set", "image", "daemonset/cni-plugins", `install=${next}`]);
    const pods: Pod[] = [];
    // Pods keep coming while the installers are replaced, one node after the other.
    const rollout = kubectlAsync(["-n", "kube-system", "rollout", "status", "daemonset/cni-plugins", "--timeout=240s"]);
    for (let i = 0; i < 8; i++) {
      pods.push(createPod(`pod-upgrade-${i}`, nodes[i % 2]!, "macvlan-conf"));
      await new Promise((resolve) => setTimeout(resolve, 1_500));
    }
    await rollout;
    for (const pod of pods) await running(pod, 180_000);
    for (const pod of pods) {
      const events = await podEvents(api, { namespace: NAMESPACE, name: pod.name });
      expect(
        events.filter((e) => e.reason === "FailedCreatePodSandBox").map((e) => e.message),
        pod.name,
      ).toEqual([]);
      expect(
        (await networkStatus(pod)).map((s) => s.interface),
        pod.name,
      ).toEqual(["eth0", "net1"]);
    }
    const installers = installerPods().trim().split("\n");
    expect(
      installers.filter((line) => line === `${next} Running`),
      installers.join("\n"),
    ).toHaveLength(2);
    for (const node of nodes) expect(existsSync(join(node.cniConfDir, "00-multus.conflist")), node.name).toBe(true);
  }, 600_000);

  test("the DaemonSet deleted: each node's multus conf goes, a new pod gets the primary network only", async () => {
    cluster.kubectl(["-n", "kube-system", "delete", "daemonset", "cni-plugins", "--wait=true", "--timeout=120s"]);
    await until("the multus conf removed on each node", 120_000, () => nodes.every((node) => !existsSync(join(node.cniConfDir, "00-multus.conflist"))));
    const pod = createPod("pod-after-uninstall", nodes[0]!, "macvlan-conf");
    await running(pod);
    expect([...podAddresses(pod).keys()].sort()).toEqual(["eth0", "lo"]);
    expect(await networkStatus(pod)).toEqual([]);
    expect((await poolEntries(api, POOL)).some((e) => e.endsWith(`/${pod.name} net1`))).toBe(false);
  }, 300_000);
});
