import { describe, expect, it } from "vitest";
import { marshalLikeGo } from "./json.ts";
import {
  capabilityRuntimeConfig,
  cniArgsString,
  describePlugin,
  gcOrStatusStdin,
  parseNetwork,
  parseNetworkList,
  parseSingleConf,
  pluginStdin,
} from "./netlist.ts";
import { thrown } from "./test-util.ts";

const CONFLIST = JSON.stringify({
  cniVersion: "1.0.0",
  name: "net-a",
  plugins: [
    { type: "macvlan", master: "eth0", ipam: { type: "static" }, capabilities: { mac: true, ips: false } },
    { type: "sbr", name: "routing", cniVersion: "0.3.1" },
  ],
});

describe("parseNetworkList", () => {
  it("reads a conflist: name, version, flags, plugins with their declared capabilities", () => {
    const list = parseNetworkList(CONFLIST);
    expect(list).toMatchObject({ name: "net-a", cniVersion: "1.0.0", disableCheck: false, disableGC: false });
    expect(list.bytes).toBe(CONFLIST);
    expect(list.plugins.map((p) => [p.type, p.name, p.capabilities])).toEqual([
      ["macvlan", undefined, ["mac"]],
      ["sbr", "routing", []],
    ]);
  });

  it.each([
    [true, true],
    ["TRUE", true],
    ["false", false],
  ])("takes disableCheck/disableGC %j as libcni does", (value, expected) => {
    const list = parseNetworkList(JSON.stringify({ ...JSON.parse(CONFLIST), disableCheck: value, disableGC: value }));
    expect([list.disableCheck, list.disableGC]).toEqual([expected, expected]);
  });

  it("picks the highest cniVersions entry libcni implements", () => {
    const list = (extra: object) => parseNetworkList(JSON.stringify({ ...JSON.parse(CONFLIST), ...extra })).cniVersion;
    expect(list({ cniVersions: ["0.4.0", "1.1.0", "9.0.0"] })).toBe("1.1.0");
    expect(list({ cniVersion: "0.4.0", cniVersions: ["0.3.1"] })).toBe("0.4.0");
    expect(list({ cniVersion: "1.0.0", cniVersions: [] })).toBe("1.0.0");
  });

  it("refuses what libcni refuses", () => {
    expect(thrown(() => parseNetworkList("{"))).toMatchObject({ code: 6 });
    expect(thrown(() => parseNetworkList('{"plugins":[{"type":"x"}]}')).msg).toBe("error parsing configuration list: no name");
    expect(thrown(() => parseNetworkList('{"name":"n","plugins":[]}')).msg).toBe("error parsing configuration list: no plugins in list");
    expect(thrown(() => parseNetworkList('{"name":"n","plugins":[{"name":"x"}]}')).msg).toBe("failed to parse plugin config 0: missing 'type'");
    expect(thrown(() => parseNetworkList('{"name":"n","disableCheck":"yes","plugins":[{"type":"x"}]}')).code).toBe(7);
    expect(thrown(() => parseNetworkList('{"name":"n","loadOnlyInlinedPlugins":true}')).code).toBe(7);
    expect(thrown(() => parseNetworkList('{"name":"n","plugins":[{"type":"x","capabilities":{"mac":1}}]}')).code).toBe(7);
  });

  it("keeps a list without plugins empty: the caller decides", () => {
    expect(parseNetworkList('{"name":"n","cniVersion":"1.0.0"}').plugins).toEqual([]);
  });
});

describe("parseSingleConf", () => {
  it("up-converts a .conf into a one-element list, as libcni's ConfListFromConf", () => {
    const conf = '{"type":"macvlan","name":"net-b","cniVersion":"0.4.0","master":"a<b"}';
    const list = parseSingleConf(conf);
    expect(list).toMatchObject({ name: "net-b", cniVersion: "0.4.0", plugins: [{ type: "macvlan", name: "net-b" }] });
    expect(list.bytes).toBe('{"cniVersion":"0.4.0","name":"net-b","plugins":[{"cniVersion":"0.4.0","master":"a\\u003cb","name":"net-b","type":"macvlan"}]}');
  });

  it("parseNetwork tells a conflist from a conf by `plugins`", () => {
    expect(parseNetwork(CONFLIST).plugins).toHaveLength(2);
    expect(parseNetwork('{"type":"sbr","name":"n","cniVersion":"1.0.0"}').plugins).toHaveLength(1);
  });
});

describe("plugin stdin", () => {
  const list = parseNetworkList(CONFLIST);
  const [macvlan, sbr] = list.plugins;
  if (!macvlan || !sbr) throw new Error("fixture");

  it("injects the list's name and version over the plugin's, keys sorted", () => {
    expect(pluginStdin(list, sbr)).toBe('{"cniVersion":"1.0.0","name":"net-a","type":"sbr"}');
  });

  it("passes only declared capabilities (true) the runtime supplied", () => {
    const capabilityArgs = { mac: "0a:58:00:00:00:01", ips: ["10.1.1.1/24"], portMappings: [] };
    expect(capabilityRuntimeConfig(macvlan, capabilityArgs)).toEqual({ mac: "0a:58:00:00:00:01" });
    expect(capabilityRuntimeConfig(macvlan, { ips: ["10.1.1.1/24"] })).toBeUndefined();
    expect(capabilityRuntimeConfig(sbr, capabilityArgs)).toBeUndefined();
    expect(JSON.parse(pluginStdin(list, macvlan, { capabilityArgs })).runtimeConfig).toEqual({
      mac: "0a:58:00:00:00:01",
    });
    expect(JSON.parse(pluginStdin(list, sbr, { capabilityArgs })).runtimeConfig).toBeUndefined();
  });

  it("sends prevResult in the list's version", () => {
    const prevResult = { cniVersion: "0.4.0", ips: [{ address: "10.1.1.5/24" }] };
    expect(JSON.parse(pluginStdin(list, sbr, { prevResult })).prevResult).toEqual({
      cniVersion: "1.0.0",
      ips: [{ address: "10.1.1.5/24" }],
    });
  });

  it("GC carries the valid attachments under both names; STATUS has neither", () => {
    const gc = JSON.parse(gcOrStatusStdin(list, sbr, [{ containerID: "c1", ifname: "net1" }]));
    expect(gc["cni.dev/valid-attachments"]).toEqual([{ containerID: "c1", ifname: "net1" }]);
    expect(gc["cni.dev/attachments"]).toEqual(gc["cni.dev/valid-attachments"]);
    expect(gcOrStatusStdin(list, sbr)).toBe('{"cniVersion":"1.0.0","name":"net-a","type":"sbr"}');
  });

  it("CNI_ARGS keeps the runtime's pairs in their order", () => {
    expect(
      cniArgsString([
        ["K8S_POD_NAME", "web"],
        ["IgnoreUnknown", "1"],
        ["K8S_POD_NAMESPACE", "default"],
      ]),
    ).toBe("K8S_POD_NAME=web;IgnoreUnknown=1;K8S_POD_NAMESPACE=default");
    expect(cniArgsString([])).toBe("");
  });

  it("describes plugins as libcni's errors do", () => {
    expect(describePlugin(macvlan)).toBe('type="macvlan"');
    expect(describePlugin(sbr)).toBe('type="sbr" name="routing"');
  });
});

describe("marshalLikeGo", () => {
  it("sorts keys at every level and escapes as Go does", () => {
    expect(marshalLikeGo({ b: [{ z: 1, a: "<&>" }], a: null, "\u2028": true })).toBe('{"a":null,"b":[{"a":"\\u003c\\u0026\\u003e","z":1}],"\\u2028":true}');
  });
});
