import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { CniError } from "./errors.ts";
import { memoryIO, runPlugin, type PluginVerbs } from "./skel.ts";
import type { Attachment, CmdArgs, Result } from "./types.ts";

const scratch = mkdtempSync(join(tmpdir(), "skel-test-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** A regular file standing in for a pod's netns: it is not our own namespace. */
const POD_NETNS = join(scratch, "pod-netns");
writeFileSync(POD_NETNS, "");

const ENV = {
  CNI_CONTAINERID: "ctr1",
  CNI_NETNS: POD_NETNS,
  CNI_IFNAME: "net1",
  CNI_ARGS: "IgnoreUnknown=1",
  CNI_PATH: "/opt/cni/bin:/usr/libexec/cni",
};

const RESULT: Result = {
  cniVersion: "1.1.0",
  interfaces: [{ name: "net1", mac: "aa:bb:cc:dd:ee:ff", sandbox: POD_NETNS }],
  ips: [{ interface: 0, address: "10.1.2.3/24", gateway: "10.1.2.1" }],
};

function config(cniVersion: string, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ cniVersion, name: "net-a", type: "fake", ...extra });
}

/** A plugin that records what it was called with. */
function recorder(overrides: Partial<PluginVerbs> = {}) {
  const calls: Array<{ verb: string; args: CmdArgs; valid?: Attachment[] }> = [];
  const verbs: PluginVerbs = {
    name: "fake",
    version: "v0.0.1",
    add: (args) => {
      calls.push({ verb: "add", args });
      return RESULT;
    },
    del: (args) => {
      calls.push({ verb: "del", args });
    },
    check: (args) => {
      calls.push({ verb: "check", args });
    },
    status: (args) => {
      calls.push({ verb: "status", args });
    },
    gc: (args, valid) => {
      calls.push({ verb: "gc", args, valid });
    },
    ...overrides,
  };
  return { verbs, calls };
}

async function run(verbs: PluginVerbs, env: Record<string, string | undefined>, stdin: string | Error = "") {
  const io = memoryIO(env, stdin);
  const code = await runPlugin(verbs, io);
  return { code, stdout: io.stdout, stderr: io.stderr };
}

describe("runPlugin", () => {
  it("prints the about text on stderr and exits 0 without CNI_COMMAND", async () => {
    const { verbs, calls } = recorder();
    const out = await run(verbs, ENV);
    expect(out).toEqual({
      code: 0,
      stdout: "",
      stderr: "CNI fake plugin v0.0.1\nCNI protocol versions supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0\n",
    });
    expect(calls).toEqual([]);
    const { stderr } = await run({ ...verbs, version: undefined }, {});
    expect(stderr.split("\n")[0]).toBe("CNI fake plugin version unknown");
  });

  it("answers VERSION exactly, without reading stdin", async () => {
    const { verbs } = recorder();
    const out = await run(verbs, { CNI_COMMAND: "VERSION" }, new Error("stdin must not be read"));
    expect(out).toEqual({
      code: 0,
      stdout: '{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}\n',
      stderr: "",
    });
  });

  it("prints a code 4 error on stdout for missing variables and exits 1", async () => {
    const { verbs, calls } = recorder();
    const out = await run(verbs, { CNI_COMMAND: "ADD", CNI_CONTAINERID: "c" }, config("1.0.0"));
    expect(out.code).toBe(1);
    expect(out.stdout).toBe(
      ["{", '    "cniVersion": "1.1.0",', '    "code": 4,', '    "msg": "required env variables [CNI_NETNS,CNI_IFNAME,CNI_PATH] missing"', "}"].join("\n"),
    );
    expect(out.stderr).toMatch(/ error fake: error 4: required env variables/);
    expect(out.stderr.trim().split("\n")).toHaveLength(1);
    expect(calls).toEqual([]);
  });

  it("refuses an unsupported cniVersion with code 1, answering in the latest version", async () => {
    const { verbs, calls } = recorder();
    const out = await run(verbs, { ...ENV, CNI_COMMAND: "ADD" }, config("9.9.9"));
    expect(out.code).toBe(1);
    expect(JSON.parse(out.stdout)).toEqual({
      cniVersion: "1.1.0",
      code: 1,
      msg: "incompatible CNI versions",
      details: 'config is "9.9.9", plugin supports ["0.3.0" "0.3.1" "0.4.0" "1.0.0" "1.1.0"]',
    });
    expect(calls).toEqual([]);
  });

  it("refuses CHECK for a 0.3.1 config", async () => {
    const { verbs, calls } = recorder();
    const out = await run(verbs, { ...ENV, CNI_COMMAND: "CHECK" }, config("0.3.1"));
    expect(JSON.parse(out.stdout)).toEqual({ cniVersion: "0.3.1", code: 1, msg: "config version does not allow CHECK" });
    expect(calls).toEqual([]);
  });

  it("runs ADD and prints the result in the config's version", async () => {
    const { verbs, calls } = recorder();
    const stdin = config("0.3.1", { master: "eth0" });
    const out = await run(verbs, { ...ENV, CNI_COMMAND: "ADD" }, stdin);
    expect(out.code).toBe(0);
    expect(out.stderr).toBe("");
    expect(out.stdout).toBe(
      JSON.stringify(
        {
          cniVersion: "0.3.1",
          interfaces: [{ name: "net1", mac: "aa:bb:cc:dd:ee:ff", sandbox: POD_NETNS }],
          ips: [{ version: "4", interface: 0, address: "10.1.2.3/24", gateway: "10.1.2.1" }],
          dns: {},
        },
        null,
        4,
      ),
    );
    expect(calls).toHaveLength(1);
    const args = calls[0]?.args;
    expect(args).toMatchObject({
      command: "ADD",
      containerId: "ctr1",
      netns: POD_NETNS,
      ifName: "net1",
      args: "IgnoreUnknown=1",
      path: ["/opt/cni/bin", "/usr/libexec/cni"],
    });
    expect(args?.conf.raw.master).toBe("eth0");
    expect(args?.conf.bytes).toBe(stdin);
  });

  it("awaits asynchronous verbs", async () => {
    const { verbs } = recorder({ add: async () => ({ cniVersion: "1.1.0", interfaces: [{ name: "net1" }] }) });
    const out = await run(verbs, { ...ENV, CNI_COMMAND: "ADD" }, config("1.1.0"));
    expect(JSON.parse(out.stdout)).toEqual({ cniVersion: "1.1.0", interfaces: [{ name: "net1" }] });
  });

  it("turns a plain Error from a verb into code 999, in the request's version", async () => {
    const { verbs } = recorder({
      add: () => {
        throw new Error("netlink said no");
      },
    });
    const out = await run(verbs, { ...ENV, CNI_COMMAND: "ADD" }, config("1.0.0"));
    expect(out.code).toBe(1);
    expect(out.stdout).toBe(JSON.stringify({ cniVersion: "1.0.0", code: 999, msg: "netlink said no" }, null, 4));
    expect(out.stderr).toContain("error 999: netlink said no");
  });

  it("passes a CniError through with its code and details", async () => {
    const { verbs } = recorder({
      del: async () => {
        throw new CniError(101, "IPAM failed", "range exhausted");
      },
    });
    const out = await run(verbs, { ...ENV, CNI_COMMAND: "DEL" }, config("0.4.0"));
    expect(JSON.parse(out.stdout)).toEqual({ cniVersion: "0.4.0", code: 101, msg: "IPAM failed", details: "range exhausted" });
  });

  it("runs DEL without a netns, and CHECK, printing nothing", async () => {
    const { verbs, calls } = recorder();
    const del = await run(verbs, { ...ENV, CNI_COMMAND: "DEL", CNI_NETNS: undefined }, config("1.0.0"));
    expect(del).toEqual({ code: 0, stdout: "", stderr: "" });
    const check = await run(verbs, { ...ENV, CNI_COMMAND: "CHECK" }, config("1.0.0"));
    expect(check).toEqual({ code: 0, stdout: "", stderr: "" });
    expect(calls.map((call) => call.verb)).toEqual(["del", "check"]);
    expect(calls[0]?.args.netns).toBe("");
  });

  it("succeeds silently for STATUS and GC when the plugin has none", async () => {
    const { verbs, calls } = recorder({ status: undefined, gc: undefined });
    const env = { CNI_PATH: "/opt/cni/bin" };
    const stdin = config("1.1.0", { "cni.dev/valid-attachments": "not even a list" });
    expect(await run(verbs, { ...env, CNI_COMMAND: "STATUS" }, stdin)).toEqual({ code: 0, stdout: "", stderr: "" });
    expect(await run(verbs, { ...env, CNI_COMMAND: "GC" }, stdin)).toEqual({ code: 0, stdout: "", stderr: "" });
    expect(calls).toEqual([]);
  });

  it("still checks the version for STATUS and GC", async () => {
    const { verbs } = recorder({ status: undefined, gc: undefined });
    const out = await run(verbs, { CNI_PATH: "/bin", CNI_COMMAND: "GC" }, config("1.0.0"));
    expect(out.code).toBe(1);
    expect(JSON.parse(out.stdout).msg).toBe("config version does not allow GC");
  });

  it("hands GC the valid attachments", async () => {
    const { verbs, calls } = recorder();
    const valid = [
      { containerID: "c1", ifname: "net1" },
      { containerID: "c2", ifname: "eth0" },
    ];
    const stdin = config("1.1.0", { "cni.dev/valid-attachments": valid, "cni.dev/attachments": valid });
    const out = await run(verbs, { CNI_COMMAND: "GC", CNI_PATH: "/bin" }, stdin);
    expect(out).toEqual({ code: 0, stdout: "", stderr: "" });
    expect(calls[0]?.verb).toBe("gc");
    expect(calls[0]?.valid).toEqual(valid);
    expect(calls[0]?.args.path).toEqual(["/bin"]);
  });

  it("refuses a malformed attachment list with code 7", async () => {
    const { verbs, calls } = recorder();
    const stdin = config("1.1.0", { "cni.dev/valid-attachments": [{ containerID: "c1" }] });
    const out = await run(verbs, { CNI_COMMAND: "GC", CNI_PATH: "/bin" }, stdin);
    expect(out.code).toBe(1);
    expect(JSON.parse(out.stdout).code).toBe(7);
    expect(calls).toEqual([]);
  });

  it("reports a stdin read failure as code 5", async () => {
    const { verbs } = recorder();
    const out = await run(verbs, { ...ENV, CNI_COMMAND: "ADD" }, new Error("EIO"));
    expect(JSON.parse(out.stdout)).toEqual({ cniVersion: "1.1.0", code: 5, msg: "error reading from stdin: EIO" });
  });

  it("reports malformed stdin as code 6 and a nameless config as code 7", async () => {
    const { verbs } = recorder();
    const garbled = await run(verbs, { ...ENV, CNI_COMMAND: "ADD" }, "{not json");
    expect(JSON.parse(garbled.stdout).code).toBe(6);
    const nameless = await run(verbs, { ...ENV, CNI_COMMAND: "ADD" }, '{"cniVersion":"0.4.0"}');
    // The request's version is known even though the config is refused.
    expect(JSON.parse(nameless.stdout)).toEqual({ cniVersion: "0.4.0", code: 7, msg: "missing network name" });
  });

  it("refuses our own netns before the verb runs, unless overridden", async () => {
    const { verbs, calls } = recorder();
    const own = { ...ENV, CNI_NETNS: "/proc/self/ns/net" };
    for (const command of ["ADD", "CHECK", "DEL"]) {
      const out = await run(verbs, { ...own, CNI_COMMAND: command }, config("1.0.0"));
      expect(JSON.parse(out.stdout)).toEqual({
        cniVersion: "1.0.0",
        code: 8,
        msg: "plugin's netns and netns from CNI_NETNS should not be the same",
      });
    }
    expect(calls).toEqual([]);
    for (const override of ["1", "true", "TRUE"]) {
      const out = await run(verbs, { ...own, CNI_COMMAND: "DEL", CNI_NETNS_OVERRIDE: override }, config("1.0.0"));
      expect(out.code).toBe(0);
    }
    const notOverridden = await run(verbs, { ...own, CNI_COMMAND: "DEL", CNI_NETNS_OVERRIDE: "yes" }, config("1.0.0"));
    expect(notOverridden.code).toBe(1);
    expect(calls).toHaveLength(3);
  });

  it("leaves a netns it cannot stat to the verb", async () => {
    const { verbs, calls } = recorder();
    const out = await run(verbs, { ...ENV, CNI_NETNS: join(scratch, "missing"), CNI_COMMAND: "CHECK" }, config("1.0.0"));
    expect(out.code).toBe(0);
    expect(calls).toHaveLength(1);
  });

  it("reports a result it cannot print instead of printing half of one", async () => {
    const { verbs } = recorder({ add: () => ({ cniVersion: "1.1.0", ips: [{ address: "bogus" }] }) });
    const out = await run(verbs, { ...ENV, CNI_COMMAND: "ADD" }, config("0.4.0"));
    expect(out.code).toBe(1);
    expect(JSON.parse(out.stdout).code).toBe(999);
  });
});
