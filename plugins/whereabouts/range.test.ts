import { describe, expect, test } from "vitest";
import { thrown } from "../../shared/cni/test-util.ts";
import { type RangeSpec, formatAddress, parseAddress, parseRange } from "./range.ts";

const v6 = (text: string): bigint => parseAddress(text)!.value;
const v4 = v6;
const text = (family: 4 | 6, value: bigint): string => formatAddress({ family, value });

function range(spec: Partial<RangeSpec> & { range: string }) {
  return parseRange({ exclude: [], label: "ipam.range", ...spec });
}

function bounds(spec: Partial<RangeSpec> & { range: string }): [string, string, string] {
  const r = range(spec);
  return [r.cidr, text(r.family, r.first), text(r.family, r.last)];
}

describe("addresses", () => {
  test("IPv4 with leading zeros reads as decimal, as upstream's range parser does", () => {
    expect(parseAddress("00192.00168.1.5")).toEqual({ family: 4, value: v4("192.168.1.5") });
    expect(parseAddress("010.0.0.1")).toEqual({ family: 4, value: v4("10.0.0.1") });
  });

  test.each([
    "256.0.0.1",
    "10.0.0",
    "10.0.0.1/24",
    "",
    "fd00::1%eth0",
    "1:2:3:4:5:6:7:8:9",
    "1::2::3",
    ":::",
    "1:2:3:4:5:6:7",
    "12345::",
    "::1.2.3",
    "0x0a.0.0.1",
  ])("%j is not an address", (input) => {
    expect(parseAddress(input)).toBeUndefined();
  });

  // Go's net.IP.String(): RFC 5952, IPv4-mapped as a dotted quad.
  test.each([
    ["2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"], // first of two equal runs
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"], // a lone zero group stays
    ["2001:0:0:1:0:0:0:1", "2001:0:0:1::1"], // the longer run wins
    ["fd00:0:0:10::", "fd00:0:0:10::"],
    ["::", "::"],
    ["::1", "::1"],
    ["1::", "1::"],
    ["FD00::ABCD", "fd00::abcd"],
    ["::ffff:10.1.2.3", "10.1.2.3"],
    ["::10.1.2.3", "::a01:203"],
    ["1:2:3:4:5:6:10.1.2.3", "1:2:3:4:5:6:a01:203"],
    ["1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"],
  ])("%s prints as %s", (input, expected) => {
    expect(text(6, v6(input))).toBe(expected);
  });
});

describe("range forms", () => {
  test("CIDR: host bits ignored, network and all-ones addresses never handed out", () => {
    expect(bounds({ range: "192.168.2.225/28" })).toEqual(["192.168.2.224/28", "192.168.2.225", "192.168.2.238"]);
    expect(bounds({ range: "10.0.0.0/8" })).toEqual(["10.0.0.0/8", "10.0.0.1", "10.255.255.254"]);
  });

  test("IPv6 spans skip the network and all-ones addresses too", () => {
    expect(bounds({ range: "2001:db8::/64" })).toEqual(["2001:db8::/64", "2001:db8::1", "2001:db8::ffff:ffff:ffff:fffe"]);
    expect(bounds({ range: "fd00:0:0:10::5/126" })).toEqual(["fd00:0:0:10::4/126", "fd00:0:0:10::5", "fd00:0:0:10::6"]);
  });

  test("A-B/P: start and end inclusive, for both families", () => {
    expect(bounds({ range: "192.168.1.10-192.168.1.20/24" })).toEqual(["192.168.1.0/24", "192.168.1.10", "192.168.1.20"]);
    expect(bounds({ range: "fd00::10-fd00::20/64" })).toEqual(["fd00::/64", "fd00::10", "fd00::20"]);
  });

  test("A-B/P overrides range_start and range_end", () => {
    expect(bounds({ range: "10.0.0.10-10.0.0.20/24", rangeStart: "10.0.0.50", rangeEnd: "10.0.0.60" })).toEqual(["10.0.0.0/24", "10.0.0.10", "10.0.0.20"]);
  });

  test("range_start and range_end narrow a CIDR", () => {
    expect(bounds({ range: "10.0.0.0/24", rangeStart: "10.0.0.100", rangeEnd: "10.0.0.110" })).toEqual(["10.0.0.0/24", "10.0.0.100", "10.0.0.110"]);
    expect(bounds({ range: "10.0.0.0/24", rangeStart: "10.0.0.200" })).toEqual(["10.0.0.0/24", "10.0.0.200", "10.0.0.254"]);
  });

  test("the network's own and all-ones addresses as bounds mean the whole usable span", () => {
    expect(bounds({ range: "10.0.0.0-10.0.0.255/24" })).toEqual(["10.0.0.0/24", "10.0.0.1", "10.0.0.254"]);
  });

  test.each([
    [{ range: "10.0.1.5-10.0.0.20/24" }, "range_start 10.0.1.5 is outside range 10.0.0.0/24"],
    [{ range: "10.0.0.0/24", rangeStart: "10.0.1.1" }, "range_start 10.0.1.1 is outside range 10.0.0.0/24"],
    [{ range: "10.0.0.0/24", rangeEnd: "fd00::1" }, "range_end fd00::1 is outside range 10.0.0.0/24"],
    [{ range: "10.0.0.0/24", rangeStart: "10.0.0.50", rangeEnd: "10.0.0.40" }, /no usable IP addresses between 10.0.0.50 and 10.0.0.40/],
    [{ range: "10.0.0.0/24", rangeStart: "ten" }, 'invalid range_start "ten" for range 10.0.0.0/24: not an IP address'],
    [{ range: "10.0.0.0/31" }, "range 10.0.0.0/31 has no usable IP addresses"],
    [{ range: "10.0.0.1/32" }, "range 10.0.0.1/32 has no usable IP addresses"],
    [{ range: "fd00::/127" }, "range fd00::/127 has no usable IP addresses"],
    [{ range: "fd00::1/128" }, "range fd00::1/128 has no usable IP addresses"],
    [{ range: "10.0.0.0/33" }, /not a CIDR or an A-B\/P range/],
    [{ range: "10.0.0.0" }, /not a CIDR or an A-B\/P range/],
    [{ range: "a-b-c/24" }, /not a CIDR or an A-B\/P range/],
    [{ range: "::ffff:10.0.0.0/104" }, /IPv4-mapped IPv6 range/],
  ])("%j is refused at load: %s", (spec, message) => {
    const error = thrown(() => range(spec));
    expect(error.code).toBe(7);
    expect(error.msg).toMatch(message);
  });
});

describe("exclusions", () => {
  test("CIDRs and bare IPs, validated at load; the other family's are ignored", () => {
    const r = range({ range: "10.0.0.0/24", exclude: ["10.0.0.0/28", "10.0.0.100", "fd00::/64"] });
    expect(r.exclude).toEqual([
      { start: v4("10.0.0.0"), end: v4("10.0.0.15") },
      { start: v4("10.0.0.100"), end: v4("10.0.0.100") },
    ]);
    const r6 = range({ range: "fd00::/64", exclude: ["fd00::1:0/112", "fd00::5"] });
    expect(r6.exclude).toEqual([
      { start: v6("fd00::1:0"), end: v6("fd00::1:ffff") },
      { start: v6("fd00::5"), end: v6("fd00::5") },
    ]);
  });

  test.each(["10.0.0.0/40", "10.0.0", "nope", ""])("a bad entry %j fails the load, naming it", (entry) => {
    const error = thrown(() => range({ range: "10.0.0.0/24", exclude: [entry] }));
    expect(error).toEqual({ code: 7, msg: `invalid exclude ${JSON.stringify(entry)} in range 10.0.0.0/24: expected a CIDR or an IP address`, details: "" });
  });
});
