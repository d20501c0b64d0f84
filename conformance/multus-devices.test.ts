/**
 * multus' NetworkAttachmentDefinition device-plugin resources end to end: a real kubelet + containerd
 * node (conformance/node/) with a device plugin of ours advertising `example.com/nic`, a pod that
 * kubelet admits and runs with two of those devices, two NADs annotated
 * `k8s.v1.cni.cncf.io/resourceName: example.com/nic`, and our compiled multus run by hand for that
 * pod (its real UID), reading the devices from kubelet's socket at the fixed path upstream multus
 * uses. What each plugin of each NAD's conflist was given (recorded from its stdin), the
 * network-status annotation, the device-info files, and DEL leaving nothing; then a pod without
 * devices and a host without the socket: code 7, nothing run, nothing left.
 *
 * Where multus runs. The node's pod-resources socket lives under the node's own directory, and
 * multus only looks at `/var/lib/kubelet/pod-resources/kubelet.sock`: each multus process runs in
 * a private mount namespace where the node's directory is bound at that path, so the machine's real
 * path is never touched (it may belong to someone else). The device-info directory
 * (`/var/run/k8s.cni.cncf.io`) is bound the same way to a folder of this test, so that the device
 * plugin's file it reads and the files multus writes stay ours and can be inspected.
 *
 * The node's CNI conf dir stays empty: kubelet runs the pod on the host network, and multus is
 * called as the other multus suites call it (conformance/kube/multus.ts), in a namespace of ours.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, rmdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { BIN, type CniOutput, cleanup, cni, deleteNetns, netns, sweepStale } from "./harness.ts";
import { type Cluster, startCluster } from "./kube/cluster.ts";
import {
  MULTUS,
  type MultusNode,
  type Sandbox,
  addPlugin,
  createNad,
  leftovers,
  multusCall,
  multusConf,
  multusNode,
  podAnnotations,
  requiredBinaries,
  site,
} from "./kube/multus.ts";
import { AdminApi } from "./kube/objects.ts";
import { type DevicePlugin, startDevicePlugin } from "./node/device-plugin.ts";
import { type KubeNode, startNode } from "./node/node.ts";

const RESOURCE = "example.com/nic";
// PCI addresses, as SR-IOV device plugins advertise, and not in sorted order: multus must sort.
const DEVICES = ["0000:03:00.3", "0000:03:00.1", "0000:03:00.2"];
const NAMESPACE = "default";
const NETWORKS = "k8s.v1.cni.cncf.io/networks";
const NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status";
/** Where multus (as upstream) reads kubelet's pod-resources socket: fixed, whatever kubelet's root. */
const POD_RESOURCES_DIR = "/var/lib/kubelet/pod-resources";
const POD_RESOURCES_SOCKET = `${POD_RESOURCES_DIR}/kubelet.sock`;
/** The device-info spec's root (`/var/run/k8s.cni.cncf.io`; /var/run is /run here, and bind mounts want the real path). */
const DEVINFO_ROOT = "/run/k8s.cni.cncf.io";
const NOTHING = { podLinks: [], hostLinks: [], leases: [], cniDir: [] };
const log = (line: string) => console.log(`[multus-devices] ${line}`);

let cluster: Cluster;
let api: AdminApi;
let node: KubeNode;
let plugin: DevicePlugin;
let multusHost: MultusNode;
const scratch = mkdtempSync(join(tmpdir(), "cnit-multus-devices-"));
/** Bound at DEVINFO_ROOT inside multus' mount namespace. */
const devinfo = join(scratch, "k8s.cni.cncf.io");
/** What each recording plugin saw, one line per call. */
const recordLog = join(scratch, "record.log");
/** The mount points this run made (removed at the end; ones that were there stay). */
const madeMountPoints: string[] = [];
/** The pod kubelet runs with two devices, and the ones it allocated for it, sorted. */
let nicPod: { name: string; uid: string };
let nicDevices: string[];
/** A pod kubelet runs without devices. */
let plainPod: { name: string; uid: string };
let sandboxes = 0;

beforeAll(async () => {
  sweepStale();
  expect(requiredBinaries(), "run npm run build and scripts/build-upstream.sh").toEqual([]);
  cluster = await startCluster({ log });
  api = new AdminApi(cluster);
  // The pid in the name: the node's cgroups are named after it, and another run may be going on.
  node = await startNode(cluster, { name: `mdev-${process.pid}`, log });
  plugin = await startDevicePlugin({ devicePluginDir: node.devicePluginDir, resourceName: RESOURCE, deviceIds: DEVICES });
  // kubelet admits a pod against the node's allocatable, which its next status update carries.
  await until(`${RESOURCE} allocatable on the node`, 30_000, () => jsonpath(`node/${node.name}`, "{.status.allocatable.example\\.com/nic}") === "3");

  for (const point of [POD_RESOURCES_DIR, DEVINFO_ROOT]) {
    if (!existsSync(point)) {
      mkdirSync(point, { recursive: true });
      madeMountPoints.push(point);
    }
  }
  mkdirSync(join(devinfo, "devinfo", "dp"), { recursive: true });

  multusHost = multusNode(site(cluster, scratch), "multus-node", 0);
  // Both plugins of each NAD's conflist record their stdin: macvlan (then run for real in the
  // node's namespace, as conformance/kube/multus.ts runs it) and `record`, a plugin that only
  // hands its prevResult on.
  addPlugin(multusHost, "macvlan", recorder(`printf '%s' "$stdin" | exec ip netns exec ${multusHost.host.ns} ${join(BIN, "macvlan")}`));
  addPlugin(multusHost, "record", recorder(PASS_PREV_RESULT));
  // nic-a's record plugin declares the capabilities a device brings; nic-b's declares none (libcni
  // passes a runtimeConfig key only to a plugin that declares it).
  await createNad(api, NAMESPACE, "nic-a", nicConflist("nic-a", "192.168.30.0/24", { deviceID: true, CNIDeviceInfoFile: true }), {
    "k8s.v1.cni.cncf.io/resourceName": RESOURCE,
  });
  await createNad(api, NAMESPACE, "nic-b", nicConflist("nic-b", "192.168.31.0/24", undefined), { "k8s.v1.cni.cncf.io/resourceName": RESOURCE });

  const before = plugin.allocations.length;
  nicPod = await runPod("two-nics", 2, { [NETWORKS]: "nic-a,nic-b" });
  const allocated = plugin.allocations.slice(before).flat();
  expect(allocated, "the devices kubelet had the plugin allocate").toHaveLength(2);
  nicDevices = [...allocated].sort();
  plainPod = await runPod("no-nic", 0, { [NETWORKS]: "nic-a" });
  // kubelet picks the devices and the order it hands them in (our plugin offers no preferred
  // allocation): logged, so a reader sees whether this run's multus had to reorder them.
  log(`node serving after ${node.startedInMs} ms; pod two-nics allocated ${allocated.join(", ")} (in kubelet's order)`);
}, 300_000);

afterAll(async () => {
  cleanup();
  if (cluster) {
    try {
      cluster.kubectl(["-n", NAMESPACE, "delete", "pods", "--all", "--grace-period=0", "--force", "--wait=true", "--timeout=60s"]);
    } catch (err) {
      log(`deleting pods: ${err}`);
    }
  }
  api?.close();
  await plugin?.stop();
  await node?.stop();
  await cluster?.stop();
  // Only if this run made them, and only if empty: another run may be using one right now.
  for (const point of madeMountPoints) {
    try {
      rmdirSync(point);
    } catch (err) {
      log(`mount point ${point} left: ${err}`);
    }
  }
  rmSync(scratch, { recursive: true, force: true });
}, 180_000);

/** Prints the prevResult of an ADD as the plugin's result; answers VERSION; nothing for DEL/CHECK. */
const PASS_PREV_RESULT = `case "$CNI_COMMAND" in
  ADD) printf '%s' "$stdin" | ${process.execPath} -e 'process.stdout.write(JSON.stringify(JSON.parse(require("node:fs").readFileSync(0, "utf8")).prevResult))' ;;
  VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}' ;;
esac`;

/**
 * A plugin that appends "<COMMAND>\t<IFNAME>\t<stdin>" to the record log (stdin's newlines taken
 * out, which JSON allows only as whitespace), then runs `then` with the stdin in `$stdin`.
 */
function recorder(then: string): string {
  return `#!/bin/sh\nstdin=$(tr -d '\\n')\nprintf '%s\\t%s\\t%s\\n' "$CNI_COMMAND" "$CNI_IFNAME" "$stdin" >> ${recordLog}\n${then}\n`;
}

/** A NAD's conflist: macvlan on the node's master with host-local, then the recording plugin. */
function nicConflist(name: string, subnet: string, capabilities: Record<string, boolean> | undefined): Record<string, unknown> {
  return {
    cniVersion: "1.0.0",
    name,
    plugins: [
      {
        type: "macvlan",
        master: multusHost.host.master,
        mode: "bridge",
        ipam: { type: "host-local", dataDir: multusHost.hostLocalDir, ranges: [[{ subnet }]] },
      },
      { type: "record", ...(capabilities ? { capabilities } : {}) },
    ],
  };
}

interface Recorded {
  command: string;
  ifName: string;
  type: string;
  stdin: Record<string, unknown>;
}

/** The record log's ADD, DEL and CHECK calls (VERSION queries left out), oldest first. */
function recorded(): Recorded[] {
  if (!existsSync(recordLog)) return [];
  return readFileSync(recordLog, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((line) => {
      const [command = "", ifName = "", text = ""] = line.split("\t");
      const stdin = JSON.parse(text) as Record<string, unknown>;
      return { command, ifName, type: String(stdin.type), stdin };
    })
    .filter((call) => call.command !== "VERSION");
}

/** A host-network pod kubelet admits and runs, `devices` NICs requested; its name and real UID. */
async function runPod(name: string, devices: number, annotations: Record<string, string>): Promise<{ name: string; uid: string }> {
  const pod = {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace: NAMESPACE, annotations },
    spec: {
      nodeName: node.name,
      hostNetwork: true,
      automountServiceAccountToken: false,
      terminationGracePeriodSeconds: 1,
      containers: [
        {
          name: "c0",
          image: node.image,
          imagePullPolicy: "Never",
          ...(devices > 0 ? { resources: { limits: { [RESOURCE]: String(devices) } } } : {}),
        },
      ],
    },
  };
  cluster.kubectl(["apply", "-f", "-"], JSON.stringify(pod));
  const object = `-n ${NAMESPACE} pod/${name}`;
  await until(`pod ${name} running`, 60_000, () => {
    if (jsonpath(object, "{.status.phase}") === "Failed") throw new Error(`pod ${name} failed: ${jsonpath(object, "{.status.message}")}`);
    return jsonpath(object, "{.status.containerStatuses[0].ready}") === "true";
  });
  return { name, uid: jsonpath(object, "{.metadata.uid}") };
}

/** A sandbox of ours (a fresh network namespace) for a pod kubelet runs. */
function sandboxFor(pod: { name: string; uid: string }): Sandbox {
  const n = sandboxes++;
  return { pod: { namespace: NAMESPACE, ...pod }, node: multusHost, ns: netns("pod"), containerId: `ctr-devices-${n}` };
}

/**
 * Our multus for the sandbox, in a private mount namespace with the test's device-info folder at
 * DEVINFO_ROOT and, with `kubelet`, the node's pod-resources directory at the fixed path.
 */
function multus(sandbox: Sandbox, command: "ADD" | "DEL", kubelet: boolean): CniOutput {
  const binds = [...(kubelet ? [`mount --bind ${dirname(node.podResourcesSocket)} ${POD_RESOURCES_DIR}`] : []), `mount --bind ${devinfo} ${DEVINFO_ROOT}`];
  const wrapper = join(scratch, `multus-${kubelet ? "kubelet" : "nokubelet"}`);
  writeFileSync(wrapper, `#!/bin/sh\nexec unshare --mount --propagation private sh -c '${binds.join(" && ")} && exec ${MULTUS}'\n`, { mode: 0o755 });
  return cni(wrapper, multusCall("ours", sandbox, command), multusConf(multusHost, "ours"));
}

/** The device-info files multus wrote for delegates (`devinfo/cni/`). */
function deviceInfoFiles(): string[] {
  const dir = join(devinfo, "devinfo", "cni");
  return existsSync(dir) ? readdirSync(dir).sort() : [];
}

describe("a NAD's device-plugin resource, from a real kubelet", () => {
  test("two NADs of the resource: each plugin of each conflist gets the pod's devices in sorted order, as deviceID and pciBusID; network-status; DEL leaves nothing", async () => {
    const [first = "", second = ""] = nicDevices;
    // The device plugin's device-info file for the first device only (not every plugin writes one).
    const pciInfo = { type: "pci", version: "1.1.0", pci: { "pci-address": first } };
    const dpFile = join(devinfo, "devinfo", "dp", `${RESOURCE.replace("/", "-")}-${first}-device.json`);
    writeFileSync(dpFile, JSON.stringify(pciInfo));
    const sandbox = sandboxFor(nicPod);
    rmSync(recordLog, { force: true });

    const add = multus(sandbox, "ADD", true);
    let del: CniOutput | undefined;
    try {
      expect(add.code, `${add.stdout}${add.stderr}`).toBe(0);
      const adds = recorded();
      expect(adds.map((c) => `${c.command} ${c.ifName} ${c.type}`)).toEqual(["ADD net1 macvlan", "ADD net1 record", "ADD net2 macvlan", "ADD net2 record"]);
      const [macvlanA, recordA, macvlanB, recordB] = adds.map((c) => c.stdin);
      // Named after the delegate, "<namespace>/<NAD>" with "/" as "-" (upstream's GetCNIDeviceInfoPath).
      const infoFile = `/var/run/k8s.cni.cncf.io/devinfo/cni/default-nic-a-${sandbox.containerId}_net1`;
      for (const [stdin, device] of [
        [macvlanA, first],
        [recordA, first],
        [macvlanB, second],
        [recordB, second],
      ] as const) {
        expect(stdin).toMatchObject({ deviceID: device, pciBusID: device });
      }
      // The capability args: only to the plugin that declares them.
      expect(recordA?.runtimeConfig).toEqual({ deviceID: first, CNIDeviceInfoFile: infoFile });
      for (const stdin of [macvlanA, macvlanB, recordB]) expect(stdin).not.toHaveProperty("runtimeConfig");
      expect(recordA?.prevResult).toMatchObject({ interfaces: [{ name: "net1" }], ips: [{ address: expect.stringMatching(/^192\.168\.30\./) }] });

      // multus copied the device plugin's device-info to the path it gave the delegate.
      expect(deviceInfoFiles()).toEqual([`default-nic-a-${sandbox.containerId}_net1`]);
      const status = JSON.parse((await podAnnotations(api, sandbox.pod))[NETWORK_STATUS] ?? "[]") as Record<string, unknown>[];
      expect(status.map((s) => [s.name, s.interface])).toEqual([
        ["podnet", "eth0"],
        ["default/nic-a", "net1"],
        ["default/nic-b", "net2"],
      ]);
      expect(status[1]).toMatchObject({ ips: [expect.stringMatching(/^192\.168\.30\./)], "device-info": pciInfo });
      expect(status[2]).toMatchObject({ ips: [expect.stringMatching(/^192\.168\.31\./)] });
      expect(status[2]).not.toHaveProperty("device-info");
      expect(leftovers(sandbox).podLinks).toEqual(["eth0", "net1", "net2"]);

      rmSync(recordLog, { force: true });
      del = multus(sandbox, "DEL", true);
      expect(del.code, `${del.stdout}${del.stderr}`).toBe(0);
      // DEL runs each delegate with the config it ran with: the same device.
      const dels = recorded();
      expect(dels.map((c) => `${c.command} ${c.ifName} ${c.type} ${String(c.stdin.deviceID)}`).sort()).toEqual(
        [`DEL net1 macvlan ${first}`, `DEL net1 record ${first}`, `DEL net2 macvlan ${second}`, `DEL net2 record ${second}`].sort(),
      );
      expect(leftovers(sandbox)).toEqual(NOTHING);
      expect(deviceInfoFiles()).toEqual([]);
    } finally {
      // A failed expectation above still takes back what the ADD made: the cases after this one,
      // and the machine, start clean.
      if (del === undefined) multus(sandbox, "DEL", true);
      rmSync(dpFile, { force: true });
      deleteNetns(sandbox.ns);
    }
  });

  test("a pod kubelet assigned no device: code 7 naming the resource and the pod; nothing run, nothing left", () => {
    const sandbox = sandboxFor(plainPod);
    rmSync(recordLog, { force: true });
    const add = multus(sandbox, "ADD", true);
    try {
      expect(add.code, `${add.stdout}${add.stderr}`).toBe(1);
      expect(add.json).toMatchObject({ code: 7 });
      expect(String(add.json?.msg)).toContain(
        `NetworkAttachmentDefinition ${NAMESPACE}/nic-a needs a device of resource ${RESOURCE}, but kubelet assigned pod ${NAMESPACE}/${plainPod.name} none`,
      );
      log(`no device: ${String(add.json?.msg)}`);
      expect(recorded()).toEqual([]);
      expect(leftovers(sandbox)).toEqual(NOTHING);
      expect(deviceInfoFiles()).toEqual([]);
    } finally {
      // An ADD that succeeded against expectations is taken back.
      if (add.code === 0) multus(sandbox, "DEL", true);
      deleteNetns(sandbox.ns);
    }
  });

  test("no pod-resources socket at the fixed path: code 7 saying it does not exist; nothing run, nothing left", () => {
    // Without the binding multus sees the machine's own path, which must not have a kubelet.
    expect(existsSync(POD_RESOURCES_SOCKET), `this machine has ${POD_RESOURCES_SOCKET} (a kubelet of its own?): the case needs it absent`).toBe(false);
    const sandbox = sandboxFor(nicPod);
    rmSync(recordLog, { force: true });
    const add = multus(sandbox, "ADD", false);
    try {
      expect(add.code, `${add.stdout}${add.stderr}`).toBe(1);
      expect(add.json).toMatchObject({ code: 7 });
      expect(String(add.json?.msg)).toContain(
        `cannot read the devices kubelet assigned to pod ${NAMESPACE}/${nicPod.name}: kubelet's pod-resources socket ${POD_RESOURCES_SOCKET} does not exist`,
      );
      log(`no socket: ${String(add.json?.msg)}`);
      expect(recorded()).toEqual([]);
      expect(leftovers(sandbox)).toEqual(NOTHING);
      expect(deviceInfoFiles()).toEqual([]);
    } finally {
      // An ADD that succeeded against expectations is taken back.
      if (add.code === 0) multus(sandbox, "DEL", true);
      deleteNetns(sandbox.ns);
    }
  });
});

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
    if (Date.now() > deadline) {
      const file = join(node.dir, "logs", "kubelet.log");
      const tail = existsSync(file) ? readFileSync(file, "utf8").split("\n").slice(-40).join("\n") : "(no log)";
      throw new Error(`${what}: not after ${timeoutMs} ms; kubelet's log ends:\n${tail}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}
