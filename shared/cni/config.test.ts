import { describe, expect, it } from "vitest";
import {
  gcAttachments,
  oneOf,
  optionalBoolean,
  optionalInteger,
  optionalObject,
  optionalString,
  optionalStringArray,
  parseNetConf,
  requiredString,
} from "./config.ts";
import { thrown } from "./test-util.ts";
import type { JsonObject } from "./types.ts";

const MINIMAL = { cniVersion: "1.0.0", name: "net-1", type: "macvlan" };

function conf(extra: JsonObject): string {
  return JSON.stringify({ ...MINIMAL, ...extra });
}

describe("parseNetConf", () => {
  it("reads the shared keys and keeps the raw object and bytes", () => {
    const stdin = conf({ master: "eth0", ipam: { type: "host-local", subnet: "10.1.0.0/16" } });
    const parsed = parseNetConf(stdin);
    expect(parsed.cniVersion).toBe("1.0.0");
    expect(parsed.name).toBe("net-1");
    expect(parsed.type).toBe("macvlan");
    expect(parsed.ipam).toEqual({ type: "host-local", subnet: "10.1.0.0/16" });
    expect(parsed.raw.master).toBe("eth0");
    expect(parsed.bytes).toBe(stdin);
    expect(parsed.prevResult).toBeUndefined();
    expect(parsed.dns).toBeUndefined();
  });

  it("defaults an absent cniVersion and type to empty strings", () => {
    const parsed = parseNetConf('{"name":"n"}');
    expect(parsed.cniVersion).toBe("");
    expect(parsed.type).toBe("");
  });

  it("reports malformed JSON as code 6", () => {
    const error = thrown(() => parseNetConf('{"name": '));
    expect(error.code).toBe(6);
    expect(error.msg).toMatch(/^error parsing network configuration: /);
    expect(thrown(() => parseNetConf("")).code).toBe(6);
  });

  it.each(["[]", "null", '"text"', "5"])("reports non-object JSON %s as code 6", (stdin) => {
    expect(thrown(() => parseNetConf(stdin)).code).toBe(6);
  });

  it("requires a name", () => {
    const missing = { code: 7, msg: "missing network name", details: "" };
    expect(thrown(() => parseNetConf('{"cniVersion":"1.0.0"}'))).toEqual(missing);
    expect(thrown(() => parseNetConf('{"name":""}'))).toEqual(missing);
  });

  it("refuses names a file name could not carry", () => {
    for (const name of ["has space", "a/b", "-x", "../up"]) {
      expect(thrown(() => parseNetConf(JSON.stringify({ name })))).toEqual({
        code: 7,
        msg: "invalid characters found in network name",
        details: name,
      });
    }
  });

  it.each([
    [{ name: 5 }, 'invalid "name": expected a string, got 5'],
    [{ cniVersion: 1.0 }, 'invalid "cniVersion": expected a string, got 1'],
    [{ type: ["macvlan"] }, 'invalid "type": expected a string, got ["macvlan"]'],
    [{ ipam: "host-local" }, 'invalid "ipam": expected an object, got "host-local"'],
    [{ ipam: { type: 5 } }, 'invalid "ipam.type": expected a string, got 5'],
    [{ dns: { nameservers: "8.8.8.8" } }, 'invalid "dns.nameservers": expected an array, got "8.8.8.8"'],
    [{ dns: [] }, 'invalid "dns": expected an object, got []'],
    [{ runtimeConfig: [] }, 'invalid "runtimeConfig": expected an object, got []'],
    [{ args: "x" }, 'invalid "args": expected an object, got "x"'],
  ])("refuses %j with code 7", (extra, message) => {
    expect(thrown(() => parseNetConf(conf(extra)))).toEqual({ code: 7, msg: message, details: "" });
  });

  it("treats an IPAM section without a type as no IPAM, as upstream does", () => {
    expect(parseNetConf(conf({ ipam: {} })).ipam).toBeUndefined();
    expect(parseNetConf(conf({ ipam: { type: "" } })).ipam).toBeUndefined();
    expect(parseNetConf(conf({ ipam: null })).ipam).toBeUndefined();
  });

  it("reads dns, runtimeConfig and args", () => {
    const parsed = parseNetConf(conf({ dns: { nameservers: ["10.0.0.10"], search: [] }, runtimeConfig: { mac: "aa:bb:cc:dd:ee:ff" }, args: { cni: {} } }));
    expect(parsed.dns).toEqual({ nameservers: ["10.0.0.10"] });
    expect(parsed.runtimeConfig).toEqual({ mac: "aa:bb:cc:dd:ee:ff" });
    expect(parsed.args).toEqual({ cni: {} });
  });

  it("parses prevResult of an older version into the model", () => {
    const prevResult = { cniVersion: "0.4.0", ips: [{ version: "4", address: "10.0.0.5/24" }], dns: {} };
    expect(parseNetConf(conf({ prevResult })).prevResult).toEqual({
      cniVersion: "0.4.0",
      ips: [{ address: "10.0.0.5/24" }],
    });
  });

  it("gives a prevResult without cniVersion the config's version", () => {
    const prevResult = { interfaces: [{ name: "eth0" }] };
    expect(parseNetConf(conf({ prevResult })).prevResult?.cniVersion).toBe("1.0.0");
  });

  it("reports a bad prevResult as code 6 naming prevResult", () => {
    expect(thrown(() => parseNetConf(conf({ prevResult: { ips: [{ address: "nope" }] } })))).toEqual({
      code: 6,
      msg: 'prevResult: invalid "ips[0].address": expected a CIDR such as 10.1.2.3/24, got "nope"',
      details: "",
    });
    expect(thrown(() => parseNetConf(conf({ prevResult: "x" }))).msg).toBe('prevResult: expected a JSON object, got "x"');
  });
});

describe("gcAttachments", () => {
  const list = [
    { containerID: "c1", ifname: "eth0" },
    { containerID: "c2", ifname: "net1" },
  ];

  it("reads cni.dev/valid-attachments, else cni.dev/attachments, else nothing", () => {
    expect(gcAttachments({ "cni.dev/valid-attachments": list, "cni.dev/attachments": [] })).toEqual(list);
    expect(gcAttachments({ "cni.dev/attachments": list })).toEqual(list);
    expect(gcAttachments({})).toEqual([]);
  });

  it("keeps only containerID and ifname", () => {
    expect(gcAttachments({ "cni.dev/valid-attachments": [{ containerID: "c", ifname: "e", extra: 1 }] })).toEqual([{ containerID: "c", ifname: "e" }]);
  });

  it("refuses a malformed list with code 7", () => {
    expect(thrown(() => gcAttachments({ "cni.dev/valid-attachments": {} }))).toEqual({
      code: 7,
      msg: 'invalid "cni.dev/valid-attachments": expected an array, got {}',
      details: "",
    });
    expect(thrown(() => gcAttachments({ "cni.dev/valid-attachments": [{ containerID: "c" }] })).msg).toBe(
      'invalid "cni.dev/valid-attachments[0].ifname": expected a non-empty string, got nothing',
    );
    expect(thrown(() => gcAttachments({ "cni.dev/attachments": ["c1"] })).msg).toBe('invalid "cni.dev/attachments[0]": expected an object, got "c1"');
  });
});

describe("accessors", () => {
  const obj: JsonObject = {
    master: "eth0",
    mtu: 1500,
    bad: "abc",
    float: 1.5,
    flag: true,
    flagText: "true",
    nested: { a: 1 },
    list: ["a", "b"],
    mixed: ["a", 1],
    nothing: null,
    mode: "vepa",
  };

  it("optionalString", () => {
    expect(optionalString(obj, "master")).toBe("eth0");
    expect(optionalString(obj, "absent")).toBeUndefined();
    expect(optionalString(obj, "nothing")).toBeUndefined();
    expect(thrown(() => optionalString(obj, "mtu"))).toEqual({
      code: 7,
      msg: 'invalid "mtu": expected a string, got 1500',
      details: "",
    });
    expect(thrown(() => optionalString(obj, "mtu", "ipam.gateway")).msg).toBe('invalid "ipam.gateway": expected a string, got 1500');
  });

  it("requiredString", () => {
    expect(requiredString(obj, "master")).toBe("eth0");
    expect(thrown(() => requiredString(obj, "absent")).msg).toBe('invalid "absent": expected a non-empty string, got nothing');
  });

  it("optionalInteger with bounds", () => {
    expect(optionalInteger(obj, "mtu", { min: 0, max: 65535 })).toBe(1500);
    expect(optionalInteger(obj, "absent")).toBeUndefined();
    expect(thrown(() => optionalInteger(obj, "bad"))).toEqual({
      code: 7,
      msg: 'invalid "bad": expected an integer, got "abc"',
      details: "",
    });
    expect(thrown(() => optionalInteger(obj, "float")).msg).toBe('invalid "float": expected an integer, got 1.5');
    expect(thrown(() => optionalInteger(obj, "mtu", { max: 1000 })).msg).toBe('invalid "mtu": expected an integer <= 1000, got 1500');
    expect(thrown(() => optionalInteger(obj, "mtu", { min: 68, max: 1000, label: "link mtu" })).msg).toBe(
      'invalid "link mtu": expected an integer from 68 to 1000, got 1500',
    );
  });

  it("optionalBoolean takes JSON booleans only", () => {
    expect(optionalBoolean(obj, "flag")).toBe(true);
    expect(optionalBoolean(obj, "absent")).toBeUndefined();
    expect(thrown(() => optionalBoolean(obj, "flagText")).msg).toBe('invalid "flagText": expected true or false, got "true"');
  });

  it("optionalObject and optionalStringArray", () => {
    expect(optionalObject(obj, "nested")).toEqual({ a: 1 });
    expect(thrown(() => optionalObject(obj, "list")).msg).toBe('invalid "list": expected an object, got ["a","b"]');
    expect(optionalStringArray(obj, "list")).toEqual(["a", "b"]);
    expect(optionalStringArray(obj, "absent")).toBeUndefined();
    expect(thrown(() => optionalStringArray(obj, "mixed")).msg).toBe('invalid "mixed": expected an array of strings, got ["a",1]');
  });

  it("oneOf", () => {
    const modes = ["bridge", "private", "vepa", "passthru"] as const;
    expect(oneOf(obj, "mode", modes, "bridge")).toBe("vepa");
    expect(oneOf(obj, "absent", modes, "bridge")).toBe("bridge");
    expect(oneOf({ mode: "" }, "mode", modes, "bridge")).toBe("bridge");
    expect(thrown(() => oneOf({ mode: "foo" }, "mode", modes, "bridge", "macvlan mode"))).toEqual({
      code: 7,
      msg: 'unknown macvlan mode "foo"',
      details: 'expected one of ["bridge" "private" "vepa" "passthru"]',
    });
    expect(thrown(() => oneOf({ mode: "foo" }, "mode", modes, "bridge")).msg).toBe(
      'invalid "mode": expected one of ["bridge" "private" "vepa" "passthru"], got "foo"',
    );
    expect(thrown(() => oneOf({ mode: 1 }, "mode", modes, "bridge")).msg).toBe('invalid "mode": expected a string, got 1');
  });

  it("cuts long values short in messages", () => {
    const error = thrown(() => optionalInteger({ big: "x".repeat(500) }, "big"));
    expect(error.msg.length).toBeLessThan(150);
    expect(error.msg).toMatch(/^invalid "big": expected an integer, got "x{76}\.\.\.$/);
  });
});

describe("prevResult for DEL", () => {
  const bad = JSON.stringify({ cniVersion: "1.0.0", name: "n", type: "macvlan", prevResult: { cniVersion: "1.0.0", ips: [{ address: "nope" }] } });

  it("is refused when it does not parse, except with lenientPrevResult (DEL), which drops it", () => {
    expect(() => parseNetConf(bad)).toThrow(/prevResult/);
    expect(parseNetConf(bad, { lenientPrevResult: true }).prevResult).toBeUndefined();
  });

  it("keeps an interface index past the interfaces list, as upstream", () => {
    const conf = parseNetConf(
      JSON.stringify({
        cniVersion: "1.0.0",
        name: "n",
        prevResult: { cniVersion: "1.0.0", interfaces: [{ name: "net1" }], ips: [{ address: "10.0.0.1/8", interface: 3 }] },
      }),
    );
    expect(conf.prevResult?.ips).toEqual([{ address: "10.0.0.1/8", interface: 3 }]);
  });
});
