import { describe, expect, test } from "vitest";
import { allocationKey, offsetOfKey, poolName, reservationName } from "./names.ts";
import { parseAddress, parseRange } from "./range.ts";

const address = (text: string) => parseAddress(text)!;
const cidrOf = (text: string) => parseRange({ range: text, exclude: [], label: "r" }).cidr;

// Every example below is upstream's own (`pkg/storage/kubernetes/ipam.go`, `pkg/iphelpers/iphelpers.go` and their tests).
describe("IPPool names", () => {
  test.each([
    ["10.0.0.0/8", "", "10.0.0.0-8"],
    ["10.0.0.0/8", "test", "test-10.0.0.0-8"],
    ["2001:db8::/64", "", "2001-db8---64"],
    ["fd00:0:0:10::/64", "", "fd00-0-0-10---64"],
    ["caa5::/64", "", "caa5---64"],
    ["192.168.2.225/28", "", "192.168.2.224-28"],
  ])("%s with network_name %j → %s", (range, networkName, expected) => {
    expect(poolName(cidrOf(range), networkName)).toBe(expected);
  });

  test("the range is written in Go's canonical text first", () => {
    expect(cidrOf("2001:0DB8:0000::/64")).toBe("2001:db8::/64");
    expect(cidrOf("fd00:0000:0000:0010:0000:0000:0000:0000/64")).toBe("fd00:0:0:10::/64");
  });
});

describe("OverlappingRangeIPReservation names", () => {
  test.each([
    ["10.0.0.5", "", "10.0.0.5"],
    ["fd00::5", "", "fd00--5"],
    ["2001:db9::", "", "2001-db9--0"],
    ["10.0.0.5", "net-a", "net-a-10.0.0.5"],
    ["fd00:0:0:0:0:0:0:5", "net-a", "net-a-fd00--5"],
  ])("%s with network_name %j → %s", (ip, networkName, expected) => {
    expect(reservationName(address(ip), networkName)).toBe(expected);
  });
});

describe("allocation keys", () => {
  test("the offset from the range's address: 192.168.2.224/28, key 1 = .225", () => {
    expect(allocationKey(address("192.168.2.225").value, address("192.168.2.224").value)).toBe("1");
    expect(offsetOfKey("1")).toBe(1n);
  });

  test("IPv6 offsets keep all their bits: the upper half of a /64 is readable", () => {
    const base = address("fd00::").value;
    const upper = address("fd00::8000:0:0:5").value;
    expect(allocationKey(upper, base)).toBe("9223372036854775813"); // 2^63 + 5: upstream writes this, then cannot read it
    expect(offsetOfKey("9223372036854775813")).toBe(upper - base);
    expect(offsetOfKey("18446744073709551614")).toBe(2n ** 64n - 2n); // the last usable of a /64
  });

  test.each(["", "-1", "1.5", "0x10", "abc", " 1"])("%j names no offset", (key) => {
    expect(offsetOfKey(key)).toBeUndefined();
  });
});
