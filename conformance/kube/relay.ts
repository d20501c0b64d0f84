/**
 * A TCP relay, as a process of its own: accepts on one endpoint and pipes each connection to a new
 * one to another, bytes unchanged (TLS goes end to end). Endpoints are "host:port" or a unix
 * socket's path. The bench runs one in each node's network namespace to reach the API server;
 * the e2e test's service proxy runs one for the `kubernetes` Service. A process, not a server in
 * the caller's event loop: a test blocked in a synchronous kubectl would stall every connection.
 *
 *   bun conformance/kube/relay.ts <listen> <target>    # prints "ready" once listening
 */
import { connect, createServer, type Socket } from "node:net";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const RELAY_SCRIPT = fileURLToPath(import.meta.url);

/** "127.0.0.1:6443" or "/path/to.sock". */
function endpoint(text: string): { path: string } | { host: string; port: number } {
  if (text.startsWith("/")) return { path: text };
  const colon = text.lastIndexOf(":");
  return { host: text.slice(0, colon), port: Number(text.slice(colon + 1)) };
}

function relay(listen: string, target: string): void {
  const server = createServer((client: Socket) => {
    const peer = connect(endpoint(target));
    client.pipe(peer);
    peer.pipe(client);
    const close = () => {
      client.destroy();
      peer.destroy();
    };
    for (const socket of [client, peer]) {
      socket.on("error", close);
      socket.on("close", close);
    }
  });
  server.on("error", (err) => {
    process.stderr.write(`relay ${listen} → ${target}: ${err.message}\n`);
    process.exit(1);
  });
  server.listen(endpoint(listen), () => process.stdout.write("ready\n"));
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === RELAY_SCRIPT) {
  const [listen, target] = process.argv.slice(2);
  if (!listen || !target) {
    process.stderr.write("usage: relay.ts <listen> <target>\n");
    process.exit(2);
  }
  relay(listen, target);
}
