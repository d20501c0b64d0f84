import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { createLogger } from "../log.ts";

const dir = mkdtempSync(join(tmpdir(), "log-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const LINE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (debug|info|error) [\w-]+: .*\n$/;

function captured(level?: "debug" | "info" | "error") {
  const lines: string[] = [];
  const log = createLogger({ level, sink: (line) => lines.push(line) }, "macvlan");
  return { log, lines };
}

describe("createLogger", () => {
  it("writes one timestamped line per message", () => {
    const { log, lines } = captured();
    log.info("created link net1");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(LINE);
    expect(lines[0]).toMatch(/ info macvlan: created link net1\n$/);
  });

  it("keeps a multi-line message on one line", () => {
    const { log, lines } = captured();
    log.error("first\nsecond\r\nthird");
    expect(lines[0]).toMatch(/ error macvlan: first\\nsecond\\nthird\n$/);
  });

  it("drops messages below the level, info by default", () => {
    const byDefault = captured();
    byDefault.log.debug("hidden");
    byDefault.log.info("shown");
    byDefault.log.error("shown");
    expect(byDefault.lines).toHaveLength(2);

    const errorsOnly = captured("error");
    errorsOnly.log.info("hidden");
    errorsOnly.log.error("shown");
    expect(errorsOnly.lines.map((line) => line.split(" ")[1])).toEqual(["error"]);

    const everything = captured("debug");
    everything.log.debug("shown");
    expect(everything.lines[0]).toMatch(/ debug macvlan: shown\n$/);
  });

  it("appends to a file created with mode 0600", () => {
    const file = join(dir, "plugin.log");
    createLogger({ file }, "sbr").info("one");
    createLogger({ file }, "sbr").error("two");
    const lines = readFileSync(file, "utf8").split(/(?<=\n)/);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/ info sbr: one\n$/);
    expect(lines[1]).toMatch(/ error sbr: two\n$/);
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });

  it("falls back to stderr when the file cannot be opened", () => {
    const log = createLogger({ file: join(dir, "no-such-dir", "plugin.log"), level: "error" }, "sbr");
    expect(() => log.debug("not written anywhere")).not.toThrow();
  });
});
