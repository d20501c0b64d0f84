/**
 * The delegate runner (shared/cni/delegate.ts) running real plugins in real namespaces: a
 * conflist macvlan + static IPAM + sbr through ADD, CHECK and DEL, side by side with the same
 * conflist run by upstream's cnitool v1.3.0 (libcni). Both runs use the same pod namespace, the
 * same container ID (cnitool's, derived from the namespace path) and the same MAC (the `mac`
 * capability), so the results and the result cache files must be identical.
 *
 * The runner is library code with no `bun:*` import, so this test imports it directly. Plugins
 * run in this process's namespace, where the macvlan master is a veth of our own.
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, rmdirSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import { type RuntimeConf, addNetworkList, checkNetworkList, delNetworkList, statusNetworkList } from "../shared/cni/delegate.ts";
import { parseNetworkList } from "../shared/cni/netlist.ts";
import { resultToVersion } from "../shared/cni/result.ts";
import { cacheFilePath, decodeCacheEntry } from "../shared/cni/result-cache.ts";
import { BIN, UPSTREAM_BIN, addresses, cleanup, ip, link, netns, nsPath, sh, sweepStale } from "./harness.ts";

const CNITOOL = join(UPSTREAM_BIN, "cnitool");
/** libcni's `CacheDir`: cnitool has no way to move it. */
const LIBCNI_CACHE = "/var/lib/cni";
const MASTER = `cnit${process.pid}d`;
const NETWORK = `cnit${process.pid}-delegate`;
const MAC = "0a:58:0a:4d:00:05";
const PATH = [BIN, UPSTREAM_BIN];
/** Out of order, as containerd sends them; `portMappings` is not declared, so no plugin gets it. */
const CNI_ARGS: Array<[string, string]> = [
  ["K8S_POD_NAME", "web"],
  ["IgnoreUnknown", "1"],
  ["K8S_POD_NAMESPACE", "default"],
];
const CAPABILITY_ARGS = { mac: MAC, portMappings: [{ hostPort: 8080, containerPort: 80, protocol: "tcp" }] };

const work = mkdtempSync(join(tmpdir(), "cnit-delegate-"));
const cacheDir = join(work, "cache");
const confDir = join(work, "net.d");
const libcniCacheExisted = existsSync(LIBCNI_CACHE);
let cnitoolCacheFile = "";

const CONFLIST = `${JSON.stringify(
  {
    cniVersion: "1.0.0",
    name: NETWORK,
    plugins: [
      {
        type: "macvlan",
        master: MASTER,
        mode: "bridge",
        capabilities: { mac: true },
        ipam: {
          type: "static",
          addresses: [{ address: "10.77.0.5/24", gateway: "10.77.0.1" }],
          routes: [{ dst: "0.0.0.0/0" }],
        },
      },
      { type: "sbr" },
    ],
  },
  null,
  2,
)}\n`;

beforeAll(() => {
  sweepStale();
  for (const file of [join(BIN, "macvlan"), join(BIN, "sbr"), join(UPSTREAM_BIN, "static"), CNITOOL]) {
    expect(existsSync(file), `${file} missing: run npm run build and scripts/build-upstream.sh`).toBe(true);
  }
  // A veth whose peer is in a namespace of the harness: removing that namespace removes both ends,
  // even when a killed run leaves it to the next run's sweep.
  const wire = netns("wire");
  sh("ip", ["link", "add", MASTER, "type", "veth", "peer", "name", "w0", "netns", wire]);
  sh("ip", ["link", "set", MASTER, "up"]);
  sh("mkdir", ["-p", confDir]);
  writeFileSync(join(confDir, "10-delegate.conflist"), CONFLIST);
});

afterAll(() => {
  cleanup();
  spawnQuiet(["ip", "link", "del", MASTER]);
  rmSync(work, { recursive: true, force: true });
  if (cnitoolCacheFile) rmSync(cnitoolCacheFile, { force: true });
  if (!libcniCacheExisted) {
    for (const dir of [join(LIBCNI_CACHE, "results"), LIBCNI_CACHE]) {
      try {
        rmdirSync(dir);
      } catch {
        // not empty: someone else's files; leave them.
      }
    }
  }
});

function spawnQuiet(argv: string[]): void {
  try {
    sh(argv[0] ?? "", argv.slice(1));
  } catch {
    // already gone
  }
}

/** cnitool's container ID: `cnitool-` and the first 10 bytes of SHA-512 of the netns path, in hex. */
function cnitoolContainerId(netnsPath: string): string {
  return `cnitool-${createHash("sha512").update(netnsPath).digest("hex").slice(0, 20)}`;
}

function cnitool(verb: string, podPath: string) {
  return spawnSyncText(CNITOOL, [verb, NETWORK, podPath], {
    ...process.env,
    NETCONFPATH: confDir,
    CNI_PATH: PATH.join(":"),
    CNI_IFNAME: "net1",
    CNI_ARGS: CNI_ARGS.map(([k, v]) => `${k}=${v}`).join(";"),
    CAP_ARGS: JSON.stringify(CAPABILITY_ARGS),
  });
}

function spawnSyncText(command: string, args: string[], env: NodeJS.ProcessEnv) {
  const run = spawnSync(command, args, { env, encoding: "utf8" });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

test("a conflist macvlan + static + sbr: ADD, CHECK, DEL as cnitool (libcni v1.3.0) runs it", async () => {
  const pod = netns("pod");
  const podPath = nsPath(pod);
  const containerId = cnitoolContainerId(podPath);
  const list = parseNetworkList(CONFLIST);
  const rt: RuntimeConf = {
    containerId,
    netns: podPath,
    ifName: "net1",
    args: CNI_ARGS,
    capabilityArgs: CAPABILITY_ARGS,
    cacheDir,
  };
  const options = { path: PATH };

  // ---- ours
  const result = await addNetworkList(list, rt, options);
  const ours = resultToVersion(result, result.cniVersion);
  expect(ours).toMatchObject({
    cniVersion: "1.0.0",
    interfaces: [{ name: "net1", mac: MAC, sandbox: podPath }],
    ips: [{ address: "10.77.0.5/24", gateway: "10.77.0.1", interface: 0 }],
  });
  expect(link(pod, "net1")?.address).toBe(MAC);
  expect(addresses(pod, "net1")).toEqual(["10.77.0.5/24"]);
  // sbr's rule: traffic from the address looks up its own table.
  expect(ip<Array<{ src?: string }>>(pod, "rule", "show").some((rule) => rule.src === "10.77.0.5")).toBe(true);
  const ourCacheFile = cacheFilePath(cacheDir, NETWORK, containerId, "net1");
  expect(statSync(ourCacheFile).mode & 0o777).toBe(0o600);
  expect(statSync(join(cacheDir, "results")).mode & 0o777).toBe(0o700);
  const ourCache = readFileSync(ourCacheFile, "utf8");
  expect(decodeCacheEntry(ourCache)?.config).toBe(CONFLIST);

  await checkNetworkList(list, rt, options);
  await statusNetworkList(list, options); // 1.0.0: nothing to run
  await delNetworkList(list, rt, options);
  expect(link(pod, "net1")).toBeUndefined();
  expect(existsSync(ourCacheFile)).toBe(false);

  // ---- upstream, in the same namespace with the same container ID
  cnitoolCacheFile = cacheFilePath(LIBCNI_CACHE, NETWORK, containerId, "net1");
  const add = cnitool("add", podPath);
  expect(add.status, add.stderr).toBe(0);
  expect(JSON.parse(add.stdout)).toEqual(ours);
  const theirCache = readFileSync(cnitoolCacheFile, "utf8");
  // Field by field first, for a readable failure; then the bytes.
  expect(JSON.parse(ourCache)).toEqual(JSON.parse(theirCache));
  expect(decodeCacheEntry(ourCache)).toEqual(decodeCacheEntry(theirCache));
  expect(ourCache).toBe(theirCache);

  // Each side reads the other's cache: ours CHECKs cnitool's attachment, cnitool DELs it after.
  await checkNetworkList(list, { ...rt, cacheDir: LIBCNI_CACHE }, options);
  const check = cnitool("check", podPath);
  expect(check.status, check.stderr).toBe(0);
  const del = cnitool("del", podPath);
  expect(del.status, del.stderr).toBe(0);
  expect(link(pod, "net1")).toBeUndefined();
  expect(existsSync(cnitoolCacheFile)).toBe(false);
});
