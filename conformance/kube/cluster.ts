/**
 * A real Kubernetes API server for tests, benchmarks and the demo: etcd and kube-apiserver (built
 * from Go modules by scripts/build-kube.sh) on 127.0.0.1 with free ports, RBAC on, an admin
 * kubeconfig (0600), our CRDs applied and Established. No fake, no mock. With `controllerManager`,
 * also kube-controller-manager and kube-scheduler, for what a DaemonSet needs (deploy/).
 *
 *   const cluster = await startCluster();   // ~10-20 s on two cores
 *   ...                                     // cluster.kubeconfig, cluster.kubectl(...)
 *   await cluster.stop();                   // also done on process exit
 *
 * Runs under Node (vitest) and Bun (bench): node: modules only.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import { request as httpRequest } from "node:http";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const KUBE_VERSION = "v1.36.3";
const ROOT = resolve(import.meta.dirname, "../..");
export const KUBE_BIN = join(ROOT, ".cache/kube", KUBE_VERSION);
const CRD_DIR = join(ROOT, "deploy/crds");
const START_TIMEOUT_MS = 90_000;

export interface Cluster {
  /** https://127.0.0.1:<port> */
  server: string;
  /** Admin kubeconfig (system:masters), mode 0600. */
  kubeconfig: string;
  /** The serving CA, for clients that verify the server. */
  caFile: string;
  adminToken: string;
  /** A client certificate and key (PEM files) the API server takes as a member of system:masters. */
  clientCertFile: string;
  clientKeyFile: string;
  /** Where this cluster keeps its files; removed by stop(). */
  dir: string;
  /** Milliseconds from spawning etcd to CRDs Established. */
  startedInMs: number;
  /** Runs kubectl against this cluster; throws with its output on failure. */
  kubectl(args: string[], input?: string): string;
  /** CPU seconds (user + system) the API server and etcd have used so far: the benchmark's cost per ADD. */
  cpuSeconds(): { apiserver: number; etcd: number };
  /** Stops the API server (etcd keeps the data): for fault tests. */
  stopApiServer(): Promise<void>;
  /** Starts the API server again on the same port, waiting until it is ready. */
  startApiServer(): Promise<void>;
  stop(): Promise<void>;
}

const running = new Set<ChildProcess>();
let exitHook = false;

interface ClusterOptions {
  log?: (line: string) => void;
  /**
   * Another address clients reach the API server at (a qemu guest's forward, conformance/guest):
   * made its advertise address, which kube-apiserver writes into the serving certificate it
   * generates, as an IP SAN beside the bind address 127.0.0.1; the server still listens on
   * 127.0.0.1 only. No endpoint reconciler runs, so nothing else uses it. Default 127.0.0.1.
   */
  advertiseAddress?: string;
  /**
   * Also run kube-controller-manager with the controllers a DaemonSet and its pods need
   * (CONTROLLERS), and kube-scheduler: the DaemonSet controller gives each pod a node affinity
   * for its node, not a nodeName, and leaves the binding to the scheduler. Both as the admin,
   * leader election off, serving on 127.0.0.1 at free ports; ready once kube-root-ca.crt is in
   * kube-system. Off by default: the other tests need neither.
   */
  controllerManager?: boolean;
}

/**
 * The controllers a DaemonSet's pods need (v1.36 names, cmd/kube-controller-manager/names): the
 * DaemonSet's pods; the `default` ServiceAccount of each namespace; the cluster's CA as the
 * kube-root-ca.crt ConfigMap of each namespace (a projected service-account volume reads it); the
 * garbage collector, which deletes a deleted DaemonSet's pods (kubectl's cascade); the namespace
 * controller, which empties a deleted namespace. No token controller (no legacy token Secrets), so
 * no service-account private key is needed.
 */
const CONTROLLERS = [
  "daemonset-controller",
  "serviceaccount-controller",
  "root-ca-certificate-publisher-controller",
  "garbage-collector-controller",
  "namespace-controller",
];

export async function startCluster(options: ClusterOptions = {}): Promise<Cluster> {
  const log = options.log ?? (() => {});
  const binaries = ["etcd", "kube-apiserver", "kubectl", ...(options.controllerManager ? ["kube-controller-manager", "kube-scheduler"] : [])];
  for (const binary of binaries) {
    if (!existsSync(join(KUBE_BIN, binary))) {
      throw new Error(`${join(KUBE_BIN, binary)} is missing: run scripts/build-kube.sh (a cold build takes many minutes)`);
    }
  }
  installExitHook();
  const started = Date.now();
  const dir = mkdtempSync(join(tmpdir(), "cnit-kube-"));
  const [etcdClient, etcdPeer, apiPort, controllerManagerPort, schedulerPort] = await freePorts(5);
  mkdirSync(join(dir, "etcd"), { mode: 0o700 });
  mkdirSync(join(dir, "certs"), { mode: 0o700 });

  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  writeFileSync(join(dir, "sa.key"), privateKey.export({ type: "pkcs1", format: "pem" }), { mode: 0o600 });
  const adminToken = randomBytes(24).toString("hex");
  writeFileSync(join(dir, "tokens.csv"), `${adminToken},admin,admin,"system:masters"\n`, { mode: 0o600 });

  const etcd = launch(
    join(KUBE_BIN, "etcd"),
    [
      `--data-dir=${join(dir, "etcd")}`,
      `--listen-client-urls=http://127.0.0.1:${etcdClient}`,
      `--advertise-client-urls=http://127.0.0.1:${etcdClient}`,
      `--listen-peer-urls=http://127.0.0.1:${etcdPeer}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeer}`,
      `--initial-cluster=default=http://127.0.0.1:${etcdPeer}`,
      "--unsafe-no-fsync=true",
      "--log-level=error",
    ],
    join(dir, "etcd.log"),
  );
  await waitFor("etcd", () => httpGetStatus(`http://127.0.0.1:${etcdClient}/health`), etcd, join(dir, "etcd.log"));
  log(`etcd ready after ${Date.now() - started} ms`);

  const clientCerts = makeClientCertificate(join(dir, "client"));

  const server = `https://127.0.0.1:${apiPort}`;
  const caFile = join(dir, "certs", "apiserver.crt");
  const apiArgs = [
    `--etcd-servers=http://127.0.0.1:${etcdClient}`,
    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
    `--service-account-signing-key-file=${join(dir, "sa.key")}`,
    `--service-account-key-file=${join(dir, "sa.key")}`,
    `--cert-dir=${join(dir, "certs")}`,
    `--secure-port=${apiPort}`,
    "--bind-address=127.0.0.1",
    `--advertise-address=${options.advertiseAddress ?? "127.0.0.1"}`,
    "--endpoint-reconciler-type=none",
    "--service-cluster-ip-range=10.0.0.0/24",
    "--authorization-mode=RBAC",
    `--token-auth-file=${join(dir, "tokens.csv")}`,
    `--client-ca-file=${clientCerts.caFile}`,
    "--allow-privileged=true",
    "--disable-admission-plugins=ServiceAccount",
    "--enable-priority-and-fairness=false",
  ];
  let apiserver = await startApiServer();
  log(`kube-apiserver ready after ${Date.now() - started} ms`);

  const kubeconfig = join(dir, "admin.kubeconfig");
  writeFileSync(kubeconfig, kubeconfigText({ server, caFile, token: adminToken, namespace: "kube-system", user: "admin" }), {
    mode: 0o600,
  });
  const kubectl = (args: string[], input?: string): string => {
    const run = spawnSync(join(KUBE_BIN, "kubectl"), [`--kubeconfig=${kubeconfig}`, ...args], { input, encoding: "utf8" });
    if (run.status !== 0) throw new Error(`kubectl ${args.join(" ")}: ${run.stderr}${run.stdout}`);
    return run.stdout;
  };
  await waitFor("namespace default", async () => (tryKubectl(kubectl, ["get", "namespace", "default"]) ? 200 : 0), apiserver, join(dir, "apiserver.log"));
  kubectl(["apply", "-f", CRD_DIR]);
  kubectl(["wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"]);
  const controllers: ChildProcess[] = [];
  if (options.controllerManager) {
    const controllersStarted = Date.now();
    const common = (name: string, port: number | undefined) => [
      `--kubeconfig=${kubeconfig}`,
      "--leader-elect=false",
      "--bind-address=127.0.0.1",
      `--secure-port=${port}`,
      // Its self-signed serving certificate; without a directory it would be written under the working directory.
      `--cert-dir=${join(dir, name)}`,
    ];
    const controllerManager = launch(
      join(KUBE_BIN, "kube-controller-manager"),
      [
        ...common("controller-manager", controllerManagerPort),
        `--controllers=${CONTROLLERS.join(",")}`,
        `--root-ca-file=${caFile}`,
        "--use-service-account-credentials=false",
      ],
      join(dir, "controller-manager.log"),
    );
    controllers.push(controllerManager);
    const scheduler = launch(join(KUBE_BIN, "kube-scheduler"), common("scheduler", schedulerPort), join(dir, "scheduler.log"));
    controllers.push(scheduler);
    await waitFor("kube-scheduler", () => httpsGetStatus(`https://127.0.0.1:${schedulerPort}/healthz`), scheduler, join(dir, "scheduler.log"));
    // Its controllers are running once the CA publisher has written kube-system's copy.
    await waitFor(
      "kube-controller-manager",
      async () => (tryKubectl(kubectl, ["-n", "kube-system", "get", "configmap", "kube-root-ca.crt"]) ? 200 : 0),
      controllerManager,
      join(dir, "controller-manager.log"),
    );
    log(`kube-controller-manager and kube-scheduler ready in ${Date.now() - controllersStarted} ms`);
  }
  const startedInMs = Date.now() - started;
  log(`cluster ready in ${startedInMs} ms (CRDs Established${options.controllerManager ? ", controllers running" : ""})`);

  async function startApiServer(): Promise<ChildProcess> {
    const child = launch(join(KUBE_BIN, "kube-apiserver"), apiArgs, join(dir, "apiserver.log"));
    await waitFor("kube-apiserver", () => httpsGetStatus(`${server}/readyz`, caFile), child, join(dir, "apiserver.log"));
    return child;
  }

  return {
    server,
    kubeconfig,
    caFile,
    adminToken,
    clientCertFile: clientCerts.certFile,
    clientKeyFile: clientCerts.keyFile,
    dir,
    startedInMs,
    kubectl,
    cpuSeconds() {
      return { apiserver: cpuSecondsOf(apiserver.pid), etcd: cpuSecondsOf(etcd.pid) };
    },
    async stopApiServer() {
      await terminate(apiserver);
    },
    async startApiServer() {
      apiserver = await startApiServer();
    },
    async stop() {
      for (const child of controllers) await terminate(child);
      await terminate(apiserver);
      await terminate(etcd);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function kubeconfigText(o: { server: string; caFile: string; token: string; namespace: string; user: string }): string {
  // JSON is valid YAML, and needs no YAML library to write.
  return JSON.stringify(
    {
      apiVersion: "v1",
      kind: "Config",
      clusters: [{ name: "test", cluster: { server: o.server, "certificate-authority": o.caFile } }],
      users: [{ name: o.user, user: { token: o.token } }],
      contexts: [{ name: "test", context: { cluster: "test", user: o.user, namespace: o.namespace } }],
      "current-context": "test",
    },
    null,
    2,
  );
}

/**
 * The kubeconfig upstream whereabouts' installer writes on every node (upstream `script/lib.sh`): YAML,
 * the CA inline as certificate-authority-data, a token, the context's namespace.
 */
export function installerKubeconfigText(o: { server: string; caFile: string; token: string; namespace: string }): string {
  return [
    "# Kubeconfig file for whereabouts CNI plugin.",
    "apiVersion: v1",
    "kind: Config",
    "clusters:",
    "- name: local",
    "  cluster:",
    `    server: ${o.server}`,
    `    certificate-authority-data: ${readFileSync(o.caFile).toString("base64")}`,
    "users:",
    "- name: whereabouts",
    "  user:",
    `    token: "${o.token}"`,
    "contexts:",
    "- name: whereabouts-context",
    "  context:",
    "    cluster: local",
    "    user: whereabouts",
    `    namespace: ${o.namespace}`,
    "current-context: whereabouts-context",
    "",
  ].join("\n");
}

/**
 * A client CA (for --client-ca-file) and a certificate it signed for a member of system:masters,
 * with openssl (Debian's, a dependency of ca-certificates): EC keys, quick to make.
 */
function makeClientCertificate(dir: string): { caFile: string; certFile: string; keyFile: string } {
  mkdirSync(dir, { mode: 0o700 });
  const path = (name: string) => join(dir, name);
  const openssl = (...args: string[]) => {
    const run = spawnSync("openssl", args, { encoding: "utf8" });
    if (run.status !== 0) throw new Error(`openssl ${args.join(" ")}: ${run.stderr}${run.error ?? ""}`);
  };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  openssl("req", "-x509", ...ec, "-keyout", path("ca.key"), "-out", path("ca.crt"), "-days", "2", "-subj", "/CN=test-client-ca");
  openssl("req", ...ec, "-keyout", path("admin.key"), "-out", path("admin.csr"), "-subj", "/O=system:masters/CN=cert-admin");
  writeFileSync(path("client.ext"), "extendedKeyUsage=clientAuth\n");
  openssl(
    "x509",
    "-req",
    "-in",
    path("admin.csr"),
    "-CA",
    path("ca.crt"),
    "-CAkey",
    path("ca.key"),
    "-CAcreateserial",
    "-days",
    "2",
    "-extfile",
    path("client.ext"),
    "-out",
    path("admin.crt"),
  );
  return { caFile: path("ca.crt"), certFile: path("admin.crt"), keyFile: path("admin.key") };
}

function launch(binary: string, args: string[], logFile: string): ChildProcess {
  // setpriv --pdeathsig: the kernel ends the server when the test process dies, even by SIGKILL.
  const child = spawn("setpriv", ["--pdeathsig", "SIGKILL", "--", binary, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  const chunks: Buffer[] = [];
  const keep = (chunk: Buffer) => {
    chunks.push(chunk);
    writeFileSync(logFile, Buffer.concat(chunks));
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
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

async function waitFor(what: string, probe: () => Promise<number>, child: ChildProcess, logFile: string): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}) before it was ready:\n${tail(logFile)}`);
    }
    if ((await probe().catch(() => 0)) === 200) return;
    if (Date.now() > deadline) throw new Error(`${what} not ready after ${START_TIMEOUT_MS} ms:\n${tail(logFile)}`);
    await new Promise((done) => setTimeout(done, 200));
  }
}

function tail(file: string): string {
  return existsSync(file) ? readFileSync(file, "utf8").split("\n").slice(-30).join("\n") : "(no log)";
}

function tryKubectl(kubectl: (args: string[]) => string, args: string[]): boolean {
  try {
    kubectl(args);
    return true;
  } catch {
    return false;
  }
}

function httpGetStatus(url: string): Promise<number> {
  return new Promise((done, fail) => {
    const req = httpRequest(url, { timeout: 2000 }, (res) => {
      res.resume();
      done(res.statusCode ?? 0);
    });
    req.on("error", fail);
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.end();
  });
}

/** `caFile`: the server's CA; undefined: any certificate (a component's self-signed one, on 127.0.0.1). */
function httpsGetStatus(url: string, caFile?: string): Promise<number> {
  if (caFile !== undefined && !existsSync(caFile)) return Promise.resolve(0);
  const trust = caFile === undefined ? { rejectUnauthorized: false } : { ca: readFileSync(caFile) };
  return new Promise((done, fail) => {
    const req = request(url, { ...trust, timeout: 2000 }, (res) => {
      res.resume();
      done(res.statusCode ?? 0);
    });
    req.on("error", fail);
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.end();
  });
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

/** utime + stime of a live process, from /proc (clock ticks of 1/100 s on Linux). */
function cpuSecondsOf(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    // The command name, in parentheses, may hold spaces: the fields start after its ')'.
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}
