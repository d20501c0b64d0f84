/**
 * The test cluster's stand-in for kube-proxy, for the one Service pods on real nodes need: the
 * API server's own (`default/kubernetes`). kubelet gives every pod KUBERNETES_SERVICE_HOST/PORT
 * (the Service's ClusterIP and port), and the DaemonSet's installer writes them into the
 * kubeconfigs the plugins use on the node. In a cluster kube-proxy makes that address reach an API
 * server; here the address is put on a link of the host namespace (which the test nodes share: a
 * veth pair, as this machine's kernel has no dummy links) and a relay process (relay.ts) hands
 * each connection to the API server on 127.0.0.1 (kube-apiserver's serving certificate names the
 * Service's IP).
 *
 * Runs under Node (vitest): node: modules only.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { join } from "node:path";
import { ROOT } from "../harness.ts";
import type { Cluster } from "./cluster.ts";
import { RELAY_SCRIPT } from "./relay.ts";

export interface ServiceProxy {
  /** The Service's ClusterIP, e.g. 10.0.0.1. */
  address: string;
  port: number;
  stop(): Promise<void>;
}

export async function startServiceProxy(cluster: Pick<Cluster, "kubectl" | "server">, link: string): Promise<ServiceProxy> {
  const service = JSON.parse(cluster.kubectl(["-n", "default", "get", "service", "kubernetes", "-o", "json"])) as {
    spec: { clusterIP: string; ports: { port: number }[] };
  };
  const address = service.spec.clusterIP;
  const port = service.spec.ports[0]?.port ?? 443;
  const target = new URL(cluster.server);
  run(["ip", "link", "add", link, "type", "veth", "peer", "name", `${link}p`]);
  let relay: ChildProcess | undefined;
  try {
    run(["ip", "addr", "add", `${address}/32`, "dev", link]);
    for (const end of [link, `${link}p`]) run(["ip", "link", "set", end, "up"]);
    // pdeathsig: the relay ends with this process, however it ends.
    const child = spawn(
      "setpriv",
      ["--pdeathsig", "SIGKILL", "--", join(ROOT, "node_modules/.bin/bun"), RELAY_SCRIPT, `${address}:${port}`, `${target.hostname}:${target.port}`],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    relay = child;
    await new Promise<void>((ready, fail) => {
      let out = "";
      child.stdout?.on("data", (chunk: Buffer) => {
        if (chunk.toString().includes("ready")) ready();
      });
      child.stderr?.on("data", (chunk: Buffer) => (out += chunk.toString()));
      child.once("exit", (code) => fail(new Error(`the service relay exited (${code}) before it was ready: ${out}`)));
    });
  } catch (err) {
    relay?.kill("SIGKILL");
    spawnSync("ip", ["link", "del", link]);
    throw err;
  }
  const running = relay;
  return {
    address,
    port,
    async stop() {
      if (running.exitCode === null && running.signalCode === null) {
        const exited = new Promise((done) => running.once("exit", done));
        running.kill("SIGKILL");
        await exited;
      }
      spawnSync("ip", ["link", "del", link]);
    },
  };
}

function run(args: string[]): void {
  const result = spawnSync(args[0] ?? "", args.slice(1), { encoding: "utf8" });
  if (result.status !== 0) throw new Error(`${args.join(" ")}: ${result.stderr}`);
}
