import { describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { CniError, ErrorCode } from "./cni/errors.ts";
import { errnoName, errnoOf, messageOf } from "./errors.ts";

describe("messageOf", () => {
  it("takes an Error's message and the text of anything else", () => {
    expect(messageOf(new Error("boom"))).toBe("boom");
    expect(messageOf("plain")).toBe("plain");
    expect(messageOf(42)).toBe("42");
  });
});

describe("errnoOf", () => {
  it("reads Node's string code", () => {
    let thrown: unknown;
    try {
      readFileSync("/nonexistent/cni-errors-test");
    } catch (err) {
      thrown = err;
    }
    expect(errnoOf(thrown)).toBe("ENOENT");
  });

  it("names a positive numeric errno when the code is not a string", () => {
    // The shape of NetlinkError: a CniError (numeric CNI code) carrying the kernel's errno.
    const err = Object.assign(new CniError(ErrorCode.Kernel, "file exists"), { errno: 17 });
    expect(errnoOf(err)).toBe("EEXIST");
  });

  it("gives undefined for codes that are no errno and for non-errors", () => {
    expect(errnoOf(Object.assign(new Error("x"), { code: "ERR_INVALID_ARG_TYPE" }))).toBeUndefined();
    expect(errnoOf(new CniError(ErrorCode.Internal, "x"))).toBeUndefined();
    expect(errnoOf({ code: "ENOENT" })).toBeUndefined();
  });
});

describe("errnoName", () => {
  it("names known numbers only", () => {
    expect(errnoName(2)).toBe("ENOENT");
    expect(errnoName(100000)).toBeUndefined();
    expect(errnoOf(Object.assign(new CniError(ErrorCode.Kernel, "x"), { errno: 100000 }))).toBe("errno 100000");
  });
});
