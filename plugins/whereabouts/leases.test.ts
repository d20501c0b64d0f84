import { describe, expect, test } from "vitest";
import { belongsTo, findPodLease, garbage, lowestFree, lowestFreeAddresses, readLeases } from "./leases.ts";
import { type RangeSpec, formatAddress, parseAddress, parseRange } from "./range.ts";
import type { Allocation } from "./store/interface.ts";

const ip = (text: string): bigint => parseAddress(text)!.value;

function range(spec: Partial<RangeSpec> & { range: string }) {
  return parseRange({ exclude: [], label: "ipam.range", ...spec });
}

function free(spec: Partial<RangeSpec> & { range: string }, taken: string[]): string | undefined {
  const r = range(spec);
  const found = lowestFree(r, taken.map(ip));
  return found === undefined ? undefined : formatAddress({ family: r.family, value: found });
}

function pool(rangeText: string, allocations: Record<string, Allocation>) {
  return { range: rangeText, allocations: new Map(Object.entries(allocations)) };
}

describe("lowest free address", () => {
  test("the first usable address of an empty range", () => {
    expect(free({ range: "10.0.0.0/24" }, [])).toBe("10.0.0.1");
    expect(free({ range: "fd00::/64" }, [])).toBe("fd00::1");
  });

  test("always the lowest gap, not the next after the highest", () => {
    expect(free({ range: "10.0.0.0/24" }, ["10.0.0.1", "10.0.0.2", "10.0.0.4"])).toBe("10.0.0.3");
    expect(free({ range: "10.0.0.0/24" }, ["10.0.0.2", "10.0.0.1"])).toBe("10.0.0.3");
  });

  test("range_start and range_end bound it; taken addresses outside them do not matter", () => {
    expect(free({ range: "10.0.0.0/24", rangeStart: "10.0.0.100" }, ["10.0.0.1", "10.0.0.100"])).toBe("10.0.0.101");
    expect(free({ range: "10.0.0.0/24", rangeStart: "10.0.0.100", rangeEnd: "10.0.0.101" }, ["10.0.0.100", "10.0.0.101"])).toBeUndefined();
  });

  test("exclusions are jumped over whole, overlapping and unsorted ones too", () => {
    const spec = { range: "10.0.0.0/24", exclude: ["10.0.0.8/29", "10.0.0.0/28", "10.0.0.16"] };
    expect(free(spec, [])).toBe("10.0.0.17");
    expect(free(spec, ["10.0.0.17", "10.0.0.18"])).toBe("10.0.0.19");
  });

  test("an exclusion covering the rest of the range leaves nothing", () => {
    expect(free({ range: "10.0.0.0/29", exclude: ["10.0.0.4/30"] }, ["10.0.0.1", "10.0.0.2", "10.0.0.3"])).toBeUndefined();
  });

  test("a full range has nothing", () => {
    expect(free({ range: "10.0.0.0/30" }, ["10.0.0.1", "10.0.0.2"])).toBeUndefined();
  });

  test("IPv4 .0 addresses inside a wider range are handed out, as upstream does", () => {
    expect(free({ range: "10.0.0.0/16", rangeStart: "10.0.0.255" }, ["10.0.0.255"])).toBe("10.0.1.0");
  });

  test("the upper half of a /64 is reachable", () => {
    expect(free({ range: "fd00::/64", rangeStart: "fd00::8000:0:0:0" }, ["fd00::8000:0:0:0"])).toBe("fd00::8000:0:0:1");
  });

  test("cost follows the leases, not the size of the range: a sparse /8 and /32 of IPv6 answer at once", () => {
    const started = performance.now();
    const taken = Array.from({ length: 10 }, (_, i) => `10.0.0.${i + 1}`);
    expect(free({ range: "10.0.0.0/8" }, taken)).toBe("10.0.0.11");
    const takenV6 = Array.from({ length: 10 }, (_, i) => `2001:db8::${(i + 1).toString(16)}`);
    expect(free({ range: "2001:db8::/32", exclude: ["2001:db8::b"] }, takenV6)).toBe("2001:db8::c");
    expect(performance.now() - started).toBeLessThan(50);
  });
});

describe("the lowest free addresses", () => {
  function frees(spec: Partial<RangeSpec> & { range: string }, taken: string[], count: number): string[] {
    const r = range(spec);
    return lowestFreeAddresses(r, taken.map(ip), count).map((value) => formatAddress({ family: r.family, value }));
  }

  test("ascending, skipping taken addresses and exclusions", () => {
    expect(frees({ range: "10.0.0.0/24", exclude: ["10.0.0.4/31"] }, ["10.0.0.2", "10.0.0.7"], 5)).toEqual([
      "10.0.0.1",
      "10.0.0.3",
      "10.0.0.6",
      "10.0.0.8",
      "10.0.0.9",
    ]);
  });

  test("fewer than asked when the range runs out, also before an exclusion past its end", () => {
    expect(frees({ range: "10.0.0.0/29" }, ["10.0.0.1", "10.0.0.5"], 10)).toEqual(["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.6"]);
    expect(frees({ range: "10.0.0.0/29", rangeEnd: "10.0.0.3", exclude: ["10.0.0.6/32"] }, [], 10)).toEqual(["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    expect(frees({ range: "10.0.0.0/30" }, ["10.0.0.1", "10.0.0.2"], 3)).toEqual([]);
  });

  test("overlapping exclusions and taken addresses inside them", () => {
    expect(frees({ range: "10.0.0.0/28", exclude: ["10.0.0.0/29", "10.0.0.4/30"] }, ["10.0.0.5", "10.0.0.9"], 3)).toEqual([
      "10.0.0.8",
      "10.0.0.10",
      "10.0.0.11",
    ]);
  });
});

describe("reading a pool", () => {
  test("keys are offsets from the pool's range address", () => {
    const r = range({ range: "192.168.2.224/28" });
    const { leases } = readLeases(r, pool("192.168.2.224/28", { "1": { id: "c", podref: "default/web-0", ifname: "net1" } }));
    expect(leases.map((l) => formatAddress({ family: 4, value: l.address! }))).toEqual(["192.168.2.225"]);
  });

  test("IPv6 keys of the upper half of a /64 are read (upstream skips them)", () => {
    const r = range({ range: "fd00::/64" });
    const { leases } = readLeases(r, pool("fd00::/64", { "9223372036854775813": { id: "c", podref: "d/p" }, "2": { id: "d", podref: "d/q" } }));
    expect(leases.map((l) => formatAddress({ family: 6, value: l.address! })).sort()).toEqual(["fd00::2", "fd00::8000:0:0:5"]);
  });

  test("keys that name no address are kept without one", () => {
    const r = range({ range: "10.0.0.0/24" });
    const { leases } = readLeases(r, pool("10.0.0.0/24", { x: { id: "c", podref: "d/p" }, "4294967296": { id: "d", podref: "d/q" } }));
    expect(leases.map((l) => l.address)).toEqual([undefined, undefined]);
  });

  test("a pool holding the other family's range is refused", () => {
    expect(() => readLeases(range({ range: "10.0.0.0/24" }), pool("fd00::/64", {}))).toThrow(/not an IPv4 CIDR/);
  });
});

describe("whose lease", () => {
  const leases = [
    { key: "1", address: 1n, allocation: { id: "old", podref: "ns/web-0", ifname: "net1" } },
    { key: "2", address: 2n, allocation: { id: "c2", podref: "ns/web-0", ifname: "net2" } },
    { key: "3", address: 3n, allocation: { id: "c3", podref: "ns/legacy" } },
  ];

  test("an ADD gets back the lease of the same pod and interface, whatever the container", () => {
    expect(findPodLease(leases, "ns/web-0", "net1")?.key).toBe("1");
    expect(findPodLease(leases, "ns/web-0", "net2")?.key).toBe("2");
    expect(findPodLease(leases, "ns/web-0", "net3")).toBeUndefined();
    expect(findPodLease(leases, "ns/web-1", "net1")).toBeUndefined();
  });

  test("a lease written before entries had an ifname goes to its pod's interface", () => {
    expect(findPodLease(leases, "ns/legacy", "net1")?.key).toBe("3");
  });

  test("DEL matches container and interface; an entry without ifname on the container alone", () => {
    expect(belongsTo({ id: "c", podref: "p", ifname: "net1" }, "c", "net1")).toBe(true);
    expect(belongsTo({ id: "c", podref: "p", ifname: "net1" }, "c", "net2")).toBe(false);
    expect(belongsTo({ id: "c", podref: "p", ifname: "net1" }, "other", "net1")).toBe(false);
    expect(belongsTo({ id: "c", podref: "p" }, "c", "net7")).toBe(true);
  });

  test("GC picks this network's entries that no valid attachment accounts for", () => {
    const tagged = leases.map((lease) => ({ ...lease, allocation: { ...lease.allocation, network: "storage" } }));
    const valid = [
      { containerID: "c2", ifname: "net2" },
      { containerID: "c3", ifname: "eth9" },
      { containerID: "old", ifname: "net9" },
    ];
    expect(garbage(tagged, valid, "storage").map((l) => l.key)).toEqual(["1"]);
    expect(garbage(tagged, [], "storage").map((l) => l.key)).toEqual(["1", "2", "3"]);
  });

  test("GC never picks another network's entries, nor untagged ones (upstream's, or older)", () => {
    const mixed = [
      { key: "1", address: 1n, allocation: { id: "a", podref: "ns/a", ifname: "net1", network: "storage" } },
      { key: "2", address: 2n, allocation: { id: "b", podref: "ns/b", ifname: "net1", network: "other" } },
      { key: "3", address: 3n, allocation: { id: "c", podref: "ns/c", ifname: "net1" } },
    ];
    expect(garbage(mixed, [], "storage").map((l) => l.key)).toEqual(["1"]);
    expect(garbage(mixed, [], "other").map((l) => l.key)).toEqual(["2"]);
  });
});
