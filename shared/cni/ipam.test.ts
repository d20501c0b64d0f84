import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parseNetConf } from "./config.ts";
import { execPlugin, findPlugin } from "./exec.ts";
import { ipamAdd, ipamCheck, ipamDel, ipamGc, ipamStatus } from "./ipam.ts";
import { thrown } from "./test-util.ts";
import type { CmdArgs, Verb } from "./types.ts";

const root = mkdtempSync(join(tmpdir(), "ipam-test-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const first = join(root, "first");
const second = join(root, "second");
const record = join(root, "record");
for (const dir of [first, second, record]) mkdirSync(dir);

function script(dir: string, name: string, body: string, mode = 0o755): string {
  const file = join(dir, name);
  writeFileSync(file, `#!/bin/sh\n${body}\n`);
  chmodSync(file, mode);
  return file;
}

// Records its stdin and CNI_* environment per command, logs to stderr, prints a 0.4.0 result.
script(
  second,
  "fake-ipam",
  `cat > "${record}/stdin.$CNI_COMMAND"
env | grep '^CNI_' | sort > "${record}/env.$CNI_COMMAND"
echo "fake-ipam: handling $CNI_COMMAND" >&2
[ "$CNI_COMMAND" = ADD ] && printf '%s' '{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.1.2.3/24","gateway":"10.1.2.1"}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{}}'
exit 0`,
);
script(
  second,
  "failing-ipam",
  `printf '%s' '{"cniVersion":"1.0.0","code":102,"msg":"no free address in range","details":"10.1.2.0/30"}'
exit 1`,
);
script(second, "garbage-ipam", `echo "not json at all"\necho "  " >&2\necho "panic: something broke" >&2\necho "goroutine 1" >&2\nexit 2`);
script(second, "silent-ipam", "exit 3");
script(second, "garbage-result-ipam", `echo "<html>"`);
script(second, "shapeless-ipam", `printf '%s' '{"cniVersion":"1.0.0","ips":[{"address":"10.1.2.3"}]}'`);
script(second, "empty-ipam", `printf '%s' '{"cniVersion":"1.0.0"}'`);
// Decoys: a non-executable file, and a directory, with the name of plugins that do exist later.
script(first, "fake-ipam", "exit 99", 0o644);
mkdirSync(join(first, "failing-ipam"));

function cmdArgs(ipamType: string | undefined, command: Verb = "ADD"): CmdArgs {
  const ipam = ipamType === undefined ? {} : { ipam: { type: ipamType, subnet: "10.1.2.0/24" } };
  const stdin = JSON.stringify({ cniVersion: "1.0.0", name: "net-a", type: "macvlan", ...ipam });
  return {
    command,
    containerId: "ctr1",
    netns: "/var/run/netns/pod",
    ifName: "net1",
    args: "IgnoreUnknown=1;K8S_POD_NAME=web",
    path: [first, second],
    conf: parseNetConf(stdin),
  };
}

/** Collects what a delegate wrote to stderr instead of letting it reach the test output. */
function stderrSink() {
  const sink = {
    text: "",
    writeStderr: (chunk: string) => {
      sink.text += chunk;
    },
  };
  return sink;
}

describe("findPlugin", () => {
  it("returns the first executable regular file with that name", () => {
    expect(findPlugin("fake-ipam", [first, second])).toBe(join(second, "fake-ipam"));
    expect(findPlugin("failing-ipam", [first, second])).toBe(join(second, "failing-ipam"));
  });

  it("says where it looked when the plugin is missing", () => {
    expect(thrown(() => findPlugin("static", ["/opt/cni/bin", "/x"]))).toEqual({
      code: 101,
      msg: 'failed to find plugin "static" in path [/opt/cni/bin /x]',
      details: "",
    });
    expect(thrown(() => findPlugin("fake-ipam", [first])).code).toBe(101);
  });

  it.each(["", ".", "..", "../bin/sh", "/bin/sh", "sub/dir"])("refuses type %j with code 7", (type) => {
    const error = thrown(() => findPlugin(type, [second]));
    expect(error.code).toBe(7);
    expect(error.msg).toBe(`invalid plugin type ${JSON.stringify(type)}`);
  });
});

describe("execPlugin", () => {
  it("runs the plugin with our stdin and CNI_* environment and returns its stdout", () => {
    const args = cmdArgs("fake-ipam");
    const sink = stderrSink();
    const stdout = execPlugin(join(second, "fake-ipam"), "ADD", args, "the stdin", sink);
    expect(JSON.parse(stdout).cniVersion).toBe("0.4.0");
    expect(readFileSync(join(record, "stdin.ADD"), "utf8")).toBe("the stdin");
    expect(readFileSync(join(record, "env.ADD"), "utf8")).toBe(
      [
        "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME=web",
        "CNI_COMMAND=ADD",
        "CNI_CONTAINERID=ctr1",
        "CNI_IFNAME=net1",
        "CNI_NETNS=/var/run/netns/pod",
        `CNI_PATH=${first}:${second}`,
        "",
      ].join("\n"),
    );
    expect(sink.text).toBe("fake-ipam: handling ADD\n");
  });

  it("rethrows a CNI error object the plugin printed, keeping code, msg and details", () => {
    const sink = stderrSink();
    expect(thrown(() => execPlugin(join(second, "failing-ipam"), "ADD", cmdArgs("x"), "{}", sink))).toEqual({
      code: 102,
      msg: "no free address in range",
      details: "10.1.2.0/30",
    });
  });

  it("reports other failures as code 101 with the first line the plugin wrote", () => {
    const sink = stderrSink();
    expect(thrown(() => execPlugin(join(second, "garbage-ipam"), "ADD", cmdArgs("x"), "{}", sink))).toEqual({
      code: 101,
      msg: 'plugin "garbage-ipam" failed: panic: something broke',
      details: "",
    });
    expect(sink.text).toContain("goroutine 1");
    expect(thrown(() => execPlugin(join(second, "silent-ipam"), "DEL", cmdArgs("x"), "{}", sink)).msg).toBe('plugin "silent-ipam" failed: exit status 3');
  });

  it("reports a plugin that cannot be started as code 101", () => {
    const error = thrown(() => execPlugin(join(first, "fake-ipam"), "ADD", cmdArgs("x"), "{}", stderrSink()));
    expect(error.code).toBe(101);
    expect(error.msg).toMatch(/^plugin "fake-ipam" failed: .*EACCES/);
    expect(thrown(() => execPlugin(join(root, "nowhere"), "ADD", cmdArgs("x"), "{}")).code).toBe(101);
  });
});

describe("IPAM verbs", () => {
  it("ipamAdd reads the plugin's result into the model", () => {
    const result = ipamAdd(cmdArgs("fake-ipam"), stderrSink());
    expect(result).toEqual({
      cniVersion: "0.4.0",
      ips: [{ address: "10.1.2.3/24", gateway: "10.1.2.1" }],
      routes: [{ dst: "0.0.0.0/0" }],
    });
  });

  it("ipamAdd sends the configuration bytes unchanged", () => {
    const args = cmdArgs("fake-ipam");
    ipamAdd(args, stderrSink());
    expect(readFileSync(join(record, "stdin.ADD"), "utf8")).toBe(args.conf.bytes);
  });

  it("ipamAdd lets an empty result through", () => {
    expect(ipamAdd(cmdArgs("empty-ipam"))).toEqual({ cniVersion: "1.0.0" });
  });

  it("ipamAdd refuses output that is not JSON (101) or not a result (6)", () => {
    const garbage = thrown(() => ipamAdd(cmdArgs("garbage-result-ipam")));
    expect(garbage.code).toBe(101);
    expect(garbage.msg).toMatch(/^IPAM plugin "garbage-result-ipam" printed an unreadable result: /);
    expect(thrown(() => ipamAdd(cmdArgs("shapeless-ipam")))).toEqual({
      code: 6,
      msg: 'IPAM result: invalid "ips[0].address": expected a CIDR such as 10.1.2.3/24, got "10.1.2.3"',
      details: "",
    });
  });

  it("ipamAdd relays the plugin's own error", () => {
    expect(thrown(() => ipamAdd(cmdArgs("failing-ipam"))).code).toBe(102);
  });

  it("needs an IPAM type and a findable plugin", () => {
    expect(thrown(() => ipamAdd(cmdArgs(undefined))).code).toBe(7);
    expect(thrown(() => ipamDel(cmdArgs("host-local"))).msg).toBe(`failed to find plugin "host-local" in path [${first} ${second}]`);
  });

  it.each([
    ["DEL", ipamDel],
    ["CHECK", ipamCheck],
    ["STATUS", ipamStatus],
    ["GC", ipamGc],
  ] as const)("ipam %s runs the plugin with that command and our stdin", (command, verb) => {
    // The command comes from the function, not args.command: DEL also runs during a failed ADD.
    const args = cmdArgs("fake-ipam", "ADD");
    const sink = stderrSink();
    expect(verb(args, sink)).toBeUndefined();
    expect(readFileSync(join(record, `stdin.${command}`), "utf8")).toBe(args.conf.bytes);
    expect(readFileSync(join(record, `env.${command}`), "utf8")).toContain(`CNI_COMMAND=${command}\n`);
    expect(sink.text).toBe(`fake-ipam: handling ${command}\n`);
  });

  it("forwards GC's valid attachments inside the unchanged bytes", () => {
    const args = cmdArgs("fake-ipam", "GC");
    const raw = JSON.parse(args.conf.bytes);
    raw["cni.dev/valid-attachments"] = [{ containerID: "c1", ifname: "net1" }];
    args.conf = parseNetConf(JSON.stringify(raw));
    ipamGc(args, stderrSink());
    expect(JSON.parse(readFileSync(join(record, "stdin.GC"), "utf8"))["cni.dev/valid-attachments"]).toEqual([{ containerID: "c1", ifname: "net1" }]);
  });
});
