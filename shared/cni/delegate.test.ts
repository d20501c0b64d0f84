import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import {
  type RuntimeConf,
  addNetworkList,
  checkNetworkList,
  delNetworkList,
  gcNetworkList,
  pluginVersions,
  searchPath,
  statusNetworkList,
  validateNetworkList,
} from "./delegate.ts";
import { parseNetworkList } from "./netlist.ts";
import { cacheFilePath, readCacheEntry } from "./result-cache.ts";
import { rejected } from "./test-util.ts";

const root = mkdtempSync(join(tmpdir(), "delegate-test-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const bin = join(root, "bin");
const log = join(root, "calls");
const cacheDir = join(root, "cache");
mkdirSync(bin);

/**
 * A plugin that appends "<type> <COMMAND> <CNI_ARGS>" and its stdin to the log, and on ADD prints
 * its prevResult with one more IP (or a first result).
 */
function plugin(type: string, address: string, failOn = ""): void {
  const file = join(bin, type);
  writeFileSync(
    file,
    `#!/bin/sh
stdin=$(cat)
printf '%s\\n' "${type} $CNI_COMMAND $CNI_CONTAINERID $CNI_IFNAME $CNI_ARGS" "$stdin" >> ${log}
if [ "$CNI_COMMAND" = "${failOn}" ]; then echo '{"code":11,"msg":"try later","details":"busy"}'; exit 1; fi
case "$CNI_COMMAND" in
ADD) printf '{"cniVersion":"1.0.0","ips":[{"address":"${address}"}]}' ;;
VERSION) printf '{"cniVersion":"1.1.0","supportedVersions":["0.4.0","1.0.0"]}' ;;
esac
exit 0
`,
  );
  chmodSync(file, 0o755);
}
plugin("first", "10.0.0.1/24");
plugin("second", "10.0.0.2/24");
plugin("failing", "10.0.0.3/24", "DEL");

function calls(): Array<{ call: string; stdin: Record<string, unknown> }> {
  if (!existsSync(log)) return [];
  const lines = readFileSync(log, "utf8").trimEnd().split("\n");
  const out = [];
  for (let i = 0; i + 1 < lines.length; i += 2) out.push({ call: lines[i] ?? "", stdin: JSON.parse(lines[i + 1] ?? "") });
  return out;
}

const rt: RuntimeConf = {
  containerId: "ctr1",
  netns: "/run/netns/pod",
  ifName: "net1",
  args: [
    ["K8S_POD_NAME", "web"],
    ["IgnoreUnknown", "1"],
  ],
  capabilityArgs: { mac: "0a:58:00:00:00:01", portMappings: [] },
  cacheDir,
};
const options = { path: [join(root, "empty"), bin], writeStderr: () => {} };

function list(types: string[], extra: object = {}) {
  return parseNetworkList(
    JSON.stringify({
      cniVersion: "1.0.0",
      name: "net-a",
      plugins: types.map((type) => ({ type, capabilities: { mac: type === "second" } })),
      ...extra,
    }),
  );
}

beforeEach(() => {
  rmSync(log, { force: true });
  rmSync(cacheDir, { recursive: true, force: true });
});

describe("the delegate runner", () => {
  it("ADD chains prevResult, passes declared capabilities only, caches the last result", async () => {
    const network = list(["first", "second"]);
    const result = await addNetworkList(network, rt, options);
    expect(result).toEqual({ cniVersion: "1.0.0", ips: [{ address: "10.0.0.2/24" }] });
    const [one, two] = calls();
    expect(one?.call).toBe("first ADD ctr1 net1 K8S_POD_NAME=web;IgnoreUnknown=1");
    expect(one?.stdin).toEqual({ capabilities: { mac: false }, cniVersion: "1.0.0", name: "net-a", type: "first" });
    expect(two?.stdin.prevResult).toEqual({ cniVersion: "1.0.0", ips: [{ address: "10.0.0.1/24" }] });
    expect(two?.stdin.runtimeConfig).toEqual({ mac: "0a:58:00:00:00:01" });
    expect(readCacheEntry(cacheDir, "net-a", "ctr1", "net1")).toEqual({
      containerId: "ctr1",
      config: network.bytes,
      ifName: "net1",
      networkName: "net-a",
      netns: "/run/netns/pod",
      cniArgs: rt.args,
      capabilityArgs: rt.capabilityArgs,
      result: { cniVersion: "1.0.0", ips: [{ address: "10.0.0.2/24" }] },
    });
  });

  it("CHECK gives every plugin the cached result; DEL runs in reverse with it and removes the cache", async () => {
    const network = list(["first", "second"]);
    await addNetworkList(network, rt, options);
    rmSync(log);
    await checkNetworkList(network, rt, options);
    await delNetworkList(network, rt, options);
    expect(calls().map((c) => c.call.split(" ").slice(0, 2).join(" "))).toEqual(["first CHECK", "second CHECK", "second DEL", "first DEL"]);
    for (const { stdin } of calls()) expect(stdin.prevResult).toEqual({ cniVersion: "1.0.0", ips: [{ address: "10.0.0.2/24" }] });
    expect(existsSync(cacheFilePath(cacheDir, "net-a", "ctr1", "net1"))).toBe(false);
    await delNetworkList(network, rt, options);
    expect(calls().at(-1)?.stdin.prevResult).toBeUndefined();
  });

  it("keeps the plugin's error code under libcni's prefix, and the cache when DEL fails", async () => {
    const network = list(["first", "failing"]);
    await addNetworkList(network, rt, options);
    expect(await rejected(() => delNetworkList(network, rt, options))).toEqual({
      code: 11,
      msg: 'plugin type="failing" failed (delete): try later',
      details: "busy",
    });
    expect(readCacheEntry(cacheDir, "net-a", "ctr1", "net1")).toBeDefined();
    expect((await rejected(() => addNetworkList(list(["missing"]), rt, options))).msg).toMatch(
      /^plugin type="missing" failed \(add\): failed to find plugin "missing"/,
    );
    expect((await rejected(() => addNetworkList(network, { ...rt, ifName: "" }, options))).code).toBe(4);
  });

  it("honours disableCheck and refuses CHECK before 0.4.0", async () => {
    await checkNetworkList(list(["first"], { disableCheck: "true" }), rt, options);
    expect(calls()).toEqual([]);
    expect((await rejected(() => checkNetworkList(list(["first"], { cniVersion: "0.3.1" }), rt, options))).msg).toBe(
      'configuration version "0.3.1" does not support the CHECK command',
    );
  });

  it("GC deletes stale cached attachments of this network, then GCs each plugin (1.1.0)", async () => {
    const network = list(["first"], { cniVersion: "1.1.0" });
    await addNetworkList(network, rt, options);
    await addNetworkList(network, { ...rt, containerId: "ctr2" }, options);
    await addNetworkList(list(["first"], { name: "other" }), rt, options);
    rmSync(log);
    await gcNetworkList(network, [{ containerID: "ctr1", ifname: "net1" }], cacheDir, options);
    expect(calls().map((c) => c.call)).toEqual(["first DEL ctr2 net1 K8S_POD_NAME=web;IgnoreUnknown=1", "first GC   "]);
    expect(calls()[1]?.stdin["cni.dev/valid-attachments"]).toEqual([{ containerID: "ctr1", ifname: "net1" }]);
    expect(readCacheEntry(cacheDir, "net-a", "ctr2", "net1")).toBeUndefined();
    expect(readCacheEntry(cacheDir, "other", "ctr1", "net1")).toBeDefined();
    rmSync(log);
    await gcNetworkList({ ...network, disableGC: true }, undefined, cacheDir, options);
    await gcNetworkList(list(["first"]), undefined, cacheDir, options);
    expect(calls().map((c) => c.call)).toEqual(["first DEL ctr1 net1 K8S_POD_NAME=web;IgnoreUnknown=1"]);
  });

  it("GC reports a stale attachment's failed DEL with the plugin's code, after the other plugins' GC", async () => {
    const network = list(["failing"], { cniVersion: "1.1.0", name: "brittle" });
    await addNetworkList(network, { ...rt, containerId: "ctr3" }, options);
    rmSync(log);
    const error = await rejected(() => gcNetworkList(network, [], cacheDir, options));
    expect(error.code).toBe(11);
    expect(error.msg).toMatch(/^failed to delete stale attachment ctr3 net1: /);
    expect(calls().map((c) => c.call.split(" ").slice(0, 2).join(" "))).toEqual(["failing DEL", "failing GC"]);
  });

  it("STATUS runs each plugin from 1.1.0 on, stopping at the first error", async () => {
    await statusNetworkList(list(["first"]), options);
    expect(calls()).toEqual([]);
    plugin("unready", "", "STATUS");
    expect((await rejected(() => statusNetworkList(list(["unready", "first"], { cniVersion: "1.1.0" }), options))).code).toBe(11);
    expect(calls().map((c) => c.call)).toEqual(["unready STATUS   "]);
  });

  it("asks plugins their versions", async () => {
    expect(await pluginVersions("first", options)).toEqual(["0.4.0", "1.0.0"]);
    expect(await validateNetworkList(list(["first", "second"]), options)).toEqual(["mac"]);
    expect((await rejected(() => validateNetworkList(list(["first"], { cniVersion: "1.1.0" }), options))).msg).toBe(
      '[plugin first does not support config version "1.1.0"]',
    );
  });

  it("searches binDir before CNI_PATH", async () => {
    expect(searchPath("/opt/multus/bin", "/opt/cni/bin::/opt/multus/bin")).toEqual(["/opt/multus/bin", "/opt/cni/bin"]);
    expect(searchPath(undefined, "/opt/cni/bin")).toEqual(["/opt/cni/bin"]);
  });
});
