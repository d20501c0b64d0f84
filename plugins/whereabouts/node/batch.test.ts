import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, test } from "vitest";
import { testLocks } from "../test-util.ts";
import { type BatchOutcome, type BatchRequester, FileNodeBatch } from "./batch.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function lockDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "cnit-batch-"));
  dirs.push(dir);
  return dir;
}

const pod = (n: number): BatchRequester => ({ containerId: `ctr-${n}`, ifName: "net1", podRef: `default/pod-${n}` });
const given = (n: number): BatchOutcome => ({ address: String(n), key: String(n), created: true });
const queue = (dir: string) => join(dir, "pool.queue");

/** Another ADD's request as its process leaves it in the queue, under some name of its own. */
function enqueue(dir: string, name: string, pid: number, fingerprint: string, who: BatchRequester): void {
  writeFileSync(join(queue(dir), `${name}.request`), JSON.stringify({ pid, fingerprint, who }));
}

const PIDS_ALIVE = new Set([101, 102, 103]);
const alive = (pid: number) => PIDS_ALIVE.has(pid);

/** A node batch whose lock, once taken, finds these requests queued by other ADDs meanwhile. */
function batchFinding(dir: string, queued: Parameters<typeof enqueue>[], onRelease = () => {}): FileNodeBatch {
  return new FileNodeBatch(
    dir,
    testLocks({
      onHold: () => {
        for (const request of queued) enqueue(...request);
      },
      onRelease,
    }),
    { alive },
  );
}

describe("a node's ADDs of one pool, served together", () => {
  test("alone: the ADD leads a batch of one and leaves nothing behind", async () => {
    const dir = lockDir();
    const locked: string[] = [];
    let led = 0;
    const batch = new FileNodeBatch(dir, testLocks({ onHold: (path) => locked.push(path) }), { alive, onTurn: () => void led++ });
    const leads: BatchRequester[][] = [];
    const outcome = await batch.run("pool", "fp", pod(1), async (requesters) => {
      leads.push(requesters);
      return [given(1)];
    });
    expect(outcome).toEqual(given(1));
    expect(leads).toEqual([[pod(1)]]);
    expect(locked).toEqual([join(dir, "pool.batch.lock")]);
    expect(led).toBe(1);
    expect(readdirSync(queue(dir))).toEqual([]);
  });

  test("the leader serves every live request of the same fingerprint and answers each (0600)", async () => {
    const dir = lockDir();
    // Queued while we waited for the lock.
    const batch = batchFinding(dir, [
      [dir, "b", 101, "fp", pod(2)],
      [dir, "c", 102, "fp", pod(3)],
    ]);
    let served: BatchRequester[] = [];
    const outcome = await batch.run("pool", "fp", pod(1), async (requesters) => {
      served = requesters;
      return requesters.map((_, n) => given(n + 1));
    });
    expect(outcome).toEqual(given(1));
    expect(served[0]).toEqual(pod(1));
    expect(served.slice(1).sort((a, b) => a.podRef.localeCompare(b.podRef))).toEqual([pod(2), pod(3)]);
    const answers = Object.fromEntries(readdirSync(queue(dir)).map((file) => [file, JSON.parse(readFileSync(join(queue(dir), file), "utf8"))]));
    expect(Object.keys(answers).sort()).toEqual(["b.answer", "c.answer"]);
    expect([answers["b.answer"], answers["c.answer"]]).toEqual(served.slice(1).map((who) => given(Number(who.containerId.slice(4)))));
    expect(statSync(join(queue(dir), "b.answer")).mode & 0o777).toBe(0o600);
  });

  test("a dead process's request is dropped, not served; another fingerprint's is left for its own ADD", async () => {
    const dir = lockDir();
    const batch = batchFinding(dir, [
      [dir, "dead", 999, "fp", pod(2)],
      [dir, "other", 103, "other-range", pod(3)],
    ]);
    let served: BatchRequester[] = [];
    await batch.run("pool", "fp", pod(1), async (requesters) => {
      served = requesters;
      return requesters.map((_, n) => given(n));
    });
    expect(served).toEqual([pod(1)]);
    expect(readdirSync(queue(dir))).toEqual(["other.request"]);
  });

  test("a request that does not read back as one is dropped, not served", async () => {
    const dir = lockDir();
    const onHold = () => {
      writeFileSync(join(queue(dir), "torn.request"), '{"pid":101,"finger');
      writeFileSync(join(queue(dir), "odd.request"), JSON.stringify({ pid: "101", fingerprint: "fp", who: { podRef: "default/pod-2" } }));
    };
    const batch = new FileNodeBatch(dir, testLocks({ onHold }), { alive });
    let served: BatchRequester[] = [];
    await batch.run("pool", "fp", pod(1), async (requesters) => {
      served = requesters;
      return requesters.map((_, n) => given(n));
    });
    expect(served).toEqual([pod(1)]);
    expect(readdirSync(queue(dir))).toEqual([]);
  });

  test("an answer that does not read back as one is code 5, and gone", async () => {
    const dir = lockDir();
    const onHold = () => writeFileSync(join(queue(dir), "ctr-1:net1.answer"), JSON.stringify({ address: 7 }));
    const batch = new FileNodeBatch(dir, testLocks({ onHold }), { alive });
    await expect(batch.run("pool", "fp", pod(1), async () => [given(1)])).rejects.toMatchObject({ code: 5 });
    expect(readdirSync(queue(dir))).toEqual([]);
  });

  test("an ADD served while it waited takes its answer and leads nothing", async () => {
    const dir = lockDir();
    // The lock comes back after another leader answered every request in the queue.
    const onHold = () => {
      for (const file of readdirSync(queue(dir))) {
        writeFileSync(join(queue(dir), file.replace(".request", ".answer")), JSON.stringify(given(7)));
        rmSync(join(queue(dir), file));
      }
    };
    const batch = new FileNodeBatch(dir, testLocks({ onHold }), { alive });
    const outcome = await batch.run("pool", "fp", pod(1), async () => {
      throw new Error("must not lead");
    });
    expect(outcome).toEqual(given(7));
    expect(readdirSync(queue(dir))).toEqual([]);
  });

  test("a second sandbox of the same pod and interface waits for the next batch", async () => {
    const dir = lockDir();
    const batch = batchFinding(dir, [
      [dir, "again", 101, "fp", { ...pod(1), containerId: "ctr-1-new" }],
      [dir, "other", 102, "fp", pod(2)],
    ]);
    let served: BatchRequester[] = [];
    await batch.run("pool", "fp", pod(1), async (requesters) => {
      served = requesters;
      return requesters.map((_, n) => given(n));
    });
    expect(served).toEqual([pod(1), pod(2)]);
    expect(readdirSync(queue(dir)).sort()).toEqual(["again.request", "other.answer"]);
  });

  test("a leader whose lead throws answers no one: the others' requests stay for them to lead", async () => {
    const dir = lockDir();
    let released = 0;
    const batch = batchFinding(dir, [[dir, "b", 101, "fp", pod(2)]], () => void released++);
    await expect(batch.run("pool", "fp", pod(1), async () => Promise.reject(new Error("API down")))).rejects.toThrow("API down");
    expect(readdirSync(queue(dir))).toEqual(["b.request"]);
    expect(released).toBe(1);
  });

  test("requesters the leader had no time to serve get no answer and stay queued", async () => {
    const dir = lockDir();
    const batch = batchFinding(dir, [
      [dir, "b", 101, "fp", pod(2)],
      [dir, "c", 102, "fp", pod(3)],
    ]);
    let served: BatchRequester[] = [];
    await batch.run("pool", "fp", pod(1), async (requesters) => {
      served = requesters;
      return [given(1), given(2)];
    });
    const answered = served[1]!.containerId === "ctr-2" ? "b" : "c";
    const left = answered === "b" ? "c" : "b";
    expect(readdirSync(queue(dir)).sort()).toEqual([`${answered}.answer`, `${left}.request`].sort());
  });

  test("alone: a torn-down sandbox's request and answer are withdrawn before the work, between batches", async () => {
    const dir = lockDir();
    const locked: string[] = [];
    let turns = 0;
    const batch = new FileNodeBatch(dir, testLocks({ onHold: (path) => locked.push(path) }), { alive, onTurn: () => void turns++ });
    await batch.run("pool", "fp", pod(9), async () => [given(9)]);
    enqueue(dir, "ctr-2:net1", 101, "fp", pod(2));
    writeFileSync(join(queue(dir), "ctr-2:net1.answer"), JSON.stringify(given(2)));
    enqueue(dir, "ctr-3:net1", 102, "fp", pod(3));
    let seen: string[] = [];
    const work = async () => {
      seen = readdirSync(queue(dir));
      return "released";
    };
    expect(await batch.alone("pool", pod(2), work)).toBe("released");
    expect(seen.sort()).toEqual(["ctr-2:net1.withdrawn", "ctr-3:net1.request"]);
    expect(locked).toEqual([join(dir, "pool.batch.lock"), join(dir, "pool.batch.lock")]);
    expect(turns).toBe(2);
  });

  test("an ADD that started before its sandbox was torn down allocates nothing; one that started after (the same container ID again) does", async () => {
    const dir = lockDir();
    const early = new FileNodeBatch(dir, testLocks(), { alive, startedAt: Date.now() - 60_000 });
    await early.alone("pool", pod(1), async () => "released");
    let led = 0;
    const lead = async () => (led++, [given(1)]);
    await expect(early.run("pool", "fp", pod(1), lead)).rejects.toThrow("container ctr-1 net1 was torn down (DEL) while its ADD waited; nothing allocated");
    expect(led).toBe(0);
    expect(readdirSync(queue(dir))).toEqual(["ctr-1:net1.withdrawn"]);
    const later = new FileNodeBatch(dir, testLocks(), { alive, startedAt: Date.now() + 1000 });
    expect(await later.run("pool", "fp", pod(1), lead)).toEqual(given(1));
    expect(led).toBe(1);
  });
});
