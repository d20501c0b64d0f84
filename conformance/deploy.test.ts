/**
 * What ships (docs/deploy.md): deploy/ as an operator applies it, and the image of scripts/image.ts.
 *
 * Against a real kube-apiserver with kube-controller-manager and kube-scheduler (startCluster's
 * controllerManager): `kubectl apply -f deploy/crds/ -f deploy/` with strict server-side
 * validation; the cni-plugins service account may do what multus and whereabouts need and nothing
 * else; the controller-manager publishes the cluster's CA as kube-root-ca.crt; Node objects
 * registered with kubectl (a plain one, a tainted one; no kubelet) each get a DaemonSet pod bound
 * to them, whose spec is read back; deleting the DaemonSet has its pods deleted.
 *
 * The image: its archive's layout and files (exactly the executable, its libraries and `test`),
 * reproducible; imported into Debian's containerd (one of our own: temporary root, state and
 * socket, its CRI plugin off), listed under its name; then the installer in it run by runc as the
 * DaemonSet's pod says (command, args, env, mounts, read-only root, host network), with a token
 * bound to the controller's pod: it fills a temporary node's directories, the readiness probe
 * turns true, and the kubeconfig it wrote authenticates as the service account.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { BIN, ROOT } from "./harness.ts";
import { type Cluster, KUBE_BIN, startCluster } from "./kube/cluster.ts";
import { type BuiltImage, buildImage, ENTRYPOINT, IMAGE_NAME, sharedLibraries } from "../scripts/image.ts";

const DEPLOY = join(ROOT, "deploy");
const SERVICE_ACCOUNT = "system:serviceaccount:kube-system:cni-plugins";
const PLUGINS = ["cni-plugins", "ipvlan", "macvlan", "multus", "passthru", "sbr", "whereabouts"];
const log = (line: string) => console.log(`[deploy] ${line}`);

interface Container {
  name: string;
  image: string;
  imagePullPolicy: string;
  command: string[];
  args?: string[];
  env?: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[];
  securityContext?: { runAsUser?: number; readOnlyRootFilesystem?: boolean; privileged?: boolean };
  readinessProbe?: { exec?: { command: string[] } };
  volumeMounts: { name: string; mountPath: string; readOnly?: boolean }[];
}
interface Volume {
  name: string;
  hostPath?: { path: string; type?: string };
  projected?: {
    sources: {
      serviceAccountToken?: { path: string; expirationSeconds?: number };
      configMap?: { name: string; items?: { key: string; path: string }[] };
      downwardAPI?: { items: { path: string; fieldRef: { fieldPath: string } }[] };
    }[];
  };
}
interface PodSpec {
  nodeName?: string;
  serviceAccountName?: string;
  automountServiceAccountToken?: boolean;
  hostNetwork?: boolean;
  priorityClassName?: string;
  priority?: number;
  tolerations?: { key?: string; operator?: string; effect?: string }[];
  terminationGracePeriodSeconds?: number;
  containers: Container[];
  volumes: Volume[];
}
interface Pod {
  metadata: { name: string; namespace: string; uid: string; deletionTimestamp?: string; ownerReferences?: { kind: string; name: string }[] };
  spec: PodSpec;
}
interface Manifest {
  kind: string;
  metadata: { name: string; namespace?: string };
  spec?: { updateStrategy?: unknown; template?: { spec: PodSpec } };
}

/** deploy/daemonset.yaml's objects, as YAML reads them. */
function manifests(file: string): Manifest[] {
  return parseAllDocuments(readFileSync(join(DEPLOY, file), "utf8")).map((doc) => doc.toJSON() as Manifest);
}

function daemonSetSpec(): PodSpec {
  const daemonSet = manifests("daemonset.yaml").find((object) => object.kind === "DaemonSet");
  const spec = daemonSet?.spec?.template?.spec;
  if (!spec) throw new Error("deploy/daemonset.yaml has no DaemonSet with a pod template");
  return spec;
}

describe("deploy/ and the image script, without a server", () => {
  test("every manifest opens with a comment saying what it is for", () => {
    const files = readdirSync(DEPLOY, { recursive: true, encoding: "utf8" }).filter((name) => name.endsWith(".yaml"));
    expect(files).toContain("daemonset.yaml");
    for (const file of files) expect(readFileSync(join(DEPLOY, file), "utf8").startsWith("# "), file).toBe(true);
  });

  test("the DaemonSet runs the image scripts/image.ts names, with its entrypoint as command", () => {
    const container = daemonSetSpec().containers[0];
    expect(container?.image).toBe(IMAGE_NAME);
    expect(IMAGE_NAME).toBe(`localhost/cni-plugins:${(JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version}`);
    expect(container?.command).toEqual(ENTRYPOINT);
    expect(container?.imagePullPolicy).toBe("IfNotPresent");
  });

  test("ldd's output read as the files to copy: libraries and the loader, not the vDSO", () => {
    const output = [
      "\tlinux-vdso.so.1 (0x00007ffd5b7e4000)",
      "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f5bfa8f7000)",
      "\t/lib64/ld-linux-x86-64.so.2 (0x00007f5bfaaec000)",
      "\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f5bfa80d000)",
      "",
    ].join("\n");
    expect(sharedLibraries(output)).toEqual(["/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libm.so.6", "/lib64/ld-linux-x86-64.so.2"]);
    expect(() => sharedLibraries("\tlibfoo.so.1 => not found\n")).toThrow(/libfoo\.so\.1 => not found/);
    expect(() => sharedLibraries("\tstatically linked\n")).toThrow(/cannot read/);
  });
});

// ---- a real API server with the controller-manager ------------------------------------------------

let cluster: Cluster;
let image: BuiltImage;
const scratch = mkdtempSync(join(tmpdir(), "cnit-deploy-"));
const NODES = { plain: `deploy-plain-${process.pid}`, tainted: `deploy-tainted-${process.pid}` };

beforeAll(async () => {
  cluster = await startCluster({ controllerManager: true, log });
  image = buildImage({ log });
}, 180_000);

afterAll(async () => {
  await stopContainerd();
  await cluster?.stop();
  rmSync(scratch, { recursive: true, force: true });
}, 60_000);

/** kubectl as the admin, its exit status and output, without throwing. */
function kubectlStatus(args: string[], input?: string): { status: number | null; stdout: string; output: string } {
  const run = spawnSync(join(KUBE_BIN, "kubectl"), [`--kubeconfig=${cluster.kubeconfig}`, ...args], { input, encoding: "utf8" });
  return { status: run.status, stdout: run.stdout, output: `${run.stdout}${run.stderr}` };
}

async function until<T>(what: string, timeoutMs: number, probe: () => T | undefined): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not after ${timeoutMs} ms`);
    await new Promise((done) => setTimeout(done, 200));
  }
}

function daemonSetPods(): Pod[] {
  const list = JSON.parse(cluster.kubectl(["-n", "kube-system", "get", "pods", "-l", "app.kubernetes.io/name=cni-plugins", "-o", "json"])) as { items: Pod[] };
  return list.items;
}

function registerNode(name: string, taints: { key: string; value?: string; effect: string }[]): void {
  // What kubelet registers, as far as the DaemonSet controller and the scheduler look: the OS
  // label the DaemonSet selects, room for the pod's requests, the taints.
  const resources = { cpu: "2", memory: "4Gi", pods: "110" };
  cluster.kubectl(
    ["create", "-f", "-"],
    JSON.stringify({
      apiVersion: "v1",
      kind: "Node",
      metadata: { name, labels: { "kubernetes.io/os": "linux", "kubernetes.io/hostname": name } },
      spec: { taints },
      status: { capacity: resources, allocatable: resources },
    }),
  );
}

describe("deploy/ on a real API server with kube-controller-manager", () => {
  test("kubectl apply -f deploy/crds/ -f deploy/ takes every object, with strict server-side validation", () => {
    const output = cluster.kubectl(["apply", "--validate=strict", "-f", join(DEPLOY, "crds"), "-f", DEPLOY]);
    for (const object of [
      "serviceaccount/cni-plugins",
      "clusterrolebinding.rbac.authorization.k8s.io/cni-plugins-multus",
      "clusterrolebinding.rbac.authorization.k8s.io/cni-plugins-whereabouts",
      "clusterrole.rbac.authorization.k8s.io/multus-cni-ts",
      "clusterrole.rbac.authorization.k8s.io/whereabouts-cni-ts",
      "daemonset.apps/cni-plugins",
    ]) {
      expect(output).toContain(object);
    }
    // Validation is in force: the same DaemonSet with a misspelt field is refused.
    const daemonSet = manifests("daemonset.yaml").find((object) => object.kind === "DaemonSet");
    const misspelt = JSON.parse(JSON.stringify(daemonSet).replace('"updateStrategy"', '"updateStrategyy"')) as unknown;
    const refused = kubectlStatus(["apply", "--dry-run=server", "--validate=strict", "-f", "-"], JSON.stringify(misspelt));
    expect(refused.status).not.toBe(0);
    expect(refused.output).toMatch(/unknown field "spec\.updateStrategyy"/);
    // What the server stored is what the file says (defaults aside).
    const stored = JSON.parse(cluster.kubectl(["-n", "kube-system", "get", "daemonset", "cni-plugins", "-o", "json"])) as Manifest;
    expect(stored.spec?.updateStrategy).toEqual({ type: "RollingUpdate", rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } });
  });

  test("the cni-plugins service account may do what multus and whereabouts need, and is refused the rest", () => {
    const can = (verb: string, resource: string, ...extra: string[]) =>
      kubectlStatus(["auth", "can-i", verb, resource, `--as=${SERVICE_ACCOUNT}`, ...extra]).stdout.trim();
    const allowed: [string, string, ...string[]][] = [
      // multus (deploy/multus-rbac.yaml)
      ["get", "network-attachment-definitions.k8s.cni.cncf.io", "-n", "default"],
      ["get", "pods", "-n", "default"],
      ["update", "pods", "--subresource=status", "-n", "default"],
      ["create", "events", "-n", "default"],
      ["get", "nodes"],
      // whereabouts (deploy/rbac.yaml)
      ["get", "ippools.whereabouts.cni.cncf.io", "-n", "kube-system"],
      ["list", "ippools.whereabouts.cni.cncf.io", "-n", "kube-system"],
      ["create", "ippools.whereabouts.cni.cncf.io", "-n", "kube-system"],
      ["patch", "ippools.whereabouts.cni.cncf.io", "-n", "kube-system"],
      ["get", "overlappingrangeipreservations.whereabouts.cni.cncf.io", "-n", "kube-system"],
      ["create", "overlappingrangeipreservations.whereabouts.cni.cncf.io", "-n", "kube-system"],
      ["delete", "overlappingrangeipreservations.whereabouts.cni.cncf.io", "-n", "kube-system"],
    ];
    const refused: [string, string, ...string[]][] = [
      ["list", "network-attachment-definitions.k8s.cni.cncf.io", "-n", "default"],
      ["create", "network-attachment-definitions.k8s.cni.cncf.io", "-n", "default"],
      ["create", "pods", "-n", "default"],
      ["delete", "pods", "-n", "default"],
      ["update", "pods", "-n", "default"],
      ["list", "pods", "-n", "default"],
      ["get", "secrets", "-n", "kube-system"],
      ["list", "secrets", "-n", "kube-system"],
      ["update", "nodes"],
      ["list", "nodes"],
      ["delete", "ippools.whereabouts.cni.cncf.io", "-n", "kube-system"],
      ["update", "overlappingrangeipreservations.whereabouts.cni.cncf.io", "-n", "kube-system"],
      ["create", "leases.coordination.k8s.io", "-n", "kube-system"],
      ["create", "serviceaccounts", "--subresource=token", "-n", "kube-system"],
      ["update", "daemonsets.apps", "-n", "kube-system"],
    ];
    for (const [verb, resource, ...extra] of allowed) expect(`${verb} ${resource} ${extra.join(" ")}: ${can(verb, resource, ...extra)}`).toMatch(/: yes$/);
    for (const [verb, resource, ...extra] of refused) expect(`${verb} ${resource} ${extra.join(" ")}: ${can(verb, resource, ...extra)}`).toMatch(/: no$/);
  });

  test("the controller-manager publishes the cluster's CA into kube-system as kube-root-ca.crt", () => {
    const published = JSON.parse(cluster.kubectl(["-n", "kube-system", "get", "configmap", "kube-root-ca.crt", "-o", "json"])) as {
      data: Record<string, string>;
    };
    expect(published.data["ca.crt"]).toBe(readFileSync(cluster.caFile, "utf8"));
  });

  test("each registered node gets a DaemonSet pod, tainted or not, bound to it, as the manifest says", async () => {
    registerNode(NODES.plain, []);
    registerNode(NODES.tainted, [
      { key: "node.kubernetes.io/not-ready", effect: "NoSchedule" },
      { key: "example.com/dedicated", value: "storage", effect: "NoExecute" },
    ]);
    const pods = await until("a bound DaemonSet pod on both nodes", 60_000, () => {
      const bound = daemonSetPods().filter((pod) => pod.spec.nodeName);
      return bound.length === 2 ? bound : undefined;
    });
    expect(pods.map((pod) => pod.spec.nodeName).sort()).toEqual([NODES.plain, NODES.tainted].sort());
    const manifest = daemonSetSpec();
    for (const pod of pods) {
      const spec = pod.spec;
      expect(pod.metadata.ownerReferences?.[0]).toMatchObject({ kind: "DaemonSet", name: "cni-plugins" });
      expect(spec.serviceAccountName).toBe("cni-plugins");
      expect(spec.automountServiceAccountToken).toBe(false);
      expect(spec.hostNetwork).toBe(true);
      expect(spec.priorityClassName).toBe("system-node-critical");
      expect(spec.priority).toBe(2_000_001_000);
      expect(spec.tolerations).toContainEqual({ operator: "Exists" });
      expect(spec.terminationGracePeriodSeconds).toBeLessThanOrEqual(30);
      // One container, as the manifest says; no mount was added (the admission plugin is off here).
      expect(spec.containers).toHaveLength(1);
      const container = spec.containers[0] as Container;
      expect(container.image).toBe(image.name);
      expect(container.command).toEqual(["/usr/src/cni-plugins/bin/cni-plugins", "install"]);
      expect(container.args).toEqual(manifest.containers[0]?.args);
      expect(container.env).toContainEqual({ name: "WHEREABOUTS_NAMESPACE", valueFrom: { fieldRef: { apiVersion: "v1", fieldPath: "metadata.namespace" } } });
      expect(container.securityContext).toMatchObject({ runAsUser: 0, readOnlyRootFilesystem: true });
      expect(container.securityContext?.privileged).toBeUndefined();
      expect(container.volumeMounts).toEqual([
        { name: "cni-bin", mountPath: "/host/opt/cni/bin" },
        { name: "cni-conf", mountPath: "/host/etc/cni/net.d" },
        { name: "service-account", mountPath: "/var/run/secrets/kubernetes.io/serviceaccount", readOnly: true },
      ]);
      const volume = (name: string) => spec.volumes.find((v) => v.name === name);
      expect(volume("cni-bin")?.hostPath).toEqual({ path: "/opt/cni/bin", type: "DirectoryOrCreate" });
      expect(volume("cni-conf")?.hostPath).toEqual({ path: "/etc/cni/net.d", type: "DirectoryOrCreate" });
      const sources = volume("service-account")?.projected?.sources ?? [];
      expect(sources.find((s) => s.serviceAccountToken)?.serviceAccountToken?.path).toBe("token");
      expect(sources.find((s) => s.configMap)?.configMap).toEqual({ name: "kube-root-ca.crt", items: [{ key: "ca.crt", path: "ca.crt" }] });
      expect(sources.find((s) => s.downwardAPI)?.downwardAPI?.items).toEqual([
        { path: "namespace", fieldRef: { apiVersion: "v1", fieldPath: "metadata.namespace" } },
      ]);
    }
    const status = JSON.parse(cluster.kubectl(["-n", "kube-system", "get", "daemonset", "cni-plugins", "-o", "jsonpath={.status}"])) as Record<string, number>;
    expect(status.desiredNumberScheduled).toBe(2);
  });
});

// ---- the image --------------------------------------------------------------------------------

interface IndexJson {
  manifests: { digest: string; annotations: Record<string, string> }[];
}

/** The archive unpacked into a directory: its layout, and the layer's listing. */
function unpack(archive: string, into: string): { index: IndexJson; blob: (digest: string) => Buffer } {
  mkdirSync(into, { recursive: true });
  const tar = spawnSync("tar", ["-xf", archive, "-C", into], { encoding: "utf8" });
  if (tar.status !== 0) throw new Error(`tar -xf ${archive}: ${tar.stderr}`);
  return {
    index: JSON.parse(readFileSync(join(into, "index.json"), "utf8")) as IndexJson,
    blob: (digest) => readFileSync(join(into, "blobs", "sha256", digest.replace("sha256:", ""))),
  };
}

describe("the image (npm run image)", () => {
  test("an OCI layout named for containerd, whose one layer holds the executable, the libraries ldd lists and test, nothing else", () => {
    const { index, blob } = unpack(image.archive, join(scratch, "layout"));
    expect(readdirSync(join(scratch, "layout")).sort()).toEqual(["blobs", "index.json", "oci-layout"]);
    expect(index.manifests).toHaveLength(1);
    expect(index.manifests[0]?.annotations).toEqual({ "io.containerd.image.name": image.name, "org.opencontainers.image.ref.name": image.name.split(":")[1] });
    const manifest = JSON.parse(blob(index.manifests[0]?.digest ?? "").toString()) as {
      config: { digest: string };
      layers: { digest: string; mediaType: string }[];
    };
    const config = JSON.parse(blob(manifest.config.digest).toString()) as { config: { Entrypoint: string[] }; architecture: string };
    expect(config.config.Entrypoint).toEqual(ENTRYPOINT);
    expect(config.architecture).toBe("amd64");
    expect(manifest.layers).toHaveLength(1);
    const layer = manifest.layers[0];
    expect(layer?.mediaType).toBe("application/vnd.oci.image.layer.v1.tar+gzip");
    writeFileSync(join(scratch, "layer.tar.gz"), blob(layer?.digest ?? ""));
    const listing = spawnSync("tar", ["-tvzf", join(scratch, "layer.tar.gz")], { encoding: "utf8", maxBuffer: 1 << 24 });
    expect(listing.status).toBe(0);
    const entries = listing.stdout.trim().split("\n");
    // Owner 0, the epoch as mtime, for every entry (reproducible); regular files only, besides directories.
    for (const entry of entries) expect(entry).toMatch(/^[-d]rwxr-xr-x 0\/0 .* 1970-01-01 00:00 \.\//);
    const files = entries.filter((entry) => entry.startsWith("-")).map((entry) => entry.slice(entry.indexOf(" ./") + 2));
    const ldd = spawnSync("ldd", [join(BIN, "cni-plugins")], { encoding: "utf8" });
    const expected = ["/usr/src/cni-plugins/bin/cni-plugins", "/usr/bin/test", ...sharedLibraries(ldd.stdout)].sort();
    expect(files.sort()).toEqual(expected);
    expect(image.files).toEqual(expected);
    log(`image ${image.name}: archive ${(image.bytes / 1e6).toFixed(1)} MB, rootfs ${(image.rootfsBytes / 1e6).toFixed(1)} MB`);
  });

  test("reproducible: built again, the same bytes", () => {
    const again = buildImage({ archive: join(scratch, "again.tar") });
    const digest = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");
    expect(digest(again.archive)).toBe(digest(image.archive));
  }, 60_000);

  test("containerd imports it under its name; run as the DaemonSet's pod says, its installer fills the node and authenticates", async () => {
    const ctr = await startContainerd();
    ctr(["images", "import", image.archive]);
    expect(ctr(["images", "ls", "-q"]).split("\n")).toContain(image.name);

    // The pod the DaemonSet controller made, and what kubelet would give it: a token bound to
    // it, the published CA, its namespace; the API server's address as the service's.
    const pod = daemonSetPods().find((p) => p.spec.nodeName === NODES.plain);
    if (!pod) throw new Error(`no DaemonSet pod on ${NODES.plain}`);
    const node = join(scratch, "node");
    const token = cluster
      .kubectl([
        "-n",
        "kube-system",
        "create",
        "token",
        "cni-plugins",
        "--bound-object-kind=Pod",
        `--bound-object-name=${pod.metadata.name}`,
        `--bound-object-uid=${pod.metadata.uid}`,
      ])
      .trim();
    const ca =
      (JSON.parse(cluster.kubectl(["-n", "kube-system", "get", "configmap", "kube-root-ca.crt", "-o", "json"])) as { data: Record<string, string> }).data[
        "ca.crt"
      ] ?? "";
    const apiPort = new URL(cluster.server).port;
    const run = (id: string, command: string[]) => runAsPod(ctr, pod, id, command, { node, token, ca, service: { host: "127.0.0.1", port: apiPort } });

    const container = pod.spec.containers[0] as Container;
    const probe = container.readinessProbe?.exec?.command ?? [];
    expect(probe[0]).toBe("/usr/bin/test");
    // The node's primary network, which the installer waits for.
    const confDir = join(node, "etc/cni/net.d");
    mkdirSync(confDir, { recursive: true });
    expect(run("probe-before", probe).status).toBe(1);
    writeFileSync(join(confDir, "10-primary.conflist"), JSON.stringify({ cniVersion: "1.0.0", name: "primary", plugins: [{ type: "bridge" }] }));

    const installed = run("install", [...container.command, ...(container.args ?? []), "--once"]);
    expect(installed.status, installed.output).toBe(0);
    expect(readdirSync(join(node, "opt/cni/bin")).sort()).toEqual(PLUGINS);
    expect(statSync(join(node, "opt/cni/bin/multus")).ino).toBe(statSync(join(node, "opt/cni/bin/cni-plugins")).ino);
    expect(existsSync(join(confDir, "00-multus.conflist"))).toBe(true);
    const flat = JSON.parse(readFileSync(join(confDir, "whereabouts.d/whereabouts.conf"), "utf8")) as Record<string, unknown>;
    expect(flat).toMatchObject({ datastore: "kubernetes", log_level: "error", log_file: "/var/log/whereabouts.log" });
    expect(run("probe-after", probe).status).toBe(0);

    // The kubeconfigs it wrote (the CA inline, the bound token) are the plugins' way in, as the service account.
    for (const kubeconfig of ["multus.d/multus.kubeconfig", "whereabouts.d/whereabouts.kubeconfig"]) {
      const as = spawnSync(
        join(KUBE_BIN, "kubectl"),
        [`--kubeconfig=${join(confDir, kubeconfig)}`, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"],
        {
          encoding: "utf8",
        },
      );
      expect(`${as.stdout}${as.stderr}`, kubeconfig).toBe(SERVICE_ACCOUNT);
    }
  }, 120_000);
});

describe("uninstall", () => {
  test("kubectl delete -f deploy/daemonset.yaml: the garbage collector deletes the DaemonSet's pods", async () => {
    expect(daemonSetPods()).toHaveLength(2);
    cluster.kubectl(["delete", "-f", join(DEPLOY, "daemonset.yaml"), "--wait=false"]);
    // Deleted, and left Terminating: no kubelet here to confirm the containers are gone.
    await until("the DaemonSet's pods deleted", 60_000, () => (daemonSetPods().every((pod) => pod.metadata.deletionTimestamp) ? true : undefined));
    expect(kubectlStatus(["get", "serviceaccount", "-n", "kube-system", "cni-plugins"]).status).not.toBe(0);
  });
});

// ---- containerd of our own -------------------------------------------------------------------

let containerd: { child: ChildProcess; dir: string; socket: string } | undefined;

/**
 * Debian's containerd with its own root, state, socket and plugin directory under the scratch
 * directory, its CRI plugin off (nothing here is a node): `ctr` against it, in k8s.io.
 */
interface Ctr {
  /** Throws with its output unless it exits 0. */
  (args: string[]): string;
  /** Its status and output, whatever they are. */
  run(args: string[]): { status: number | null; output: string };
}

async function startContainerd(): Promise<Ctr> {
  for (const tool of ["containerd", "ctr", "runc"]) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0)
      throw new Error(`${tool} is missing: apt-get install -y containerd runc (scripts/install-node-deps.sh)`);
  }
  const dir = join(scratch, "containerd");
  mkdirSync(dir, { recursive: true });
  const socket = join(dir, "containerd.sock");
  const defaults = spawnSync("containerd", ["config", "default"], { encoding: "utf8" });
  if (defaults.status !== 0) throw new Error(`containerd config default: ${defaults.stderr}`);
  const config = defaults.stdout
    .replace(/^disabled_plugins = .*$/m, 'disabled_plugins = ["io.containerd.grpc.v1.cri"]')
    .replace(/^root = .*$/m, `root = "${join(dir, "root")}"`)
    .replace(/^state = .*$/m, `state = "${join(dir, "state")}"`)
    .replace('address = "/run/containerd/containerd.sock"', `address = "${socket}"`)
    .replace('path = "/opt/containerd"', `path = "${join(dir, "opt")}"`);
  for (const line of [`root = "${join(dir, "root")}"`, `address = "${socket}"`, "io.containerd.grpc.v1.cri"]) {
    if (!config.includes(line)) throw new Error(`containerd's default config changed: cannot set ${line}`);
  }
  writeFileSync(join(dir, "config.toml"), config);
  // setpriv --pdeathsig: containerd dies with the test process, however it ends.
  const child = spawn("setpriv", ["--pdeathsig", "SIGKILL", "--", "containerd", "--config", join(dir, "config.toml")], { stdio: "ignore" });
  containerd = { child, dir, socket };
  const run = (args: string[]) => {
    const result = spawnSync("ctr", ["--address", socket, "--namespace", "k8s.io", ...args], { encoding: "utf8" });
    return { status: result.status, output: `${result.stdout}${result.stderr}${result.error ?? ""}` };
  };
  const ctr = Object.assign(
    (args: string[]): string => {
      const result = run(args);
      if (result.status !== 0) throw new Error(`ctr ${args.join(" ")}: ${result.output}`);
      return result.output;
    },
    { run },
  );
  await until("containerd answering", 30_000, () => (spawnSync("ctr", ["--address", socket, "version"]).status === 0 ? true : undefined));
  return ctr;
}

/** containerd stopped by its PID, then its shims (found by its socket on their command line), its mounts. */
async function stopContainerd(): Promise<void> {
  if (!containerd) return;
  const { child, dir, socket } = containerd;
  containerd = undefined;
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise<void>((done) => child.once("exit", () => done()));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  }
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let argv: string[];
    try {
      argv = readFileSync(join("/proc", entry, "cmdline"), "utf8").split("\0");
    } catch {
      continue; // Gone meanwhile.
    }
    const address = argv.indexOf("-address");
    if ((argv[0] ?? "").endsWith("containerd-shim-runc-v2") && address >= 0 && argv[address + 1] === socket) process.kill(Number(entry), "SIGKILL");
  }
  const mounts = readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((line) => line.split(" ")[4] ?? "")
    .filter((point) => point.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
  for (const point of mounts) spawnSync("umount", ["-l", point]);
}

/**
 * One command in the pod's image as kubelet would run the pod's container, with `ctr run`: its
 * env (fieldRefs to the namespace resolved), its mounts (hostPath volumes as the node's
 * directories under `node`, the projected service-account volume as a directory written here),
 * read-only root and host network as its spec says; no cgroup of its own (nothing to leave behind).
 */
function runAsPod(
  ctr: Ctr,
  pod: Pod,
  id: string,
  command: string[],
  o: { node: string; token: string; ca: string; service: { host: string; port: string } },
): { status: number | null; output: string } {
  const container = pod.spec.containers[0] as Container;
  const flags = ["--rm", "--cgroup", "", `--env=KUBERNETES_SERVICE_HOST=${o.service.host}`, `--env=KUBERNETES_SERVICE_PORT=${o.service.port}`];
  if (pod.spec.hostNetwork) flags.push("--net-host");
  if (container.securityContext?.readOnlyRootFilesystem) flags.push("--read-only");
  for (const env of container.env ?? []) {
    const field = env.valueFrom?.fieldRef?.fieldPath;
    if (env.value !== undefined) flags.push(`--env=${env.name}=${env.value}`);
    else if (field === "metadata.namespace") flags.push(`--env=${env.name}=${pod.metadata.namespace}`);
    else throw new Error(`env ${env.name}: this test knows values and the namespace's fieldRef only`);
  }
  for (const mount of container.volumeMounts) {
    const volume = pod.spec.volumes.find((v) => v.name === mount.name);
    let source: string;
    if (volume?.hostPath) {
      source = join(o.node, volume.hostPath.path);
      mkdirSync(source, { recursive: true }); // DirectoryOrCreate
    } else if (volume?.projected) {
      source = join(scratch, "service-account");
      mkdirSync(source, { recursive: true });
      writeFileSync(join(source, "token"), o.token);
      writeFileSync(join(source, "ca.crt"), o.ca);
      writeFileSync(join(source, "namespace"), pod.metadata.namespace);
    } else throw new Error(`volume ${mount.name}: this test knows hostPath and projected volumes only`);
    flags.push("--mount", `type=bind,src=${source},dst=${mount.mountPath},options=rbind:${mount.readOnly ? "ro" : "rw"}`);
  }
  // ctr run exits with the command's status.
  return ctr.run(["run", ...flags, container.image, `${id}-${process.pid}`, ...command]);
}
