/**
 * A real Kubernetes node on this machine: containerd (Debian's 1.6) and kubelet v1.36.3 (built by
 * scripts/build-kube.sh), registered with a test API server (conformance/kube/cluster.ts), running
 * real pods. Made after /work/shared/recipes/kubelet-containerd.md, which has the why of each
 * setting; what differs is said where it is done.
 *
 *   const node = await startNode(cluster, { name: "node-a" });   // ~5-10 s
 *   node.podResourcesSocket, node.devicePluginDir, node.cniConfDir
 *   await node.stop();    // pods' processes, shims, mounts, cgroups and files gone
 *
 * The pod network: containerd's CNI conf dir (`cniConfDir`, bin dir `cniBinDir`) starts empty,
 * so only hostNetwork pods run until a test writes a network config there (containerd reloads
 * the directory when it changes).
 *
 * Runs under Node (vitest): node: modules only.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, rmdirSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { networkInterfaces, tmpdir } from "node:os";
import { join } from "node:path";
import { type Cluster, KUBE_BIN } from "../kube/cluster.ts";
import { PAUSE_IMAGE, pauseImageArchive } from "./image.ts";

/**
 * kubelet's device manager listens in this directory whatever its --root-dir (k8s.io/kubelet
 * `pkg/apis/deviceplugin/v1beta1/constants.go` DevicePluginPath) and empties it at start. Each
 * node's kubelet runs in a mount namespace of its own where a directory of the node's is bound
 * over it: two nodes, or a node and whatever else runs on the machine, never share it.
 */
const DEVICE_PLUGIN_PATH = "/var/lib/kubelet/device-plugins";
/** The cgroup v1 controllers kubelet wants a cgroupRoot in (the recipe's list). */
const CONTROLLERS = ["blkio", "cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer", "systemd"];
const START_TIMEOUT_MS = 90_000;

export interface KubeNode {
  name: string;
  /** The node's files; removed by stop(). */
  dir: string;
  containerdSocket: string;
  /** kubelet's PodResources API. */
  podResourcesSocket: string;
  /** Where device plugins put their sockets; kubelet's registration socket is `kubelet.sock` in it. */
  devicePluginDir: string;
  cniConfDir: string;
  cniBinDir: string;
  /** The image every pod on this node can run (imagePullPolicy: Never): a shell that waits. */
  image: string;
  /** Milliseconds from start to kubelet serving its APIs. */
  startedInMs: number;
  /** `ctr` against this node's containerd, in the k8s.io namespace. */
  ctr(args: string[]): string;
  stop(): Promise<void>;
}

export interface NodeOptions {
  name: string;
  /** containerd's CNI plugin directory. */
  cniBinDir?: string;
  log?: (line: string) => void;
}

const running = new Set<ChildProcess>();
let exitHook = false;

export async function startNode(cluster: Cluster, options: NodeOptions): Promise<KubeNode> {
  const log = options.log ?? (() => {});
  const kubelet = join(KUBE_BIN, "kubelet");
  if (!existsSync(kubelet)) throw new Error(`${kubelet} is missing: run scripts/build-kube.sh`);
  for (const tool of ["containerd", "ctr", "runc"]) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0) throw new Error(`${tool} is missing: apt-get install -y containerd runc`);
  }
  installExitHook();
  const started = Date.now();
  const name = options.name;
  const dir = mkdtempSync(join(tmpdir(), `cnit-node-${name}-`));
  const path = (...parts: string[]) => join(dir, ...parts);
  const stops: (() => Promise<void> | void)[] = [];
  const node: KubeNode = {
    name,
    dir,
    containerdSocket: path("containerd.sock"),
    podResourcesSocket: path("kubelet", "pod-resources", "kubelet.sock"),
    devicePluginDir: path("device-plugins"),
    cniConfDir: path("cni", "net.d"),
    cniBinDir: options.cniBinDir ?? path("cni", "bin"),
    image: PAUSE_IMAGE,
    startedInMs: 0,
    ctr: (args) => run("ctr", ["--address", path("containerd.sock"), "--namespace", "k8s.io", ...args]),
    async stop() {
      // Last started, first stopped; every step runs even when one before it failed.
      const errors: string[] = [];
      for (const stop of stops.reverse()) await Promise.resolve(stop()).catch((err: unknown) => errors.push(String(err)));
      rmSync(dir, { recursive: true, force: true });
      if (errors.length > 0) throw new Error(`stopping node ${name}: ${errors.join("; ")}`);
    },
  };
  try {
    for (const d of [node.devicePluginDir, node.cniConfDir, node.cniBinDir, path("kubelet"), path("logs")]) mkdirSync(d, { recursive: true });

    // kubelet's cgroup root in every v1 controller (the machine has no systemd to make them).
    for (const controller of CONTROLLERS) {
      const cgroup = join("/sys/fs/cgroup", controller, name);
      mkdirSync(cgroup, { recursive: true });
      if (controller === "cpuset") {
        for (const file of ["cpuset.cpus", "cpuset.mems"]) writeFileSync(join(cgroup, file), readFileSync(join("/sys/fs/cgroup/cpuset", file)));
      }
    }
    // Removed last: after containerd and the processes in them are gone.
    stops.push(() => {
      for (const controller of CONTROLLERS) removeCgroupTree(join("/sys/fs/cgroup", controller, name));
    });

    // containerd: the default config with this node's paths.
    const config = run("containerd", ["config", "default"])
      .replace(/^root = .*$/m, `root = "${path("containerd", "root")}"`)
      .replace(/^state = .*$/m, `state = "${path("containerd", "state")}"`)
      .replace('address = "/run/containerd/containerd.sock"', `address = "${node.containerdSocket}"`)
      .replace(/sandbox_image = .*$/m, `sandbox_image = "${PAUSE_IMAGE}"`)
      .replace('bin_dir = "/opt/cni/bin"', `bin_dir = "${node.cniBinDir}"`)
      .replace('conf_dir = "/etc/cni/net.d"', `conf_dir = "${node.cniConfDir}"`)
      // This machine lacks CAP_SYS_RESOURCE: without it runc fails every sandbox (the recipe).
      .replace("restrict_oom_score_adj = false", "restrict_oom_score_adj = true")
      // The default root's plugin directory is shared by every containerd on the machine.
      .replace('path = "/opt/containerd"', `path = "${path("containerd", "opt")}"`);
    writeFileSync(path("containerd.toml"), config);
    const containerd = launch("containerd", ["--config", path("containerd.toml")], path("logs", "containerd.log"));
    // Run in the reverse order: the pods' processes, containerd, its shims, its mounts.
    stops.push(() => unmountUnder(dir));
    stops.push(() => killShims(node.containerdSocket));
    stops.push(() => terminate(containerd));
    stops.push(() => killNodeProcesses(node, name));
    await waitFor(
      "containerd",
      () => spawnSync("ctr", ["--address", node.containerdSocket, "version"]).status === 0,
      containerd,
      path("logs", "containerd.log"),
    );
    node.ctr(["images", "import", pauseImageArchive(path("image"))]);
    log(`containerd ready, image imported after ${Date.now() - started} ms`);

    const [port, healthzPort] = await freePorts(2);
    writeFileSync(
      path("kubelet.json"),
      // JSON is YAML: kubelet reads it as a KubeletConfiguration file.
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
        podLogsDir: path("kubelet", "pod-logs"),
        volumePluginDir: path("kubelet", "volume-plugins"),
        evictionHard: { "memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%" },
        imageGCHighThresholdPercent: 100,
        imageGCLowThresholdPercent: 99,
        // A device plugin's devices reach the node's allocatable at the next status update.
        nodeStatusUpdateFrequency: "1s",
        nodeStatusReportFrequency: "1s",
      }),
    );
    const kubeletArgs = [
      `--config=${path("kubelet.json")}`,
      // The admin's credentials: the test API server has no node authorizer or node tokens.
      `--kubeconfig=${cluster.kubeconfig}`,
      `--root-dir=${path("kubelet")}`,
      `--cert-dir=${path("kubelet", "pki")}`,
      `--hostname-override=${name}`,
      `--node-ip=${hostAddress()}`,
    ];
    // kubelet's own mount namespace, where the node's device-plugin directory is bound over the
    // fixed path: private, so that the binding stays inside (pods of this node that need kubelet's
    // volume mounts seen by containerd would need propagation; host-network pods without volumes
    // need none).
    mkdirSync(DEVICE_PLUGIN_PATH, { recursive: true });
    const kubeletProcess = launch(
      "unshare",
      [
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        `mount --bind "$0" ${DEVICE_PLUGIN_PATH} && exec "$@"`,
        node.devicePluginDir,
        kubelet,
        ...kubeletArgs,
      ],
      path("logs", "kubelet.log"),
    );
    stops.push(() => terminate(kubeletProcess));
    await waitFor(
      "kubelet",
      () => existsSync(node.podResourcesSocket) && existsSync(join(node.devicePluginDir, "kubelet.sock")) && nodeRegistered(cluster, name),
      kubeletProcess,
      path("logs", "kubelet.log"),
    );
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
async function killNodeProcesses(node: KubeNode, name: string): Promise<void> {
  const root = join("/sys/fs/cgroup/pids", name);
  for (let round = 0; round < 50; round++) {
    const pids = processesUnder(root);
    if (pids.length === 0) return;
    for (const pid of pids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
    await new Promise((done) => setTimeout(done, 100));
  }
  throw new Error(`processes left in ${root} of node ${node.name}`);
}

function processesUnder(cgroup: string): number[] {
  if (!existsSync(cgroup)) return [];
  const pids = readFileSync(join(cgroup, "cgroup.procs"), "utf8").split("\n").filter(Boolean).map(Number);
  for (const entry of readdirSync(cgroup, { withFileTypes: true })) if (entry.isDirectory()) pids.push(...processesUnder(join(cgroup, entry.name)));
  return pids;
}

/** Children first: a cgroup directory goes with rmdir once it has no children and no tasks. */
function removeCgroupTree(cgroup: string): void {
  if (!existsSync(cgroup)) return;
  for (const entry of readdirSync(cgroup, { withFileTypes: true })) if (entry.isDirectory()) removeCgroupTree(join(cgroup, entry.name));
  rmdirSync(cgroup);
}

/**
 * containerd's runc shims outlive containerd, and a shim whose task containerd was deleting may
 * have lost its bundle directory (and pid file) already: each one is found by the address of
 * this node's containerd on its command line, which no other process carries.
 */
function killShims(containerdSocket: string): void {
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let argv: string[];
    try {
      argv = readFileSync(join("/proc", entry, "cmdline"), "utf8").split("\0");
    } catch {
      continue; // Gone meanwhile.
    }
    const address = argv.indexOf("-address");
    if (!(argv[0] ?? "").endsWith("containerd-shim-runc-v2") || address < 0 || argv[address + 1] !== containerdSocket) continue;
    try {
      process.kill(Number(entry), "SIGKILL");
    } catch {
      // Already gone.
    }
  }
}

/** Mounts containerd left under the node's directory (rootfs overlays, sandbox shm), deepest first. */
function unmountUnder(dir: string): void {
  const mountPoints = readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((line) => line.split(" ")[4] ?? "")
    .filter((point) => point.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
  for (const point of mountPoints) spawnSync("umount", ["-l", point]);
}

function run(command: string, args: string[]): string {
  const result = spawnSync(command, args, { encoding: "utf8" });
  if (result.status !== 0) throw new Error(`${command} ${args.join(" ")}: ${result.stderr}${result.stdout}${result.error ?? ""}`);
  return result.stdout;
}

function launch(command: string, args: string[], logFile: string): ChildProcess {
  // setpriv --pdeathsig: the kernel ends the daemon when the test process dies, even by SIGKILL
  // (kept across unshare's and sh's exec).
  const fd = openSync(logFile, "a");
  const child = spawn("setpriv", ["--pdeathsig", "SIGKILL", "--", command, ...args], { stdio: ["ignore", fd, fd] });
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

function installExitHook(): void {
  if (exitHook) return;
  exitHook = true;
  process.on("exit", () => {
    for (const child of running) child.kill("SIGKILL");
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
