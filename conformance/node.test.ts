/**
 * The real test nodes themselves (conformance/node/node.ts): two nodes of containerd v2.2.9 and
 * kubelet v1.36.3 on one API server, each in a mount namespace of its own where the standard node
 * paths are the node's. What the other node suites build on: kubelet's volume mounts reach
 * containerd (a projected service-account token), a hostPath of /etc/cni/net.d is the node's own,
 * containerd 2 speaks CNI 1.1 (STATUS), a CNI plugin runs inside the node's namespace, and the
 * sandbox-PID helper finds the pod's network namespace. Then stop() leaves nothing.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { chmodSync, existsSync, readFileSync, readdirSync, readlinkSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Cluster, startCluster } from "./kube/cluster.ts";
import { type KubeNode, startNode } from "./node/node.ts";

const NAMESPACE = "default";
const SERVICE_ACCOUNT = "token-reader";
/** What the recording plugin on node B writes, inside the node (its /var/log). */
const RECORD_LOG = "/var/log/record.log";
const log = (line: string) => console.log(`[node] ${line}`);

let cluster: Cluster;
let nodeA: KubeNode;
let nodeB: KubeNode;
const stopped = new Set<KubeNode>();

beforeAll(async () => {
  cluster = await startCluster({ log });
  // The pid in the names: the nodes' cgroups are named after them, and another run may be going on.
  [nodeA, nodeB] = await Promise.all([startNode(cluster, { name: `nodea-${process.pid}`, log }), startNode(cluster, { name: `nodeb-${process.pid}`, log })]);
  // The test API server runs without the ServiceAccount admission plugin, which would make it.
  cluster.kubectl(["-n", NAMESPACE, "create", "serviceaccount", SERVICE_ACCOUNT]);
  // Node B's pod network: one plugin, a script that records each call and answers an ADD with an
  // address (containerd wants one for eth0) without touching the kernel. cniVersion 1.1.0: the
  // version containerd 2 calls STATUS for.
  writeFileSync(
    join(nodeB.cniBinDir, "record"),
    `#!/bin/sh
cat > /dev/null
printf '%s %s %s\\n' "$CNI_COMMAND" "$(readlink /proc/self/ns/mnt)" "$CNI_NETNS" >> ${RECORD_LOG}
case "$CNI_COMMAND" in
  ADD) printf '{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","sandbox":"%s"}],"ips":[{"address":"10.250.0.2/24","interface":0}]}' "$CNI_NETNS" ;;
  VERSION) echo '{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}' ;;
esac
`,
  );
  chmodSync(join(nodeB.cniBinDir, "record"), 0o755);
  writeFileSync(join(nodeB.cniConfDir, "10-record.conflist"), JSON.stringify({ cniVersion: "1.1.0", name: "record", plugins: [{ type: "record" }] }));
  log(`nodes serving after ${nodeA.startedInMs} and ${nodeB.startedInMs} ms`);
}, 240_000);

afterAll(async () => {
  if (cluster) {
    try {
      cluster.kubectl(["-n", NAMESPACE, "delete", "pods", "--all", "--grace-period=0", "--force", "--wait=true", "--timeout=60s"]);
    } catch (err) {
      log(`deleting pods: ${err}`);
    }
  }
  for (const node of [nodeA, nodeB]) if (node && !stopped.has(node)) await node.stop();
  await cluster?.stop();
}, 120_000);

interface Pod {
  metadata: { uid: string };
  status: { phase?: string; message?: string; containerStatuses?: { ready: boolean; containerID?: string; state: { waiting?: { reason?: string } } }[] };
}

/** A pod of one container (the node's image) on a node, created and waited for until it runs. */
async function runPod(node: KubeNode, name: string, spec: Record<string, unknown>, container: Record<string, unknown> = {}): Promise<Pod> {
  const pod = {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace: NAMESPACE },
    spec: {
      nodeName: node.name,
      automountServiceAccountToken: false,
      terminationGracePeriodSeconds: 1,
      containers: [{ name: "c", image: node.image, imagePullPolicy: "Never", ...container }],
      ...spec,
    },
  };
  cluster.kubectl(["apply", "-f", "-"], JSON.stringify(pod));
  const deadline = Date.now() + 45_000;
  for (;;) {
    const current = JSON.parse(cluster.kubectl(["-n", NAMESPACE, "get", "pod", name, "-o", "json"])) as Pod;
    const status = current.status.containerStatuses?.[0];
    if (status?.ready) return current;
    const reason = status?.state.waiting?.reason ?? "";
    if (current.status.phase === "Failed" || /CrashLoopBackOff|Error/.test(reason)) {
      throw new Error(`pod ${name}: ${current.status.phase} ${reason} ${current.status.message ?? ""}; kubelet's log ends:\n${logTail(node, "kubelet")}`);
    }
    if (Date.now() > deadline) {
      const events = cluster.kubectl(["-n", NAMESPACE, "get", "events", "--field-selector", `involvedObject.name=${name}`]);
      throw new Error(`pod ${name} not running after 45 s (${reason}); events:\n${events}\ncontainerd's log ends:\n${logTail(node, "containerd")}`);
    }
    await new Promise((done) => setTimeout(done, 250));
  }
}

/** What the pod's container sees at a path: read through its root (/proc/<pid>/root), as it is mounted there. */
function inContainer(node: KubeNode, pod: Pod, path: string): string {
  const id = (pod.status.containerStatuses?.[0]?.containerID ?? "").replace("containerd://", "");
  return join("/proc", String(node.containerPid(id)), "root", path);
}

function logTail(node: KubeNode, daemon: string): string {
  const file = join(node.dir, "logs", `${daemon}.log`);
  return existsSync(file) ? readFileSync(file, "utf8").split("\n").slice(-30).join("\n") : "(no log)";
}

/** The record plugin's calls on node B: command, the mount namespace it ran in, CNI_NETNS. */
function recorded(): { command: string; mountNamespace: string; netns: string }[] {
  const file = nodeB.hostPath(RECORD_LOG);
  if (!existsSync(file)) return [];
  return readFileSync(file, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((line) => {
      const [command = "", mountNamespace = "", netns = ""] = line.split(" ");
      return { command, mountNamespace, netns };
    });
}

async function until(what: string, timeoutMs: number, done: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`${what}: not after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

describe("real test nodes, each in a mount namespace of its own", () => {
  test("a projected service-account token: kubelet's tmpfs reaches the container through containerd", async () => {
    const pod = await runPod(
      nodeA,
      "token",
      {
        hostNetwork: true,
        serviceAccountName: SERVICE_ACCOUNT,
        volumes: [{ name: "token", projected: { sources: [{ serviceAccountToken: { path: "token", expirationSeconds: 3600 } }] } }],
      },
      { volumeMounts: [{ name: "token", mountPath: "/var/run/secrets/tokens", readOnly: true }] },
    );
    const token = readFileSync(inContainer(nodeA, pod, "/var/run/secrets/tokens/token"), "utf8");
    // A JWT: three base64url parts.
    expect(token).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
    const claims = JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString()) as { sub: string };
    expect(claims.sub).toBe(`system:serviceaccount:${NAMESPACE}:${SERVICE_ACCOUNT}`);
  });

  test("a hostPath of /etc/cni/net.d is the node's own: each pod sees its node's files, not the other's", async () => {
    writeFileSync(join(nodeA.cniConfDir, "marker-a"), "a\n");
    writeFileSync(join(nodeB.cniConfDir, "marker-b"), "b\n");
    const hostPathPod = (node: KubeNode, name: string) =>
      runPod(
        node,
        name,
        { hostNetwork: true, volumes: [{ name: "cni", hostPath: { path: "/etc/cni/net.d", type: "Directory" } }] },
        { volumeMounts: [{ name: "cni", mountPath: "/host-cni", readOnly: true }] },
      );
    const [podA, podB] = await Promise.all([hostPathPod(nodeA, "cni-a"), hostPathPod(nodeB, "cni-b")]);
    const seenA = readdirSync(inContainer(nodeA, podA, "/host-cni"));
    const seenB = readdirSync(inContainer(nodeB, podB, "/host-cni"));
    expect(seenA).toContain("marker-a");
    expect(seenA).not.toContain("marker-b");
    expect(seenB).toContain("marker-b");
    expect(seenB).not.toContain("marker-a");
    expect(seenB).toContain("10-record.conflist");
    // The machine's own /etc/cni/net.d has neither.
    expect(readdirSync("/etc/cni/net.d")).not.toContain("marker-a");
    expect(readdirSync("/etc/cni/net.d")).not.toContain("marker-b");
  });

  test("containerd v2.2.9 calls STATUS on a CNI 1.1.0 network, the plugin running inside the node's namespace", async () => {
    expect(nodeB.ctr(["version"])).toMatch(/Server:\n\s+Version:\s+v2\.2\.9\n/);
    const nodeInfo = cluster.kubectl(["get", "node", nodeB.name, "-o", "jsonpath={.status.nodeInfo.containerRuntimeVersion}"]);
    // CRI reports the version without its "v".
    expect(nodeInfo).toBe("containerd://2.2.9");
    // containerd calls STATUS about every 5 s.
    await until("two STATUS calls on node B", 30_000, () => recorded().filter((call) => call.command === "STATUS").length >= 2);
    const namespaceB = readlinkSync(nodeB.mountNamespace);
    for (const call of recorded()) expect(call.mountNamespace, call.command).toBe(namespaceB);
    expect(namespaceB).not.toBe(readlinkSync(nodeA.mountNamespace));
    expect(namespaceB).not.toBe(readlinkSync("/proc/self/ns/mnt"));
  });

  test("a pod on node B's network: ADD gets the sandbox's network namespace, which sandboxPid finds; DEL at deletion", async () => {
    const pod = await runPod(nodeB, "netpod", {});
    // The last ADD: the sandbox that runs (kubelet makes a new one after a failed try).
    const add = recorded()
      .filter((call) => call.command === "ADD")
      .at(-1);
    expect(add?.netns).toMatch(/^\/var\/run\/netns\/cni-/);
    const pid = nodeB.sandboxPid(pod.metadata.uid);
    const sandboxNet = statSync(`/proc/${pid}/ns/net`).ino;
    expect(sandboxNet).not.toBe(statSync("/proc/self/ns/net").ino);
    // The pinned namespace's path resolves inside the node only: the machine's /run/netns has no such file.
    expect(Number(nodeB.exec(["stat", "-L", "-c", "%i", add?.netns ?? ""]).trim())).toBe(sandboxNet);
    expect(existsSync(add?.netns ?? "")).toBe(false);
    cluster.kubectl(["-n", NAMESPACE, "delete", "pod", "netpod", "--wait=true", "--timeout=60s"]);
    await until("DEL of netpod", 30_000, () => recorded().some((call) => call.command === "DEL" && call.netns === add?.netns));
  });

  test("stop() leaves nothing: no process in the nodes' namespaces, no mount, cgroup or file", async () => {
    cluster.kubectl(["-n", NAMESPACE, "delete", "pods", "--all", "--grace-period=0", "--force", "--wait=true", "--timeout=60s"]);
    for (const node of [nodeA, nodeB]) {
      const namespace = readlinkSync(node.mountNamespace);
      stopped.add(node);
      await node.stop();
      const inNamespace = readdirSync("/proc").filter((entry) => {
        try {
          return /^\d+$/.test(entry) && readlinkSync(`/proc/${entry}/ns/mnt`) === namespace;
        } catch {
          return false;
        }
      });
      expect(inNamespace, `processes in ${node.name}'s namespace`).toEqual([]);
      expect(readFileSync("/proc/self/mountinfo", "utf8")).not.toContain(node.dir);
      expect(existsSync(node.dir)).toBe(false);
      expect(existsSync(`/sys/fs/cgroup/pids/${node.name}`)).toBe(false);
    }
  });
});
