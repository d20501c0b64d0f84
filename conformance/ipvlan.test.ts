/**
 * ipvlan, compiled, against a real kernel that has IPVLAN: this machine's when it has it,
 * otherwise Debian's kernel booted under qemu (conformance/guest). Every harness call below runs
 * there; the cases are never skipped: if no such kernel can be had, beforeAll fails saying why.
 *
 * The kernel keeps one ipvlan mode and flag per master, so every case uses a fresh node (master).
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { join } from "node:path";
import { type IpvlanTarget, ipvlanExecutor } from "./guest/guest.ts";
import {
  BIN,
  FAILING_IPAM,
  UPSTREAM_BIN,
  addresses,
  cleanup,
  cni,
  deleteNetns,
  link,
  links,
  localExecutor,
  netns,
  node,
  nsPath,
  ping,
  pluginDir,
  removeDir,
  routes,
  sh,
  useExecutor,
  type CniCall,
  type IpLink,
} from "./harness.ts";

const IPVLAN = join(BIN, "ipvlan");
const UPSTREAM_IPVLAN = join(UPSTREAM_BIN, "ipvlan");

let target: IpvlanTarget | undefined;
beforeAll(async () => {
  target = await ipvlanExecutor();
  useExecutor(target);
}, 180_000);
afterEach(cleanup);
afterAll(async () => {
  cleanup();
  useExecutor(localExecutor);
  await target?.shutdown();
});

function conf(extra: Record<string, unknown> = {}, address = "10.40.0.5/24"): Record<string, unknown> {
  return {
    cniVersion: "1.0.0",
    name: "ipvnet",
    type: "ipvlan",
    master: "m0",
    ipam: { type: "static", addresses: [{ address, gateway: "10.40.0.1" }], routes: [{ dst: "172.31.0.0/16" }] },
    ...extra,
  };
}

function call(command: CniCall["command"], pod: string, extra: Partial<CniCall> = {}): CniCall {
  return { command, containerId: `ctr-${pod}`, netns: nsPath(pod), ifName: "net1", path: UPSTREAM_BIN, ...extra };
}

function ipvlanInfo(l: IpLink | undefined): { mode?: unknown; flag?: string } {
  const data = l?.linkinfo?.info_data ?? {};
  const flag = ["bridge", "private", "vepa"].find((f) => data[f] === true);
  return { mode: data.mode, ...(flag ? { flag } : {}) };
}

function linkNames(ns: string): string[] {
  return links(ns)
    .map((l) => l.ifname)
    .sort();
}

describe("ipvlan ADD", () => {
  test.each(["l2", "l3", "l3s"])("mode %s reaches the kernel, with addresses and routes", (mode) => {
    const host = node();
    const pod = netns("pod");
    const out = cni(IPVLAN, call("ADD", pod), conf({ mode }), host.ns);
    expect(out.code, out.stdout + out.stderr).toBe(0);
    const l = link(pod, "net1")!;
    expect(l.linkinfo?.info_kind).toBe("ipvlan");
    expect(ipvlanInfo(l)).toEqual({ mode, flag: "bridge" });
    expect(l.flags).toContain("UP");
    expect(addresses(pod, "net1")).toEqual(["10.40.0.5/24"]);
    expect(routes(pod)).toContainEqual(expect.objectContaining({ dst: "172.31.0.0/16", gateway: "10.40.0.1", dev: "net1" }));
    // ipvlan shares the master's MAC.
    const master = link(host.ns, "m0")!;
    expect(out.json!.interfaces).toEqual([{ name: "net1", mac: master.address, sandbox: nsPath(pod) }]);
    expect(out.json!.ips).toEqual([{ address: "10.40.0.5/24", gateway: "10.40.0.1", interface: 0 }]);
  });

  test.each(["bridge", "private", "vepa"])("flag %s reaches the kernel", (flag) => {
    const host = node();
    const pod = netns("pod");
    const out = cni(IPVLAN, call("ADD", pod), conf({ flag }), host.ns);
    expect(out.code, out.stdout).toBe(0);
    expect(ipvlanInfo(link(pod, "net1"))).toEqual({ mode: "l2", flag });
  });

  test("MTU below the master's is applied; above it is an error that leaves nothing", () => {
    const host = node({ mtu: 1500 });
    const pod = netns("pod");
    expect(cni(IPVLAN, call("ADD", pod), conf({ mtu: 1400 }), host.ns).code).toBe(0);
    expect(link(pod, "net1")?.mtu).toBe(1400);
    const other = netns("pod");
    const tooBig = cni(IPVLAN, call("ADD", other), conf({ mtu: 9000 }), host.ns);
    expect(tooBig.json?.code).toBe(7);
    expect(linkNames(other)).toEqual(["lo"]);
  });

  test("two pods on one master in l2 mode reach each other", () => {
    const host = node();
    const a = netns("pod");
    const b = netns("pod");
    expect(cni(IPVLAN, call("ADD", a), conf({}, "10.40.0.11/24"), host.ns).code).toBe(0);
    expect(cni(IPVLAN, call("ADD", b), conf({}, "10.40.0.12/24"), host.ns).code).toBe(0);
    expect(ping(a, "10.40.0.12")).toBe(true);
    expect(ping(b, "10.40.0.11")).toBe(true);
  });

  test("chained: master and addresses from prevResult, interfaces replaced", () => {
    const host = node();
    const pod = netns("pod");
    const prevResult = {
      cniVersion: "1.0.0",
      interfaces: [{ name: "m0" }],
      ips: [{ address: "10.50.0.7/24", gateway: "10.50.0.1", interface: 0 }],
      routes: [{ dst: "172.30.0.0/16" }],
    };
    const out = cni(IPVLAN, call("ADD", pod), { cniVersion: "1.0.0", name: "ipvnet", type: "ipvlan", prevResult }, host.ns);
    expect(out.code, out.stdout).toBe(0);
    expect(link(pod, "net1")?.linkinfo?.info_kind).toBe("ipvlan");
    expect(addresses(pod, "net1")).toEqual(["10.50.0.7/24"]);
    expect(routes(pod)).toContainEqual(expect.objectContaining({ dst: "172.30.0.0/16", gateway: "10.50.0.1" }));
    expect((out.json!.interfaces as { name: string }[]).map((i) => i.name)).toEqual(["net1"]);
  });

  test("no master configured: the link of the node's default route", () => {
    const host = node({ master: "uplink0", defaultRoute: true });
    const pod = netns("pod");
    const out = cni(IPVLAN, call("ADD", pod), conf({ master: undefined }), host.ns);
    expect(out.code, out.stdout).toBe(0);
    expect(link(pod, "net1")?.link_index).toBe(link(host.ns, "uplink0")!.ifindex);
  });
});

describe("ipvlan CHECK", () => {
  test("passes on a healthy pod, fails on drift, and works with master omitted", () => {
    const host = node({ master: "uplink0", defaultRoute: true });
    const pod = netns("pod");
    const config = conf({ master: undefined, mode: "l3" });
    const add = cni(IPVLAN, call("ADD", pod), config, host.ns);
    expect(add.code, add.stdout).toBe(0);
    const healthy = cni(IPVLAN, call("CHECK", pod), { ...config, prevResult: add.json }, host.ns);
    expect(healthy.code, healthy.stdout).toBe(0);

    const wrongMode = cni(IPVLAN, call("CHECK", pod), { ...config, mode: "l2", prevResult: add.json }, host.ns);
    expect(wrongMode.code).not.toBe(0);
    expect(wrongMode.json!.msg).toMatch(/mode/);

    sh("ip", ["-n", pod, "addr", "flush", "dev", "net1"]);
    const broken = cni(IPVLAN, call("CHECK", pod), { ...config, prevResult: add.json }, host.ns);
    expect(broken.code).not.toBe(0);
    expect(broken.json!.msg).toMatch(/10\.40\.0\.5/);
  });
});

describe("ipvlan DEL", () => {
  test("removes the link; a second DEL succeeds; no default route needed", () => {
    const host = node();
    const pod = netns("pod");
    expect(cni(IPVLAN, call("ADD", pod), conf(), host.ns).code).toBe(0);
    // The node has no default route and the config names no master: DEL must not care.
    const noMaster = conf({ master: undefined });
    expect(cni(IPVLAN, call("DEL", pod), noMaster, host.ns).code).toBe(0);
    expect(linkNames(pod)).toEqual(["lo"]);
    const again = cni(IPVLAN, call("DEL", pod), noMaster, host.ns);
    expect(again.code, again.stdout).toBe(0);
  });

  test("succeeds when the namespace is already gone", () => {
    const host = node();
    const pod = netns("pod");
    expect(cni(IPVLAN, call("ADD", pod), conf(), host.ns).code).toBe(0);
    deleteNetns(pod);
    const del = cni(IPVLAN, call("DEL", pod), conf(), host.ns);
    expect(del.code, del.stdout).toBe(0);
  });
});

describe("ipvlan bad input: a CNI error, nothing left behind", () => {
  function expectClean(out: ReturnType<typeof cni>, code: number | undefined, hostNs: string, pod: string, pattern?: RegExp): void {
    expect(out.code).not.toBe(0);
    expect(out.json, out.stdout + out.stderr).toBeDefined();
    if (code !== undefined) expect(out.json!.code).toBe(code);
    if (pattern) expect(String(out.json!.msg)).toMatch(pattern);
    expect(linkNames(pod)).toEqual(["lo"]);
    expect(linkNames(hostNs).filter((n) => !["lo", "m0", "mv0"].includes(n))).toEqual([]);
  }

  test("unknown mode, unknown flag, missing master, malformed JSON", () => {
    const host = node();
    const pod = netns("pod");
    expectClean(cni(IPVLAN, call("ADD", pod), conf({ mode: "l4" }), host.ns), 7, host.ns, pod, /l4/);
    expectClean(cni(IPVLAN, call("ADD", pod), conf({ flag: "isolated" }), host.ns), 7, host.ns, pod, /isolated/);
    expectClean(cni(IPVLAN, call("ADD", pod), conf({ master: "ens9" }), host.ns), 7, host.ns, pod, /master "ens9" not found/);
    expectClean(cni(IPVLAN, call("ADD", pod), "{nope", host.ns), 6, host.ns, pod);
  });

  test("a master that cannot take ipvlan (it already carries a macvlan)", () => {
    const host = node();
    const pod = netns("pod");
    sh("ip", ["-n", host.ns, "link", "add", "mv0", "link", "m0", "type", "macvlan"]);
    expectClean(cni(IPVLAN, call("ADD", pod), conf(), host.ns), 100, host.ns, pod, /failed to create ipvlan "net1" on master "m0"/);
  });

  test("chained, but prevResult does not name a single interface", () => {
    const host = node();
    const pod = netns("pod");
    const prevResult = { cniVersion: "1.0.0", interfaces: [{ name: "a" }, { name: "b" }], ips: [{ address: "10.50.0.7/24" }] };
    const out = cni(IPVLAN, call("ADD", pod), { cniVersion: "1.0.0", name: "ipvnet", type: "ipvlan", prevResult }, host.ns);
    expectClean(out, 7, host.ns, pod, /single interface/);
  });

  test("an IPAM failure removes the link", () => {
    const host = node();
    const pod = netns("pod");
    const plugins = pluginDir({ broken: FAILING_IPAM });
    try {
      const out = cni(IPVLAN, call("ADD", pod, { path: plugins }), conf({ ipam: { type: "broken" } }), host.ns);
      expectClean(out, 11, host.ns, pod, /no addresses left/);
    } finally {
      removeDir(plugins);
    }
  });
});

describe("ipvlan side by side with upstream v1.9.1", () => {
  const CASES: { title: string; config: Record<string, unknown> }[] = [
    { title: "l2, 1.0.0", config: conf() },
    { title: "l3, mtu, 1.1.0", config: conf({ mode: "l3", mtu: 1400, cniVersion: "1.1.0" }) },
    { title: "l3s, 0.3.1", config: conf({ mode: "l3s", cniVersion: "0.3.1" }) },
    {
      title: "chained",
      config: {
        cniVersion: "1.0.0",
        name: "ipvnet",
        type: "ipvlan",
        prevResult: { cniVersion: "1.0.0", interfaces: [{ name: "m0" }], ips: [{ address: "10.50.0.7/24", interface: 0 }] },
      },
    },
  ];

  test.each(CASES)("$title", ({ config }) => {
    const observe = (binary: string) => {
      const host = node({ mtu: 1500 });
      const pod = netns("pod");
      const out = cni(binary, call("ADD", pod), config, host.ns);
      expect(out.code, `${binary}: ${out.stdout}${out.stderr}`).toBe(0);
      const l = link(pod, "net1")!;
      const seen = {
        result: JSON.parse(JSON.stringify(out.json).replaceAll(nsPath(pod), "<sandbox>").replaceAll(link(host.ns, "m0")!.address, "<mac>")),
        link: { kind: l.linkinfo?.info_kind, info: ipvlanInfo(l), mtu: l.mtu, flags: l.flags },
        addresses: addresses(pod, "net1"),
        routes: routes(pod).map((r) => ({ dst: r.dst, gateway: r.gateway, dev: r.dev, scope: r.scope, protocol: r.protocol })),
      };
      expect(cni(binary, call("DEL", pod), config, host.ns).code).toBe(0);
      expect(linkNames(pod)).toEqual(["lo"]);
      return seen;
    };
    const sortKeys = (value: unknown): unknown =>
      JSON.parse(JSON.stringify(value), (_key, v: unknown) =>
        v && typeof v === "object" && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => a.localeCompare(b))) : v,
      );
    expect(sortKeys(observe(IPVLAN))).toEqual(sortKeys(observe(UPSTREAM_IPVLAN)));
  });
});
