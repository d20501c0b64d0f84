import { describe, expect, it } from "vitest";
import { cidrFamily, ipFamily, parseResult, resultToVersion } from "./result.ts";
import { thrown } from "./test-util.ts";
import type { Result } from "./types.ts";
import { SUPPORTED_VERSIONS } from "./version.ts";

describe("ipFamily / cidrFamily", () => {
  it("accepts what Go's parser accepts", () => {
    expect(ipFamily("10.1.2.3")).toBe("4");
    expect(ipFamily("fd00::1")).toBe("6");
    expect(ipFamily("::ffff:10.1.2.3")).toBe("6");
    expect(cidrFamily("10.1.2.3/24")).toBe("4");
    expect(cidrFamily("0.0.0.0/0")).toBe("4");
    expect(cidrFamily("fd00::3/128")).toBe("6");
  });

  it.each(["10.1", "0x0a.0.0.1", "010.1.2.3", "fe80::1%eth0", "", "10.1.2.3 ", "gggg::"])("refuses address %j", (bad) => {
    expect(ipFamily(bad)).toBeUndefined();
  });

  it.each(["10.1.2.3", "10.1.2.3/33", "fd00::/129", "10.1.2.3/", "10.1.2.3/024", "10.1.2.3/a", "/24"])("refuses CIDR %j", (bad) => {
    expect(cidrFamily(bad)).toBeUndefined();
  });
});

/** What upstream's `static` IPAM printed for this config (captured from plugins v1.9.1). */
const STATIC_RESULT: Result = {
  cniVersion: "1.1.0",
  ips: [{ address: "10.1.2.3/24", gateway: "10.1.2.1" }, { address: "fd00::3/64" }],
  routes: [{ dst: "0.0.0.0/0", gw: "10.1.2.1", mtu: 1400, table: 0, scope: 0 }],
  dns: { nameservers: ["8.8.8.8"], domain: "x" },
};

const UPSTREAM_0_3_1 = `{
    "cniVersion": "0.3.1",
    "ips": [
        {
            "version": "4",
            "address": "10.1.2.3/24",
            "gateway": "10.1.2.1"
        },
        {
            "version": "6",
            "address": "fd00::3/64"
        }
    ],
    "routes": [
        {
            "dst": "0.0.0.0/0",
            "gw": "10.1.2.1",
            "mtu": 1400,
            "table": 0,
            "scope": 0
        }
    ],
    "dns": {
        "nameservers": [
            "8.8.8.8"
        ],
        "domain": "x"
    }
}`;

const UPSTREAM_1_0_0 = `{
    "cniVersion": "1.0.0",
    "dns": {
        "domain": "x",
        "nameservers": [
            "8.8.8.8"
        ]
    },
    "ips": [
        {
            "address": "10.1.2.3/24",
            "gateway": "10.1.2.1"
        },
        {
            "address": "fd00::3/64"
        }
    ],
    "routes": [
        {
            "dst": "0.0.0.0/0",
            "gw": "10.1.2.1",
            "mtu": 1400,
            "scope": 0,
            "table": 0
        }
    ]
}`;

/** A result using every field of the model. */
const FULL_RESULT: Result = {
  cniVersion: "1.1.0",
  interfaces: [
    { name: "eth0", mac: "aa:bb:cc:dd:ee:ff", mtu: 1450, sandbox: "/var/run/netns/pod", socketPath: "/s", pciID: "0000:00:01.0" },
    { name: "macvlan-host" },
  ],
  ips: [
    { interface: 0, address: "10.1.2.3/24", gateway: "10.1.2.1" },
    { interface: 0, address: "fd00::3/64" },
  ],
  routes: [{ dst: "10.9.0.0/16", gw: "10.1.2.254", mtu: 1400, advmss: 1360, priority: 10, table: 100, scope: 0 }, { dst: "::/0" }],
  dns: { nameservers: ["10.0.0.10"], domain: "cluster.local", search: ["svc.cluster.local"], options: ["ndots:5"] },
};

describe("resultToVersion", () => {
  it("prints 0.3.1 byte for byte like upstream", () => {
    expect(JSON.stringify(resultToVersion(STATIC_RESULT, "0.3.1"), null, 4)).toBe(UPSTREAM_0_3_1);
  });

  it("prints 1.0.0 byte for byte like upstream (sorted keys)", () => {
    expect(JSON.stringify(resultToVersion(STATIC_RESULT, "1.0.0"), null, 4)).toBe(UPSTREAM_1_0_0);
  });

  it("uses the 1.x shape for 1.1.0 and keeps every 1.1 field", () => {
    const out = resultToVersion(FULL_RESULT, "1.1.0");
    expect(out).toEqual({
      cniVersion: "1.1.0",
      dns: { domain: "cluster.local", nameservers: ["10.0.0.10"], options: ["ndots:5"], search: ["svc.cluster.local"] },
      interfaces: [
        { mac: "aa:bb:cc:dd:ee:ff", mtu: 1450, name: "eth0", pciID: "0000:00:01.0", sandbox: "/var/run/netns/pod", socketPath: "/s" },
        { name: "macvlan-host" },
      ],
      ips: [
        { address: "10.1.2.3/24", gateway: "10.1.2.1", interface: 0 },
        { address: "fd00::3/64", interface: 0 },
      ],
      routes: [{ advmss: 1360, dst: "10.9.0.0/16", gw: "10.1.2.254", mtu: 1400, priority: 10, scope: 0, table: 100 }, { dst: "::/0" }],
    });
    // Key order is part of the contract (upstream sorts 1.x keys).
    expect(Object.keys(out)).toEqual(["cniVersion", "dns", "interfaces", "ips", "routes"]);
    expect(Object.keys(resultToVersion(FULL_RESULT, "1.0.0"))).toEqual(Object.keys(out));
    expect(resultToVersion(FULL_RESULT, "1.0.0").interfaces).toEqual(out.interfaces);
  });

  it("adds ips[].version and drops the 1.1-only interface fields for 0.x", () => {
    for (const version of ["0.3.0", "0.3.1", "0.4.0"]) {
      const out = resultToVersion(FULL_RESULT, version);
      expect(out.cniVersion).toBe(version);
      expect(out.interfaces).toEqual([{ name: "eth0", mac: "aa:bb:cc:dd:ee:ff", sandbox: "/var/run/netns/pod" }, { name: "macvlan-host" }]);
      expect(out.ips).toEqual([
        { version: "4", interface: 0, address: "10.1.2.3/24", gateway: "10.1.2.1" },
        { version: "6", interface: 0, address: "fd00::3/64" },
      ]);
      // Routes share one type upstream, so the extras survive in 0.x too.
      expect(out.routes).toEqual([{ dst: "10.9.0.0/16", gw: "10.1.2.254", mtu: 1400, advmss: 1360, priority: 10, table: 100, scope: 0 }, { dst: "::/0" }]);
      expect(Object.keys(out)).toEqual(["cniVersion", "interfaces", "ips", "routes", "dns"]);
    }
  });

  it("always prints dns for 0.x and omits an empty one for 1.x", () => {
    const bare: Result = { cniVersion: "1.1.0", interfaces: [{ name: "eth0" }] };
    expect(resultToVersion(bare, "0.4.0")).toEqual({ cniVersion: "0.4.0", interfaces: [{ name: "eth0" }], dns: {} });
    expect(resultToVersion(bare, "1.0.0")).toEqual({ cniVersion: "1.0.0", interfaces: [{ name: "eth0" }] });
    expect(resultToVersion({ ...bare, dns: { nameservers: [] } }, "1.1.0")).not.toHaveProperty("dns");
  });

  it("omits empty arrays, empty strings and zero MTUs, but keeps table and scope 0", () => {
    const sparse: Result = {
      cniVersion: "1.1.0",
      interfaces: [{ name: "eth0", mac: "", mtu: 0 }],
      ips: [],
      routes: [{ dst: "0.0.0.0/0", gw: "", mtu: 0, table: 0, scope: 0 }],
    };
    expect(resultToVersion(sparse, "1.1.0")).toEqual({
      cniVersion: "1.1.0",
      interfaces: [{ name: "eth0" }],
      routes: [{ dst: "0.0.0.0/0", scope: 0, table: 0 }],
    });
  });

  it("refuses versions we do not speak", () => {
    expect(thrown(() => resultToVersion(STATIC_RESULT, "0.2.0")).code).toBe(1);
    expect(thrown(() => resultToVersion(STATIC_RESULT, "")).code).toBe(1);
  });

  it("reports a model address it cannot classify as an internal error", () => {
    const broken: Result = { cniVersion: "1.1.0", ips: [{ address: "nonsense" }] };
    expect(thrown(() => resultToVersion(broken, "0.4.0")).code).toBe(999);
  });
});

describe("parseResult", () => {
  it("reads a 0.3.1 result and drops ips[].version", () => {
    expect(parseResult(JSON.parse(UPSTREAM_0_3_1), "prevResult")).toEqual({ ...STATIC_RESULT, cniVersion: "0.3.1" });
  });

  it("reads a 1.0.0 result", () => {
    expect(parseResult(JSON.parse(UPSTREAM_1_0_0), "prevResult")).toEqual({ ...STATIC_RESULT, cniVersion: "1.0.0" });
  });

  it.each(SUPPORTED_VERSIONS)("round-trips the full model through %s", (version) => {
    const printed = JSON.parse(JSON.stringify(resultToVersion(FULL_RESULT, version)));
    const back = parseResult(printed, "prevResult");
    expect(back.cniVersion).toBe(version);
    if (version.startsWith("1.")) {
      expect(back).toEqual({ ...FULL_RESULT, cniVersion: version });
    } else {
      // 0.x has no place for the 1.1 interface fields.
      const expected = structuredClone(FULL_RESULT);
      expected.cniVersion = version;
      expected.interfaces = [{ name: "eth0", mac: "aa:bb:cc:dd:ee:ff", sandbox: "/var/run/netns/pod" }, { name: "macvlan-host" }];
      expect(back).toEqual(expected);
    }
  });

  it("converts 0.3.1 to the same 1.0.0 text upstream prints", () => {
    const model = parseResult(JSON.parse(UPSTREAM_0_3_1), "prevResult");
    expect(JSON.stringify(resultToVersion(model, "1.0.0"), null, 4)).toBe(UPSTREAM_1_0_0);
    expect(JSON.stringify(resultToVersion(model, "0.3.1"), null, 4)).toBe(UPSTREAM_0_3_1);
  });

  it("ignores unknown keys and treats null as absent", () => {
    const result = parseResult({ cniVersion: "1.0.0", ips: [{ address: "10.0.0.2/8", gateway: null, extra: 1 }], routes: null, future: {} }, "prevResult");
    expect(result).toEqual({ cniVersion: "1.0.0", ips: [{ address: "10.0.0.2/8" }] });
  });

  it("takes the fallback version when cniVersion is absent", () => {
    expect(parseResult({ ips: [{ address: "10.0.0.2/8" }] }, "prevResult", "0.4.0").cniVersion).toBe("0.4.0");
    expect(thrown(() => parseResult({}, "prevResult")).msg).toBe('prevResult: unsupported cniVersion ""');
  });

  it("rejects result versions we do not speak", () => {
    const error = thrown(() => parseResult({ cniVersion: "0.2.0", ip4: { ip: "10.0.0.2/8" } }, "prevResult"));
    expect(error.code).toBe(6);
    expect(error.msg).toBe('prevResult: unsupported cniVersion "0.2.0"');
  });

  it.each([
    [[], "IPAM result: expected a JSON object, got []"],
    [{ cniVersion: 1 }, 'IPAM result: invalid "cniVersion": expected a string, got 1'],
    [{ cniVersion: "1.0.0", ips: {} }, 'IPAM result: invalid "ips": expected an array, got {}'],
    [{ cniVersion: "1.0.0", ips: ["10.0.0.1/8"] }, 'IPAM result: invalid "ips[0]": expected an object, got "10.0.0.1/8"'],
    [{ cniVersion: "1.0.0", ips: [{}] }, 'IPAM result: invalid "ips[0].address": expected a non-empty string, got nothing'],
    [{ cniVersion: "1.0.0", ips: [{ address: "10.0.0.1" }] }, 'IPAM result: invalid "ips[0].address": expected a CIDR such as 10.1.2.3/24, got "10.0.0.1"'],
    [
      { cniVersion: "1.0.0", ips: [{ address: "10.0.0.1/8", gateway: "10.0.0.0/8" }] },
      'IPAM result: invalid "ips[0].gateway": expected an IP address, got "10.0.0.0/8"',
    ],
    [{ cniVersion: "1.0.0", ips: [{ address: "10.0.0.1/8", interface: -1 }] }, 'IPAM result: invalid "ips[0].interface": expected an integer >= 0, got -1'],
    [{ cniVersion: "1.0.0", ips: [{ address: "10.0.0.1/8", interface: 1.5 }] }, 'IPAM result: invalid "ips[0].interface": expected an integer >= 0, got 1.5'],
    [
      { cniVersion: "0.4.0", ips: [{ version: "6", address: "10.0.0.1/8" }] },
      'IPAM result: invalid "ips[0].version": expected "4" to match the address, got "6"',
    ],
    [{ cniVersion: "1.0.0", interfaces: [{ mac: "aa" }] }, 'IPAM result: invalid "interfaces[0].name": expected a non-empty string, got nothing'],
    [{ cniVersion: "1.0.0", interfaces: [{ name: "eth0", mtu: "1500" }] }, 'IPAM result: invalid "interfaces[0].mtu": expected an integer >= 0, got "1500"'],
    [{ cniVersion: "1.0.0", routes: [{ gw: "10.0.0.1" }] }, 'IPAM result: invalid "routes[0].dst": expected a non-empty string, got nothing'],
    [{ cniVersion: "1.0.0", routes: [{ dst: "0.0.0.0/0", scope: 256 }] }, 'IPAM result: invalid "routes[0].scope": expected an integer from 0 to 255, got 256'],
    [{ cniVersion: "1.0.0", dns: { nameservers: "8.8.8.8" } }, 'IPAM result: invalid "dns.nameservers": expected an array, got "8.8.8.8"'],
    [{ cniVersion: "1.0.0", dns: { search: [1] } }, 'IPAM result: invalid "dns.search": expected an array of strings, got [1]'],
  ])("rejects %j with code 6", (value, message) => {
    expect(thrown(() => parseResult(value, "IPAM result"))).toEqual({ code: 6, msg: message, details: "" });
  });

  it("does not check ips[].version in 1.x results, where the key does not exist", () => {
    expect(parseResult({ cniVersion: "1.0.0", ips: [{ version: "6", address: "10.0.0.1/8" }] }, "x").ips).toEqual([{ address: "10.0.0.1/8" }]);
  });
});
