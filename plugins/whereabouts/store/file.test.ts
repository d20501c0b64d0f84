import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CniError } from "../../../shared/cni/errors.ts";
import { openFileStore } from "./file.ts";
import { allocate, release } from "../operations.ts";
import type { WhereaboutsStore } from "./interface.ts";
import { configOf, recordingLogger, testLocks } from "../test-util.ts";

let dir: string;
let events: string[];
let held: Set<string>;

/** Records lock and unlock order, and fails on taking a lock twice (flock would deadlock there). */
const recordingLocks = testLocks({
  onHold: (path) => {
    const name = path.slice(dir.length + 1);
    if (held.has(name)) throw new Error(`${name} locked twice`);
    held.add(name);
    events.push(`lock ${name}`);
  },
  onRelease: (path) => {
    const name = path.slice(dir.length + 1);
    held.delete(name);
    events.push(`unlock ${name}`);
  },
});

function store(networkName = ""): WhereaboutsStore {
  return openFileStore({ dir, networkName, locks: recordingLocks });
}

const POOL = { name: "10.0.0.0-24", range: "10.0.0.0/24" };
const mode = (path: string) => statSync(path).mode & 0o777;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "whereabouts-filestore-"));
  events = [];
  held = new Set();
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe("pools", () => {
  test("an absent pool reads as empty, and reading creates nothing", async () => {
    expect(await store().readPool(POOL)).toEqual({ range: "10.0.0.0/24", allocations: new Map() });
    expect(readdirSync(dir)).toEqual([]);
  });

  test("an update writes the IPPool's spec under its name, 0600 in 0700 directories, atomically", async () => {
    const value = await store().updatePool(POOL, async (current) => {
      expect(current.allocations.size).toBe(0);
      return {
        allocations: new Map([
          ["1", { id: "c1", podref: "default/web-0", ifname: "net1" }],
          ["10", { id: "c2", podref: "default/web-1" }],
          ["2", { id: "c3", podref: "default/web-2", ifname: "net1" }],
        ]),
        value: 42,
      };
    });
    expect(value).toBe(42);
    const path = join(dir, "default/ippools/10.0.0.0-24.json");
    expect(readFileSync(path, "utf8")).toBe(
      [
        "{",
        '  "range": "10.0.0.0/24",',
        '  "allocations": {',
        '    "1": {"id":"c1","podref":"default/web-0","ifname":"net1"},',
        '    "2": {"id":"c3","podref":"default/web-2","ifname":"net1"},',
        '    "10": {"id":"c2","podref":"default/web-1"}',
        "  }",
        "}",
        "",
      ].join("\n"),
    );
    expect(mode(path)).toBe(0o600);
    expect(mode(join(dir, "default"))).toBe(0o700);
    expect(mode(join(dir, "default/ippools"))).toBe(0o700);
    expect(readdirSync(join(dir, "default/ippools")).sort()).toEqual(["10.0.0.0-24.json", "10.0.0.0-24.lock"]);
    const reread = await store().readPool(POOL);
    expect(reread.allocations.get("10")).toEqual({ id: "c2", podref: "default/web-1" });
  });

  test("the change runs under the pool's lock, released after, even when the change throws", async () => {
    await store().updatePool(POOL, async () => {
      expect([...held]).toEqual(["default/ippools/10.0.0.0-24.lock"]);
      return { value: undefined };
    });
    expect(held.size).toBe(0);
    await expect(store().updatePool(POOL, async () => Promise.reject(new Error("boom")))).rejects.toThrow("boom");
    expect(held.size).toBe(0);
    expect(existsSync(join(dir, "default/ippools/10.0.0.0-24.json"))).toBe(false); // nothing to store, nothing written
  });

  test("network_name gets its own directory", async () => {
    await store("storage").updatePool({ name: "storage-10.0.0.0-24", range: "10.0.0.0/24" }, async () => ({ allocations: new Map(), value: 0 }));
    expect(existsSync(join(dir, "storage/ippools/storage-10.0.0.0-24.json"))).toBe(true);
  });

  test("a corrupt pool file is an I/O error naming it, never read as empty", async () => {
    await store().updatePool(POOL, async () => ({ allocations: new Map(), value: 0 }));
    const path = join(dir, "default/ippools/10.0.0.0-24.json");
    for (const content of ["{", '{"range": "10.0.0.0/24"}', '{"range":"10.0.0.0/24","allocations":{"1":{"id":"c"}}}']) {
      writeFileSync(path, content);
      const error = await store()
        .readPool(POOL)
        .catch((err: unknown) => err);
      expect(error).toBeInstanceOf(CniError);
      expect((error as CniError).code).toBe(5);
      expect((error as CniError).message).toContain(path);
    }
  });
});

describe("reservations", () => {
  const holder = { podref: "default/web-0", ifname: "net1" };

  test("claimed, then held by the same holder, taken for anyone else; released only by its holder", async () => {
    const s = store("net-a");
    expect(await s.claimReservation("net-a-10.0.0.5", holder)).toBe("claimed");
    const path = join(dir, "net-a/overlappingrangeipreservations/net-a-10.0.0.5.json");
    expect(JSON.parse(readFileSync(path, "utf8"))).toEqual(holder);
    expect(mode(path)).toBe(0o600);
    expect(await s.claimReservation("net-a-10.0.0.5", holder)).toBe("held");
    expect(await s.claimReservation("net-a-10.0.0.5", { ...holder, ifname: "net2" })).toEqual({ takenBy: holder });
    expect(await s.claimReservation("net-a-10.0.0.5", { podref: "default/web-1", ifname: "net1" })).toEqual({ takenBy: holder });
    expect(await s.releaseReservation("net-a-10.0.0.5", { podref: "default/web-1", ifname: "net1" })).toBe(false);
    expect(existsSync(path)).toBe(true);
    expect(await s.releaseReservation("net-a-10.0.0.5", holder)).toBe(true);
    expect(existsSync(path)).toBe(false);
    expect(await s.releaseReservation("net-a-10.0.0.5", holder)).toBe(false);
  });

  test("a reservation written before ifname existed belongs to its pod", async () => {
    await store().claimReservation("10.0.0.5", { podref: "default/web-0" });
    expect(await store().claimReservation("10.0.0.5", holder)).toBe("held");
  });

  test("claims happen inside the pool's lock, under the reservations lock: always in that order", async () => {
    const config = configOf({ range: "10.0.0.0/24", datastore_dir: dir });
    await allocate({ store: store(), config, log: recordingLogger() }, { containerId: "c1", ifName: "net1", podRef: "default/web-0" });
    expect(events).toEqual([
      "lock default/ippools/10.0.0.0-24.lock",
      "lock default/overlappingrangeipreservations.lock",
      "unlock default/overlappingrangeipreservations.lock",
      "unlock default/ippools/10.0.0.0-24.lock",
    ]);
  });
});

describe("through the operations", () => {
  test("ADD and DEL leave the files an upstream IPPool and ORIP would hold, plus the network tag GC needs", async () => {
    const config = configOf({ range: "192.168.2.224/28", datastore_dir: dir });
    const ctx = { store: store(), config, log: recordingLogger() };
    const result = await allocate(ctx, { containerId: "0c85e190", ifName: "net1", podRef: "default/web-0" });
    expect(result.ips).toEqual([{ address: "192.168.2.225/28" }]);
    expect(JSON.parse(readFileSync(join(dir, "default/ippools/192.168.2.224-28.json"), "utf8"))).toEqual({
      range: "192.168.2.224/28",
      allocations: { "1": { id: "0c85e190", podref: "default/web-0", ifname: "net1", network: "net" } },
    });
    expect(JSON.parse(readFileSync(join(dir, "default/overlappingrangeipreservations/192.168.2.225.json"), "utf8"))).toEqual({
      podref: "default/web-0",
      ifname: "net1",
    });
    await release(ctx, "0c85e190", "net1");
    expect(JSON.parse(readFileSync(join(dir, "default/ippools/192.168.2.224-28.json"), "utf8")).allocations).toEqual({});
    expect(readdirSync(join(dir, "default/overlappingrangeipreservations"))).toEqual([]);
  });

  test("ping fails when the directory cannot be made", async () => {
    writeFileSync(join(dir, "file"), "");
    const s = openFileStore({ dir: join(dir, "file"), networkName: "", locks: recordingLocks });
    await expect(s.ping()).rejects.toThrow(/cannot create directory/);
    await store().ping();
  });
});
