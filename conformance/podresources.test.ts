/**
 * shared/kube/podresources.ts against a real kubelet: an API server (conformance/kube/cluster.ts),
 * a node of containerd and kubelet v1.36.3 (conformance/node/node.ts), a device plugin of ours
 * advertising `example.com/nic` devices (conformance/node/device-plugin.ts), pods that request
 * them, run by kubelet; then the devices kubelet's PodResources List reports for each pod, as
 * multus reads them, are the ones kubelet asked the plugin to allocate. Both in this Node process
 * and in a compiled Bun executable, the plugins' runtime.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PodResourcesSocketAbsentError, podDeviceIds } from "../shared/kube/podresources.ts";
import { ROOT } from "./harness.ts";
import { type Cluster, startCluster } from "./kube/cluster.ts";
import { type DevicePlugin, startDevicePlugin } from "./node/device-plugin.ts";
import { type KubeNode, startNode } from "./node/node.ts";

const RESOURCE = "example.com/nic";
const DEVICES = ["nic-c", "nic-a", "nic-b"];
const NAMESPACE = "default";
const log = (line: string) => console.log(`[podresources] ${line}`);

let cluster: Cluster;
let node: KubeNode;
let plugin: DevicePlugin;
const scratch = mkdtempSync(join(tmpdir(), "podresources-conformance-"));

beforeAll(async () => {
  cluster = await startCluster({ log });
  // The pid in the name: the node's cgroups are named after it, and another run may be going on.
  node = await startNode(cluster, { name: `podres-${process.pid}`, log });
  plugin = await startDevicePlugin({ devicePluginDir: node.devicePluginDir, resourceName: RESOURCE, deviceIds: DEVICES });
  // kubelet admits a pod against the node's allocatable, which its next status update carries.
  await until(`${RESOURCE} allocatable on the node`, 30_000, () => jsonpath(`node/${node.name}`, `{.status.allocatable.example\\.com/nic}`) === "3");
  log(`node with ${RESOURCE} allocatable after ${node.startedInMs} ms of node start`);
}, 240_000);

afterAll(async () => {
  if (cluster) {
    try {
      cluster.kubectl(["-n", NAMESPACE, "delete", "pods", "--all", "--grace-period=0", "--force", "--wait=true", "--timeout=60s"]);
    } catch (err) {
      log(`deleting pods: ${err}`);
    }
  }
  await plugin?.stop();
  await node?.stop();
  await cluster?.stop();
  rmSync(scratch, { recursive: true, force: true });
}, 120_000);

/** A host-network pod (the node has no pod network) of the node's image, `devices[i]` NICs for container i. */
function createPod(name: string, devices: number[]): void {
  const pod = {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace: NAMESPACE },
    spec: {
      nodeName: node.name,
      hostNetwork: true,
      automountServiceAccountToken: false,
      terminationGracePeriodSeconds: 1,
      containers: devices.map((count, i) => ({
        name: `c${i}`,
        image: node.image,
        imagePullPolicy: "Never",
        ...(count > 0 ? { resources: { limits: { [RESOURCE]: String(count) } } } : {}),
      })),
    },
  };
  cluster.kubectl(["apply", "-f", "-"], JSON.stringify(pod));
}

/** Every container of the pod started by kubelet and running (not only the pod admitted). */
async function running(name: string, containers: number): Promise<void> {
  const object = `-n ${NAMESPACE} pod/${name}`;
  await until(`pod ${name}'s ${containers} containers running`, 60_000, () => {
    if (jsonpath(object, "{.status.phase}") === "Failed") throw new Error(`pod ${name} failed: ${jsonpath(object, "{.status.message}")}`);
    const waiting = jsonpath(object, "{.status.containerStatuses[*].state.waiting.reason}");
    if (/CrashLoopBackOff|Error/.test(waiting)) throw new Error(`pod ${name}: ${waiting}; kubelet's log ends:\n${kubeletLogTail()}`);
    const ready = jsonpath(object, "{.status.containerStatuses[*].ready}").split(" ");
    return ready.length === containers && ready.every((r) => r === "true");
  });
}

describe("a pod's devices from kubelet's PodResources API", () => {
  test("one NIC: the device kubelet allocated, under the resource name", async () => {
    const before = plugin.allocations.length;
    createPod("one-nic", [1]);
    await running("one-nic", 1);
    const allocated = plugin.allocations.slice(before).flat();
    expect(allocated).toHaveLength(1);
    const devices = await podDeviceIds({ socket: node.podResourcesSocket, deadline: Date.now() + 10_000 }, NAMESPACE, "one-nic");
    expect(devices).toEqual(new Map([[RESOURCE, allocated]]));
    expect(DEVICES).toContain(allocated[0]);
  });

  test("NICs in two containers: joined and sorted, as upstream multus orders them", async () => {
    const before = plugin.allocations.length;
    createPod("two-nics", [1, 1]);
    await running("two-nics", 2);
    const allocated = plugin.allocations.slice(before).flat();
    expect(allocated).toHaveLength(2);
    const devices = await podDeviceIds({ socket: node.podResourcesSocket, deadline: Date.now() + 10_000 }, NAMESPACE, "two-nics");
    expect(devices.get(RESOURCE)).toEqual([...allocated].sort());
    // The three devices are now all taken, each by one pod.
    const first = await podDeviceIds({ socket: node.podResourcesSocket, deadline: Date.now() + 10_000 }, NAMESPACE, "one-nic");
    expect([...(first.get(RESOURCE) ?? []), ...(devices.get(RESOURCE) ?? [])].sort()).toEqual([...DEVICES].sort());
  });

  test("a pod without devices, and a pod kubelet does not run: no devices", async () => {
    createPod("no-nic", [0]);
    await running("no-nic", 1);
    expect((await podDeviceIds({ socket: node.podResourcesSocket, deadline: Date.now() + 10_000 }, NAMESPACE, "no-nic")).size).toBe(0);
    expect((await podDeviceIds({ socket: node.podResourcesSocket, deadline: Date.now() + 10_000 }, "other", "one-nic")).size).toBe(0);
  });

  test("in a compiled Bun executable, as the plugins run it: the same devices, and how long it takes", async () => {
    const expected = await podDeviceIds({ socket: node.podResourcesSocket, deadline: Date.now() + 10_000 }, NAMESPACE, "two-nics");
    const source = join(scratch, "list.ts");
    // One process, one call, as a multus ADD makes it. The modules the call loads lazily are
    // loaded first, on their own, so that the log tells their cost from the call's; Bun counts
    // performance.now() from the process' start.
    writeFileSync(
      source,
      `import { podDeviceIds } from ${JSON.stringify(join(ROOT, "shared/kube/podresources.ts"))};
       async function main(): Promise<void> {
         const [socket, namespace, name] = process.argv.slice(2);
         const started = performance.now();
         await Promise.all([import("node:http2"), import("node:net")]);
         const imported = performance.now();
         try {
           const devices = await podDeviceIds({ socket, deadline: Date.now() + 10_000 }, namespace ?? "", name ?? "");
           const answered = performance.now();
           console.log(JSON.stringify({ devices: [...devices], importMs: imported - started, callMs: answered - imported, totalMs: answered }));
         } catch (err) {
           console.log(JSON.stringify({ error: err instanceof Error ? \`\${err.name}: \${err.message}\` : String(err) }));
         }
       }
       main();`,
    );
    const executable = join(scratch, "list");
    execFileSync(join(ROOT, "node_modules/.bin/bun"), ["build", "--compile", "--bytecode", "--minify", source, "--outfile", executable], { stdio: "pipe" });
    const runs = Array.from({ length: 9 }, () => {
      const output = execFileSync(executable, [node.podResourcesSocket, NAMESPACE, "two-nics"], { encoding: "utf8" });
      return JSON.parse(output) as { devices: [string, string[]][]; importMs: number; callMs: number; totalMs: number };
    });
    for (const run of runs) expect(new Map(run.devices)).toEqual(expected);
    // The absent socket's error, by its name: a minified executable keeps no class names.
    const absent = join(node.dir, "kubelet", "no-such-dir", "kubelet.sock");
    expect(JSON.parse(execFileSync(executable, [absent, NAMESPACE, "two-nics"], { encoding: "utf8" }))).toEqual({
      error: `PodResourcesSocketAbsentError: kubelet's pod-resources socket is absent at ${absent}`,
    });
    const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]?.toFixed(1);
    log(
      `compiled Bun, medians of ${runs.length}: node:http2 + node:net imported in ${median(runs.map((r) => r.importMs))} ms, ` +
        `List call ${median(runs.map((r) => r.callMs))} ms, process start to answer ${median(runs.map((r) => r.totalMs))} ms`,
    );
  });

  test("no socket at the path: the typed error naming the path", async () => {
    const absent = join(node.dir, "kubelet", "no-such-dir", "kubelet.sock");
    const call = podDeviceIds({ socket: absent, deadline: Date.now() + 5000 }, NAMESPACE, "one-nic");
    await expect(call).rejects.toThrow(PodResourcesSocketAbsentError);
    await expect(call).rejects.toThrow(`kubelet's pod-resources socket is absent at ${absent}`);
  });
});

function kubeletLogTail(): string {
  const file = node ? join(node.dir, "logs", "kubelet.log") : "";
  return file && existsSync(file) ? readFileSync(file, "utf8").split("\n").slice(-40).join("\n") : "(no log)";
}

function jsonpath(object: string, path: string): string {
  try {
    return cluster.kubectl(["get", ...object.split(" "), "-o", `jsonpath=${path}`]).trim();
  } catch {
    return "";
  }
}

async function until(what: string, timeoutMs: number, done: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`${what}: not after ${timeoutMs} ms; kubelet's log ends:\n${kubeletLogTail()}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}
