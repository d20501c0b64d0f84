import { describe, expect, test } from "vitest";
import { parseNetConf } from "../../shared/cni/config.ts";
import { CniError } from "../../shared/cni/errors.ts";
import { loadConfig } from "./config.ts";

function load(extra: Record<string, unknown>, cniArgs = "") {
  return loadConfig(parseNetConf(JSON.stringify({ cniVersion: "1.0.0", name: "n", type: "macvlan", ...extra })), cniArgs);
}

function codeOf(work: () => unknown): number | undefined {
  try {
    work();
  } catch (err) {
    return err instanceof CniError ? err.code : -1;
  }
  return undefined;
}

describe("macvlan config", () => {
  test("defaults: bridge, inherit MTU, default-route master, no IPAM", () => {
    expect(load({})).toEqual({ mode: "bridge", mtu: 0, linkInContainer: false, hasIpam: false });
  });

  test("every key", () => {
    const config = load({
      master: "ens224",
      mode: "passthru",
      mtu: 9000,
      linkInContainer: true,
      bcqueuelen: 100,
      mac: "02:00:00:00:00:0A",
      ipam: { type: "whereabouts" },
    });
    expect(config).toEqual({
      master: "ens224",
      mode: "passthru",
      mtu: 9000,
      linkInContainer: true,
      bcQueueLen: 100,
      mac: "02:00:00:00:00:0a",
      hasIpam: true,
    });
  });

  test("an empty ipam section means no IPAM, as upstream", () => {
    expect(load({ ipam: {} }).hasIpam).toBe(false);
  });

  test("bcqueuelen 0 keeps the kernel's default", () => {
    expect(load({ bcqueuelen: 0 }).bcQueueLen).toBeUndefined();
  });

  test("MAC precedence: config < CNI_ARGS MAC= < runtimeConfig.mac", () => {
    expect(load({ mac: "02:00:00:00:00:01" }).mac).toBe("02:00:00:00:00:01");
    expect(load({ mac: "02:00:00:00:00:01" }, "MAC=02:00:00:00:00:02").mac).toBe("02:00:00:00:00:02");
    expect(load({ mac: "02:00:00:00:00:01", runtimeConfig: { mac: "02:00:00:00:00:03" } }, "MAC=02:00:00:00:00:02").mac).toBe("02:00:00:00:00:03");
  });

  test("bad values are code 7 naming the key", () => {
    expect(codeOf(() => load({ mode: "source" }))).toBe(7);
    expect(codeOf(() => load({ mtu: -1 }))).toBe(7);
    expect(codeOf(() => load({ mtu: "1500" }))).toBe(7);
    expect(codeOf(() => load({ mac: "not-a-mac" }))).toBe(7);
    expect(codeOf(() => load({ linkInContainer: "yes" }))).toBe(7);
    expect(() => load({ mode: "source" })).toThrow(/source/);
  });

  test("CNI_ARGS: unknown keys need IgnoreUnknown, as upstream", () => {
    expect(codeOf(() => load({}, "K8S_POD_NAME=web"))).toBe(7);
    expect(load({}, "IgnoreUnknown=1;K8S_POD_NAME=web;MAC=02:00:00:00:00:07").mac).toBe("02:00:00:00:00:07");
  });
});
