import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { Buffer } from "node:buffer";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  type CacheEntry,
  cacheFilePath,
  decodeCacheEntry,
  encodeCacheEntry,
  listCachedAttachments,
  readCacheEntry,
  readCachedResult,
  removeCacheEntry,
  writeCacheEntry,
} from "./result-cache.ts";
import { thrown } from "./test-util.ts";

const root = mkdtempSync(join(tmpdir(), "result-cache-test-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const CONFLIST = '{"cniVersion":"1.0.0","name":"net-a","plugins":[{"type":"macvlan","master":"eth0"}]}';

/**
 * A file as Go's libcni v1.3.0 writes it (`json.Marshal(&cachedInfo)`): struct order, `config`
 * as base64 of the list's bytes, maps with sorted keys, HTML characters escaped.
 */
const GO_WRITTEN = [
  '{"kind":"cniCacheV1","containerId":"cnitool-0123456789abcdef0123","config":"',
  Buffer.from(CONFLIST).toString("base64"),
  '","ifName":"net1","networkName":"net-a","netns":"/run/netns/pod",',
  '"cniArgs":[["K8S_POD_NAME","web"],["IgnoreUnknown","1"]],',
  '"capabilityArgs":{"io.kubernetes.cri.pod-annotations":{"a":"\\u003cb\\u003e"},"mac":"0a:58:00:00:00:01"},',
  '"result":{"cniVersion":"1.0.0","interfaces":[{"mac":"0a:58:00:00:00:01","name":"net1","sandbox":"/run/netns/pod"}],',
  '"ips":[{"address":"10.1.1.5/24","gateway":"10.1.1.1","interface":0}],"routes":[{"dst":"0.0.0.0/0","gw":"10.1.1.1"}]}}',
].join("");

const ENTRY: CacheEntry = {
  containerId: "cnitool-0123456789abcdef0123",
  config: CONFLIST,
  ifName: "net1",
  networkName: "net-a",
  netns: "/run/netns/pod",
  cniArgs: [
    ["K8S_POD_NAME", "web"],
    ["IgnoreUnknown", "1"],
  ],
  capabilityArgs: { mac: "0a:58:00:00:00:01", "io.kubernetes.cri.pod-annotations": { a: "<b>" } },
  result: {
    cniVersion: "1.0.0",
    interfaces: [{ mac: "0a:58:00:00:00:01", name: "net1", sandbox: "/run/netns/pod" }],
    ips: [{ address: "10.1.1.5/24", gateway: "10.1.1.1", interface: 0 }],
    routes: [{ dst: "0.0.0.0/0", gw: "10.1.1.1" }],
  },
};

describe("the cache format", () => {
  it("reads a Go-written file, decoding the base64 config", () => {
    expect(decodeCacheEntry(GO_WRITTEN)).toEqual(ENTRY);
  });

  it("writes the same bytes Go writes", () => {
    expect(encodeCacheEntry(ENTRY)).toBe(GO_WRITTEN);
  });

  it("leaves out empty optional fields, as Go's omitempty does", () => {
    const bare: CacheEntry = { containerId: "c", config: "{}", ifName: "eth0", networkName: "n", cniArgs: [] };
    expect(encodeCacheEntry({ ...bare, capabilityArgs: {}, result: {} })).toBe(
      '{"kind":"cniCacheV1","containerId":"c","config":"e30=","ifName":"eth0","networkName":"n"}',
    );
    expect(decodeCacheEntry(encodeCacheEntry(bare))).toEqual({ ...bare, cniArgs: undefined });
  });

  it("says 'not a cniCacheV1 file' for other JSON, and refuses fields of the wrong type", () => {
    expect(decodeCacheEntry("not json")).toBeUndefined();
    expect(decodeCacheEntry('{"cniVersion":"0.4.0","ips":[]}')).toBeUndefined();
    expect(thrown(() => decodeCacheEntry('{"kind":"cniCacheV1","containerId":5}')).code).toBe(6);
    expect(thrown(() => decodeCacheEntry('{"kind":"cniCacheV1","config":"%%%"}')).code).toBe(6);
    expect(thrown(() => decodeCacheEntry('{"kind":"cniCacheV1","cniArgs":[["a"]]}')).code).toBe(6);
    expect(thrown(() => decodeCacheEntry('{"kind":"cniCacheV1","result":[]}')).code).toBe(6);
  });

  it("names the file <network>-<containerID>-<ifName> under results/, never with an empty part", () => {
    expect(cacheFilePath("/var/lib/cni", "net-a", "c1", "net1")).toBe("/var/lib/cni/results/net-a-c1-net1");
    expect(thrown(() => cacheFilePath("/x", "net-a", "", "net1")).msg).toBe(
      'cache file path requires network name ("net-a"), container ID (""), and interface name ("net1")',
    );
  });
});

describe("the cache on disk", () => {
  const dir = join(root, "cni");

  it("writes 0600 in a 0700 directory, atomically, reads back, removes", () => {
    writeCacheEntry(dir, ENTRY);
    const file = cacheFilePath(dir, "net-a", ENTRY.containerId, "net1");
    expect(readFileSync(file, "utf8")).toBe(GO_WRITTEN);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, "results")).mode & 0o777).toBe(0o700);
    expect(readdirSync(dir)).toEqual(["results"]);
    expect(readCacheEntry(dir, "net-a", ENTRY.containerId, "net1")).toEqual(ENTRY);
    removeCacheEntry(dir, "net-a", ENTRY.containerId, "net1");
    expect(readCacheEntry(dir, "net-a", ENTRY.containerId, "net1")).toBeUndefined();
    removeCacheEntry(dir, "net-a", ENTRY.containerId, "net1");
  });

  it("gives the cached result in the list's version; none without a file", () => {
    writeCacheEntry(dir, ENTRY);
    expect(readCachedResult(dir, "net-a", ENTRY.containerId, "net1", "0.4.0")).toEqual({
      cniVersion: "0.4.0",
      interfaces: [{ mac: "0a:58:00:00:00:01", name: "net1", sandbox: "/run/netns/pod" }],
      ips: [{ address: "10.1.1.5/24", gateway: "10.1.1.1", interface: 0 }],
      routes: [{ dst: "0.0.0.0/0", gw: "10.1.1.1" }],
    });
    expect(readCachedResult(dir, "net-a", "other", "net1", "1.0.0")).toBeUndefined();
    expect(thrown(() => readCachedResult(dir, "net-a", ENTRY.containerId, "net1", "0.2.0")).code).toBe(1);
  });

  it("reads a bare result file (before cniCacheV1) as the result", () => {
    writeFileSync(cacheFilePath(dir, "net-a", "old", "eth0"), '{"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.9.9.9/8"}],"dns":{}}');
    expect(readCachedResult(dir, "net-a", "old", "eth0", "1.0.0")).toEqual({
      cniVersion: "1.0.0",
      ips: [{ address: "10.9.9.9/8" }],
    });
    writeFileSync(cacheFilePath(dir, "net-a", "bad", "eth0"), "{garbage");
    expect(thrown(() => readCachedResult(dir, "net-a", "bad", "eth0", "1.0.0")).code).toBe(6);
  });

  it("lists the attachments of valid cniCacheV1 files in name order", () => {
    writeCacheEntry(dir, { ...ENTRY, containerId: "a-first", ifName: "eth0" });
    writeCacheEntry(dir, { ...ENTRY, networkName: "net-b" });
    const listed = listCachedAttachments(dir).map((e) => `${e.networkName}/${e.containerId}/${e.ifName}`);
    expect(listed).toEqual([`net-a/a-first/eth0`, `net-a/${ENTRY.containerId}/net1`, `net-b/${ENTRY.containerId}/net1`]);
    expect(listCachedAttachments(join(root, "nowhere"))).toEqual([]);
  });
});
