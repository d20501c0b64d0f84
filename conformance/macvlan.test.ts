/**
 * macvlan, compiled, against the real kernel: every case runs bin/macvlan inside a "node"
 * namespace whose master is a veth, and reads the pod's state back with `ip -j`.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
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
  netns,
  node,
  nsPath,
  ping,
  pluginDir,
  recordingIpam,
  removeDir,
  routes,
  sweepStale,
  type CniCall,
} from "./harness.ts";

const MACVLAN = join(BIN, "macvlan");

function conf(extra: Record<string, unknown> = {}, address = "10.10.0.5/24"): Record<string, unknown> {
  return {
    cniVersion: "1.0.0",
    name: "testnet",
    type: "macvlan",
    master: "m0",
    ipam: {
      type: "static",
      addresses: [{ address, gateway: "10.10.0.1" }],
      routes: [{ dst: "172.31.0.0/16" }],
    },
    ...extra,
  };
}

function call(command: CniCall["command"], pod: string, extra: Partial<CniCall> = {}): CniCall {
  return { command, containerId: `ctr-${pod}`, netns: nsPath(pod), ifName: "net1", path: UPSTREAM_BIN, ...extra };
}

function linkNames(ns: string): string[] {
  return links(ns)
    .map((l) => l.ifname)
    .sort();
}

beforeAll(() => {
  sweepStale();
  expect(existsSync(MACVLAN), `${MACVLAN} missing: run npm run build first`).toBe(true);
});
afterEach(cleanup);
afterAll(cleanup);

describe("macvlan ADD", () => {
  test("creates a bridge-mode macvlan with address, routes and the master's MTU, up", () => {
    const host = node({ mtu: 1450 });
    const pod = netns("pod");
    const out = cni(MACVLAN, call("ADD", pod), conf(), host.ns);
    expect(out.stderr).not.toMatch(/error/i);
    expect(out.code).toBe(0);

    const l = link(pod, "net1")!;
    expect(l.linkinfo?.info_kind).toBe("macvlan");
    expect(l.linkinfo?.info_data?.mode).toBe("bridge");
    expect(l.mtu).toBe(1450);
    expect(l.flags).toContain("UP");
    expect(addresses(pod, "net1")).toEqual(["10.10.0.5/24"]);
    expect(routes(pod)).toContainEqual(expect.objectContaining({ dst: "172.31.0.0/16", gateway: "10.10.0.1", dev: "net1" }));

    const result = out.json!;
    expect(result.cniVersion).toBe("1.0.0");
    expect(result.interfaces).toEqual([{ name: "net1", mac: l.address, sandbox: nsPath(pod) }]);
    expect(result.ips).toEqual([{ address: "10.10.0.5/24", gateway: "10.10.0.1", interface: 0 }]);
    expect(result.routes).toEqual([{ dst: "172.31.0.0/16" }]);
    // Nothing new on the node: the link was born in the pod.
    expect(linkNames(host.ns)).toEqual(["lo", "m0"]);
  });

  test("0.3.1 result carries ips[].version and dns", () => {
    const host = node();
    const pod = netns("pod");
    const out = cni(MACVLAN, call("ADD", pod), conf({ cniVersion: "0.3.1", dns: { nameservers: ["10.10.0.53"] } }), host.ns);
    expect(out.code).toBe(0);
    expect(out.json!.cniVersion).toBe("0.3.1");
    expect(out.json!.ips).toEqual([{ version: "4", address: "10.10.0.5/24", gateway: "10.10.0.1", interface: 0 }]);
    expect(out.json!.dns).toEqual({ nameservers: ["10.10.0.53"] });
  });

  test.each(["bridge", "private", "vepa", "passthru"])("mode %s reaches the kernel", (mode) => {
    const host = node();
    const pod = netns("pod");
    const out = cni(MACVLAN, call("ADD", pod), conf({ mode }), host.ns);
    expect(out.code, out.stdout).toBe(0);
    expect(link(pod, "net1")?.linkinfo?.info_data?.mode).toBe(mode);
  });

  test("two pods on one master in bridge mode reach each other", () => {
    const host = node();
    const a = netns("pod");
    const b = netns("pod");
    expect(cni(MACVLAN, call("ADD", a), conf({}, "10.10.0.11/24"), host.ns).code).toBe(0);
    expect(cni(MACVLAN, call("ADD", b), conf({}, "10.10.0.12/24"), host.ns).code).toBe(0);
    expect(ping(a, "10.10.0.12")).toBe(true);
    expect(ping(b, "10.10.0.11")).toBe(true);
  });

  test("an explicit MTU below the master's is applied", () => {
    const host = node({ mtu: 1500 });
    const pod = netns("pod");
    expect(cni(MACVLAN, call("ADD", pod), conf({ mtu: 1400 }), host.ns).code).toBe(0);
    expect(link(pod, "net1")?.mtu).toBe(1400);
  });

  test("bcqueuelen reaches the kernel", () => {
    const host = node();
    const pod = netns("pod");
    expect(cni(MACVLAN, call("ADD", pod), conf({ bcqueuelen: 123 }), host.ns).code).toBe(0);
    expect(link(pod, "net1")?.linkinfo?.info_data?.bcqueuelen).toBe(123);
  });

  test("MAC from the config, overridden by CNI_ARGS MAC=, overridden by runtimeConfig.mac", () => {
    const cases: [Record<string, unknown>, string | undefined, string][] = [
      [{ mac: "02:00:00:00:00:01" }, undefined, "02:00:00:00:00:01"],
      [{ mac: "02:00:00:00:00:01" }, "IgnoreUnknown=1;MAC=02:00:00:00:00:02", "02:00:00:00:00:02"],
      [{ mac: "02:00:00:00:00:01", runtimeConfig: { mac: "02:00:00:00:00:03" } }, "MAC=02:00:00:00:00:02", "02:00:00:00:00:03"],
    ];
    for (const [extra, args, expected] of cases) {
      const host = node();
      const pod = netns("pod");
      // static IPAM parses CNI_ARGS too and needs IgnoreUnknown to accept MAC=.
      const cniArgs = args && !args.includes("IgnoreUnknown") ? `IgnoreUnknown=1;${args}` : args;
      const out = cni(MACVLAN, call("ADD", pod, cniArgs ? { args: cniArgs } : {}), conf(extra), host.ns);
      expect(out.code, out.stdout).toBe(0);
      expect(link(pod, "net1")?.address).toBe(expected);
      expect((out.json!.interfaces as { mac: string }[])[0]!.mac).toBe(expected);
    }
  });

  test("linkInContainer: the master lives in the pod's namespace", () => {
    const host = node();
    const pod = netns("pod");
    // A veth pair entirely inside the pod serves as the in-container master.
    const wire = netns("wire");
    execFileSync("ip", ["-n", pod, "link", "add", "inner0", "type", "veth", "peer", "name", "w1", "netns", wire]);
    execFileSync("ip", ["-n", pod, "link", "set", "inner0", "up"]);
    const out = cni(MACVLAN, call("ADD", pod), conf({ master: "inner0", linkInContainer: true }), host.ns);
    expect(out.code, out.stdout).toBe(0);
    const l = link(pod, "net1")!;
    expect(l.linkinfo?.info_kind).toBe("macvlan");
    expect(l.link).toBe("inner0");
    expect(linkNames(host.ns)).toEqual(["lo", "m0"]);
  });

  test("no master configured: the link of the node's default route", () => {
    const host = node({ master: "uplink0", defaultRoute: true });
    const pod = netns("pod");
    const out = cni(MACVLAN, call("ADD", pod), conf({ master: undefined }), host.ns);
    expect(out.code, out.stdout).toBe(0);
    const hostMaster = link(host.ns, "uplink0")!;
    expect(link(pod, "net1")?.link_index).toBe(hostMaster.ifindex);
  });

  test("no IPAM: the link only, up, no addresses", () => {
    const host = node();
    const pod = netns("pod");
    const out = cni(MACVLAN, call("ADD", pod), conf({ ipam: undefined }), host.ns);
    expect(out.code, out.stdout).toBe(0);
    expect(link(pod, "net1")?.flags).toContain("UP");
    expect(addresses(pod, "net1")).toEqual([]);
    expect(out.json!.ips).toBeUndefined();
  });
});

describe("macvlan CHECK", () => {
  test("passes on a healthy pod and fails once the kernel state drifts", () => {
    const host = node();
    const pod = netns("pod");
    const add = cni(MACVLAN, call("ADD", pod), conf(), host.ns);
    expect(add.code).toBe(0);
    const withPrev = conf({ prevResult: add.json });
    expect(cni(MACVLAN, call("CHECK", pod), withPrev, host.ns).code).toBe(0);

    execFileSync("ip", ["-n", pod, "addr", "del", "10.10.0.5/24", "dev", "net1"]);
    const broken = cni(MACVLAN, call("CHECK", pod), withPrev, host.ns);
    expect(broken.code).not.toBe(0);
    expect(broken.json!.msg).toMatch(/10\.10\.0\.5\/24/);
  });

  test("fails when the link's mode differs from the config", () => {
    const host = node();
    const pod = netns("pod");
    const add = cni(MACVLAN, call("ADD", pod), conf(), host.ns);
    const check = cni(MACVLAN, call("CHECK", pod), conf({ mode: "private", prevResult: add.json }), host.ns);
    expect(check.code).not.toBe(0);
    expect(check.json!.msg).toMatch(/mode/);
  });

  test("requires prevResult", () => {
    const host = node();
    const pod = netns("pod");
    cni(MACVLAN, call("ADD", pod), conf(), host.ns);
    const check = cni(MACVLAN, call("CHECK", pod), conf(), host.ns);
    expect(check.code).not.toBe(0);
    expect(check.json!.msg).toMatch(/prevResult/);
  });
});

describe("macvlan DEL", () => {
  test("removes the link and releases the address; a second DEL succeeds too", () => {
    const host = node();
    const pod = netns("pod");
    const plugins = pluginDir();
    writeFileSync(join(plugins, "recorder"), recordingIpam(join(plugins, "calls.log")), { mode: 0o755 });
    try {
      const config = conf({ ipam: { ...(conf().ipam as object), type: "recorder" } });
      expect(cni(MACVLAN, call("ADD", pod, { path: plugins }), config, host.ns).code).toBe(0);
      expect(cni(MACVLAN, call("DEL", pod, { path: plugins }), config, host.ns).code).toBe(0);
      expect(link(pod, "net1")).toBeUndefined();
      const second = cni(MACVLAN, call("DEL", pod, { path: plugins }), config, host.ns);
      expect(second.code, second.stdout).toBe(0);
      expect(readFileSync(join(plugins, "calls.log"), "utf8").trim().split("\n")).toEqual([`ADD ctr-${pod}`, `DEL ctr-${pod}`, `DEL ctr-${pod}`]);
    } finally {
      removeDir(plugins);
    }
  });

  test("releases the address when CNI_NETNS is no longer a namespace (an unmounted leftover file)", () => {
    const host = node();
    const pod = netns("pod");
    const plugins = pluginDir();
    writeFileSync(join(plugins, "recorder"), recordingIpam(join(plugins, "calls.log")), { mode: 0o755 });
    const stale = join(plugins, "stale-netns");
    writeFileSync(stale, "");
    try {
      const config = conf({ ipam: { ...(conf().ipam as object), type: "recorder" } });
      expect(cni(MACVLAN, call("ADD", pod, { path: plugins }), config, host.ns).code).toBe(0);
      const del = cni(MACVLAN, call("DEL", pod, { path: plugins, netns: stale }), config, host.ns);
      expect(del.code, del.stdout).toBe(0);
      expect(readFileSync(join(plugins, "calls.log"), "utf8").trim().split("\n")).toEqual([`ADD ctr-${pod}`, `DEL ctr-${pod}`]);
    } finally {
      removeDir(plugins);
    }
  });

  test("succeeds when the namespace is already gone, and when CNI_NETNS is empty", () => {
    const host = node();
    const pod = netns("pod");
    expect(cni(MACVLAN, call("ADD", pod), conf(), host.ns).code).toBe(0);
    deleteNetns(pod);
    const del = cni(MACVLAN, call("DEL", pod), conf(), host.ns);
    expect(del.code, del.stdout).toBe(0);
    const noNetns = cni(MACVLAN, call("DEL", pod, { netns: undefined }), conf(), host.ns);
    expect(noNetns.code, noNetns.stdout).toBe(0);
  });
});

describe("macvlan bad input: a CNI error and nothing left behind", () => {
  function expectCleanFailure(out: ReturnType<typeof cni>, code: number | undefined, host: string, pod: string): void {
    expect(out.code).not.toBe(0);
    expect(out.json, `stdout: ${out.stdout}`).toBeDefined();
    expect(typeof out.json!.msg).toBe("string");
    expect(out.json!.cniVersion).toBeDefined();
    if (code !== undefined) expect(out.json!.code).toBe(code);
    expect(linkNames(pod)).toEqual(["lo"]);
    expect(linkNames(host)).toEqual(["lo", "m0"]);
  }

  test("malformed JSON is code 6", () => {
    const host = node();
    const pod = netns("pod");
    expectCleanFailure(cni(MACVLAN, call("ADD", pod), "{not json", host.ns), 6, host.ns, pod);
  });

  test("an unknown cniVersion is code 1", () => {
    const host = node();
    const pod = netns("pod");
    expectCleanFailure(cni(MACVLAN, call("ADD", pod), conf({ cniVersion: "9.9.9" }), host.ns), 1, host.ns, pod);
  });

  test("an unknown mode is code 7", () => {
    const host = node();
    const pod = netns("pod");
    const out = cni(MACVLAN, call("ADD", pod), conf({ mode: "source" }), host.ns);
    expectCleanFailure(out, 7, host.ns, pod);
    expect(out.json!.msg).toMatch(/source/);
  });

  test("a missing master names it", () => {
    const host = node();
    const pod = netns("pod");
    const out = cni(MACVLAN, call("ADD", pod), conf({ master: "ens9" }), host.ns);
    expectCleanFailure(out, 7, host.ns, pod);
    expect(out.json!.msg).toBe('master "ens9" not found');
  });

  test("an MTU above the master's", () => {
    const host = node({ mtu: 1500 });
    const pod = netns("pod");
    const out = cni(MACVLAN, call("ADD", pod), conf({ mtu: 9000 }), host.ns);
    expectCleanFailure(out, 7, host.ns, pod);
    expect(out.json!.msg).toMatch(/9000.*1500/);
  });

  test("missing environment variables are code 4, naming them", () => {
    const host = node();
    const pod = netns("pod");
    const out = cni(MACVLAN, call("ADD", pod, { netns: undefined, ifName: undefined }), conf(), host.ns);
    expectCleanFailure(out, 4, host.ns, pod);
    expect(out.json!.msg).toMatch(/CNI_NETNS.*CNI_IFNAME/);
  });

  test("an IPAM failure is relayed with its code and the link is removed", () => {
    const host = node();
    const pod = netns("pod");
    const plugins = pluginDir({ broken: FAILING_IPAM });
    try {
      const out = cni(MACVLAN, call("ADD", pod, { path: plugins }), conf({ ipam: { type: "broken" } }), host.ns);
      expectCleanFailure(out, 11, host.ns, pod);
      expect(out.json!.msg).toBe("no addresses left");
    } finally {
      removeDir(plugins);
    }
  });

  test("an address setup failure releases the address and removes the link", () => {
    const host = node();
    const pod = netns("pod");
    const plugins = pluginDir();
    const logFile = join(plugins, "calls.log");
    writeFileSync(join(plugins, "recorder"), recordingIpam(logFile), { mode: 0o755 });
    try {
      // A gateway outside every on-link prefix: the kernel refuses the route.
      const ipam = { type: "recorder", addresses: [{ address: "10.10.0.5/24" }], routes: [{ dst: "172.31.0.0/16", gw: "10.99.0.1" }] };
      const out = cni(MACVLAN, call("ADD", pod, { path: plugins }), conf({ ipam }), host.ns);
      expectCleanFailure(out, 100, host.ns, pod);
      expect(out.json!.msg).toMatch(/172\.31\.0\.0\/16 via 10\.99\.0\.1/);
      expect(readFileSync(logFile, "utf8").trim().split("\n")).toEqual([`ADD ctr-${pod}`, `DEL ctr-${pod}`]);
    } finally {
      removeDir(plugins);
    }
  });

  test("a second ADD of the same interface is an error and keeps the first", () => {
    const host = node();
    const pod = netns("pod");
    expect(cni(MACVLAN, call("ADD", pod), conf(), host.ns).code).toBe(0);
    const again = cni(MACVLAN, call("ADD", pod), conf(), host.ns);
    expect(again.code).not.toBe(0);
    expect(again.json!.msg).toMatch(/already exists/);
    expect(addresses(pod, "net1")).toEqual(["10.10.0.5/24"]);
  });
});

describe("macvlan STATUS, GC, VERSION", () => {
  test("VERSION lists the supported versions", () => {
    const out = cni(MACVLAN, { command: "VERSION" }, {});
    expect(out.code).toBe(0);
    expect(out.json).toEqual({ cniVersion: "1.1.0", supportedVersions: ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] });
  });

  test("the working directory's .env and bunfig.toml change nothing (Bun would load them; the build turns that off)", () => {
    const cwd = mkdtempSync(join(tmpdir(), "cnit-cwd-"));
    try {
      writeFileSync(join(cwd, ".env"), "CNI_COMMAND=VERSION\n");
      writeFileSync(join(cwd, "bunfig.toml"), 'preload = ["./preload.js"]\n');
      writeFileSync(join(cwd, "preload.js"), 'require("fs").writeFileSync(require("path").join(__dirname, "ran"), "");\n');
      // No CNI_COMMAND: the plugin prints its about text, unless .env supplied one.
      const run = spawnSync(MACVLAN, [], { cwd, env: { PATH: process.env.PATH ?? "" }, encoding: "utf8" });
      expect(run.status, run.stderr).toBe(0);
      expect(run.stdout).toBe("");
      expect(run.stderr).toMatch(/^CNI macvlan plugin/);
      expect(existsSync(join(cwd, "ran"))).toBe(false);
    } finally {
      rmSync(cwd, { recursive: true, force: true });
    }
  });

  test("the executable invoked under a name it carries no plugin for: code 7 on stdout, exit 1", () => {
    const dir = mkdtempSync(join(tmpdir(), "cnit-name-"));
    try {
      symlinkSync(MACVLAN, join(dir, "bogus"));
      const run = spawnSync(join(dir, "bogus"), [], { env: { PATH: process.env.PATH ?? "", CNI_COMMAND: "VERSION" }, encoding: "utf8" });
      expect(run.status).toBe(1);
      expect(JSON.parse(run.stdout)).toMatchObject({ code: 7, msg: expect.stringMatching(/invoked as "bogus"/) });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("STATUS is 50 when the master is missing and 0 when it is there", () => {
    const host = node();
    const ok = cni(MACVLAN, { command: "STATUS", path: UPSTREAM_BIN }, conf({ cniVersion: "1.1.0" }), host.ns);
    expect(ok.code, ok.stdout).toBe(0);
    const missing = cni(MACVLAN, { command: "STATUS", path: UPSTREAM_BIN }, conf({ cniVersion: "1.1.0", master: "nope0" }), host.ns);
    expect(missing.code).not.toBe(0);
    expect(missing.json!.code).toBe(50);
  });

  test("GC is forwarded to the IPAM plugin with the valid attachments", () => {
    const plugins = pluginDir({
      gcipam: `#!/bin/sh\necho "$CNI_COMMAND" >> "$(dirname "$0")/calls.log"\ncat >> "$(dirname "$0")/stdin.log"\n`,
    });
    try {
      const config = conf({
        cniVersion: "1.1.0",
        ipam: { type: "gcipam" },
        "cni.dev/valid-attachments": [{ containerID: "c1", ifname: "net1" }],
      });
      const out = cni(MACVLAN, { command: "GC", path: plugins }, config);
      expect(out.code, out.stdout).toBe(0);
      expect(readFileSync(join(plugins, "calls.log"), "utf8").trim()).toBe("GC");
      expect(JSON.parse(readFileSync(join(plugins, "stdin.log"), "utf8"))["cni.dev/valid-attachments"]).toEqual([{ containerID: "c1", ifname: "net1" }]);
    } finally {
      removeDir(plugins);
    }
  });
});
