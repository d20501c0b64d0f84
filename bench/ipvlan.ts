/**
 * ipvlan's part of `npm run bench`. It needs a kernel with IPVLAN: both binaries run in one guest
 * (conformance/guest), on the same inputs, timed per call from here. The guest is emulated, so
 * only the ratio means anything; the agent's per-call overhead (a `true` through the same path)
 * is subtracted from both.
 */
import { join, resolve } from "node:path";
import { bootGuest } from "../conformance/guest/guest.ts";
import { cleanup, localExecutor, netns, node, nsPath, useExecutor, type Executor } from "../conformance/harness.ts";
import { median } from "./stats.ts";

const ROOT = resolve(import.meta.dirname, "..");
const BIN = join(ROOT, "bin");
const UPSTREAM = join(ROOT, ".cache/upstream/plugins-v1.9.1");

export async function benchIpvlanInGuest(runs: number): Promise<void> {
  const guest = await bootGuest();
  useExecutor(guest);
  try {
    const host = node();
    const pod = netns("pod");
    const config = JSON.stringify({
      cniVersion: "1.0.0",
      name: "bench",
      type: "ipvlan",
      master: host.master,
      ipam: { type: "static", addresses: [{ address: "10.30.0.5/24", gateway: "10.30.0.1" }], routes: [{ dst: "0.0.0.0/0" }] },
    });
    const env = (command: string) => ({
      PATH: "/usr/sbin:/usr/bin:/sbin:/bin",
      CNI_COMMAND: command,
      CNI_CONTAINERID: "bench",
      CNI_NETNS: nsPath(pod),
      CNI_IFNAME: "net1",
      CNI_PATH: UPSTREAM,
    });
    const timed = (executor: Executor, argv: string[], command: string, mustSucceed = true): number => {
      const started = performance.now();
      const run = executor.run(argv, { env: env(command), input: config });
      if (mustSucceed && run.status !== 0) throw new Error(`${argv.join(" ")} ${command}: ${run.stdout}${run.stderr}`);
      return performance.now() - started;
    };
    const inNode = (binary: string) => ["ip", "netns", "exec", host.ns, binary];
    const cycle = (binary: string) => timed(guest, inNode(binary), "ADD") + timed(guest, inNode(binary), "DEL");
    // The first runs read the binaries over 9p; keep them out of the figures.
    cycle(join(BIN, "ipvlan"));
    cycle(join(UPSTREAM, "ipvlan"));
    const overhead = median(Array.from({ length: runs }, () => timed(guest, inNode("/bin/true"), "NONE", false)));
    const ours = median(Array.from({ length: runs }, () => cycle(join(BIN, "ipvlan")))) - 2 * overhead;
    const theirs = median(Array.from({ length: runs }, () => cycle(join(UPSTREAM, "ipvlan")))) - 2 * overhead;
    console.log(`ipvlan ADD+DEL (static IPAM) in a qemu guest (software emulation), median of ${runs}:`);
    console.log(`  ratio     ${(ours / theirs).toFixed(2)}x upstream's time (emulated: ours ${ours.toFixed(0)} ms, upstream ${theirs.toFixed(0)} ms)`);
    cleanup();
  } finally {
    useExecutor(localExecutor);
    await guest.shutdown();
  }
}
