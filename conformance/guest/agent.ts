/**
 * The guest agent: runs inside the conformance guest, started by the guest's /init with the Bun
 * runtime from node_modules (shared over 9p), and runs the host's commands one at a time.
 *
 *   bun conformance/guest/agent.ts /dev/vport1p1
 *
 * It reads requests from the virtio-serial port named in argv and writes one reply per request
 * (protocol.ts). It is synchronous on purpose: the host waits for each reply anyway, and a blocking
 * loop has nothing that can interleave. Only node: APIs, so it also runs under Node for debugging
 * (`node --experimental-strip-types agent.ts <fifo>`).
 */
import { spawnSync } from "node:child_process";
import { accessSync, constants, existsSync, openSync, readSync, statSync, writeSync } from "node:fs";
import { release } from "node:os";
import { join } from "node:path";
import { StringDecoder } from "node:string_decoder";
import type { Reply, Request } from "./protocol.ts";

/** What a command gets when the host passes no environment: a clean one, not the agent's own. */
const DEFAULT_ENV: Record<string, string> = {
  PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
  HOME: "/root",
};

const portPath = process.argv[2];
if (!portPath) throw new Error("usage: agent.ts <virtio-serial port>");
const port = openSync(portPath, "r+");

function send(reply: Reply): void {
  const bytes = Buffer.from(`${JSON.stringify(reply)}\n`);
  for (let done = 0; done < bytes.length; ) done += writeSync(port, bytes, done);
}

/** Resolves a bare command name on PATH the way execvp would; undefined when nothing matches. */
function resolveCommand(name: string, path: string): string | undefined {
  if (name.includes("/")) return name;
  for (const dir of path.split(":")) {
    const candidate = join(dir || ".", name);
    try {
      accessSync(candidate, constants.X_OK);
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // not here: try the next directory
    }
  }
  return undefined;
}

function execute(request: Extract<Request, { op: "run" }>): Reply {
  const { id, argv } = request;
  const env = request.env ?? DEFAULT_ENV;
  const [name, ...args] = argv;
  if (name === undefined) return { id, error: "empty argv" };
  // Node looks a bare name up on the child's PATH; resolving it here keeps that behaviour whatever
  // the runtime's spawnSync does.
  const command = resolveCommand(name, env.PATH ?? DEFAULT_ENV.PATH!);
  if (command === undefined) return { id, error: `spawnSync ${name} ENOENT` };
  const run = spawnSync(command, args, {
    input: Buffer.from(request.input, "base64"),
    env,
    cwd: existsSync(request.cwd) ? request.cwd : "/",
    maxBuffer: 256 * 1024 * 1024,
  });
  if (run.error) return { id, error: run.error.message };
  return {
    id,
    // Killed by a signal: -1, as the harness's local executor reports it.
    status: run.status ?? -1,
    stdout: Buffer.from(run.stdout).toString("base64"),
    stderr: Buffer.from(run.stderr).toString("base64"),
  };
}

/** Sleeps without an event loop: the agent has nothing else to do meanwhile. */
function pause(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

send({ id: 0, ready: true, kernel: release() });

const chunk = Buffer.alloc(1 << 16);
// A read may end inside a multi-byte character; the decoder holds such a tail for the next read.
const decoder = new StringDecoder("utf8");
let pending = "";
for (;;) {
  const count = readSync(port, chunk, 0, chunk.length, null);
  // A virtio-serial port reads 0 bytes while the host end is not connected: wait for it.
  if (count === 0) {
    pause(10);
    continue;
  }
  pending += decoder.write(chunk.subarray(0, count));
  for (let newline = pending.indexOf("\n"); newline >= 0; newline = pending.indexOf("\n")) {
    const request = JSON.parse(pending.slice(0, newline)) as Request;
    pending = pending.slice(newline + 1);
    if (request.op === "poweroff") {
      send({ id: request.id, ok: true });
      process.exit(0);
    }
    send(execute(request));
  }
}
