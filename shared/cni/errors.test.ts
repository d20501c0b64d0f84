import { describe, expect, it } from "vitest";
import { CniError, asCniError, quoteList } from "./errors.ts";

describe("CniError.toJSON", () => {
  it("is the spec's error object, details included when set", () => {
    const error = new CniError(7, "invalid config", "mtu too large");
    expect(error.toJSON("1.0.0")).toEqual({ cniVersion: "1.0.0", code: 7, msg: "invalid config", details: "mtu too large" });
    expect(Object.keys(error.toJSON("1.0.0"))).toEqual(["cniVersion", "code", "msg", "details"]);
  });

  it("omits empty details", () => {
    expect(JSON.stringify(new CniError(4, "bad env").toJSON("1.1.0"))).toBe('{"cniVersion":"1.1.0","code":4,"msg":"bad env"}');
  });
});

describe("asCniError", () => {
  it("keeps a CniError as is", () => {
    const error = new CniError(101, "delegate failed", "why");
    expect(asCniError(error)).toBe(error);
  });

  it("turns other errors and thrown values into code 999", () => {
    expect(asCniError(new TypeError("boom")).toJSON("1.1.0")).toEqual({ cniVersion: "1.1.0", code: 999, msg: "boom" });
    expect(asCniError("text").message).toBe("text");
    expect(asCniError(undefined).code).toBe(999);
  });
});

describe("quoteList", () => {
  it("formats like Go's %q of a string slice", () => {
    expect(quoteList(["0.3.0", 'a"b'])).toBe('["0.3.0" "a\\"b"]');
    expect(quoteList([])).toBe("[]");
  });
});
