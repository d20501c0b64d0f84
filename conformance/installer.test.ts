/**
 * The installer (`cni-plugins install`, docs/installer.md) as a DaemonSet's container runs it: the
 * compiled executable against temporary directories standing for the node's CNI bin and conf
 * dirs and the pod's projected service-account volume (laid out as kubelet writes it, so token
 * rotation is kubelet's symlink swap). What a runtime on the node would see is read back: the
 * executable and its hard links while they are replaced under a process exec-ing them, file
 * modes, the kubeconfigs and flat file, the multus conf as the primary conf comes, changes and
 * goes, and what SIGTERM leaves; and, against a real API server, that the kubeconfigs it writes
 * from a service account's token are the plugins' way in.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BIN, cleanup, cni, netns, nsPath, ROOT } from "./harness.ts";
import { type Cluster, KUBE_BIN, startCluster } from "./kube/cluster.ts";

const EXECUTABLE = join(BIN, "cni-plugins");
const PLUGINS = ["macvlan", "ipvlan", "sbr", "whereabouts", "multus", "passthru"];
const CA = "-----BEGIN CERTIFICATE-----\nMIIBinstallertest\n-----END CERTIFICATE-----\n";
const SERVICE = { KUBERNETES_SERVICE_HOST: "10.96.0.1", KUBERNETES_SERVICE_PORT: "6443" };

const root = mkdtempSync(join(tmpdir(), "cnit-installer-"));
const children = new Set<ChildProcess>();
afterAll(() => {
  for (const child of children) child.kill("SIGKILL");
  rmSync(root, { recursive: true, force: true });
});

interface Node {
  dir: string;
  binDir: string;
  confDir: string;
  saDir: string;
  logDir: string;
}

let nodes = 0;
/** A node's directories; the service-account volume with its first token. */
function freshNode(): Node {
  const dir = join(root, `node${++nodes}`);
  const node = { dir, binDir: join(dir, "opt/cni/bin"), confDir: join(dir, "etc/cni/net.d"), saDir: join(dir, "sa"), logDir: join(dir, "log") };
  for (const path of [node.binDir, node.confDir, node.saDir, node.logDir]) mkdirSync(path, { recursive: true });
  rotateToken(node, "token-1");
  for (const name of ["token", "ca.crt", "namespace"]) symlinkSync(`..data/${name}`, join(node.saDir, name));
  return node;
}

let generations = 0;
/** A new token the way kubelet's AtomicWriter publishes one: a new directory, then `..data` swapped to it. */
function rotateToken(node: Node, token: string): void {
  const generation = `..2026_${++generations}`;
  mkdirSync(join(node.saDir, generation));
  writeFileSync(join(node.saDir, generation, "token"), token);
  writeFileSync(join(node.saDir, generation, "ca.crt"), CA);
  writeFileSync(join(node.saDir, generation, "namespace"), "cni-system");
  symlinkSync(generation, join(node.saDir, "..data_tmp"));
  renameSync(join(node.saDir, "..data_tmp"), join(node.saDir, "..data"));
}

/** Flags for a node; on one machine, every path the node's plugins see is the test's own. */
function flags(node: Node, extra: string[] = []): string[] {
  return [
    `--cni-bin-dir=${node.binDir}`,
    `--cni-conf-dir=${node.confDir}`,
    `--cni-conf-dir-host=${node.confDir}`,
    `--service-account-dir=${node.saDir}`,
    `--multus-kubeconfig-file-host=${join(node.confDir, "multus.d/multus.kubeconfig")}`,
    `--whereabouts-kubeconfig-file-host=${join(node.confDir, "whereabouts.d/whereabouts.kubeconfig")}`,
    `--multus-log-file=${join(node.logDir, "multus.log")}`,
    `--whereabouts-log-file=${join(node.logDir, "whereabouts.log")}`,
    ...extra,
  ];
}

function installOnce(node: Node, extra: string[] = [], env: Record<string, string> = SERVICE) {
  return spawnSync(EXECUTABLE, ["install", "--once", ...flags(node, extra)], {
    encoding: "utf8",
    env: { PATH: process.env.PATH ?? "", ...env },
    timeout: 30_000,
  });
}

interface Running {
  child: ChildProcess;
  stderr: () => string;
  exited: Promise<number | null>;
}

function start(node: Node, extra: string[]): Running {
  const child = spawn(EXECUTABLE, ["install", "--poll-interval-ms=100", ...flags(node, extra)], {
    env: { PATH: process.env.PATH ?? "", ...SERVICE },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(child);
  let stderr = "";
  let stdout = "";
  child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  child.stdout?.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  const exited = new Promise<number | null>((resolve) =>
    child.on("exit", (code) => {
      children.delete(child);
      // The installer's stdout is the container's log as much as stderr is, but it keeps to stderr.
      expect(stdout).toBe("");
      resolve(code);
    }),
  );
  return { child, stderr: () => stderr, exited };
}

async function waitFor<T>(what: string, probe: () => T | undefined | false, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function readJson(path: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

function mode(path: string): string {
  return (statSync(path).mode & 0o777).toString(8);
}

function sha256(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

const FLANNEL = { cniVersion: "0.4.0", name: "cbr0", plugins: [{ type: "flannel" }, { type: "portmap", capabilities: { portMappings: true } }] };

describe("cni-plugins install --once", () => {
  test("the executable and one hard link per plugin (0755), kubeconfigs and flat file (0600), the multus conf", () => {
    const node = freshNode();
    writeFileSync(join(node.confDir, "10-flannel.conflist"), JSON.stringify(FLANNEL));
    const run = installOnce(node);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toBe("");

    const installed = statSync(join(node.binDir, "cni-plugins"));
    expect(installed.nlink).toBe(PLUGINS.length + 1);
    for (const name of PLUGINS) {
      expect(statSync(join(node.binDir, name)).ino, name).toBe(installed.ino);
      expect(mode(join(node.binDir, name))).toBe("755");
    }
    expect(sha256(join(node.binDir, "cni-plugins"))).toBe(sha256(EXECUTABLE));

    const multusKubeconfig = join(node.confDir, "multus.d/multus.kubeconfig");
    const whereaboutsKubeconfig = join(node.confDir, "whereabouts.d/whereabouts.kubeconfig");
    const flat = join(node.confDir, "whereabouts.d/whereabouts.conf");
    for (const path of [multusKubeconfig, whereaboutsKubeconfig, flat]) expect(mode(path), path).toBe("600");
    expect(readJson(multusKubeconfig)).toEqual({
      apiVersion: "v1",
      kind: "Config",
      clusters: [{ name: "local", cluster: { server: "https://10.96.0.1:6443", "certificate-authority-data": Buffer.from(CA).toString("base64") } }],
      users: [{ name: "multus", user: { token: "token-1" } }],
      contexts: [{ name: "multus-context", context: { cluster: "local", user: "multus" } }],
      "current-context": "multus-context",
    });
    // whereabouts' objects live in the pod's namespace (the volume's `namespace`).
    expect(readJson(whereaboutsKubeconfig)).toMatchObject({
      users: [{ name: "whereabouts", user: { token: "token-1" } }],
      contexts: [{ name: "whereabouts-context", context: { cluster: "local", user: "whereabouts", namespace: "cni-system" } }],
    });
    expect(readJson(flat)).toEqual({
      datastore: "kubernetes",
      kubernetes: { kubeconfig: whereaboutsKubeconfig },
      log_file: join(node.logDir, "whereabouts.log"),
      log_level: "error",
    });

    const conf = join(node.confDir, "00-multus.conf");
    expect(mode(conf)).toBe("600");
    expect(readJson(conf)).toEqual({
      cniVersion: "0.4.0",
      name: "multus-cni-network",
      type: "multus",
      capabilities: { portMappings: true },
      kubeconfig: multusKubeconfig,
      clusterNetwork: join(node.confDir, "10-flannel.conflist"),
      logFile: join(node.logDir, "multus.log"),
      logLevel: "error",
    });
  });

  test("the installed multus reads the generated conflist: STATUS runs the primary's, which is the conf named by clusterNetwork", () => {
    const node = freshNode();
    const primary = join(node.confDir, "10-primary.conflist");
    writeFileSync(primary, JSON.stringify({ cniVersion: "1.1.0", name: "primary", plugins: [{ type: "passthru" }] }));
    expect(installOnce(node).status).toBe(0);
    const list = readJson(join(node.confDir, "00-multus.conflist"));
    expect(existsSync(join(node.confDir, "00-multus.conf"))).toBe(false);
    expect(list).toMatchObject({ cniVersion: "1.1.0", name: "multus-cni-network", plugins: [{ type: "multus", clusterNetwork: primary }] });
    // What the runtime hands the list's one plugin: the list's version and name added to it.
    const plugins = list?.plugins as Record<string, unknown>[];
    const runtimeConf = { cniVersion: list?.cniVersion, name: list?.name, ...plugins[0] };
    const status = () => cni(join(node.binDir, "multus"), { command: "STATUS", path: node.binDir }, runtimeConf);
    expect(status()).toMatchObject({ code: 0, stdout: "" });

    writeFileSync(primary, JSON.stringify({ cniVersion: "1.1.0", name: "primary", plugins: [{ type: "no-such-plugin" }] }));
    const failed = status();
    expect(failed.code).toBe(1);
    expect(failed.json?.msg).toMatch(/no-such-plugin/);
  });

  test("--skip-multus with --skip-whereabouts needs no service account; without one the others fail saying why", () => {
    const node = freshNode();
    const bare = installOnce(node, ["--skip-multus", "--skip-whereabouts"], {});
    expect(bare.status, bare.stderr).toBe(0);
    expect(existsSync(join(node.binDir, "multus"))).toBe(true);

    const noService = installOnce(node, ["--skip-binary-copy"], {});
    expect(noService.status).toBe(1);
    expect(noService.stderr).toContain("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set");
    rmSync(join(node.saDir, "token"));
    const noToken = installOnce(node, ["--skip-binary-copy"]);
    expect(noToken.status).toBe(1);
    expect(noToken.stderr).toContain(`no service-account token in ${node.saDir}/token`);
    expect(readdirNames(node.confDir)).toEqual([]);
  });

  test("--plugins links the names given; a name the executable does not carry is refused before anything is written", () => {
    const node = freshNode();
    const refused = installOnce(node, ["--skip-multus", "--skip-whereabouts", "--plugins=multus,bridge"]);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toContain("--plugins names bridge, which this executable does not carry");
    expect(readdirNames(node.binDir)).toEqual([]);
    expect(installOnce(node, ["--skip-multus", "--skip-whereabouts", "--plugins=multus,passthru"]).status).toBe(0);
    expect(readdirNames(node.binDir)).toEqual(["cni-plugins", "multus", "passthru"]);
  });
});

function readdirNames(dir: string): string[] {
  return spawnSync("ls", ["-A", dir], { encoding: "utf8" }).stdout.split("\n").filter(Boolean).sort();
}

describe("the executable replaced under a process exec-ing it", () => {
  /**
   * A shell execs a plugin of the bin dir (VERSION) in a loop until told to stop, recording every
   * failed exec (126 "Text file busy", 127 "No such file").
   */
  function reader(binDir: string, stopFile: string) {
    const script = `
      n=0; failures=0
      while [ ! -e "$1" ]; do
        for p in multus passthru; do
          out=$(CNI_COMMAND=VERSION "$2/$p" </dev/null 2>&1); rc=$?
          if [ $rc -ne 0 ]; then failures=$((failures+1)); echo "$p: $rc $out" >&2; fi
          n=$((n+1))
        done
      done
      echo "$n $failures"`;
    const child = spawn("bash", ["-c", script, "reader", stopFile, binDir], { stdio: ["ignore", "pipe", "pipe"] });
    children.add(child);
    let stdout = "";
    let stderr = "";
    child.stdout?.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    return {
      stop: async (): Promise<{ execs: number; failures: number; stderr: string }> => {
        writeFileSync(stopFile, "");
        await new Promise((resolve) => child.on("exit", resolve));
        children.delete(child);
        const [execs = "0", failures = "0"] = stdout.trim().split(" ");
        return { execs: Number(execs), failures: Number(failures), stderr };
      },
    };
  }

  test("the installer: every exec runs a whole executable, old or new, through three replacements", async () => {
    const node = freshNode();
    const options = ["--skip-multus", "--skip-whereabouts"];
    expect(installOnce(node, options).status).toBe(0);
    const running = reader(node.binDir, join(node.dir, "stop"));
    const inodes = [statSync(join(node.binDir, "multus")).ino];
    for (let i = 0; i < 3; i++) {
      // Each replacement runs while the reader is at it: let it get going first.
      await new Promise((resolve) => setTimeout(resolve, 150));
      const run = installOnce(node, options);
      expect(run.status, run.stderr).toBe(0);
      inodes.push(statSync(join(node.binDir, "multus")).ino);
    }
    await new Promise((resolve) => setTimeout(resolve, 150));
    const result = await running.stop();
    expect(result.failures, result.stderr).toBe(0);
    expect(result.execs).toBeGreaterThan(10);
    // The filesystem may reuse a freed inode's number later on, never while the old file is still linked.
    for (let i = 1; i < inodes.length; i++) expect(inodes[i], `install ${i} made a new file`).not.toBe(inodes[i - 1]);
    expect(readdirNames(node.binDir), "no temporary names left").toEqual(["cni-plugins", ...PLUGINS].sort());
  });

  test("the same reader catches a copy in place (cp over the executable): the failure the installer avoids", async () => {
    const node = freshNode();
    expect(installOnce(node, ["--skip-multus", "--skip-whereabouts", "--plugins=multus,passthru"]).status).toBe(0);
    const running = reader(node.binDir, join(node.dir, "stop"));
    await new Promise((resolve) => setTimeout(resolve, 150));
    let copyErrors = "";
    for (let i = 0; i < 5; i++) {
      // cp opens the existing file for writing: a running exec makes cp fail (the upgrade fails),
      // and a cp under way makes the exec fail (the ADD fails). Which one happens is a race.
      const copy = spawnSync("cp", [EXECUTABLE, join(node.binDir, "multus")], { encoding: "utf8" });
      if (copy.status !== 0) copyErrors += copy.stderr;
    }
    const result = await running.stop();
    // Measured: 108 of 126 execs failed and 4 of the 5 copies; in another run all 5 copies failed.
    expect(`${result.stderr}${copyErrors}`).toContain("Text file busy");
  });
});

describe("cni-plugins install, running", () => {
  test("waits for the primary conf, follows its changes (also a rewrite in place), never takes its own conf, and SIGTERM removes it", async () => {
    const node = freshNode();
    const installer = start(node, ["--skip-binary-copy"]);
    const conf = join(node.confDir, "00-multus.conf");
    const conflist = join(node.confDir, "00-multus.conflist");
    await waitFor("the wait to be logged", () => installer.stderr().includes(`waiting for a primary CNI conf (.conf, .conflist, .json) in ${node.confDir}`));
    expect(existsSync(conf) || existsSync(conflist)).toBe(false);
    // The kubeconfigs do not wait for the primary.
    expect(readJson(join(node.confDir, "multus.d/multus.kubeconfig"))).toBeDefined();

    const primary = join(node.confDir, "10-flannel.conflist");
    writeFileSync(primary, JSON.stringify(FLANNEL));
    await waitFor("the multus conf", () => readJson(conf)?.clusterNetwork === primary);
    expect(readJson(conf)).toMatchObject({ cniVersion: "0.4.0", capabilities: { portMappings: true } });

    // The primary's installer rewrites its conf in place: half a file for a while, then the new one.
    const next = { cniVersion: "1.0.0", name: "cbr0", plugins: [{ type: "flannel" }, { type: "bandwidth", capabilities: { bandwidth: true } }] };
    const text = JSON.stringify(next);
    writeFileSync(primary, text.slice(0, text.length / 2));
    await waitFor("the half file to be noticed", () => installer.stderr().includes("10-flannel.conflist is not valid JSON"));
    expect(readJson(conf), "the last good multus conf stays while the primary is unreadable").toMatchObject({ cniVersion: "0.4.0" });
    writeFileSync(primary, text);
    await waitFor("the multus conflist for 1.0.0", () => readJson(conflist)?.cniVersion === "1.0.0");
    expect(existsSync(conf), "the .conf is gone: one multus conf for the runtime").toBe(false);
    expect(readJson(conflist)).toMatchObject({ plugins: [{ type: "multus", capabilities: { bandwidth: true }, clusterNetwork: primary }] });

    // A conf that sorts first is the runtime's primary from now on; another multus conf is never one.
    writeFileSync(join(node.confDir, "01-old-multus.conf"), JSON.stringify({ cniVersion: "0.3.1", name: "old", type: "multus", clusterNetwork: primary }));
    const bridge = join(node.confDir, "05-bridge.conf");
    writeFileSync(bridge, JSON.stringify({ cniVersion: "0.3.1", name: "br", type: "bridge" }));
    await waitFor("the switch to 05-bridge.conf", () => readJson(conf)?.clusterNetwork === bridge);
    expect(existsSync(conflist)).toBe(false);

    // Removed by someone else: written again.
    rmSync(conf);
    await waitFor("the multus conf written again", () => readJson(conf)?.clusterNetwork === bridge);

    // The projected token rotates: both kubeconfigs follow, still 0600.
    rotateToken(node, "token-2");
    const kubeconfigs = [join(node.confDir, "multus.d/multus.kubeconfig"), join(node.confDir, "whereabouts.d/whereabouts.kubeconfig")];
    for (const path of kubeconfigs) {
      await waitFor(`${path} with the new token`, () => JSON.stringify(readJson(path)).includes('"token":"token-2"'));
      expect(mode(path)).toBe("600");
    }

    installer.child.kill("SIGTERM");
    expect(await installer.exited).toBe(0);
    expect(existsSync(conf) || existsSync(conflist), "SIGTERM: the node falls back to its primary").toBe(false);
    // What running pods need is left: the primary, the kubeconfigs, the flat file.
    for (const path of [primary, bridge, ...kubeconfigs, join(node.confDir, "whereabouts.d/whereabouts.conf")]) expect(existsSync(path), path).toBe(true);
    expect(installer.stderr()).toContain(`removed ${conf}`);
  });

  test("an update with surge: the old installer's SIGTERM leaves the conf to the new one; the last one removes it", async () => {
    const node = freshNode();
    writeFileSync(join(node.confDir, "10-flannel.conflist"), JSON.stringify(FLANNEL));
    const conf = join(node.confDir, "00-multus.conf");
    const old = start(node, ["--skip-binary-copy"]);
    await waitFor("the old installer's conf", () => readJson(conf));
    // Its rounds an hour apart: the conf that is there after the old one exits is the one the old one left.
    const next = start(node, ["--skip-binary-copy", "--poll-interval-ms=3600000"]);
    await waitFor("the new installer to run", () => next.stderr().includes("running;"));
    old.child.kill("SIGTERM");
    expect(await old.exited).toBe(0);
    expect(old.stderr()).toContain("another installer runs on this node");
    expect(readJson(conf)).toMatchObject({ type: "multus" });
    next.child.kill("SIGTERM");
    expect(await next.exited).toBe(0);
    expect(existsSync(conf)).toBe(false);
  });

  test("--cleanup-config-on-exit=false leaves the multus conf on SIGTERM", async () => {
    const node = freshNode();
    writeFileSync(join(node.confDir, "10-flannel.conflist"), JSON.stringify(FLANNEL));
    const installer = start(node, ["--skip-binary-copy", "--cleanup-config-on-exit=false"]);
    const conf = join(node.confDir, "00-multus.conf");
    await waitFor("the multus conf", () => readJson(conf));
    installer.child.kill("SIGTERM");
    expect(await installer.exited).toBe(0);
    expect(readJson(conf)).toMatchObject({ type: "multus" });
  });
});

describe("dispatch", () => {
  test("a plugin's name with `install` runs the plugin; cni-plugins without it is no plugin; a bad flag exits 2 with the usage", () => {
    const node = freshNode();
    const plugin = spawnSync(join(BIN, "multus"), ["install", `--cni-bin-dir=${node.binDir}`], { encoding: "utf8", env: {} });
    // Without CNI_COMMAND a plugin says what it is, as upstream's skel does.
    expect(plugin).toMatchObject({ status: 0, stdout: "", stderr: expect.stringContaining("CNI multus plugin") });
    expect(readdirNames(node.binDir)).toEqual([]);

    const bare = spawnSync(EXECUTABLE, [], { encoding: "utf8", env: {} });
    expect(bare.status).toBe(1);
    expect(JSON.parse(bare.stdout)).toMatchObject({ code: 7 });

    const bad = spawnSync(EXECUTABLE, ["install", "--cni-bin-dir"], { encoding: "utf8", env: {} });
    expect(bad.status).toBe(2);
    expect(bad.stdout).toBe("");
    expect(bad.stderr).toContain("cni-plugins install: --cni-bin-dir needs a value");
    expect(bad.stderr).toContain("usage: cni-plugins install [flags]");
  });
});

describe("against a real API server", () => {
  let cluster: Cluster;
  beforeAll(async () => {
    cluster = await startCluster();
  }, 120_000);
  afterAll(async () => {
    cleanup();
    await cluster?.stop();
  });

  test("one service account bound to both roles: whereabouts allocates through the flat file and kubeconfig written; multus' kubeconfig is client-go's way in", async () => {
    cluster.kubectl(["apply", "-f", join(ROOT, "deploy/rbac.yaml"), "-f", join(ROOT, "deploy/multus-rbac.yaml")]);
    // The DaemonSet's account (docs/installer.md): one pod, one token, both plugins' roles.
    cluster.kubectl(["create", "serviceaccount", "cni-installer", "-n", "kube-system"]);
    for (const role of ["whereabouts-cni-ts", "multus-cni-ts"]) {
      cluster.kubectl(["create", "clusterrolebinding", `cni-installer-${role}`, `--clusterrole=${role}`, "--serviceaccount=kube-system:cni-installer"]);
    }
    const node = freshNode();
    const token = cluster.kubectl(["create", "token", "cni-installer", "-n", "kube-system", "--duration=1h"]).trim();
    const generation = `..2026_${++generations}`;
    mkdirSync(join(node.saDir, generation));
    writeFileSync(join(node.saDir, generation, "token"), token);
    writeFileSync(join(node.saDir, generation, "ca.crt"), readFileSync(cluster.caFile));
    writeFileSync(join(node.saDir, generation, "namespace"), "kube-system");
    symlinkSync(generation, join(node.saDir, "..data_tmp"));
    renameSync(join(node.saDir, "..data_tmp"), join(node.saDir, "..data"));
    writeFileSync(join(node.confDir, "10-flannel.conflist"), JSON.stringify(FLANNEL));
    const { port } = new URL(cluster.server);
    const run = installOnce(node, ["--skip-binary-copy"], { KUBERNETES_SERVICE_HOST: "127.0.0.1", KUBERNETES_SERVICE_PORT: port });
    expect(run.status, run.stderr).toBe(0);

    // whereabouts, its conf naming only the flat file the installer wrote (on a node it is found without).
    const flat = join(node.confDir, "whereabouts.d/whereabouts.conf");
    const conf = {
      cniVersion: "1.0.0",
      name: "installed",
      type: "macvlan",
      ipam: { type: "whereabouts", configuration_path: flat, range: "10.78.0.0/24", datastore_dir: join(node.dir, "whereabouts") },
    };
    const sandbox = nsPath(netns("inst"));
    const call = { containerId: "ctr-inst", netns: sandbox, ifName: "net1", args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-inst" };
    const added = cni(join(BIN, "whereabouts"), { command: "ADD", ...call }, conf);
    expect(added.code, added.stdout + added.stderr).toBe(0);
    expect(added.json?.ips).toEqual([expect.objectContaining({ address: "10.78.0.1/24" })]);
    const pool = JSON.parse(cluster.kubectl(["get", "ippools.whereabouts.cni.cncf.io", "10.78.0.0-24", "-n", "kube-system", "-o", "json"]));
    expect(pool.spec.allocations["1"]).toMatchObject({ id: "ctr-inst", podref: "default/pod-inst" });
    expect(cni(join(BIN, "whereabouts"), { command: "DEL", ...call }, conf).code).toBe(0);

    // multus' kubeconfig through client-go (kubectl): the CA inline, the token, what multus does.
    const kubectl = (args: string[]) =>
      spawnSync(join(KUBE_BIN, "kubectl"), ["--kubeconfig", join(node.confDir, "multus.d/multus.kubeconfig"), ...args], { encoding: "utf8" });
    expect(kubectl(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]).stdout).toBe("system:serviceaccount:kube-system:cni-installer");
    // The authorizer follows new bindings by a watch: asked until it has them.
    await waitFor("multus' role", () => kubectl(["auth", "can-i", "update", "pods", "--subresource=status", "-n", "default"]).stdout.trim() === "yes");
    expect(kubectl(["auth", "can-i", "delete", "pods", "-n", "default"]).stdout.trim()).toBe("no");
  });
});
