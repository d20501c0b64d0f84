import { describe, expect, test } from "vitest";
import { parseNetConf } from "../../shared/cni/config.ts";
import { formatIp } from "../../shared/ip.ts";
import { ipsOfInterface, loadConfig } from "./config.ts";

function load(extra: Record<string, unknown>) {
  return loadConfig(parseNetConf(JSON.stringify({ cniVersion: "1.0.0", name: "n", type: "sbr", ...extra })));
}

describe("sbr config", () => {
  test("defaults: no table, no static gateways, no source hints", () => {
    const config = load({});
    expect(config.table).toBeUndefined();
    expect(config.gateways.size).toBe(0);
    expect(config.addSourceHints).toBe(false);
  });

  test("table, one gateway per family, addSourceHints", () => {
    const config = load({ table: 500, gateways: ["10.0.0.1", "fd00::1"], addSourceHints: true });
    expect(config.table).toBe(500);
    expect(formatIp(config.gateways.get(4)!)).toBe("10.0.0.1");
    expect(formatIp(config.gateways.get(6)!)).toBe("fd00::1");
    expect(config.addSourceHints).toBe(true);
  });

  test.each([
    [{ gateways: ["10.0.0.1", "fd00::1", "10.0.0.2"] }, "gateways list cannot contain more than 2 entries (one IPv4, one IPv6)"],
    [{ gateways: ["10.0.0.1", "10.0.0.2"] }, "gateways list contains multiple IPv4 addresses: 10.0.0.1 and 10.0.0.2"],
    [{ gateways: ["fd00::1", "fd00::2"] }, "gateways list contains multiple IPv6 addresses: fd00::1 and fd00::2"],
    [{ gateways: ["10.0.0.300"] }, "invalid static gateway IP address: 10.0.0.300"],
    [{ table: 0 }, /table/],
    [{ table: "100" }, /table/],
  ])("%j is refused", (extra, message) => {
    expect(() => load(extra)).toThrow(message);
  });
});

describe("which addresses belong to the interface", () => {
  const interfaces = [{ name: "net1" }, { name: "net2" }];
  test("its own, those without an index, and those with an index prevResult lacks", () => {
    const ips = [
      { address: "10.0.0.1/24", interface: 0 },
      { address: "10.0.1.1/24", interface: 1 },
      { address: "10.0.2.1/24" },
      { address: "10.0.3.1/24", interface: 7 },
    ];
    expect(ipsOfInterface("net1", ips, interfaces).map((ip) => ip.address)).toEqual(["10.0.0.1/24", "10.0.2.1/24", "10.0.3.1/24"]);
  });
});
