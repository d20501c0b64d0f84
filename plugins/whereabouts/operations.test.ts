import { describe, expect, test } from "vitest";
import { CniError } from "../../shared/cni/errors.ts";
import { type Requester, type ReservationTracker, allocate, check, collectGarbage, release, releaseOrphan, status } from "./operations.ts";
import type { Pool, PoolChange, PoolId, UnreleasedReservation } from "./store/interface.ts";
import type { BatchOutcome, NodeBatch } from "./node/batch.ts";
import { parseAddress } from "./range.ts";
import { MemoryStore, contextOf } from "./test-util.ts";

const ip = (text: string): bigint => parseAddress(text)!.value;

const pod = (n: number, ifName = "net1"): Requester => ({ containerId: `ctr-${n}`, ifName, podRef: `default/pod-${n}` });

async function addresses(store: MemoryStore, ipam: Record<string, unknown>, who: Requester): Promise<string[]> {
  const result = await allocate(contextOf(store, ipam), who);
  return (result.ips ?? []).map((ip) => ip.address);
}

async function failure(promise: Promise<unknown>): Promise<{ code: number; msg: string }> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof CniError) return { code: err.code, msg: err.message };
    throw err;
  }
  throw new Error("expected a CniError");
}

const V4 = { range: "10.0.0.0/29" }; // .1 - .6

/** An optimistic store whose second update loses one race: `change` runs, `race` changes the store, `change` runs again. */
class RacedStore extends MemoryStore {
  private updates = 0;

  constructor(private readonly race: (store: MemoryStore) => void) {
    super();
  }

  override async updatePool<T>(pool: PoolId, change: (current: Pool) => Promise<PoolChange<T>>): Promise<T> {
    if (++this.updates === 2) {
      await change(await this.readPool(pool));
      this.race(this);
    }
    return super.updatePool(pool, change);
  }
}

describe("ADD", () => {
  test("lowest free address first; the pool records id, podref, ifname (and the network) under the offset", async () => {
    const store = new MemoryStore();
    expect(await addresses(store, V4, pod(1))).toEqual(["10.0.0.1/29"]);
    expect(await addresses(store, V4, pod(2))).toEqual(["10.0.0.2/29"]);
    await release(contextOf(store, V4), "ctr-1", "net1");
    expect(await addresses(store, V4, pod(3))).toEqual(["10.0.0.1/29"]);
    expect(store.allocations("10.0.0.0-29")).toEqual({
      "1": { id: "ctr-3", podref: "default/pod-3", ifname: "net1", network: "net" },
      "2": { id: "ctr-2", podref: "default/pod-2", ifname: "net1", network: "net" },
    });
  });

  test("idempotent: the same pod and interface get their address back, under a new container ID too", async () => {
    const store = new MemoryStore();
    expect(await addresses(store, V4, pod(1))).toEqual(["10.0.0.1/29"]);
    const writes = store.writes;
    expect(await addresses(store, V4, pod(1))).toEqual(["10.0.0.1/29"]);
    expect(store.writes).toBe(writes); // nothing changed, nothing written
    expect(await addresses(store, V4, { ...pod(1), containerId: "ctr-new" })).toEqual(["10.0.0.1/29"]);
    expect(store.allocations("10.0.0.0-29")["1"]!.id).toBe("ctr-new");
    expect(await addresses(store, V4, pod(1, "net2"))).toEqual(["10.0.0.2/29"]);
  });

  test("dual stack: one address per range, in order, the gateway only on its own family", async () => {
    const store = new MemoryStore();
    const ipam = { ipRanges: [{ range: "10.0.0.0/24" }, { range: "fd00::/64" }], gateway: "10.0.0.254" };
    const result = await allocate(contextOf(store, ipam), pod(1));
    expect(result.ips).toEqual([{ address: "10.0.0.1/24", gateway: "10.0.0.254" }, { address: "fd00::1/64" }]);
    expect(store.allocations("fd00---64")).toEqual({ "1": { id: "ctr-1", podref: "default/pod-1", ifname: "net1", network: "net" } });
  });

  test("the gateway is never handed out", async () => {
    const store = new MemoryStore();
    expect(await addresses(store, { ...V4, gateway: "10.0.0.1" }, pod(1))).toEqual(["10.0.0.2/29"]);
  });

  test("routes, dns and static addresses come with the result, static ones last", async () => {
    const ipam = { ...V4, routes: [{ dst: "172.31.0.0/16" }], dns: { nameservers: ["10.0.0.53"] }, addresses: [{ address: "192.168.9.9/24" }] };
    const result = await allocate(contextOf(new MemoryStore(), ipam), pod(1));
    expect(result).toEqual({
      cniVersion: "1.1.0",
      ips: [{ address: "10.0.0.1/29" }, { address: "192.168.9.9/24" }],
      routes: [{ dst: "172.31.0.0/16" }],
      dns: { nameservers: ["10.0.0.53"] },
    });
  });

  test("exhaustion: code 102 naming the range, and nothing written", async () => {
    const store = new MemoryStore();
    for (let i = 1; i <= 6; i++) await addresses(store, V4, pod(i));
    const before = store.allocations("10.0.0.0-29");
    expect(await failure(allocate(contextOf(store, V4), pod(7)))).toEqual({
      code: 102,
      msg: "no free IP address left in range 10.0.0.0/29 (10.0.0.1-10.0.0.6)",
    });
    expect(store.allocations("10.0.0.0-29")).toEqual(before);
    expect([...store.reservations.keys()]).toHaveLength(6);
  });

  test("a later range that is full undoes what the earlier ranges took for this ADD", async () => {
    const store = new MemoryStore();
    const ipam = { ipRanges: [{ range: "10.0.0.0/24" }, { range: "fd00::/126" }] }; // fd00::1 - fd00::2
    await addresses(store, ipam, pod(1));
    await addresses(store, ipam, pod(2));
    expect((await failure(allocate(contextOf(store, ipam), pod(3)))).code).toBe(102);
    expect(Object.keys(store.allocations("10.0.0.0-24"))).toEqual(["1", "2"]);
    expect(store.reservations.has("10.0.0.3")).toBe(false);
  });

  test("undoing never takes away what a re-ADD already owned", async () => {
    const store = new MemoryStore();
    const ipam = { ipRanges: [{ range: "10.0.0.0/24" }, { range: "fd00::/126" }] };
    await addresses(store, ipam, pod(1));
    await addresses(store, ipam, pod(2));
    await release(contextOf(store, { range: "fd00::/126" }), "ctr-1", "net1"); // pod 1 keeps only its IPv4 address
    await addresses(store, { range: "fd00::/126" }, pod(3));
    expect((await failure(allocate(contextOf(store, ipam), pod(1)))).code).toBe(102);
    expect(store.allocations("10.0.0.0-24")["1"]).toEqual({ id: "ctr-1", podref: "default/pod-1", ifname: "net1", network: "net" });
  });

  test("range_start, range_end and exclude shape the order", async () => {
    const store = new MemoryStore();
    const ipam = { range: "10.0.0.0/24", range_start: "10.0.0.10", range_end: "10.0.0.13", exclude: ["10.0.0.11/32", "10.0.0.12"] };
    expect(await addresses(store, ipam, pod(1))).toEqual(["10.0.0.10/24"]);
    expect(await addresses(store, ipam, pod(2))).toEqual(["10.0.0.13/24"]);
    expect((await failure(allocate(contextOf(store, ipam), pod(3)))).code).toBe(102);
  });

  test("sleep_for_race waits between choosing and writing", async () => {
    const slept: number[] = [];
    const ctx = { ...contextOf(new MemoryStore(), { ...V4, sleep_for_race: 2 }), sleep: async (ms: number) => void slept.push(ms) };
    await allocate(ctx, pod(1));
    expect(slept).toEqual([2000]);
  });
});

describe("overlapping ranges", () => {
  const A = { range: "10.0.0.0/24" };
  const B = { range: "10.0.0.0/25" }; // another pool over the same addresses

  test("on (the default): two pools never hand out the same address", async () => {
    const store = new MemoryStore();
    expect(await addresses(store, A, pod(1))).toEqual(["10.0.0.1/24"]);
    expect(await addresses(store, B, pod(2))).toEqual(["10.0.0.2/25"]);
    expect(await addresses(store, A, pod(3))).toEqual(["10.0.0.3/24"]);
    expect([...store.reservations.entries()]).toEqual([
      ["10.0.0.1", { podref: "default/pod-1", ifname: "net1" }],
      ["10.0.0.2", { podref: "default/pod-2", ifname: "net1" }],
      ["10.0.0.3", { podref: "default/pod-3", ifname: "net1" }],
    ]);
  });

  test("one pod's two interfaces in overlapping pools get two addresses", async () => {
    const store = new MemoryStore();
    expect(await addresses(store, A, pod(1, "net1"))).toEqual(["10.0.0.1/24"]);
    expect(await addresses(store, B, pod(1, "net2"))).toEqual(["10.0.0.2/25"]);
  });

  test("off: no reservations, so overlapping pools may share", async () => {
    const store = new MemoryStore();
    expect(await addresses(store, { ...A, enable_overlapping_ranges: false }, pod(1))).toEqual(["10.0.0.1/24"]);
    expect(await addresses(store, { ...B, enable_overlapping_ranges: false }, pod(2))).toEqual(["10.0.0.1/25"]);
    expect(store.reservations.size).toBe(0);
  });

  test("network_name keeps pools and reservations apart: the same range twice", async () => {
    const store = new MemoryStore();
    expect(await addresses(store, { ...A, network_name: "red" }, pod(1))).toEqual(["10.0.0.1/24"]);
    expect(await addresses(store, { ...A, network_name: "blue" }, pod(2))).toEqual(["10.0.0.1/24"]);
    expect([...store.pools.keys()].sort()).toEqual(["blue-10.0.0.0-24", "red-10.0.0.0-24"]);
    expect([...store.reservations.keys()].sort()).toEqual(["blue-10.0.0.1", "red-10.0.0.1"]);
  });

  test("DEL releases the reservation with the address", async () => {
    const store = new MemoryStore();
    await addresses(store, A, pod(1));
    await release(contextOf(store, A), "ctr-1", "net1");
    expect(store.reservations.size).toBe(0);
    expect(await addresses(store, B, pod(2))).toEqual(["10.0.0.1/25"]);
  });

  test("a DEL does not release a reservation another pod holds", async () => {
    const store = new MemoryStore();
    await store.claimReservation("10.0.0.1", { podref: "default/other", ifname: "net1" });
    store.pools.set("10.0.0.0-24", { range: "10.0.0.0/24", allocations: new Map([["1", { id: "ctr-1", podref: "default/pod-1", ifname: "net1" }]]) });
    await release(contextOf(store, A), "ctr-1", "net1");
    expect(store.reservations.get("10.0.0.1")).toEqual({ podref: "default/other", ifname: "net1" });
  });

  test("an optimistic store that reruns the update: reservations of discarded runs are released", async () => {
    // The first run picks .2 and claims it; its write loses to a pod that took .2 in this pool
    // (through a config with overlapping off); the rerun must take .3 and give back .2.
    const store = new RacedStore((s) => {
      s.pools.get("10.0.0.0-24")!.allocations.set("2", { id: "ctr-9", podref: "default/pod-9", ifname: "net1" });
    });
    await addresses(store, A, pod(1));
    expect(await addresses(store, A, pod(2))).toEqual(["10.0.0.3/24"]);
    expect([...store.reservations.keys()].sort()).toEqual(["10.0.0.1", "10.0.0.3"]);
  });

  test("conflicting reruns leave exactly one reservation per ADD", async () => {
    const store = new MemoryStore(3);
    expect(await addresses(store, A, pod(1))).toEqual(["10.0.0.1/24"]);
    expect([...store.reservations.keys()]).toEqual(["10.0.0.1"]);
  });

  test("a pod whose pool entry is reserved by another pod gets a new address and drops the stale entry", async () => {
    const store = new MemoryStore();
    await addresses(store, A, pod(1));
    store.reservations.set("10.0.0.1", { podref: "default/intruder", ifname: "net1" });
    expect(await addresses(store, A, pod(1))).toEqual(["10.0.0.2/24"]);
    expect(Object.keys(store.allocations("10.0.0.0-24"))).toEqual(["2"]);
  });
});

describe("racing for the lowest addresses", () => {
  const wide = { range: "10.0.0.0/24" };
  const reserveForOthers = (store: MemoryStore, ...last: number[]) => {
    for (const n of last) store.reservations.set(`10.0.0.${n}`, { podref: `default/racer-${n}`, ifname: "net1" });
  };
  /** A pool with a version: fixed, or one that moves at every read, as when other nodes keep writing it. */
  class VersionedStore extends MemoryStore {
    private reads = 0;
    constructor(private readonly moving: boolean) {
      super();
    }
    override async readPool(pool: PoolId): Promise<Pool> {
      return { ...(await super.readPool(pool)), version: this.moving ? String(this.reads++) : "7" };
    }
  }

  test("reserved addresses while the pool stands still: the next ones in order, as upstream gives them", async () => {
    const store = new VersionedStore(false);
    reserveForOthers(store, 1, 2, 3);
    const ctx = { ...contextOf(store, wide), random: () => 0.99 };
    expect((await allocate(ctx, pod(1))).ips?.map((ip) => ip.address)).toEqual(["10.0.0.4/24"]);
  });

  test("a reserved address while others write the pool: a draw among the next 256 free addresses, reserved ones left out", async () => {
    for (const [draw, expected] of [
      // After .1: the draw from .2-.254 (fewer than 256 are left); a draw of .2, reserved too,
      // draws again from .3-.254.
      [0, "10.0.0.3/24"],
      [0.5, "10.0.0.128/24"],
      [0.99, "10.0.0.252/24"],
    ] as const) {
      const store = new VersionedStore(true);
      reserveForOthers(store, 1, 2);
      const ctx = { ...contextOf(store, wide), random: () => draw };
      expect((await allocate(ctx, pod(1))).ips?.map((ip) => ip.address)).toEqual([expected]);
      expect(store.reservations.get(expected.replace("/24", ""))).toEqual({ podref: "default/pod-1", ifname: "net1" });
    }
  });

  test("each further reserved address while racing doubles the window the draw is taken from", async () => {
    const store = new VersionedStore(true);
    // .1 starts the race; the draw at 0.99 of 256 (10.0.0.255) is reserved too; the next draw
    // is at 0.99 of 512 free addresses from .2 on, .255 left out: offset 509.
    store.reservations.set("10.0.0.1", { podref: "default/racer-1", ifname: "net1" });
    store.reservations.set("10.0.0.255", { podref: "default/racer-2", ifname: "net1" });
    const ctx = { ...contextOf(store, { range: "10.0.0.0/20" }), random: () => 0.99 };
    expect((await allocate(ctx, pod(1))).ips?.map((ip) => ip.address)).toEqual(["10.0.1.253/20"]);
  });

  test("the draw never lands on a reserved address, and finds the last free one", async () => {
    const store = new VersionedStore(true);
    reserveForOthers(store, ...Array.from({ length: 253 }, (_, i) => i + 1));
    const ctx = { ...contextOf(store, wide), random: () => 0.7 };
    expect((await allocate(ctx, pod(1))).ips?.map((ip) => ip.address)).toEqual(["10.0.0.254/24"]);
    expect(await failure(allocate(ctx, pod(2)))).toMatchObject({ code: 102 });
  });
});

describe("a node batch: many ADDs served by one pool update", () => {
  /** A batch whose leader also serves `others`, as if their processes were queued behind it. */
  function batchWith(others: Requester[], answers: BatchOutcome[]): NodeBatch {
    return {
      async run(_pool, _fingerprint, who, lead) {
        const outcomes = await lead([who, ...others]);
        answers.push(...outcomes.slice(1));
        return outcomes[0]!;
      },
      alone: (_pool, _sandbox, work) => work(),
    };
  }

  test("each requester gets its own address, the leader first, in one pool write", async () => {
    const store = new MemoryStore();
    await addresses(store, V4, pod(1));
    const answers: BatchOutcome[] = [];
    const ctx = { ...contextOf(store, V4), batch: batchWith([pod(2), pod(1), pod(3)], answers) };
    const writes = store.writes;
    expect((await allocate(ctx, pod(4))).ips?.map((ip) => ip.address)).toEqual(["10.0.0.2/29"]);
    expect(answers).toEqual([
      { address: String(ip("10.0.0.3")), key: "3", created: true },
      { address: String(ip("10.0.0.1")), key: "1", created: false },
      { address: String(ip("10.0.0.4")), key: "4", created: true },
    ]);
    expect(store.writes - writes).toBe(1);
    expect([...store.reservations.keys()].sort()).toEqual(["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]);
  });

  test("one walk past others' reservations serves the whole batch; a requester's own reservation is still its own", async () => {
    const store = new MemoryStore();
    for (const n of [1, 2, 3]) store.reservations.set(`10.0.0.${n}`, { podref: `default/racer-${n}`, ifname: "net1" });
    // pod 5's ADD died after reserving .4: its retry, served in the batch, gets .4 back.
    store.reservations.set("10.0.0.4", { podref: "default/pod-5", ifname: "net1" });
    const claims: string[] = [];
    const claim = store.claimReservation.bind(store);
    store.claimReservation = async (name, holder) => {
      claims.push(`${holder.podref} ${name}`);
      return claim(name, holder);
    };
    const answers: BatchOutcome[] = [];
    const ctx = { ...contextOf(store, V4), batch: batchWith([pod(5)], answers) };
    expect((await allocate(ctx, pod(4))).ips?.map((ip) => ip.address)).toEqual(["10.0.0.5/29"]);
    expect(answers).toEqual([{ address: String(ip("10.0.0.4")), key: "4", created: true }]);
    expect(claims).toEqual([
      "default/pod-4 10.0.0.1",
      "default/pod-4 10.0.0.2",
      "default/pod-4 10.0.0.3",
      "default/pod-4 10.0.0.4",
      "default/pod-4 10.0.0.5",
      "default/pod-5 10.0.0.4",
    ]);
  });

  test("a full range answers 102 to the requesters it has no room for; the others get theirs", async () => {
    const store = new MemoryStore();
    const answers: BatchOutcome[] = [];
    const others = [2, 3, 4, 5, 6, 7].map((n) => pod(n));
    const ctx = { ...contextOf(store, V4), batch: batchWith(others, answers) };
    expect((await allocate(ctx, pod(1))).ips?.map((ip) => ip.address)).toEqual(["10.0.0.1/29"]);
    expect(answers.slice(0, 5).map((a) => ("key" in a ? a.key : a.error.code))).toEqual(["2", "3", "4", "5", "6"]);
    expect(answers[5]).toMatchObject({ error: { code: 102 } });
    expect(Object.keys(store.allocations("10.0.0.0-29"))).toHaveLength(6);
  });

  test("the API away: every requester of the batch hears code 11 at once, not each after its own timeout", async () => {
    const store = new MemoryStore();
    store.updatePool = async () => {
      throw new CniError(11, "the Kubernetes API is not available, try again later");
    };
    const answers: BatchOutcome[] = [];
    const ctx = { ...contextOf(store, V4), batch: batchWith([pod(2), pod(3)], answers) };
    expect(await failure(allocate(ctx, pod(1)))).toMatchObject({ code: 11 });
    expect(answers).toMatchObject([{ error: { code: 11 } }, { error: { code: 11 } }]);
  });

  test("a leader out of half its time serves no one else: they stay queued, and lead for themselves", async () => {
    const store = new MemoryStore();
    const answers: BatchOutcome[] = [];
    const late = { ...contextOf(store, V4), batch: batchWith([pod(2), pod(3)], answers), deadline: () => Date.now() - 1 };
    expect((await allocate(late, pod(1))).ips?.map((i) => i.address)).toEqual(["10.0.0.1/29"]);
    expect(answers).toEqual([]);
    expect(Object.keys(store.allocations("10.0.0.0-29"))).toEqual(["1"]);
    const inTime = { ...contextOf(store, V4), batch: batchWith([pod(2), pod(3)], answers), deadline: () => Date.now() + 10_000 };
    await allocate(inTime, pod(4));
    expect(answers.map((a) => ("address" in a ? a.address : a.error.code))).toEqual([String(ip("10.0.0.3")), String(ip("10.0.0.4"))]);
  });

  test("the leader's own 102 is its error; the requesters it did serve keep theirs", async () => {
    const store = new MemoryStore();
    for (let n = 1; n <= 5; n++) await addresses(store, V4, pod(n));
    const answers: BatchOutcome[] = [];
    const ctx = { ...contextOf(store, V4), batch: batchWith([pod(7)], answers) };
    // The leader takes .6, the last one; pod 7 gets 102.
    expect((await allocate(ctx, pod(6))).ips?.map((ip) => ip.address)).toEqual(["10.0.0.6/29"]);
    expect(answers).toMatchObject([{ error: { code: 102 } }]);
    const full = { ...contextOf(store, V4), batch: batchWith([pod(1)], answers) };
    expect(await failure(allocate(full, pod(8)))).toMatchObject({ code: 102 });
    expect(answers[1]).toEqual({ address: String(ip("10.0.0.1")), key: "1", created: false });
  });
});

/** ReservationLog's bookkeeping without its file. */
class Tracker implements ReservationTracker {
  readonly open = new Map<string, UnreleasedReservation>();
  readonly tracked: UnreleasedReservation[] = [];
  track(r: UnreleasedReservation): void {
    this.tracked.push(r);
    this.open.set(JSON.stringify(r), r);
  }
  settle(r: UnreleasedReservation): void {
    this.open.delete(JSON.stringify(r));
  }
  unsettled(): UnreleasedReservation[] {
    return [...this.open.values()];
  }
}

/** What `tracker` holds unsettled at each pool write of `store` (that `which` picks), in order. */
function trackedAtWrites(
  store: MemoryStore,
  tracker: Tracker,
  which: (pool: PoolId, next: ReadonlyMap<string, unknown>) => boolean = () => true,
): UnreleasedReservation[][] {
  const seen: UnreleasedReservation[][] = [];
  const update = store.updatePool.bind(store);
  store.updatePool = async (pool, change) =>
    update(pool, async (current) => {
      const out = await change(current);
      if (out.allocations && which(pool, out.allocations)) seen.push(tracker.unsettled());
      return out;
    });
  return seen;
}

describe("reservations that could not be released", () => {
  const A = { range: "10.0.0.0/24" };

  test("an ADD tracks each reservation before claiming it and settles it once its entry is stored", async () => {
    const store = new MemoryStore();
    const tracker = new Tracker();
    const claim = store.claimReservation.bind(store);
    const trackedWhenClaimed: number[] = [];
    store.claimReservation = async (name, holder) => {
      trackedWhenClaimed.push(tracker.open.size);
      return claim(name, holder);
    };
    // .1 is another pod's: tracked, then settled at once as not ours.
    await store.claimReservation("10.0.0.1", { podref: "default/other", ifname: "net1" });
    trackedWhenClaimed.length = 0;
    expect((await allocate({ ...contextOf(store, A), reservations: tracker }, pod(1))).ips?.map((i) => i.address)).toEqual(["10.0.0.2/24"]);
    expect(trackedWhenClaimed).toEqual([1, 1]);
    expect(tracker.tracked.map((r) => r.address)).toEqual([String(ip("10.0.0.1")), String(ip("10.0.0.2"))]);
    expect(tracker.unsettled()).toEqual([]);
  });

  test("a reservation claimed by a run of the update that lost a race stays tracked when the rerun finds it held", async () => {
    const store = new MemoryStore(1);
    const tracker = new Tracker();
    const atWrites = trackedAtWrites(store, tracker);
    expect((await allocate({ ...contextOf(store, A), reservations: tracker }, pod(1))).ips?.map((i) => i.address)).toEqual(["10.0.0.1/24"]);
    expect(atWrites.at(-1)?.map((r) => r.address)).toEqual([String(ip("10.0.0.1"))]);
    expect(tracker.unsettled()).toEqual([]);
  });

  test("undoing an earlier range's entry tracks its reservation again before the entry goes", async () => {
    const store = new MemoryStore();
    const full = { range: "10.9.0.0/30" }; // .1 and .2
    await addresses(store, full, pod(8));
    await addresses(store, full, pod(9));
    const tracker = new Tracker();
    // At the undo's write: the pool of the first range, its entry "1" going.
    const atUndo = trackedAtWrites(store, tracker, (pool, next) => pool.name === "10.0.0.0-24" && !next.has("1"));
    const dual = { range: "10.0.0.0/24", ipRanges: [{ range: "10.9.0.0/30" }] };
    expect(await failure(allocate({ ...contextOf(store, dual), reservations: tracker }, pod(1)))).toMatchObject({ code: 102 });
    expect(atUndo.map((tracked) => tracked.map((r) => r.address))).toEqual([[String(ip("10.0.0.1"))]]);
    expect(tracker.unsettled()).toEqual([]);
    expect(store.reservations.has("10.0.0.1")).toBe(false);
  });

  test("releaseOrphan of a range the configuration no longer names fails, so the journal keeps it", async () => {
    const store = new MemoryStore();
    const orphan = { range: "10.77.0.0/24", address: String(ip("10.77.0.1")), holder: { podref: "default/pod-1", ifname: "net1" } };
    expect(await failure(releaseOrphan(contextOf(store, A), orphan))).toMatchObject({ code: 7 });
  });

  test("a DEL tracks the reservations before its pool write, so a kill after the write leaves them to a replay", async () => {
    const store = new MemoryStore();
    await addresses(store, A, pod(1));
    const tracker = new Tracker();
    const atWrites = trackedAtWrites(store, tracker);
    expect(await release({ ...contextOf(store, A), reservations: tracker }, "ctr-1", "net1")).toEqual(["10.0.0.1/24"]);
    expect(atWrites.at(-1)).toEqual([{ range: "10.0.0.0/24", address: String(ip("10.0.0.1")), holder: { podref: "default/pod-1", ifname: "net1" } }]);
    expect(tracker.unsettled()).toEqual([]);
    expect(store.reservations.size).toBe(0);
  });

  test("stay tracked in ctx.reservations, and releaseOrphan frees them later unless the pool gives the address to their holder", async () => {
    const store = new MemoryStore();
    const apiGone = async (): Promise<never> => {
      throw new CniError(11, "the Kubernetes API is not available");
    };
    // The API goes away after .1 was claimed: the pool write fails, and so does the release.
    const update = store.updatePool.bind(store);
    const releaseReservation = store.releaseReservation.bind(store);
    store.updatePool = async (pool, change) => {
      await update(pool, async (current) => {
        await change(current);
        return { value: undefined };
      });
      return apiGone();
    };
    store.releaseReservation = apiGone;
    const tracker = new Tracker();
    const ctx = { ...contextOf(store, A), reservations: tracker };
    expect(await failure(allocate(ctx, pod(1)))).toMatchObject({ code: 11 });
    const orphans = tracker.unsettled();
    expect(orphans).toEqual([{ range: "10.0.0.0/24", address: String(ip("10.0.0.1")), holder: { podref: "default/pod-1", ifname: "net1" } }]);
    expect(store.reservations.has("10.0.0.1")).toBe(true);

    // The API is back: released, since no pool entry gives .1 to pod-1.
    store.updatePool = update;
    store.releaseReservation = releaseReservation;
    expect(await releaseOrphan(contextOf(store, A), orphans[0]!)).toBe(true);
    expect(store.reservations.size).toBe(0);
  });

  test("a write that failed: its reservation is released by the undo, whether or not the entry was stored", async () => {
    for (const landed of [false, true]) {
      const store = new MemoryStore();
      const update = store.updatePool.bind(store);
      let calls = 0;
      // The allocation's write fails (answer lost; stored or not), the undo's works.
      store.updatePool = async (pool, change) => {
        if (++calls > 1) return update(pool, change);
        if (landed) await update(pool, change);
        else
          await update(pool, async (current) => {
            await change(current);
            return { value: undefined };
          });
        throw new CniError(11, "the Kubernetes API is not available, try again later");
      };
      expect(await failure(allocate(contextOf(store, A), pod(1)))).toMatchObject({ code: 11 });
      expect(store.allocations("10.0.0.0-24")).toEqual({});
      expect(store.reservations.size).toBe(0);
    }
  });

  test("releaseOrphan keeps a reservation the pod's retry took back", async () => {
    const store = new MemoryStore();
    expect(await addresses(store, A, pod(1))).toEqual(["10.0.0.1/24"]);
    const orphan = { range: "10.0.0.0/24", address: String(ip("10.0.0.1")), holder: { podref: "default/pod-1", ifname: "net1" } };
    expect(await releaseOrphan(contextOf(store, A), orphan)).toBe(false);
    expect(store.reservations.has("10.0.0.1")).toBe(true);
  });
});

describe("DEL", () => {
  test("releases the container's address in every range, not only up to the first without one", async () => {
    const store = new MemoryStore();
    const both = { ipRanges: [{ range: "10.0.0.0/24" }, { range: "fd00::/64" }] };
    await addresses(store, { range: "fd00::/64" }, pod(1)); // only in the second range
    expect(await release(contextOf(store, both), "ctr-1", "net1")).toEqual(["fd00::1/64"]);
    expect(store.allocations("fd00---64")).toEqual({});
  });

  test("twice is fine, and a container with nothing releases nothing", async () => {
    const store = new MemoryStore();
    await addresses(store, V4, pod(1));
    expect(await release(contextOf(store, V4), "ctr-1", "net1")).toEqual(["10.0.0.1/29"]);
    expect(await release(contextOf(store, V4), "ctr-1", "net1")).toEqual([]);
    expect(await release(contextOf(store, V4), "ctr-x", "net1")).toEqual([]);
  });

  test("only the interface asked for; an entry from before ifname existed goes on the container ID", async () => {
    const store = new MemoryStore();
    await addresses(store, V4, pod(1, "net1"));
    await addresses(store, V4, pod(1, "net2"));
    expect(await release(contextOf(store, V4), "ctr-1", "net2")).toEqual(["10.0.0.2/29"]);
    store.pools.get("10.0.0.0-29")!.allocations.set("5", { id: "legacy", podref: "default/old" });
    expect(await release(contextOf(store, V4), "legacy", "net1")).toEqual(["10.0.0.5/29"]);
  });

  test("an entry whose key names no address is still released by its container", async () => {
    const store = new MemoryStore();
    store.pools.set("10.0.0.0-29", { range: "10.0.0.0/29", allocations: new Map([["bogus", { id: "ctr-1", podref: "p", ifname: "net1" }]]) });
    expect(await release(contextOf(store, V4), "ctr-1", "net1")).toEqual(["key bogus"]);
  });
});

describe("GC", () => {
  test("releases every allocation of the network's ranges that no valid attachment names", async () => {
    const store = new MemoryStore();
    const ipam = { ipRanges: [{ range: "10.0.0.0/24" }, { range: "fd00::/64" }] };
    for (let i = 1; i <= 3; i++) await addresses(store, ipam, pod(i));
    const released = await collectGarbage(contextOf(store, ipam), [{ containerID: "ctr-2", ifname: "net1" }]);
    expect(released).toEqual(["10.0.0.1/24", "10.0.0.3/24", "fd00::1/64", "fd00::3/64"]);
    expect(Object.values(store.allocations("10.0.0.0-24")).map((a) => a.id)).toEqual(["ctr-2"]);
    expect([...store.reservations.keys()].sort()).toEqual(["10.0.0.2", "fd00--2"]);
  });

  test("another network_name's pools are not this network's", async () => {
    const store = new MemoryStore();
    await addresses(store, { ...V4, network_name: "other" }, pod(1));
    expect(await collectGarbage(contextOf(store, V4), [])).toEqual([]);
    expect(Object.keys(store.allocations("other-10.0.0.0-29"))).toEqual(["1"]);
  });
});

describe("CHECK", () => {
  test("passes when the container holds an address in every range, and prevResult lists them", async () => {
    const store = new MemoryStore();
    const ipam = { ipRanges: [{ range: "10.0.0.0/24" }, { range: "fd00::/64" }] };
    const result = await allocate(contextOf(store, ipam), pod(1));
    await check(contextOf(store, ipam), "ctr-1", "net1");
    await check(contextOf(store, ipam), "ctr-1", "net1", result);
  });

  test("fails for a missing allocation, or one prevResult does not list", async () => {
    const store = new MemoryStore();
    await allocate(contextOf(store, V4), pod(1));
    expect((await failure(check(contextOf(store, V4), "ctr-2", "net1"))).msg).toBe("container ctr-2 has no address for net1 in range 10.0.0.0/29");
    expect((await failure(check(contextOf(store, V4), "ctr-1", "net2"))).msg).toMatch(/no address for net2/);
    const wrong = { cniVersion: "1.1.0", ips: [{ address: "10.0.0.5/29" }] };
    expect((await failure(check(contextOf(store, V4), "ctr-1", "net1", wrong))).msg).toMatch(/holds 10.0.0.1\/29 for net1, which prevResult does not list/);
  });
});

describe("STATUS", () => {
  test("fine while every range has a free address; code 50 once one is full", async () => {
    const store = new MemoryStore();
    const ipam = { range: "10.0.0.0/30", gateway: "10.0.0.1" }; // .1 (the gateway) and .2
    await status(contextOf(store, ipam));
    await allocate(contextOf(store, ipam), pod(1));
    expect(await failure(status(contextOf(store, ipam)))).toEqual({ code: 50, msg: "no free IP address left in range 10.0.0.0/30 (10.0.0.1-10.0.0.2)" });
  });

  test("code 50 when the store does not answer", async () => {
    const store = new MemoryStore();
    store.ping = async () => {
      throw new Error("connection refused");
    };
    expect(await failure(status(contextOf(store, V4)))).toEqual({ code: 50, msg: "whereabouts store is not available: connection refused" });
  });
});
