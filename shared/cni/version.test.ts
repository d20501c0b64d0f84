import { describe, expect, it } from "vitest";
import { thrown } from "./test-util.ts";
import type { Verb } from "./types.ts";
import { LATEST, SUPPORTED_VERSIONS, checkConfigVersion, compareVersions, versionOutput } from "./version.ts";

const SUPPORTS = 'plugin supports ["0.3.0" "0.3.1" "0.4.0" "1.0.0" "1.1.0"]';

describe("compareVersions", () => {
  it("orders numerically, part by part", () => {
    expect(compareVersions("0.3.1", "0.4.0")).toBeLessThan(0);
    expect(compareVersions("1.10.0", "1.9.0")).toBeGreaterThan(0);
    expect(compareVersions("1.1.0", "1.1.0")).toBe(0);
  });

  it("fills missing parts with zero and reads empty as 0.1.0", () => {
    expect(compareVersions("1", "1.0.0")).toBe(0);
    expect(compareVersions("1.1", "1.1.0")).toBe(0);
    expect(compareVersions("", "0.1.0")).toBe(0);
  });

  it.each(["a.b", "1.2.3.4", "1..2", "v1.0.0", "-1", "1.0.0-rc1"])("throws code 6 for %j", (bad) => {
    const error = thrown(() => compareVersions(bad, "1.0.0"));
    expect(error.code).toBe(6);
    expect(error.msg).toContain(JSON.stringify(bad));
  });
});

describe("checkConfigVersion", () => {
  it.each(SUPPORTED_VERSIONS)("ADD and DEL accept %s", (version) => {
    expect(() => checkConfigVersion("ADD", version)).not.toThrow();
    expect(() => checkConfigVersion("DEL", version)).not.toThrow();
  });

  it.each(["ADD", "DEL"] as Verb[])("%s wants an exact supported version", (verb) => {
    expect(thrown(() => checkConfigVersion(verb, "9.9.9"))).toEqual({
      code: 1,
      msg: "incompatible CNI versions",
      details: `config is "9.9.9", ${SUPPORTS}`,
    });
    expect(thrown(() => checkConfigVersion(verb, "1.0")).details).toBe(`config is "1.0", ${SUPPORTS}`);
    expect(thrown(() => checkConfigVersion(verb, "0.2.0")).code).toBe(1);
    // Unparsable strings are simply not in the list for ADD/DEL.
    expect(thrown(() => checkConfigVersion(verb, "abc")).code).toBe(1);
  });

  it("reads a missing cniVersion as 0.1.0, which is unsupported", () => {
    expect(thrown(() => checkConfigVersion("ADD", ""))).toEqual({
      code: 1,
      msg: "incompatible CNI versions",
      details: `config is "0.1.0", ${SUPPORTS}`,
    });
  });

  it("CHECK needs 0.4.0 or later", () => {
    expect(thrown(() => checkConfigVersion("CHECK", "0.3.1"))).toEqual({
      code: 1,
      msg: "config version does not allow CHECK",
      details: "",
    });
    expect(thrown(() => checkConfigVersion("CHECK", "")).msg).toBe("config version does not allow CHECK");
    expect(() => checkConfigVersion("CHECK", "0.4.0")).not.toThrow();
    expect(() => checkConfigVersion("CHECK", "1.1.0")).not.toThrow();
  });

  it("CHECK refuses versions above every supported one, then applies the exact match", () => {
    expect(thrown(() => checkConfigVersion("CHECK", "1.2.0")).msg).toBe("plugin version does not allow CHECK");
    expect(thrown(() => checkConfigVersion("CHECK", "1.0")).msg).toBe("incompatible CNI versions");
    expect(thrown(() => checkConfigVersion("CHECK", "0.4.5")).msg).toBe("incompatible CNI versions");
  });

  it("CHECK reports an unparsable version as code 6", () => {
    expect(thrown(() => checkConfigVersion("CHECK", "a.b")).code).toBe(6);
  });

  it.each(["GC", "STATUS"] as Verb[])("%s needs 1.1.0", (verb) => {
    expect(thrown(() => checkConfigVersion(verb, "1.0.0"))).toEqual({
      code: 1,
      msg: `config version does not allow ${verb}`,
      details: "",
    });
    expect(thrown(() => checkConfigVersion(verb, "2.0.0")).msg).toBe(`plugin version does not allow ${verb}`);
    expect(thrown(() => checkConfigVersion(verb, "1.1")).msg).toBe("incompatible CNI versions");
    expect(() => checkConfigVersion(verb, "1.1.0")).not.toThrow();
  });

  it("VERSION accepts anything", () => {
    expect(() => checkConfigVersion("VERSION", "")).not.toThrow();
    expect(() => checkConfigVersion("VERSION", "garbage")).not.toThrow();
  });
});

describe("versionOutput", () => {
  it("lists what we support", () => {
    expect(JSON.stringify(versionOutput())).toBe('{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}');
    expect(LATEST).toBe("1.1.0");
  });
});
