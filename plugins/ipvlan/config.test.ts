import { describe, expect, test } from "vitest";
import { parseNetConf } from "../../shared/cni/config.ts";
import { CniError } from "../../shared/cni/errors.ts";
import { loadConfig } from "./config.ts";

function load(extra: Record<string, unknown>) {
  return loadConfig(parseNetConf(JSON.stringify({ cniVersion: "1.0.0", name: "n", type: "ipvlan", ...extra })));
}

describe("ipvlan config", () => {
  test("defaults: l2, bridge flag, inherit MTU", () => {
    expect(load({})).toEqual({ mode: "l2", flag: "bridge", mtu: 0, linkInContainer: false, hasIpam: false });
  });

  test("every mode and flag", () => {
    for (const mode of ["l2", "l3", "l3s"]) expect(load({ mode }).mode).toBe(mode);
    for (const flag of ["bridge", "private", "vepa"]) expect(load({ flag }).flag).toBe(flag);
  });

  test("unknown mode or flag is code 7 naming the value", () => {
    for (const extra of [{ mode: "l4" }, { flag: "isolated" }]) {
      let caught: unknown;
      try {
        load(extra);
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(CniError);
      expect((caught as CniError).code).toBe(7);
      expect((caught as CniError).message).toContain(Object.values(extra)[0]);
    }
  });
});
