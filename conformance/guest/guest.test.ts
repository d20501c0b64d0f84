/**
 * The guest executor: the unchanged harness helpers, run inside a qemu guest whose kernel has
 * IPVLAN, and the transport's promises (exact stdin/env/stdout/stderr/status, loud failures, no
 * qemu left behind).
 *
 *   npx vitest run --config conformance/vitest.config.ts conformance/guest/
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { release } from "node:os";
import { join } from "node:path";
import {
  BIN,
  UPSTREAM_BIN,
  addresses,
  cleanup,
  cni,
  link,
  links,
  localExecutor,
  netns,
  node,
  nsPath,
  ping,
  pluginDir,
  recordingIpam,
  removeDir,
  sh,
  useExecutor,
} from "../harness.ts";
import { GuestExecutor, SCRATCH_DIR, bootGuest, hostSupportsIpvlan, ipvlanExecutor } from "./guest.ts";

const MACVLAN = join(BIN, "macvlan");
const BOOT_TIMEOUT = 120_000;

/** Whether a process runs (a zombie, killed but not yet reaped, does not count). */
function alive(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try {
    return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

let guest: GuestExecutor;

beforeAll(async () => {
  expect(existsSync(MACVLAN), `${MACVLAN} missing: run npm run build first`).toBe(true);
  expect(existsSync(join(UPSTREAM_BIN, "static")), "upstream binaries missing: run scripts/build-upstream.sh").toBe(true);
  guest = await bootGuest();
  useExecutor(guest);
}, BOOT_TIMEOUT);
afterEach(cleanup);
afterAll(async () => {
  useExecutor(localExecutor);
  await guest?.shutdown();
  expect(alive(guest?.pid)).toBe(false);
});

describe("the harness, inside the guest", () => {
  test("commands run on the guest's own kernel, not this machine's", () => {
    expect(sh("uname", ["-r"]).trim()).toBe(guest.kernel);
    expect(guest.kernel).not.toBe(release());
  });

  test("no network by default: the guest's root namespace has lo only", () => {
    expect(JSON.parse(sh("ip", ["-j", "link", "show"])).map((l: { ifname: string }) => l.ifname)).toEqual(["lo"]);
  });

  test("namespaces, a veth master and an ipvlan link, read back with ip -j -d", () => {
    const host = node();
    const pod = netns("pod");
    sh("ip", ["-n", host.ns, "link", "add", "iv0", "link", host.master, "type", "ipvlan", "mode", "l2"]);
    const created = link(host.ns, "iv0");
    expect(created?.linkinfo?.info_kind).toBe("ipvlan");
    expect(created?.linkinfo?.info_data?.mode).toBe("l2");
    expect(created?.link).toBe(host.master);

    sh("ip", ["-n", host.ns, "link", "set", "iv0", "netns", pod]);
    const master = link(host.ns, host.master)!;
    const moved = links(pod).find((l) => l.ifname === "iv0");
    expect(moved?.link_index).toBe(master.ifindex);
    expect(
      links(host.ns)
        .map((l) => l.ifname)
        .sort(),
    ).toEqual(["lo", "m0"]);
    // The namespaces live in the guest: this machine has none of them.
    expect(existsSync(nsPath(pod))).toBe(false);
  });

  test("cleanup() removes the guest's namespaces", () => {
    const pod = netns("pod");
    expect(sh("ip", ["netns", "list"])).toContain(pod);
    cleanup();
    expect(sh("ip", ["netns", "list"])).not.toContain(pod);
  });

  test("our compiled plugin runs from the shared checkout: VERSION as on this machine", () => {
    const inGuest = cni(MACVLAN, { command: "VERSION" }, {});
    const onHost = localExecutor.run([MACVLAN], { env: { CNI_COMMAND: "VERSION", CNI_PATH: BIN }, input: "{}" });
    expect(inGuest.code).toBe(0);
    expect(inGuest.stdout).toBe(onHost.stdout);
    expect(inGuest.json?.supportedVersions).toContain("1.0.0");
  });

  test("an upstream (static Go) binary runs: static VERSION as on this machine", () => {
    const inGuest = cni(join(UPSTREAM_BIN, "static"), { command: "VERSION" }, { cniVersion: "1.0.0" });
    const onHost = localExecutor.run([join(UPSTREAM_BIN, "static")], {
      env: { CNI_COMMAND: "VERSION" },
      input: '{"cniVersion":"1.0.0"}',
    });
    expect(inGuest.code, inGuest.stderr).toBe(0);
    expect(inGuest.stdout).toBe(onHost.stdout);
    expect(inGuest.json?.supportedVersions).toContain("1.0.0");
  });

  test("upstream ipvlan ADD, ping between two pods, DEL: a whole CNI round in the guest", () => {
    const host = node();
    const [a, b] = [netns("pod"), netns("pod")];
    const conf = (address: string) => ({
      cniVersion: "1.0.0",
      name: "guestnet",
      type: "ipvlan",
      master: host.master,
      mode: "l2",
      ipam: { type: "static", addresses: [{ address }] },
    });
    const call = (command: "ADD" | "DEL", pod: string) => ({
      command,
      containerId: `c-${pod}`,
      netns: nsPath(pod),
      ifName: "net1",
      path: UPSTREAM_BIN,
    });
    const ipvlan = join(UPSTREAM_BIN, "ipvlan");
    const added = cni(ipvlan, call("ADD", a), conf("10.20.0.11/24"), host.ns);
    expect(added.code, added.stdout + added.stderr).toBe(0);
    expect(cni(ipvlan, call("ADD", b), conf("10.20.0.12/24"), host.ns).code).toBe(0);
    expect(link(a, "net1")?.linkinfo?.info_kind).toBe("ipvlan");
    expect(addresses(a, "net1")).toEqual(["10.20.0.11/24"]);
    expect(ping(a, "10.20.0.12")).toBe(true);
    expect(cni(ipvlan, call("DEL", a), conf("10.20.0.11/24"), host.ns).code).toBe(0);
    expect(link(a, "net1")).toBeUndefined();
  });

  test("our macvlan ADD works against the guest's kernel too", () => {
    const host = node();
    const pod = netns("pod");
    const out = cni(
      MACVLAN,
      { command: "ADD", containerId: "c1", netns: nsPath(pod), ifName: "net1", path: UPSTREAM_BIN },
      {
        cniVersion: "1.0.0",
        name: "n",
        type: "macvlan",
        master: host.master,
        ipam: { type: "static", addresses: [{ address: "10.30.0.5/24" }] },
      },
      host.ns,
    );
    expect(out.code, out.stdout + out.stderr).toBe(0);
    expect(link(pod, "net1")?.linkinfo?.info_kind).toBe("macvlan");
    expect(addresses(pod, "net1")).toEqual(["10.30.0.5/24"]);
  });

  test("pluginDir() lives in the shared scratch folder: written on either side, seen on the other", () => {
    const plugins = pluginDir({
      probe: `#!/bin/sh\ncd "$(dirname "$0")"\ncat from-host > from-guest\nuname -r >> from-guest\n`,
    });
    try {
      expect(plugins.startsWith(`${SCRATCH_DIR}/`)).toBe(true);
      // Written on the host after the guest may have looked at the folder: the share is uncached.
      sh("ls", [plugins]);
      writeFileSync(join(plugins, "from-host"), "hello from the host\n");
      sh(join(plugins, "probe"), []);
      expect(readFileSync(join(plugins, "from-guest"), "utf8")).toBe(`hello from the host\n${guest.kernel}\n`);

      // The harness's recording IPAM works across the share as well.
      writeFileSync(join(plugins, "recorder"), recordingIpam(join(plugins, "calls.log")), { mode: 0o755 });
      const out = cni(join(plugins, "recorder"), { command: "VERSION", containerId: "c9" }, { cniVersion: "1.0.0" });
      expect(out.code, out.stderr).toBe(0);
      expect(readFileSync(join(plugins, "calls.log"), "utf8")).toBe("VERSION c9\n");
    } finally {
      removeDir(plugins);
    }
  });
});

describe("the transport round-trips exactly", () => {
  test("stdin, stdout and stderr byte for byte, newlines and non-ASCII included", () => {
    const input = '{"a": 1,\n "b": "zwölf €"}\n\nno newline at the end';
    const echoed = guest.run(["sh", "-c", "cat; printf 'to stderr\\n\\n' >&2"], { input });
    expect(echoed).toEqual({ status: 0, stdout: input, stderr: "to stderr\n\n" });
  });

  test("the environment is exactly the one given, values with spaces and newlines included", () => {
    const env = { CNI_COMMAND: "ADD", ODD: "two words\nand = a line", EMPTY: "" };
    expect(guest.run(["env"], { env }).stdout).toBe("CNI_COMMAND=ADD\nODD=two words\nand = a line\nEMPTY=\n");
    // Without one, a clean default: nothing of this machine's environment, nothing of the guest's /init.
    const defaults = guest.run(["env"]).stdout;
    expect(defaults).toMatch(/^PATH=\S+$/m);
    expect(defaults).not.toMatch(/cni_repo|HOSTNAME|VITEST/);
  });

  test("exit codes, a signal as on this machine, the working directory", () => {
    expect(guest.run(["sh", "-c", "exit 3"]).status).toBe(3);
    const killed = ["sh", "-c", "kill -9 $$"];
    expect(guest.run(killed).status).toBe(localExecutor.run(killed).status);
    expect(guest.run(["pwd"]).stdout).toBe(`${process.cwd()}\n`);
  });

  test("a command that does not exist throws, as on this machine", () => {
    expect(() => localExecutor.run(["cnit-no-such-command"])).toThrow(/ENOENT/);
    expect(() => guest.run(["cnit-no-such-command"])).toThrow(/ENOENT/);
  });

  test("large output arrives whole", () => {
    const expected = Array.from({ length: 200_000 }, (_, i) => `${i + 1}\n`).join("");
    expect(guest.run(["seq", "1", "200000"]).stdout).toBe(expected);
    const big = "x".repeat(300_000);
    expect(guest.run(["wc", "-c"], { input: big }).stdout.trim()).toBe("300000");
  });
});

describe("failures are loud", () => {
  test("a kernel that is not installed", async () => {
    await expect(bootGuest({ kernel: "0.0.0-none" })).rejects.toThrow(/no kernel \/boot\/vmlinuz-0\.0\.0-none/);
  });

  test("a guest that does not come up in time: the reason, the console, and no qemu left", async () => {
    const error: Error = await bootGuest({ bootTimeoutMs: 200 }).then(
      () => new Error("booted"),
      (e: Error) => e,
    );
    expect(error.message).toMatch(/did not come up within 0\.2 s/);
    expect(error.message).toMatch(/serial console/);
    const pid = Number(/qemu pid (\d+)/.exec(error.message)?.[1]);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(alive(pid)).toBe(false);
  });

  test(
    "an agent that dies mid-call: run() throws with the console's account, and stays failed",
    async () => {
      const doomed = await bootGuest();
      try {
        expect(() => doomed.run(["sh", "-c", "kill -9 $PPID; sleep 5"])).toThrow(/went away[\s\S]*agent exited with status 137/);
        expect(() => doomed.run(["true"])).toThrow(/went away/);
      } finally {
        await doomed.shutdown();
      }
      expect(alive(doomed.pid)).toBe(false);
    },
    BOOT_TIMEOUT,
  );
});

test(
  "ipvlanExecutor: this machine when its kernel has IPVLAN, a guest otherwise",
  async () => {
    const target = await ipvlanExecutor();
    try {
      if (hostSupportsIpvlan()) {
        expect(target.run(["uname", "-r"]).stdout.trim()).toBe(release());
      } else {
        expect(target).toBeInstanceOf(GuestExecutor);
        // The guest's root namespace is its own: a throwaway ipvlan there touches nothing else.
        const probe = ["sh", "-c", "ip link add v0 type veth peer name v1 && ip link add iv0 link v0 type ipvlan && echo ok"];
        expect(target.run(probe).stdout).toBe("ok\n");
      }
    } finally {
      await target.shutdown();
    }
  },
  BOOT_TIMEOUT,
);
