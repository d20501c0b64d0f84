import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, test } from "vitest";
import { testLocks } from "../test-util.ts";
import { type Attached, AttachmentLedger } from "./ledger.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function ledgerWith(busy?: Set<string>): AttachmentLedger {
  const dir = mkdtempSync(join(tmpdir(), "cnit-ledger-"));
  dirs.push(dir);
  return new AttachmentLedger(join(dir, "attachments"), testLocks({ busy }));
}

const net = (containerId: string, network = "net"): Attached => ({ network, containerId, ifName: "net1" });

async function collected(ledger: AttachmentLedger, network: string, valid: string[]): Promise<string[]> {
  const released: string[] = [];
  await ledger.collect(
    network,
    (a) => !valid.includes(a.containerId),
    async (a) => void released.push(a.containerId),
  );
  return released.sort();
}

describe("the node's ledger of attachments, for GC", () => {
  test("GC releases and forgets the network's recorded attachments the runtime does not list (files 0600)", async () => {
    const ledger = ledgerWith();
    for (const id of ["a", "b", "c"]) ledger.record(net(id))();
    ledger.record(net("x", "other"))();
    expect(statSync(join(ledger.dir, "net:a:net1.attachment.json")).mode & 0o777).toBe(0o600);
    expect(await collected(ledger, "net", ["b"])).toEqual(["a", "c"]);
    expect(readdirSync(ledger.dir).sort()).toEqual(["net:b:net1.attachment.json", "other:x:net1.attachment.json"]);
  });

  test("DEL forgets; forgetting twice, or what was never recorded, is fine", () => {
    const ledger = ledgerWith();
    ledger.record(net("a"))();
    ledger.forget(net("a"));
    ledger.forget(net("a"));
    ledger.forget(net("never"));
    expect(readdirSync(ledger.dir)).toEqual([]);
  });

  test("an attachment whose ADD still runs (its entry locked), or whose entry is torn or not an attachment's, is not garbage", async () => {
    const ledger = ledgerWith(new Set(["net:busy:net1.attachment.json"]));
    ledger.record(net("busy"))();
    ledger.record(net("done"))();
    writeFileSync(join(ledger.dir, "net:torn:net1.attachment.json"), '{"network":"net","contai');
    writeFileSync(join(ledger.dir, "net:odd:net1.attachment.json"), JSON.stringify({ network: "net", containerId: 7, ifName: "net1" }));
    expect(await collected(ledger, "net", [])).toEqual(["done"]);
    expect(readdirSync(ledger.dir).sort()).toEqual(["net:busy:net1.attachment.json", "net:odd:net1.attachment.json", "net:torn:net1.attachment.json"]);
  });

  test("a release that fails keeps the entry for the next GC", async () => {
    const ledger = ledgerWith();
    ledger.record(net("a"))();
    await expect(
      ledger.collect(
        "net",
        () => true,
        async () => Promise.reject(new Error("API away")),
      ),
    ).rejects.toThrow("API away");
    expect(readdirSync(ledger.dir)).toEqual(["net:a:net1.attachment.json"]);
  });
});
