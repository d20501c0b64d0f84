import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { CniError, ErrorCode } from "./errors.ts";
import { type PluginEnv, carryPlugins, runDelegate } from "./exec.ts";
import type { PluginVerbs } from "./skel.ts";
import type { CmdArgs } from "./types.ts";
import { rejected } from "./test-util.ts";

const root = mkdtempSync(join(tmpdir(), "exec-test-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
afterEach(() => carryPlugins({}));

const ENV: PluginEnv = { containerId: "ctr1", netns: "/var/run/netns/pod", ifName: "net1", args: "K8S_POD_NAME=p", path: [root] };
const STDIN = JSON.stringify({ cniVersion: "1.0.0", name: "net", type: "fake" });

/** A plugin that records what it was called with and answers ADD with one address. */
function recordingPlugin(calls: CmdArgs[], fail?: CniError): PluginVerbs {
  return {
    name: "fake",
    add(args) {
      calls.push(args);
      if (fail) throw fail;
      return { cniVersion: "1.0.0", ips: [{ address: "10.1.2.3/24" }] };
    },
    del(args) {
      calls.push(args);
    },
    check() {},
  };
}

describe("runDelegate", () => {
  // This process' own executable (node, under vitest) under a plugin's name: a symlink resolves to
  // the same inode, as a hard link in a CNI bin dir does.
  const own = join(root, "own");
  beforeAll(() => {
    mkdirSync(own);
    symlinkSync("/proc/self/exe", join(own, "fake"));
  });

  it("runs a delegate that is this executable under a carried plugin's name in this process", async () => {
    const calls: CmdArgs[] = [];
    carryPlugins({ fake: async () => recordingPlugin(calls) });
    const stdout = await runDelegate(join(own, "fake"), "ADD", ENV, STDIN);
    expect(JSON.parse(stdout)).toMatchObject({ cniVersion: "1.0.0", ips: [{ address: "10.1.2.3/24" }] });
    expect(calls).toHaveLength(1);
    expect(calls[0]).toMatchObject({ command: "ADD", containerId: "ctr1", netns: "/var/run/netns/pod", ifName: "net1", args: "K8S_POD_NAME=p", path: [root] });
    expect(calls[0]?.conf.name).toBe("net");
  });

  it("gives the plugin's error object back as the CniError it was, code and details kept", async () => {
    carryPlugins({ fake: async () => recordingPlugin([], new CniError(ErrorCode.TryAgainLater, "busy", "the API")) });
    let stderr = "";
    const writeStderr = (text: string) => {
      stderr += text;
    };
    expect(await rejected(() => runDelegate(join(own, "fake"), "ADD", ENV, STDIN, { writeStderr }))).toEqual({ code: 11, msg: "busy", details: "the API" });
    // What the plugin logged on its stderr is passed on, as a process' would be.
    expect(stderr).toMatch(/error 11: busy/);
  });

  it("execs any other file of a carried plugin's name (an upgraded copy, another plugin)", async () => {
    const calls: CmdArgs[] = [];
    carryPlugins({ fake: async () => recordingPlugin(calls) });
    const other = join(root, "other");
    mkdirSync(other);
    const script = join(other, "fake");
    writeFileSync(
      script,
      `#!/bin/sh\ncat > /dev/null\nprintf '{"cniVersion":"1.0.0","ips":[{"address":"10.9.9.9/24"}],"dns":{"domain":"%s"}}' "$CNI_IFNAME"\n`,
    );
    chmodSync(script, 0o755);
    expect(JSON.parse(await runDelegate(script, "ADD", ENV, STDIN))).toMatchObject({ ips: [{ address: "10.9.9.9/24" }], dns: { domain: "net1" } });
    expect(calls).toEqual([]);
  });
});
