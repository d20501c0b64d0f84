import { describe, expect, test } from "vitest";
import {
  broadcastOf,
  formatIp,
  formatMac,
  formatPrefix,
  ipFromBytes,
  ipToBytes,
  networkOf,
  parseIp,
  parseMac,
  parsePrefix,
  prefixContains,
  sameIp,
  tryParseIp,
  tryParsePrefix,
} from "./ip.ts";

describe("IP parsing", () => {
  test("accepts dotted quads and IPv6, rejects shorthands and junk", () => {
    expect(formatIp(parseIp("10.1.2.3"))).toBe("10.1.2.3");
    expect(formatIp(parseIp("2001:DB8:0:0::1"))).toBe("2001:db8::1");
    for (const bad of ["10.1", "0x0a.0.0.1", "1.2.3.4.5", "256.1.1.1", "", "fe80::1%eth0x", "a:b"]) {
      expect(tryParseIp(bad), bad).toBeUndefined();
    }
    expect(() => parseIp("nope")).toThrow('invalid IP address "nope"');
  });

  test("prefixes keep host bits and validate the length per family", () => {
    const p = parsePrefix("10.1.2.3/24");
    expect(p.family).toBe(4);
    expect(formatPrefix(p)).toBe("10.1.2.3/24");
    expect(formatPrefix(networkOf(p))).toBe("10.1.2.0/24");
    expect(formatPrefix(networkOf(parsePrefix("2001:db8::ffff/64")))).toBe("2001:db8::/64");
    expect(tryParsePrefix("10.0.0.0/33")).toBeUndefined();
    expect(tryParsePrefix("::/129")).toBeUndefined();
    expect(tryParsePrefix("10.0.0.0")).toBeUndefined();
    expect(tryParsePrefix("10.0.0.0/x")).toBeUndefined();
    expect(formatPrefix(parsePrefix("::/0"))).toBe("::/0");
  });

  test("containment, equality and broadcast", () => {
    const net = parsePrefix("192.168.2.224/28");
    expect(prefixContains(net, parseIp("192.168.2.239"))).toBe(true);
    expect(prefixContains(net, parseIp("192.168.2.240"))).toBe(false);
    expect(prefixContains(net, parseIp("::1"))).toBe(false);
    expect(formatIp(broadcastOf(net))).toBe("192.168.2.239");
    expect(sameIp(parseIp("2001:db8::1"), parseIp("2001:0db8:0::0:1"))).toBe(true);
    expect(sameIp(parseIp("0.0.0.1"), parseIp("::1"))).toBe(false);
  });

  test("byte forms round-trip", () => {
    for (const text of ["10.0.0.1", "fd00::1:2", "::"]) {
      const bytes = ipToBytes(parseIp(text));
      expect(bytes.length).toBe(text.includes(":") ? 16 : 4);
      expect(formatIp(ipFromBytes(bytes))).toBe(text);
    }
  });

  test("MAC addresses", () => {
    expect(formatMac(parseMac("02:AA:bb:cc:dd:0e")!)).toBe("02:aa:bb:cc:dd:0e");
    expect(formatMac(parseMac("02-aa-bb-cc-dd-0e")!)).toBe("02:aa:bb:cc:dd:0e");
    expect(parseMac("02:aa:bb:cc:dd")).toBeUndefined();
    expect(parseMac("zz:aa:bb:cc:dd:ee")).toBeUndefined();
  });
});
