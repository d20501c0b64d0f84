/**
 * A real Kubernetes node on this machine: containerd v2.2.9 (built by scripts/build-containerd.sh)
 * and kubelet v1.36.3 (built by scripts/build-kube.sh), registered with a test API server
 * (conformance/kube/cluster.ts), running real pods. Made after
 * /work/shared/recipes/kubelet-containerd.md, which has the why of each setting; what differs is
 * said where it is done.
 *
 *   const node = await startNode(cluster, { name: "node-a" });   // ~1.5-3 s
 *   node.podResourcesSocket, node.devicePluginDir, node.cniConfDir, node.cniBinDir
 *   node.hostPath("/var/log/multus.log")   // where a file of the node is on this machine
 *   node.sandboxPid(podUid)                // for nsenter --target <pid> --net
 *   await node.stop();    // processes, mounts, cgroups and files gone
 *
 * Each node has a mount namespace of its own, shared by its containerd and kubelet (and so by the
 * shims, runc and every CNI plugin containerd execs), where the standard node paths are bound
 * from the node's directory (`<dir>/fs/<path>`, see STANDARD_PATHS): /etc/cni/net.d, /opt/cni/bin,
 * /var/lib/cni, /var/log, /var/lib/kubelet, /run/netns, /run/containerd. So two nodes run on one
 * machine, unmodified manifests (hostPath /opt/cni/bin, /etc/cni/net.d) and plugin configs
 * (/etc/cni/net.d/whereabouts.d/..., /var/log/multus.log) work on each, and each node sees only
 * its own files. containerd is configured with the standard CNI directories, resolved inside the
 * namespace; the fields of KubeNode are the host-side paths, which this process and the tests use.
 * The namespace's mounts are private (nothing reaches the machine's); kubelet's own mounts (the
 * tmpfs of a pod's secret or projected volume) are in the same namespace, so containerd sees them.
 *
 * The pod network: the CNI conf dir starts empty, so only hostNetwork pods run until a test writes
 * a network config there (containerd reloads the directory when it changes).
 *
 * Runs under Node (vitest): node: modules only.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  rmdirSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { networkInterfaces, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { type Cluster, KUBE_BIN } from "../kube/cluster.ts";
import { PAUSE_IMAGE, pauseImageArchive } from "./image.ts";

/** containerd, its runc shim and ctr: scripts/build-containerd.sh's output. */
const CONTAINERD_BIN = join(resolve(import.meta.dirname, "../.."), ".cache/containerd/v2.2.9");
/**
 * The paths bound inside each node's mount namespace from `<dir>/fs<path>` (or from an option's
 * directory). Each must exist on the machine as a mount point: a missing one is made, empty, and
 * stays (another node's namespace may still have its binding on it; a real node has them all).
 * - /etc/cni/net.d, /opt/cni/bin: containerd's CNI directories, the DaemonSet's hostPaths.
 * - /var/lib/cni: libcni's result cache, multus' cache.
 * - /var/log: multus' and whereabouts' logs, kubelet's pod logs (/var/log/pods).
 * - /var/lib/kubelet: kubelet's root. Its device-plugin directory is fixed
 *   (/var/lib/kubelet/device-plugins whatever --root-dir, k8s.io/kubelet
 *   `pkg/apis/deviceplugin/v1beta1/constants.go` DevicePluginPath) and emptied at kubelet's start,
 *   and multus reads the pod-resources socket at its fixed path: nodes must not share them.
 * - /run/netns: the pods' network namespaces containerd pins (`/var/run/netns/cni-<uuid>`).
 * - /run/containerd: the shims' sockets (`/run/containerd/s/<hash>`) and ctr's fifos.
 */
const STANDARD_PATHS = ["/etc/cni/net.d", "/opt/cni/bin", "/var/lib/cni", "/var/log", "/var/lib/kubelet", "/run/netns", "/run/containerd"];
/** The cgroup v1 controllers kubelet wants a cgroupRoot in (the recipe's list). */
const CONTROLLERS = ["blkio", "cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer", "systemd"];
const START_TIMEOUT_MS = 90_000;

export interface KubeNode {
  name: string;
  /** The node's files; removed by stop(). */
  dir: string;
  containerdSocket: string;
  /** kubelet's PodResources API (/var/lib/kubelet/pod-resources/kubelet.sock inside the node). */
  podResourcesSocket: string;
  /** Where device plugins put their sockets; kubelet's registration socket is `kubelet.sock` in it. */
  devicePluginDir: string;
  /** /etc/cni/net.d inside the node. */
  cniConfDir: string;
  /** /opt/cni/bin inside the node. */
  cniBinDir: string;
  /** The image every pod on this node can run (imagePullPolicy: Never): a shell that waits. */
  image: string;
  /** The node's mount namespace (`/proc/<pid>/ns/mnt` of the process holding it), for nsenter --mount. */
  mountNamespace: string;
  /** Milliseconds from start to kubelet serving its APIs. */
  startedInMs: number;
  /** Where a path inside the node is on this machine: under a standard path, the node's copy; else the same path. */
  hostPath(path: string): string;
  /** Runs a command inside the node's mount namespace; its stdout. Throws with its output on failure. */
  exec(args: string[]): string;
  /** `ctr` against this node's containerd, in the k8s.io namespace, inside the node's mount namespace. */
  ctr(args: string[]): string;
  /** The PID of a container's running task (the ID kubelet reports, without `containerd://`). */
  containerPid(containerId: string): number;
  /** The PID of the running sandbox of the pod with this UID: its network namespace is the pod's. */
  sandboxPid(podUid: string): number;
  /** Stops kubelet as a restart does (SIGTERM): the pods go on running under containerd's shims. */
  stopKubelet(): Promise<void>;
  /** Starts the stopped kubelet again, same config and state; resolves once its healthz answers ok. */
  startKubelet(): Promise<void>;
  stop(): Promise<void>;
}

export interface NodeOptions {
  name: string;
  /** The directory bound at /opt/cni/bin inside the node (default: the node's own). */
  cniBinDir?: string;
  log?: (line: string) => void;
}

const running = new Set<ChildProcess>();
/** The mount namespaces (`mnt:[inode]`) of the nodes not stopped yet: what the exit hook empties. */
const liveNamespaces = new Set<string>();
let exitHook = false;

export async function startNode(cluster: Cluster, options: NodeOptions): Promise<KubeNode> {
  const log = options.log ?? (() => {});
  const kubelet = join(KUBE_BIN, "kubelet");
  if (!existsSync(kubelet)) throw new Error(`${kubelet} is missing: run scripts/build-kube.sh`);
  for (const binary of ["containerd", "containerd-shim-runc-v2", "ctr"]) {
    if (!existsSync(join(CONTAINERD_BIN, binary))) throw new Error(`${join(CONTAINERD_BIN, binary)} is missing: run scripts/build-containerd.sh`);
  }
  if (spawnSync("sh", ["-c", "command -v runc"]).status !== 0) throw new Error("runc is missing: run scripts/install-node-deps.sh");
  installExitHook();
  const started = Date.now();
  const name = options.name;
  const dir = mkdtempSync(join(tmpdir(), `cnit-node-${name}-`));
  const path = (...parts: string[]) => join(dir, ...parts);
  // Where each standard path of the node is on the machine.
  const sources = new Map(STANDARD_PATHS.map((inside) => [inside, path("fs", inside)]));
  if (options.cniBinDir) sources.set("/opt/cni/bin", options.cniBinDir);
  const hostPath = (inside: string): string => {
    for (const [standard, source] of sources) {
      if (inside === standard || inside.startsWith(`${standard}/`)) return source + inside.slice(standard.length);
    }
    return inside;
  };
  const stops: (() => Promise<void> | void)[] = [];
  // Set once the namespace's holder runs.
  let holder: ChildProcess | undefined;
  let namespaceId = "";
  const mountNamespace = () => {
    if (!holder?.pid || holder.exitCode !== null || holder.signalCode !== null)
      throw new Error(`node ${name} has no mount namespace (not started, or stopped)`);
    return `/proc/${holder.pid}/ns/mnt`;
  };
  const ctrArgs = (args: string[]) => [join(CONTAINERD_BIN, "ctr"), "--address", path("containerd.sock"), "--namespace", "k8s.io", ...args];
  const node: KubeNode = {
    name,
    dir,
    containerdSocket: path("containerd.sock"),
    podResourcesSocket: hostPath("/var/lib/kubelet/pod-resources/kubelet.sock"),
    devicePluginDir: hostPath("/var/lib/kubelet/device-plugins"),
    cniConfDir: hostPath("/etc/cni/net.d"),
    cniBinDir: hostPath("/opt/cni/bin"),
    image: PAUSE_IMAGE,
    mountNamespace: "",
    startedInMs: 0,
    hostPath,
    exec: (args) => run("nsenter", [`--mount=${mountNamespace()}`, "--", ...args]),
    ctr: (args) => node.exec(ctrArgs(args)),
    containerPid(containerId) {
      const task = taskTable(node).get(containerId);
      if (task?.status !== "RUNNING") throw new Error(`container ${containerId} has no running task on node ${name} (${task?.status ?? "none"})`);
      return task.pid;
    },
    sandboxPid(podUid) {
      // containerd's pod sandbox controller keeps each sandbox as a container with kubelet's labels.
      const filter = `labels."io.cri-containerd.kind"==sandbox,labels."io.kubernetes.pod.uid"==${JSON.stringify(podUid)}`;
      const ids = node.ctr(["containers", "list", "--quiet", filter]).split("\n").filter(Boolean);
      const tasks = taskTable(node);
      const live = ids.map((id) => tasks.get(id)).filter((task) => task?.status === "RUNNING");
      if (live.length !== 1 || !live[0]) throw new Error(`pod ${podUid} has ${live.length} running sandboxes on node ${name} (of ${ids.length})`);
      return live[0].pid;
    },
    stopKubelet: () => Promise.reject(new Error(`node ${name} has no kubelet yet`)),
    startKubelet: () => Promise.reject(new Error(`node ${name} has no kubelet yet`)),
    async stop() {
      // Last started, first stopped; every step runs even when one before it failed.
      const errors: string[] = [];
      for (const stop of stops.reverse()) await Promise.resolve(stop()).catch((err: unknown) => errors.push(String(err)));
      rmSync(dir, { recursive: true, force: true });
      if (errors.length > 0) throw new Error(`stopping node ${name}: ${errors.join("; ")}`);
    },
  };
  try {
    for (const d of [...sources.values(), path("containerd"), path("logs")]) mkdirSync(d, { recursive: true });
    // kubelet makes it at its start, but it is bound before then.
    mkdirSync(hostPath("/var/lib/kubelet/pod-resources"), { recursive: true });

    // kubelet's cgroup root in every v1 controller (the machine has no systemd to make them).
    for (const controller of CONTROLLERS) {
      const cgroup = join("/sys/fs/cgroup", controller, name);
      mkdirSync(cgroup, { recursive: true });
      if (controller === "cpuset") {
        for (const file of ["cpuset.cpus", "cpuset.mems"]) writeFileSync(join(cgroup, file), readFileSync(join("/sys/fs/cgroup/cpuset", file)));
      }
    }
    // Removed last: after every process in them is gone.
    stops.push(() => {
      for (const controller of CONTROLLERS) removeCgroupTree(join("/sys/fs/cgroup", controller, name));
    });
    // Nothing of the node is mounted in this process' namespace; anything found is a leak, undone
    // so that the directory can go, and reported.
    stops.push(() => {
      const leaked = unmountUnder(dir);
      if (leaked.length > 0) throw new Error(`mounts of node ${name} in the host's namespace: ${leaked.join(", ")}`);
    });

    // The mount namespace: held by a process that only waits (unshare execs, so its PID is the
    // child's), with the standard paths bound. private: no mount inside reaches the machine's
    // namespace, and none of the machine's reaches inside.
    for (const inside of STANDARD_PATHS) mkdirSync(inside, { recursive: true });
    const ready = path("namespace-ready");
    const binds = [...sources].flatMap(([inside, source]) => [source, inside]);
    holder = launch(
      "unshare",
      [
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        'set -e; ready=$1; shift; while [ $# -gt 0 ]; do mount --bind "$1" "$2"; shift 2; done; : > "$ready"; exec sleep infinity',
        "sh",
        ready,
        ...binds,
      ],
      path("logs", "namespace.log"),
    );
    const holderProcess = holder;
    // Run in the reverse order: the holder and whatever is still inside the namespace (the shims,
    // a plugin containerd was running), by their PIDs, after containerd.
    stops.push(() => killNamespace(namespaceId, holderProcess));
    await waitFor("the node's mount namespace", () => existsSync(ready), holder, path("logs", "namespace.log"));
    node.mountNamespace = mountNamespace();
    namespaceId = readlinkSync(node.mountNamespace);
    if (namespaceId === readlinkSync("/proc/self/ns/mnt")) throw new Error(`node ${name}: unshare left the holder in this process' mount namespace`);
    liveNamespaces.add(namespaceId);

    // containerd: the default config of the built binary with this node's paths.
    let config = run(join(CONTAINERD_BIN, "containerd"), ["config", "default"]);
    const set = (section: string, key: string, value: string) => {
      config = setKey(config, section, key, value);
    };
    set("", "root", toml(path("containerd", "root")));
    set("", "state", toml(path("containerd", "state")));
    // Not the machine's /etc/containerd/conf.d: this config is the whole of it.
    set("", "imports", "[]");
    set("grpc", "address", toml(node.containerdSocket));
    set("plugins.'io.containerd.cri.v1.images'.pinned_images", "sandbox", toml(PAUSE_IMAGE));
    // This machine lacks CAP_SYS_RESOURCE: without it runc fails every sandbox (the recipe).
    set("plugins.'io.containerd.cri.v1.runtime'", "restrict_oom_score_adj", "true");
    // The standard directories, resolved inside the node's namespace (the defaults, made explicit).
    set("plugins.'io.containerd.cri.v1.runtime'.cni", "bin_dirs", "['/opt/cni/bin']");
    set("plugins.'io.containerd.cri.v1.runtime'.cni", "conf_dir", "'/etc/cni/net.d'");
    // containerd 2 runs the `loopback` plugin from the bin dir for each sandbox's lo unless it
    // brings lo up itself: a node's bin dir holds only what a test or the DaemonSet puts there.
    set("plugins.'io.containerd.cri.v1.runtime'.cni", "use_internal_loopback", "true");
    // The default root's plugin directories are shared by every containerd on the machine.
    set("plugins.'io.containerd.internal.v1.opt'", "path", toml(path("containerd", "opt")));
    set("plugins.'io.containerd.image-verifier.v1.bindir'", "bin_dir", toml(path("containerd", "image-verifier")));
    // NRI listens on one socket for the machine (/var/run/nri/nri.sock), which two nodes would
    // take from each other; no test uses NRI. (containerd still logs "using experimental NRI
    // integration": the plugin is there, disabled.)
    set("plugins.'io.containerd.nri.v1.nri'", "disable", "true");
    writeFileSync(path("containerd.toml"), config);
    // Its own directory first in PATH, so that it runs its own shim; runc is the machine's.
    const containerd = launch(
      "nsenter",
      [`--mount=${node.mountNamespace}`, "--", join(CONTAINERD_BIN, "containerd"), "--config", path("containerd.toml")],
      path("logs", "containerd.log"),
      {
        PATH: `${CONTAINERD_BIN}:${process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin"}`,
      },
    );
    stops.push(() => terminate(containerd));
    // The pods' processes first (kubelet stopped): kubelet left them to containerd's shims.
    stops.push(() => killCgroupProcesses(name));
    await waitFor(
      "containerd",
      () => spawnSync("nsenter", [`--mount=${node.mountNamespace}`, "--", ...ctrArgs(["version"])]).status === 0,
      containerd,
      path("logs", "containerd.log"),
    );
    node.ctr(["images", "import", pauseImageArchive(path("image"))]);
    log(`containerd ready, image imported after ${Date.now() - started} ms`);

    const [port, healthzPort] = await freePorts(2);
    writeFileSync(
      path("kubelet.json"),
      // JSON is YAML: kubelet reads it as a KubeletConfiguration file. Paths are inside the node.
      JSON.stringify({
        apiVersion: "kubelet.config.k8s.io/v1beta1",
        kind: "KubeletConfiguration",
        containerRuntimeEndpoint: `unix://${node.containerdSocket}`,
        cgroupDriver: "cgroupfs",
        cgroupRoot: `/${name}`,
        failCgroupV1: false,
        failSwapOn: false,
        address: "127.0.0.1",
        port,
        healthzBindAddress: "127.0.0.1",
        healthzPort,
        readOnlyPort: 0,
        authentication: { anonymous: { enabled: false }, webhook: { enabled: false } },
        authorization: { mode: "AlwaysAllow" },
        podLogsDir: "/var/log/pods",
        // Not the default under /usr/libexec, which kubelet would make on the machine.
        volumePluginDir: "/var/lib/kubelet/volume-plugins",
        evictionHard: { "memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%" },
        imageGCHighThresholdPercent: 100,
        imageGCLowThresholdPercent: 99,
        // A device plugin's devices reach the node's allocatable at the next status update.
        nodeStatusUpdateFrequency: "1s",
        nodeStatusReportFrequency: "1s",
      }),
    );
    const launchKubelet = () =>
      launch(
        "nsenter",
        [
          `--mount=${node.mountNamespace}`,
          "--",
          kubelet,
          `--config=${path("kubelet.json")}`,
          // The admin's credentials: the test API server has no node authorizer or node tokens.
          `--kubeconfig=${cluster.kubeconfig}`,
          "--root-dir=/var/lib/kubelet",
          `--hostname-override=${name}`,
          `--node-ip=${hostAddress()}`,
        ],
        path("logs", "kubelet.log"),
      );
    let kubeletProcess = launchKubelet();
    stops.push(() => terminate(kubeletProcess));
    await waitFor(
      "kubelet",
      () => existsSync(node.podResourcesSocket) && existsSync(join(node.devicePluginDir, "kubelet.sock")) && nodeRegistered(cluster, name),
      kubeletProcess,
      path("logs", "kubelet.log"),
    );
    node.stopKubelet = () => terminate(kubeletProcess);
    node.startKubelet = async () => {
      if (kubeletProcess.exitCode === null && kubeletProcess.signalCode === null) throw new Error(`kubelet of node ${name} is running`);
      kubeletProcess = launchKubelet();
      await waitUntil("kubelet healthy again", () => healthy(healthzPort!), kubeletProcess, path("logs", "kubelet.log"));
    };
    stops.push(() => {
      spawnSync(join(KUBE_BIN, "kubectl"), [`--kubeconfig=${cluster.kubeconfig}`, "delete", "node", name, "--ignore-not-found", "--wait=false"]);
    });
    node.startedInMs = Date.now() - started;
    log(`kubelet ${name} serving after ${node.startedInMs} ms`);
    return node;
  } catch (err) {
    await node.stop().catch(() => {});
    throw err;
  }
}

/** A TOML literal string (containerd's config writes its paths so; ours have no quote in them). */
function toml(value: string): string {
  if (value.includes("'")) throw new Error(`a path with a quote: ${value}`);
  return `'${value}'`;
}

/**
 * `key = value` set in a `[section]` of containerd's default config ("" for the top level): the
 * key must be there already, so a default that moves in another version fails here, by name.
 */
function setKey(config: string, section: string, key: string, value: string): string {
  const lines = config.split("\n");
  let index = 0;
  if (section !== "") {
    index = lines.findIndex((line) => line.trim() === `[${section}]`);
    if (index < 0) throw new Error(`containerd config default has no [${section}]`);
    index++;
  }
  for (; index < lines.length; index++) {
    const line = lines[index] ?? "";
    if (line.trim().startsWith("[")) break;
    const match = /^(\s*)(\S+) = /.exec(line);
    if (match?.[2] === key) {
      lines[index] = `${match[1]}${key} = ${value}`;
      return lines.join("\n");
    }
  }
  throw new Error(`containerd config default has no ${key} in [${section}]`);
}

/** `ctr tasks list`: each task's PID and status, by container ID. */
function taskTable(node: KubeNode): Map<string, { pid: number; status: string }> {
  const tasks = new Map<string, { pid: number; status: string }>();
  for (const line of node.ctr(["tasks", "list"]).split("\n").slice(1)) {
    const [id, pid, status] = line.trim().split(/\s+/);
    if (id && pid && status) tasks.set(id, { pid: Number(pid), status });
  }
  return tasks;
}

function nodeRegistered(cluster: Cluster, name: string): boolean {
  return spawnSync(join(KUBE_BIN, "kubectl"), [`--kubeconfig=${cluster.kubeconfig}`, "get", "node", name]).status === 0;
}

/** The node's IPv4 address: the host's first non-loopback one (kubelet refuses a loopback node IP). */
function hostAddress(): string {
  for (const addresses of Object.values(networkInterfaces())) {
    for (const address of addresses ?? []) if (address.family === "IPv4" && !address.internal) return address.address;
  }
  throw new Error("no non-loopback IPv4 address for the node");
}

/**
 * Every process in the node's cgroups (its pods' containers and sandboxes), killed by PID: what
 * kubelet did not stop before it was stopped.
 */
async function killCgroupProcesses(name: string): Promise<void> {
  const root = join("/sys/fs/cgroup/pids", name);
  await killUntilNone(`processes in ${root}`, () => processesUnder(root));
}

/**
 * Every process left in the node's mount namespace (the shims outlive containerd; a plugin may be
 * running), then the holder, killed by PID: once none is left the kernel drops the namespace, and
 * every mount in it (containerd's rootfs overlays and pinned network namespaces, kubelet's volumes,
 * the bindings).
 */
async function killNamespace(namespaceId: string, holder: ChildProcess): Promise<void> {
  if (namespaceId !== "") {
    await killUntilNone(`processes in mount namespace ${namespaceId}`, () => processesInNamespace(namespaceId));
    liveNamespaces.delete(namespaceId);
  }
  await terminate(holder);
}

async function killUntilNone(what: string, find: () => number[]): Promise<void> {
  for (let round = 0; round < 50; round++) {
    const pids = find();
    if (pids.length === 0) return;
    for (const pid of pids) kill(pid);
    await new Promise((done) => setTimeout(done, 100));
  }
  throw new Error(`${what} left: ${find().join(", ")}`);
}

function kill(pid: number): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // Already gone.
  }
}

function processesUnder(cgroup: string): number[] {
  if (!existsSync(cgroup)) return [];
  const pids = readFileSync(join(cgroup, "cgroup.procs"), "utf8").split("\n").filter(Boolean).map(Number);
  for (const entry of readdirSync(cgroup, { withFileTypes: true })) if (entry.isDirectory()) pids.push(...processesUnder(join(cgroup, entry.name)));
  return pids;
}

/** The processes whose mount namespace is this one (`mnt:[inode]`). */
function processesInNamespace(namespaceId: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readlinkSync(join("/proc", entry, "ns", "mnt")) === namespaceId) pids.push(Number(entry));
    } catch {
      // Gone meanwhile, or a kernel thread.
    }
  }
  return pids;
}

/** Children first: a cgroup directory goes with rmdir once it has no children and no tasks. */
function removeCgroupTree(cgroup: string): void {
  if (!existsSync(cgroup)) return;
  for (const entry of readdirSync(cgroup, { withFileTypes: true })) if (entry.isDirectory()) removeCgroupTree(join(cgroup, entry.name));
  rmdirSync(cgroup);
}

/** Mounts under a directory in this process' namespace, unmounted deepest first: their mount points. */
function unmountUnder(dir: string): string[] {
  const mountPoints = readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((line) => line.split(" ")[4] ?? "")
    .filter((point) => point.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
  for (const point of mountPoints) spawnSync("umount", ["-l", point]);
  return mountPoints;
}

function run(command: string, args: string[]): string {
  const result = spawnSync(command, args, { encoding: "utf8", maxBuffer: 64 << 20 });
  if (result.status !== 0) throw new Error(`${command} ${args.join(" ")}: ${result.stderr}${result.stdout}${result.error ?? ""}`);
  return result.stdout;
}

function launch(command: string, args: string[], logFile: string, env: Record<string, string> = {}): ChildProcess {
  // setpriv --pdeathsig: the kernel ends the daemon when the test process dies, even by SIGKILL
  // (kept across the execs of unshare, nsenter and sh, none of which forks here).
  const fd = openSync(logFile, "a");
  const child = spawn("setpriv", ["--pdeathsig", "SIGKILL", "--", command, ...args], { stdio: ["ignore", fd, fd], env: { ...process.env, ...env } });
  closeSync(fd);
  running.add(child);
  child.on("exit", () => running.delete(child));
  return child;
}

async function terminate(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((done) => child.once("exit", () => done()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  await exited;
  clearTimeout(timer);
}

/**
 * At exit, a node not stopped: its daemons (their pdeathsig would do it too) and what they left in
 * its namespace (the shims, which have no pdeathsig), by PID.
 */
function installExitHook(): void {
  if (exitHook) return;
  exitHook = true;
  process.on("exit", () => {
    for (const child of running) child.kill("SIGKILL");
    for (const namespaceId of liveNamespaces) for (const pid of processesInNamespace(namespaceId)) kill(pid);
  });
}

async function waitFor(what: string, ready: () => boolean, child: ChildProcess, logFile: string): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}):\n${tail(logFile)}`);
    if (ready()) return;
    if (Date.now() > deadline) throw new Error(`${what} not ready after ${START_TIMEOUT_MS} ms:\n${tail(logFile)}`);
    await new Promise((done) => setTimeout(done, 200));
  }
}

/** waitFor with a check that awaits. */
async function waitUntil(what: string, ready: () => Promise<boolean>, child: ChildProcess, logFile: string): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${what}: exited (${child.exitCode ?? child.signalCode}):\n${tail(logFile)}`);
    if (await ready()) return;
    if (Date.now() > deadline) throw new Error(`${what}: not after ${START_TIMEOUT_MS} ms:\n${tail(logFile)}`);
    await new Promise((done) => setTimeout(done, 200));
  }
}

/** kubelet's /healthz on 127.0.0.1 says ok. */
async function healthy(port: number): Promise<boolean> {
  try {
    const response = await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(2_000) });
    return response.ok && (await response.text()) === "ok";
  } catch {
    return false;
  }
}

function tail(file: string): string {
  return existsSync(file) && statSync(file).isFile() ? readFileSync(file, "utf8").split("\n").slice(-30).join("\n") : "(no log)";
}

async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<ReturnType<typeof createServer>>((done) => {
          const server = createServer();
          server.listen(0, "127.0.0.1", () => done(server));
        }),
    ),
  );
  const ports = servers.map((s) => {
    const address = s.address();
    return typeof address === "object" && address ? address.port : 0;
  });
  await Promise.all(servers.map((s) => new Promise((done) => s.close(done))));
  return ports;
}
