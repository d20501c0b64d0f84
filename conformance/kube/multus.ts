/**
 * Fixtures of the multus suites: Kubernetes "nodes" made of a network namespace and the files a
 * node holds (multus conf dir, cniDir, bin dirs, kubeconfig, whereabouts' flat file, the primary
 * network's conflist), pods and NetworkAttachmentDefinitions as objects in a real API server, and
 * the pod's view read back (kernel state, network-status annotation, events).
 *
 * Where each process runs. The API server listens on 127.0.0.1 of this process's network
 * namespace, so multus (ours or upstream's) runs here too, as does whereabouts (it talks to the
 * API). What a plugin leaves on "the host" must land in the node's namespace instead: each bin dir
 * holds small wrappers that run macvlan, ipvlan, ptp and bridge with `ip netns exec <node>`, so the
 * master link they find and the host-side veths they make are the node's. whereabouts, exec'd by
 * macvlan from inside the node, is sent back here with nsenter.
 *
 * Every node reads "the same" flat file, as upstream's installer puts one at one path on every
 * node: the NAD names one path, and each node's whereabouts wrapper bind-mounts its own folder
 * there in a private mount namespace, so each node keeps its own kubeconfig and our whereabouts'
 * node state (datastore_dir), which GC relies on.
 *
 * Runs under Node (vitest): node: modules only.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { BIN, ROOT, UPSTREAM_BIN, cni, ip, netns, node, nsPath, type CniCall, type CniOutput, type Node } from "../harness.ts";
import { installerKubeconfigText, type Cluster } from "./cluster.ts";
import type { AdminApi } from "./objects.ts";

export const MULTUS = join(BIN, "multus");
const UPSTREAM_MULTUS_DIR = join(ROOT, ".cache/upstream/multus-v4.3.0");
const UPSTREAM_MULTUS = join(UPSTREAM_MULTUS_DIR, "multus");
const UPSTREAM_WHEREABOUTS = join(ROOT, ".cache/upstream/whereabouts-v0.9.4/whereabouts");

/** Which multus, with its own delegates (macvlan, ipvlan, whereabouts, passthru). */
export type Impl = "ours" | "upstream";

function multusBinary(impl: Impl): string {
  return impl === "ours" ? MULTUS : UPSTREAM_MULTUS;
}

/** Every binary the suites run: a missing one is named, with what builds it. */
export function requiredBinaries(): string[] {
  return [
    MULTUS,
    join(BIN, "macvlan"),
    join(BIN, "ipvlan"),
    join(BIN, "whereabouts"),
    join(BIN, "passthru"),
    UPSTREAM_MULTUS,
    join(UPSTREAM_MULTUS_DIR, "passthru"),
    UPSTREAM_WHEREABOUTS,
    ...["macvlan", "ipvlan", "ptp", "bridge", "host-local", "loopback"].map((name) => join(UPSTREAM_BIN, name)),
  ].filter((path) => !existsSync(path));
}

export interface MultusNode {
  /** The Node's name: pods on it carry it as spec.nodeName. */
  name: string;
  index: number;
  /** The node's namespace and its master link `m0`. */
  host: Node;
  dir: string;
  /** multus' confDir (NADs without spec.config, clusterNetwork by name). */
  confDir: string;
  cniDir: string;
  /** The kubelet's conf dir: the primary network's conflist is here. */
  netDir: string;
  /** upstream's installer's kubeconfig (YAML, CA inline, a token), for multus. */
  kubeconfig: string;
  logFile: string;
  /** The primary network (eth0): upstream ptp + host-local, subnet 10.244.<index>.0/24. */
  primaryConflist: string;
  /** host-local's dataDir. */
  hostLocalDir: string;
  /** Our whereabouts' node state (datastore_dir). */
  whereaboutsState: string;
  binDir(impl: Impl): string;
}

/** What every node of a suite shares: where the NADs point whereabouts for its flat file. */
export interface Site {
  dir: string;
  /** A folder each node's whereabouts wrapper mounts its own flat-file folder on. */
  flatDir: string;
  /** The flat file's path as the NAD names it. */
  flatFile: string;
  cluster: Cluster;
}

export function site(cluster: Cluster, dir: string): Site {
  const flatDir = join(dir, "whereabouts.d");
  mkdirSync(flatDir, { recursive: true });
  return { dir, flatDir, flatFile: join(flatDir, "whereabouts.conf"), cluster };
}

function script(path: string, text: string): void {
  writeFileSync(path, text);
  chmodSync(path, 0o755);
}

/**
 * upstream multus' installer's kubeconfig (multus `cmd/thin_entrypoint`, §9.3 of the reference):
 * YAML, the CA inline, a token (the admin's unless another is given, a service account's say).
 */
export function multusKubeconfigText(cluster: Pick<Cluster, "server" | "caFile" | "adminToken">, token = cluster.adminToken): string {
  return [
    "# Kubeconfig file for Multus CNI plugin.",
    "apiVersion: v1",
    "kind: Config",
    "clusters:",
    "- name: local",
    "  cluster:",
    `    server: ${cluster.server}`,
    `    certificate-authority-data: ${readFileSync(cluster.caFile).toString("base64")}`,
    "users:",
    "- name: multus",
    "  user:",
    `    token: "${token}"`,
    "contexts:",
    "- name: multus-context",
    "  context:",
    "    cluster: local",
    "    user: multus",
    "current-context: multus-context",
    "",
  ].join("\n");
}

/** A node with its namespace, files and bin dirs. `index` picks its eth0 subnet. */
export function multusNode(where: Site, name: string, index: number): MultusNode {
  const dir = join(where.dir, name);
  const path = (...parts: string[]) => join(dir, ...parts);
  for (const folder of [
    "etc/cni/net.d",
    "etc/cni/multus/net.d",
    "var/lib/cni/multus",
    "var/lib/cni/networks",
    "var/lib/cni/whereabouts",
    "var/log",
    "whereabouts.d",
  ]) {
    mkdirSync(path(folder), { recursive: true });
  }
  const host = node();
  const kubeconfig = path("etc/cni/net.d/multus.d/multus.kubeconfig");
  mkdirSync(path("etc/cni/net.d/multus.d"), { recursive: true });
  writeFileSync(kubeconfig, multusKubeconfigText(where.cluster), { mode: 0o600 });

  // whereabouts' flat file and kubeconfig as upstream's installer writes them (its own, apart from
  // multus'), plus our node state's folder.
  const whereaboutsState = path("var/lib/cni/whereabouts");
  const whereaboutsKubeconfig = path("whereabouts.d/whereabouts.kubeconfig");
  writeFileSync(whereaboutsKubeconfig, installerKubeconfigText({ ...where.cluster, token: where.cluster.adminToken, namespace: "kube-system" }), {
    mode: 0o600,
  });
  writeFileSync(
    path("whereabouts.d/whereabouts.conf"),
    JSON.stringify({ datastore: "kubernetes", kubernetes: { kubeconfig: whereaboutsKubeconfig }, datastore_dir: whereaboutsState, log_level: "error" }),
    { mode: 0o600 },
  );

  const hostLocalDir = path("var/lib/cni/networks");
  const primaryConflist = path("etc/cni/net.d/10-ptp.conflist");
  writeFileSync(primaryConflist, JSON.stringify(primaryNetwork(hostLocalDir, index), null, 2));

  const bins = new Map<Impl, string>();
  for (const impl of ["ours", "upstream"] as const) {
    const bin = path(`opt/cni/bin-${impl}`);
    mkdirSync(bin, { recursive: true });
    const own = (plugin: string) => (impl === "ours" ? join(BIN, plugin) : join(UPSTREAM_BIN, plugin));
    // In the node's namespace: what finds the master link or leaves a host-side link.
    for (const [plugin, binary] of [
      ["macvlan", own("macvlan")],
      ["ipvlan", own("ipvlan")],
      ["ptp", join(UPSTREAM_BIN, "ptp")],
      ["bridge", join(UPSTREAM_BIN, "bridge")],
    ] as const) {
      script(join(bin, plugin), `#!/bin/sh\nexec ip netns exec ${host.ns} ${binary}\n`);
    }
    for (const [plugin, binary] of [
      ["host-local", join(UPSTREAM_BIN, "host-local")],
      ["loopback", join(UPSTREAM_BIN, "loopback")],
      ["passthru", impl === "ours" ? join(BIN, "passthru") : join(UPSTREAM_MULTUS_DIR, "passthru")],
    ] as const) {
      script(join(bin, plugin), `#!/bin/sh\nexec ${binary}\n`);
    }
    // Back to this process's namespace (the API server), with this node's flat file in place.
    const whereabouts = impl === "ours" ? join(BIN, "whereabouts") : UPSTREAM_WHEREABOUTS;
    script(
      join(bin, "whereabouts"),
      `#!/bin/sh\nexec unshare --mount sh -c 'mount --bind "$0" "$1" && exec nsenter --net="$2" "$3"' ${path("whereabouts.d")} ${where.flatDir} /proc/${process.pid}/ns/net ${whereabouts}\n`,
    );
    bins.set(impl, bin);
  }
  return {
    name,
    index,
    host,
    dir,
    confDir: path("etc/cni/multus/net.d"),
    cniDir: path("var/lib/cni/multus"),
    netDir: path("etc/cni/net.d"),
    kubeconfig,
    logFile: path("var/log/multus.log"),
    primaryConflist,
    hostLocalDir,
    whereaboutsState,
    binDir: (impl) => bins.get(impl)!,
  };
}

/**
 * The cluster network: upstream ptp + host-local on 10.244.<index>.0/24, a default route through
 * the node. `gateway: false` leaves the route's gw out, as many cluster networks do (upstream
 * multus then writes the gateway "<nil>").
 */
export function primaryNetwork(hostLocalDir: string, index: number, o: { name?: string; gateway?: boolean } = {}): Record<string, unknown> {
  const gw = `10.244.${index}.1`;
  return {
    cniVersion: "1.0.0",
    name: o.name ?? "podnet",
    plugins: [
      {
        type: "ptp",
        ipMasq: false,
        ipam: {
          type: "host-local",
          dataDir: hostLocalDir,
          ranges: [[{ subnet: `10.244.${index}.0/24`, gateway: gw }]],
          routes: [o.gateway === false ? { dst: "0.0.0.0/0" } : { dst: "0.0.0.0/0", gw }],
        },
      },
    ],
  };
}

/** The multus conf a node's runtime hands multus, upstream's keys; `extra` over them. */
export function multusConf(n: MultusNode, impl: Impl, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    cniVersion: "1.0.0",
    name: "multus-cni-network",
    type: "multus",
    kubeconfig: n.kubeconfig,
    confDir: n.confDir,
    cniDir: n.cniDir,
    binDir: n.binDir(impl),
    logFile: n.logFile,
    logLevel: "verbose",
    logToStderr: false,
    clusterNetwork: n.primaryConflist,
    ...extra,
  };
}

/** The NAD spec.config of the seeds' scenario: macvlan on m0 with whereabouts on the Kubernetes store. */
export function macvlanWhereabouts(where: Site, name = "macvlan-conf", extraIpam: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    cniVersion: "1.0.0",
    name,
    type: "macvlan",
    master: "m0",
    mode: "bridge",
    ipam: {
      type: "whereabouts",
      configuration_path: where.flatFile,
      range: "192.168.20.0/24",
      range_start: "192.168.20.10",
      range_end: "192.168.20.100",
      gateway: "192.168.20.1",
      ...extraIpam,
    },
  };
}

// ---- API objects -------------------------------------------------------------------------------

const NAD_API = "/apis/k8s.cni.cncf.io/v1";

export interface PodRef {
  namespace: string;
  name: string;
  uid: string;
}

export async function ensureNamespace(api: AdminApi, name: string): Promise<void> {
  if (await api.send("GET", `/api/v1/namespaces/${name}`)) return;
  await api.send("POST", "/api/v1/namespaces", { apiVersion: "v1", kind: "Namespace", metadata: { name } });
}

/** A NAD; `config` an object is written as JSON, a string as it is (malformed on purpose, say). */
export async function createNad(
  api: AdminApi,
  namespace: string,
  name: string,
  config: Record<string, unknown> | string | undefined,
  annotations: Record<string, string> = {},
): Promise<void> {
  await api.send("DELETE", `${NAD_API}/namespaces/${namespace}/network-attachment-definitions/${name}`);
  await api.send("POST", `${NAD_API}/namespaces/${namespace}/network-attachment-definitions`, {
    apiVersion: "k8s.cni.cncf.io/v1",
    kind: "NetworkAttachmentDefinition",
    metadata: { name, namespace, annotations },
    spec: config === undefined ? {} : { config: typeof config === "string" ? config : JSON.stringify(config) },
  });
}

/** A pod as the scheduler leaves it for kubelet: bound to a node (no kubelet here: it stays Pending). */
export async function createPod(api: AdminApi, namespace: string, name: string, nodeName: string, annotations: Record<string, string> = {}): Promise<PodRef> {
  await deletePod(api, namespace, name);
  const pod = await api.send<{ metadata: { uid: string } }>("POST", `/api/v1/namespaces/${namespace}/pods`, {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace, annotations },
    spec: { nodeName, containers: [{ name: "app", image: "registry.k8s.io/pause:3.10" }] },
  });
  if (!pod) throw new Error(`pod ${namespace}/${name} not created`);
  return { namespace, name, uid: pod.metadata.uid };
}

export async function deletePod(api: AdminApi, namespace: string, name: string): Promise<void> {
  await api.send("DELETE", `/api/v1/namespaces/${namespace}/pods/${name}?gracePeriodSeconds=0`);
  // Without kubelet a pod is gone at once with grace 0; wait for the read to agree.
  for (let waited = 0; await api.send("GET", `/api/v1/namespaces/${namespace}/pods/${name}`); waited += 50) {
    if (waited > 10_000) throw new Error(`pod ${namespace}/${name} still there 10 s after deleting it`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

export async function podAnnotations(api: AdminApi, ref: Pick<PodRef, "namespace" | "name">): Promise<Record<string, string>> {
  const pod = await api.send<{ metadata: { annotations?: Record<string, string> } }>("GET", `/api/v1/namespaces/${ref.namespace}/pods/${ref.name}`);
  return pod?.metadata.annotations ?? {};
}

export async function createNode(api: AdminApi, name: string, labels: Record<string, string>): Promise<void> {
  await api.send("DELETE", `/api/v1/nodes/${name}`);
  await api.send("POST", "/api/v1/nodes", { apiVersion: "v1", kind: "Node", metadata: { name, labels } });
}

export interface PodEvent {
  type: string;
  reason: string;
  message: string;
  component: string;
}

/** The pod's events, oldest first, from core/v1 (events.k8s.io writes land there too). */
export async function podEvents(api: AdminApi, ref: Pick<PodRef, "namespace" | "name">): Promise<PodEvent[]> {
  const selector = encodeURIComponent(`involvedObject.name=${ref.name}`);
  const list = await api.send<{
    items: {
      type: string;
      reason: string;
      message: string;
      source?: { component?: string };
      reportingComponent?: string;
      metadata: { creationTimestamp: string };
    }[];
  }>("GET", `/api/v1/namespaces/${ref.namespace}/events?fieldSelector=${selector}`);
  return (list?.items ?? [])
    .sort((a, b) => a.metadata.creationTimestamp.localeCompare(b.metadata.creationTimestamp))
    .map((e) => ({ type: e.type, reason: e.reason, message: e.message, component: e.source?.component || e.reportingComponent || "" }));
}

export async function deleteEvents(api: AdminApi, namespace: string): Promise<void> {
  await api.send("DELETE", `/api/v1/namespaces/${namespace}/events`);
}

/** A whereabouts pool's entries as "<address>=<podref> <ifname>", sorted. */
export async function poolEntries(api: AdminApi, pool = "192.168.20.0-24"): Promise<string[]> {
  const object = await api.pool(pool);
  // The pool is named after its range (whereabouts `IPPoolName`): "192.168.20.0-24".
  const base = pool
    .split("-")[0]!
    .split(".")
    .reduce((n, octet) => n * 256 + Number(octet), 0);
  return Object.entries(object?.spec.allocations ?? {})
    .map(([offset, a]) => {
      const n = base + Number(offset);
      return `${[24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join(".")}=${a.podref} ${a.ifname ?? ""}`;
    })
    .sort();
}

// ---- what a pod and a node hold ----------------------------------------------------------------

interface KernelLink {
  ifname: string;
  kind: string;
  mtu: number;
  operstate: string;
  address: string;
  addresses: string[];
}

export interface PodKernel {
  links: KernelLink[];
  routes: string[];
}

/** The pod's links (with their addresses) and routes, as `ip -j` shows them. */
export function podKernel(ns: string): PodKernel {
  const links = ip<{ ifname: string; mtu: number; operstate: string; address: string; linkinfo?: { info_kind: string } }[]>(ns, "link", "show");
  const addrs = ip<{ ifname: string; addr_info: { family: string; local: string; prefixlen: number }[] }[]>(ns, "addr", "show");
  const routes = ip<{ dst: string; gateway?: string; dev?: string; scope?: string }[]>(ns, "-4", "route", "show");
  return {
    links: links
      .map((l) => ({
        ifname: l.ifname,
        kind: l.linkinfo?.info_kind ?? "",
        mtu: l.mtu,
        operstate: l.operstate,
        address: l.address,
        addresses: (addrs.find((a) => a.ifname === l.ifname)?.addr_info ?? [])
          .filter((a) => a.family === "inet")
          .map((a) => `${a.local}/${a.prefixlen}`)
          .sort(),
      }))
      .sort((a, b) => a.ifname.localeCompare(b.ifname)),
    routes: routes.map((r) => `${r.dst}${r.gateway ? ` via ${r.gateway}` : ""} dev ${r.dev ?? ""}${r.scope ? ` scope ${r.scope}` : ""}`).sort(),
  };
}

/** The node's links besides lo and its master: what pods left on the host (ptp's veths). */
export function hostLinks(n: MultusNode): string[] {
  return ip<{ ifname: string }[]>(n.host.ns, "link", "show")
    .map((l) => l.ifname)
    .filter((name) => name !== "lo" && name !== n.host.master)
    .sort();
}

/** Every file under a folder, relative to it, sorted. */
export function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  const walk = (folder: string) => {
    for (const entry of readdirSync(folder)) {
      const path = join(folder, entry);
      if (statSync(path).isDirectory()) walk(path);
      else out.push(relative(dir, path));
    }
  };
  walk(dir);
  return out.sort();
}

/** host-local's leases on the node: its files named after an address. */
export function hostLocalLeases(n: MultusNode): string[] {
  return filesUnder(n.hostLocalDir).filter((file) => /\/\d+\.\d+\.\d+\.\d+$/.test(file));
}

/** CNI_ARGS as containerd sends them. */
function podArgs(ref: PodRef, containerId: string): string {
  return `IgnoreUnknown=1;K8S_POD_NAMESPACE=${ref.namespace};K8S_POD_NAME=${ref.name};K8S_POD_INFRA_CONTAINER_ID=${containerId};K8S_POD_UID=${ref.uid}`;
}

/** One pod sandbox: the pod object, its node, its namespace and container ID. */
export interface Sandbox {
  pod: PodRef;
  node: MultusNode;
  ns: string;
  containerId: string;
}

/** The call containerd makes for the sandbox: eth0, the pod's CNI_ARGS, the node's bin dir as CNI_PATH. */
export function multusCall(impl: Impl, sandbox: Sandbox, command: CniCall["command"], env: CniCall["env"] = {}): CniCall {
  return {
    command,
    containerId: sandbox.containerId,
    netns: nsPath(sandbox.ns),
    ifName: "eth0",
    args: podArgs(sandbox.pod, sandbox.containerId),
    path: sandbox.node.binDir(impl),
    env,
  };
}

/** multus run as containerd runs it for the sandbox. */
export function runMultus(impl: Impl, sandbox: Sandbox, command: CniCall["command"], conf: unknown, env: CniCall["env"] = {}): CniOutput {
  return cni(multusBinary(impl), multusCall(impl, sandbox, command, env), conf);
}

/**
 * What a sandbox and its node still hold besides the sandbox's loopback: links in the pod, links,
 * host-local leases and cniDir files on the node. Empty everywhere once the sandbox is gone.
 */
export function leftovers(sandbox: Sandbox): { podLinks: string[]; hostLinks: string[]; leases: string[]; cniDir: string[] } {
  return {
    podLinks: podKernel(sandbox.ns)
      .links.map((l) => l.ifname)
      .filter((name) => name !== "lo"),
    hostLinks: hostLinks(sandbox.node),
    leases: hostLocalLeases(sandbox.node),
    cniDir: filesUnder(sandbox.node.cniDir),
  };
}

/** A pod object on the node with the given annotations, and a fresh namespace for its sandbox. */
export async function newSandbox(api: AdminApi, n: MultusNode, name: string, annotations: Record<string, string>, namespace = "default"): Promise<Sandbox> {
  const pod = await createPod(api, namespace, name, n.name, annotations);
  return { pod, node: n, ns: netns("pod"), containerId: `ctr-${name}` };
}

/** Adds a plugin script to both of the node's bin dirs (a failing IPAM, say). */
export function addPlugin(n: MultusNode, name: string, text: string): void {
  for (const impl of ["ours", "upstream"] as const) script(join(n.binDir(impl), name), text);
}
