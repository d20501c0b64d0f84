import { appendFileSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, test } from "vitest";
import { type JournalEntry, ReleaseJournal, ReservationLog } from "./journal.ts";
import { testLocks } from "../test-util.ts";
import type { UnreleasedReservation } from "../store/interface.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function journalWith(busy?: Set<string>): ReleaseJournal {
  const dir = mkdtempSync(join(tmpdir(), "cnit-journal-"));
  dirs.push(dir);
  return new ReleaseJournal(join(dir, "journal"), testLocks({ busy }));
}

const origin = (containerId: string) => ({ config: '{"name":"net"}', cniArgs: "K8S_POD_NAME=p", containerId, ifName: "net1" });
const reservation = (address: number): UnreleasedReservation => ({
  range: "10.0.0.0/24",
  address: String(address),
  holder: { podref: "default/p", ifname: "net1" },
});

/** Every entry nobody holds, as take() hands them out; each left in place. */
function entries(journal: ReleaseJournal): JournalEntry[] {
  const out: JournalEntry[] = [];
  for (const held of journal.take()) {
    out.push(held.entry);
    held.leave();
  }
  return out.sort((a, b) => a.path.localeCompare(b.path));
}

describe("the node's journal", () => {
  test("a reservation log that settles everything leaves no file", () => {
    const journal = journalWith();
    const log = journal.log("net", origin("a"));
    log.track(reservation(1));
    log.track(reservation(2));
    log.settle(reservation(1));
    log.settle(reservation(2));
    log.close();
    expect(readdirSync(journal.dir)).toEqual([]);
  });

  test("a log never written to creates nothing", () => {
    const journal = journalWith();
    journal.log("net", origin("a")).close();
    expect(entries(journal)).toEqual([]);
  });

  test("what a log leaves unsettled is an entry for a replay (0600), whether the process closed it or died", () => {
    const journal = journalWith();
    const closed = journal.log("net", origin("a"));
    closed.track(reservation(1));
    closed.track(reservation(2));
    closed.settle(reservation(1));
    closed.close();
    // Killed: never closed. (This test's lock is no lock, so the entry reads as a dead process's.)
    const killed = journal.log("net", origin("b"));
    killed.track(reservation(3));
    const found = entries(journal);
    expect(found.map((e) => e.kind === "reservations" && e.reservations)).toEqual([[reservation(2)], [reservation(3)]]);
    expect(found.map((e) => e.origin.containerId)).toEqual(["a", "b"]);
    for (const entry of found) expect(statSync(entry.path).mode & 0o777).toBe(0o600);
  });

  test("a line cut short by a kill is ignored: the reservation it was logging had not been claimed", () => {
    const journal = journalWith();
    const log = journal.log("net", origin("a"));
    log.track(reservation(1));
    const [entry] = entries(journal);
    appendFileSync(entry!.path, '{"track":{"range":"10.0.0.0/24","addr');
    expect(entries(journal).map((e) => e.kind === "reservations" && e.reservations)).toEqual([[reservation(1)]]);
  });

  test("entries another process holds (in flight, or being replayed) are passed over", () => {
    const journal = journalWith(new Set([".reservations"]));
    journal.log("net", origin("a")).track(reservation(1));
    journal.record("net", origin("b"));
    expect(entries(journal).map((e) => e.kind)).toEqual(["attachment"]);
  });

  test("done removes an entry, leave keeps it, and an entry neither done nor left is unlocked, not lost", () => {
    const journal = journalWith();
    journal.record("net", origin("a"));
    journal.record("net", origin("b"));
    for (const held of journal.take()) {
      if (held.entry.origin.containerId === "a") held.done();
    }
    expect(entries(journal).map((e) => e.origin.containerId)).toEqual(["b"]);
  });

  test("a DEL's release and an earlier version's reservation entry both replay; an unreadable file is left for a human", () => {
    const journal = journalWith();
    const path = journal.record("net", origin("a"));
    expect(JSON.parse(readFileSync(path, "utf8"))).toMatchObject({ ...origin("a"), recordedAt: expect.any(String) });
    writeFileSync(
      join(journal.dir, "net:b:net1:1.release.json"),
      JSON.stringify({ ...origin("b"), recordedAt: "2026-11-01T00:00:00Z", reservation: reservation(7) }),
    );
    writeFileSync(join(journal.dir, "net:c:net1.release.json"), "{not json");
    const found = entries(journal);
    expect(found.map((e) => [e.kind, e.origin.containerId])).toEqual([
      ["attachment", "a"],
      ["reservations", "b"],
    ]);
    expect(found[1]).toMatchObject({ reservations: [reservation(7)] });
    expect(readdirSync(journal.dir)).toContain("net:c:net1.release.json");
  });

  test("a log never replaces one a dead process of the same pid left, and a stale temporary file is cleared", () => {
    const journal = journalWith();
    const first = journal.log("net", origin("a"));
    first.track(reservation(1));
    const [left] = readdirSync(journal.dir);
    // The same name again: as if this pid and counter came back.
    const again = new ReservationLog(journal.dir, left!.replace(".reservations", ""), origin("a"), testLocks());
    again.track(reservation(2));
    const found = entries(journal).map((e) => e.kind === "reservations" && e.reservations.map((r) => r.address));
    expect(found.sort()).toEqual([["1"], ["2"]]);
    const stale = join(journal.dir, "net:z:net1.1-1.reservations.tmp");
    writeFileSync(stale, "half");
    const old = new Date(Date.now() - 120_000);
    utimesSync(stale, old, old);
    entries(journal);
    expect(readdirSync(journal.dir)).not.toContain("net:z:net1.1-1.reservations.tmp");
  });

  test("done removes only the entry it replayed, not one recorded again meanwhile", () => {
    const journal = journalWith();
    journal.record("net", origin("a"));
    for (const held of journal.take()) {
      journal.record("net", origin("a")); // A new DEL of the same attachment, journalled while we replayed.
      held.done();
    }
    expect(entries(journal).map((e) => e.origin.containerId)).toEqual(["a"]);
  });
});
