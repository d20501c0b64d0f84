import { describe, expect, it } from "vitest";
import { ARG_IP, ARG_MAC, K8S_ARGS, parseCniArgs } from "./args.ts";
import { thrown } from "./test-util.ts";

describe("parseCniArgs", () => {
  it("returns an empty map for an empty string", () => {
    expect(parseCniArgs("", [ARG_MAC]).size).toBe(0);
  });

  it("reads known keys; the last of a repeated key wins; values may be empty", () => {
    const args = parseCniArgs("MAC=aa:bb:cc:dd:ee:ff;IP=10.0.0.2;IP=10.0.0.3;GATEWAY=", [ARG_MAC, ARG_IP, "GATEWAY"]);
    expect([...args]).toEqual([
      ["MAC", "aa:bb:cc:dd:ee:ff"],
      ["IP", "10.0.0.3"],
      ["GATEWAY", ""],
    ]);
  });

  it("refuses unknown keys, listing the whole pairs like upstream", () => {
    expect(thrown(() => parseCniArgs("K8S_POD_NAME=x;MAC=m;FOO=bar", [ARG_MAC]))).toEqual({
      code: 7,
      msg: 'ARGS: unknown args ["K8S_POD_NAME=x" "FOO=bar"]',
      details: "",
    });
  });

  it("matches keys case-sensitively", () => {
    expect(thrown(() => parseCniArgs("mac=aa:bb:cc:dd:ee:ff", [ARG_MAC])).msg).toBe('ARGS: unknown args ["mac=aa:bb:cc:dd:ee:ff"]');
    expect(thrown(() => parseCniArgs("ignoreunknown=1;X=y", [])).msg).toBe('ARGS: unknown args ["ignoreunknown=1" "X=y"]');
  });

  it.each(["1", "true", "True", "TRUE"])("IgnoreUnknown=%s drops unknown keys, wherever it stands", (value) => {
    const before = parseCniArgs(`IgnoreUnknown=${value};K8S_POD_NAME=x;MAC=m`, [ARG_MAC]);
    expect(before.get("MAC")).toBe("m");
    expect(before.has("K8S_POD_NAME")).toBe(false);
    const after = parseCniArgs(`K8S_POD_NAME=x;MAC=m;IgnoreUnknown=${value}`, [ARG_MAC]);
    expect(after.get("MAC")).toBe("m");
  });

  it.each(["0", "false", "False", "FALSE"])("IgnoreUnknown=%s still refuses unknown keys", (value) => {
    expect(thrown(() => parseCniArgs(`IgnoreUnknown=${value};FOO=1`, [])).msg).toBe('ARGS: unknown args ["FOO=1"]');
    expect(parseCniArgs(`IgnoreUnknown=${value}`, []).get("IgnoreUnknown")).toBe(value);
  });

  it("refuses an IgnoreUnknown value upstream cannot read as a boolean", () => {
    for (const value of ["yes", "2", ""]) {
      expect(thrown(() => parseCniArgs(`IgnoreUnknown=${value};FOO=1`, []))).toEqual({
        code: 7,
        msg: `ARGS: invalid value in pair "IgnoreUnknown=${value}"`,
        details: "expected 1, 0, true or false",
      });
    }
  });

  it.each(["MAC", "MAC=a=b", "MAC=a;", ";MAC=a", "a;;b"])("refuses %j: every pair needs exactly one '='", (raw) => {
    const error = thrown(() => parseCniArgs(raw, [ARG_MAC]));
    expect(error.code).toBe(7);
    expect(error.msg).toMatch(/^ARGS: invalid pair "/);
  });

  it("names the bad pair", () => {
    expect(thrown(() => parseCniArgs("MAC=a;x", [ARG_MAC])).msg).toBe('ARGS: invalid pair "x"');
    expect(thrown(() => parseCniArgs("MAC=a;", [ARG_MAC])).msg).toBe('ARGS: invalid pair ""');
  });

  it("accepts kubelet's usual arguments when they are declared known", () => {
    const raw = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u";
    expect(parseCniArgs(raw, K8S_ARGS).get("K8S_POD_NAME")).toBe("web");
    expect(parseCniArgs(raw.replace("IgnoreUnknown=1;", ""), K8S_ARGS).size).toBe(4);
  });
});
