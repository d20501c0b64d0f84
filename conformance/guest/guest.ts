/**
 * A real Linux kernel with IPVLAN for the conformance harness: boots Debian's own kernel under qemu
 * (software emulation, TCG) and runs every harness command inside it.
 *
 *   beforeAll(async () => useExecutor((guest = await bootGuest())));
 *   afterAll(() => guest.shutdown());
 *
 * The development machine's kernel has no IPVLAN (docs/ipvlan.md#running-the-ipvlan-cases), and
 * nested KVM does not work there (`-cpu host` aborts on MSR 0x10a; with other CPU models the guest
 * never reaches its console), hence TCG. The guest sees the checkout read-only and a scratch folder
 * read-write, both over 9p at the same absolute paths as on the host, so bin/<plugin>, the upstream
 * binaries and pluginDir()'s folders work unchanged. Its agent (agent.ts, run by the project's Bun
 * runtime) executes one command per request over a virtio-serial port. What boot and a call cost:
 * docs/performance.md#the-ipvlan-guest. No network, unless asked for one forward to the test API
 * server (forwardPort, docs/ipvlan.md#multus-with-an-ipvlan-nad-the-guests-one-forward).
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, realpathSync, rmSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { errnoOf } from "../../shared/errors.ts";
import { ROOT, localExecutor, type Execution, type Executor } from "../harness.ts";
import { LineChannel } from "./channel.ts";
import { initramfs } from "./initramfs.ts";
import { bootableKernel, newestKernel } from "./kernel.ts";
import { AGENT_PORT_NAME, type Reply, type Request } from "./protocol.ts";

const CACHE_DIR = join(ROOT, ".cache/guest");
/** Shared read-write with every guest at the same path; pluginDir() makes its folders here. */
export const SCRATCH_DIR = join(ROOT, ".cache/guest-scratch");
const AGENT = join(import.meta.dirname, "agent.ts");
/** Relays one guest connection to this machine's 127.0.0.1 (forwardPort); run by qemu per connection. */
const FORWARD = join(import.meta.dirname, "forward.pl");
/** The address the guest reaches this machine's 127.0.0.1:<forwardPort> at; its own eth0 is GUEST_ADDRESS. */
export const GUEST_FORWARD_ADDRESS = "10.0.2.100";
/** qemu's user-mode network hands the guest this address (10.0.2.0/24 is slirp's default). */
const GUEST_ADDRESS = "10.0.2.15/24";
const QBOOT = "/usr/share/qemu/qboot.rom";

export interface GuestOptions {
  /** A version with /boot/vmlinuz-<version> and its modules; default $CNI_GUEST_KERNEL, else the newest. */
  kernel?: string;
  /** From starting qemu to the agent's hello; default 60 s. */
  bootTimeoutMs?: number;
  /** One command's round trip; default 60 s. After a timeout the guest is killed, not reused. */
  callTimeoutMs?: number;
  /**
   * A network with one destination: the guest's eth0 (10.0.2.15/24), and GUEST_FORWARD_ADDRESS:<port>
   * reaching 127.0.0.1:<port> of this process's network namespace, where the test API server
   * listens. Nothing else: qemu's user-mode network with restrict=on routes nothing to the host or
   * beyond. Default: no network device at all, so that no guest test depends on the host's network.
   */
  forwardPort?: number;
}

/** An Executor that needs ending when the suite is done: a guest, or this machine (nothing to end). */
export interface IpvlanTarget extends Executor {
  shutdown(): Promise<void>;
}

/** Guests not shut down yet: killed when the process exits, whatever the tests did. */
const running = new Set<GuestExecutor>();
let exitHookInstalled = false;
let boots = 0;

/**
 * Boots a guest and resolves once its agent answers. Throws, saying why, when qemu, the kernel,
 * one of its modules or the Bun runtime is missing, or the guest does not come up in time.
 */
export async function bootGuest(options: GuestOptions = {}): Promise<GuestExecutor> {
  const qemu = onPath("qemu-system-x86_64");
  // setpriv --pdeathsig: the kernel kills qemu when the test process dies, even by SIGKILL.
  const setpriv = onPath("setpriv");
  const kernel = options.kernel ?? process.env.CNI_GUEST_KERNEL ?? newestKernel();
  if (!existsSync(`/boot/vmlinuz-${kernel}`)) {
    throw new Error(`guest: no kernel /boot/vmlinuz-${kernel}: run scripts/install-guest-deps.sh`);
  }
  const bun = bunRuntime();
  for (const path of [ROOT, SCRATCH_DIR, bun, AGENT, FORWARD]) {
    // They travel on the kernel command line or in qemu's forward command, both split at whitespace.
    if (/\s/.test(path)) throw new Error(`guest: paths with whitespace cannot be passed to the guest: "${path}"`);
  }

  mkdirSync(SCRATCH_DIR, { recursive: true });
  removeStaleRuns();
  // Throws when the kernel lacks a module (ipvlan above all), naming it.
  const image = initramfs({ kernel, sharedExecutables: [bun] }, CACHE_DIR);
  const vmlinux = bootableKernel(kernel, CACHE_DIR);

  const runDir = join(CACHE_DIR, "runs", `${process.pid}-${++boots}`);
  mkdirSync(runDir, { recursive: true });
  const fifos = spawnSync("mkfifo", [join(runDir, "agent.in"), join(runDir, "agent.out")], { encoding: "utf8" });
  if (fifos.status !== 0) throw new Error(`guest: mkfifo failed: ${fifos.stderr}`);
  const consoleLog = join(runDir, "console.log");
  const qemuLog = join(runDir, "qemu.log");
  const channel = new LineChannel(join(runDir, "agent"));

  const commandLine = [
    "console=ttyS0 panic=-1 rdinit=/init quiet loglevel=4",
    `cni_repo=${ROOT} cni_scratch=${SCRATCH_DIR} cni_bun=${bun} cni_agent=${AGENT}`,
    // /init configures eth0 only when told to: without a forward the guest has no NIC.
    ...(options.forwardPort === undefined ? [] : [`cni_net=${GUEST_ADDRESS}`]),
  ].join(" ");
  const args = [
    ...["-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "1"],
    // No default devices: no NIC on a host network, no monitor, no VGA; the serial console to a file.
    ...["-nodefaults", "-display", "none", "-no-reboot", "-serial", `file:${qemuValue(consoleLog)}`],
    // qboot, a minimal firmware, starts a kernel sooner than SeaBIOS (docs/performance.md#the-ipvlan-guest).
    ...(existsSync(QBOOT) ? ["-bios", QBOOT] : []),
    ...["-kernel", vmlinux, "-initrd", image, "-append", commandLine],
    ...share("repo", ROOT, true),
    ...share("scratch", SCRATCH_DIR, false),
    ...["-chardev", `pipe,id=agent,path=${qemuValue(join(runDir, "agent"))}`],
    ...["-device", "virtio-serial-pci,id=serial", "-device", `virtserialport,bus=serial.0,chardev=agent,name=${AGENT_PORT_NAME}`],
    ...(options.forwardPort === undefined ? [] : forward(options.forwardPort)),
  ];
  const log = openSync(qemuLog, "w");
  const child = spawn(setpriv, ["--pdeathsig", "KILL", "--", qemu, ...args], { stdio: ["ignore", log, log] });
  closeSync(log);
  // A guest must not keep the test process alive; the exit hook below kills a forgotten one.
  child.unref();
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on("exit", () => {
      for (const guest of running) guest.kill();
    });
  }

  const callTimeoutMs = options.callTimeoutMs ?? 60_000;
  const guest = new GuestExecutor({ kernel, child, channel, runDir, consoleLog, qemuLog, callTimeoutMs });
  running.add(guest);
  await guest.waitForAgent(options.bootTimeoutMs ?? 60_000);
  return guest;
}

/**
 * Where ipvlan can run: this machine when its kernel has IPVLAN, else a guest. Suites that need
 * ipvlan take this, so they run on the host where it can and in a guest everywhere else.
 */
export async function ipvlanExecutor(options: GuestOptions = {}): Promise<IpvlanTarget> {
  if (hostSupportsIpvlan()) return { run: (argv, runOptions) => localExecutor.run(argv, runOptions), shutdown: async () => {} };
  return bootGuest(options);
}

let hostIpvlan: boolean | undefined;

/**
 * Whether this machine's kernel makes an ipvlan link: tried once, in a throwaway namespace that
 * vanishes with the probe. Without the rights to try (not root), the answer is no: a guest then.
 */
export function hostSupportsIpvlan(): boolean {
  if (hostIpvlan === undefined) {
    const probe = spawnSync("unshare", [
      "--net",
      "--",
      "sh",
      "-c",
      "ip link add probe0 type veth peer name probe1 && ip link add probe2 link probe0 type ipvlan mode l2",
    ]);
    hostIpvlan = probe.status === 0;
  }
  return hostIpvlan;
}

export class GuestExecutor implements Executor, IpvlanTarget {
  /** pluginDir() makes its folders here, so that the guest sees them. */
  readonly scratchDir = SCRATCH_DIR;
  /** The guest kernel's version (uname -r). */
  readonly kernel: string;
  /** The guest's serial console (kernel messages, /init's "cni-guest:" lines). */
  readonly consoleLog: string;
  private readonly child: ChildProcess;
  private readonly channel: LineChannel;
  private readonly runDir: string;
  private readonly qemuLog: string;
  private readonly callTimeoutMs: number;
  private readonly exited: Promise<void>;
  private spawnError: Error | undefined;
  /** Why the guest can no longer be used; set once, then every run() throws it. */
  private broken: string | undefined;
  private lastId = 0;
  private booted = 0;

  constructor(parts: {
    kernel: string;
    child: ChildProcess;
    channel: LineChannel;
    runDir: string;
    consoleLog: string;
    qemuLog: string;
    callTimeoutMs: number;
  }) {
    this.kernel = parts.kernel;
    this.child = parts.child;
    this.channel = parts.channel;
    this.runDir = parts.runDir;
    this.consoleLog = parts.consoleLog;
    this.qemuLog = parts.qemuLog;
    this.callTimeoutMs = parts.callTimeoutMs;
    this.child.on("error", (error) => (this.spawnError = error));
    this.exited = new Promise((resolve) => this.child.once("close", () => resolve()));
  }

  /** Milliseconds from starting qemu to the agent's hello. */
  get bootMs(): number {
    return this.booted;
  }

  /** qemu's process id. */
  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Waits for the agent's hello (bootGuest's last step); asynchronous, so that qemu's early exit is noticed as it happens. */
  async waitForAgent(timeoutMs: number): Promise<void> {
    const started = Date.now();
    for (;;) {
      // Until qemu has opened its end of the FIFO, "eof" only means "not yet".
      const result = this.channel.poll();
      if (typeof result === "object") {
        const hello = this.parse(result.line);
        if (!("ready" in hello)) throw this.fail(`the agent's first message is not its hello: ${result.line}`);
        this.booted = Date.now() - started;
        return;
      }
      if (this.spawnError) throw this.fail(`qemu could not be started: ${this.spawnError.message}`);
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw this.fail(`qemu exited (${this.child.exitCode ?? this.child.signalCode}) before the guest came up`);
      }
      if (Date.now() - started > timeoutMs) throw this.fail(`the guest did not come up within ${timeoutMs / 1000} s`);
      await sleep(10);
    }
  }

  run(argv: string[], options: { env?: Record<string, string>; input?: string } = {}): Execution {
    const what = `"${argv.join(" ")}"`;
    const reply = this.exchange(
      {
        id: ++this.lastId,
        op: "run",
        argv,
        env: options.env ?? null,
        input: Buffer.from(options.input ?? "").toString("base64"),
        cwd: process.cwd(),
      },
      what,
    );
    // The command could not be started (say, ENOENT): thrown, as spawnSync's error is on the host.
    if ("error" in reply) throw new Error(`${reply.error} (in the guest)`);
    if (!("status" in reply)) throw this.fail(`unexpected reply to ${what}: ${JSON.stringify(reply)}`);
    return {
      status: reply.status,
      stdout: Buffer.from(reply.stdout, "base64").toString("utf8"),
      stderr: Buffer.from(reply.stderr, "base64").toString("utf8"),
    };
  }

  /** Powers the guest off (the agent ends, /init powers off) and makes sure qemu is gone. */
  async shutdown(): Promise<void> {
    if (!this.broken) {
      try {
        this.exchange({ id: ++this.lastId, op: "poweroff" }, "poweroff", 5_000);
      } catch {
        // Killed below either way.
      }
      this.broken = "the guest has been shut down";
    }
    if (!(await this.exitWithin(5_000))) {
      this.kill();
      if (!(await this.exitWithin(5_000))) throw new Error(`guest: qemu (pid ${this.pid}) survived SIGKILL`);
    }
    this.release();
    rmSync(this.runDir, { recursive: true, force: true });
  }

  /** SIGKILL to qemu, synchronously: for failures and the process's exit hook. */
  kill(): void {
    if (this.child.pid !== undefined && this.child.exitCode === null && this.child.signalCode === null) {
      try {
        process.kill(this.child.pid, "SIGKILL");
      } catch {
        // Gone already.
      }
    }
  }

  private exchange(request: Request, what: string, timeoutMs = this.callTimeoutMs): Reply {
    if (this.broken) throw new Error(`guest: cannot run ${what}: ${this.broken}`);
    const deadline = Date.now() + timeoutMs;
    let delivered: boolean;
    try {
      delivered = this.channel.writeLine(JSON.stringify(request), deadline);
    } catch (error) {
      throw this.fail(`sending ${what} failed (${errnoOf(error)}): qemu has exited`);
    }
    if (!delivered) throw this.fail(`the guest did not take ${what} within ${timeoutMs / 1000} s`);
    const result = this.channel.readLine(deadline);
    if (result === "timeout") throw this.fail(`no reply to ${what} within ${timeoutMs / 1000} s`);
    if (result === "eof" || result === "nothing") throw this.fail(`the guest went away while running ${what}: qemu exited`);
    const reply = this.parse(result.line);
    if (reply.id !== request.id) throw this.fail(`reply ${reply.id} to request ${request.id}: the channel is out of step`);
    return reply;
  }

  private parse(line: string): Reply {
    try {
      return JSON.parse(line) as Reply;
    } catch {
      throw this.fail(`the agent sent something that is not JSON: ${line.slice(0, 200)}`);
    }
  }

  /**
   * Marks the guest unusable, kills qemu, and returns the error to throw: the reason, qemu's own
   * output, and the tail of the serial console, where /init and the kernel say what went wrong.
   */
  private fail(reason: string): Error {
    this.broken ??= reason;
    this.kill();
    this.release();
    const qemuOutput = tail(this.qemuLog, 10);
    return new Error(
      [
        `guest (kernel ${this.kernel}, qemu pid ${this.pid}): ${reason}`,
        ...(qemuOutput ? [`qemu said:`, qemuOutput] : []),
        `serial console (${this.consoleLog}), last lines:`,
        // With "quiet", the kernel prints nothing unless it fails: empty means /init never started.
        tail(this.consoleLog, 30) || "  (empty: the kernel printed no error and /init did not start)",
      ].join("\n"),
    );
  }

  private release(): void {
    this.channel.close();
    running.delete(this);
  }

  private async exitWithin(ms: number): Promise<boolean> {
    // The timer, unlike the unref'ed child, keeps the event loop alive while waiting.
    return Promise.race([this.exited.then(() => true), sleep(ms).then(() => false)]);
  }
}

/** The last `count` lines of a log, CRLF (serial console) normalised; "" when there is none. */
function tail(file: string, count: number): string {
  if (!existsSync(file)) return "";
  const lines = readFileSync(file, "utf8").replaceAll("\r", "").trimEnd().split("\n");
  return lines
    .slice(-count)
    .map((line) => `  ${line}`)
    .join("\n")
    .trimEnd();
}

/** A 9p share of `path` at the same path in the guest (the mount tag is `tag`). */
function share(tag: string, path: string, readOnly: boolean): string[] {
  // multidevs=remap: the checkout may span file systems (a mounted .cache); keeps inode numbers unique.
  const fsdev = `local,id=${tag},path=${qemuValue(path)},security_model=none,multidevs=remap${readOnly ? ",readonly=on" : ""}`;
  return ["-fsdev", fsdev, "-device", `virtio-9p-pci,fsdev=${tag},mount_tag=${tag}`];
}

/**
 * qemu's user-mode network restricted to one forward (see GuestOptions.forwardPort). guestfwd's
 * "cmd:" form, not its chardev form: a chardev is connected once, when qemu starts, and carries
 * one byte stream for the guest's whole life, whereas every plugin process opens a connection of
 * its own. So qemu runs forward.pl per connection, in its own network namespace (this process's).
 */
function forward(port: number): string[] {
  if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new Error(`guest: forwardPort ${port} is not a TCP port`);
  // Found now, so that a machine without Perl fails here saying so, not later as a refused connection.
  const perl = onPath("perl");
  const netdev = `user,id=n0,restrict=on,guestfwd=tcp:${GUEST_FORWARD_ADDRESS}:${port}-cmd:${qemuValue(perl)} ${qemuValue(FORWARD)} ${port}`;
  return ["-netdev", netdev, "-device", "virtio-net-pci,netdev=n0"];
}

/** qemu option values escape a comma by doubling it. */
function qemuValue(value: string): string {
  return value.replaceAll(",", ",,");
}

function onPath(command: string): string {
  for (const dir of (process.env.PATH ?? "").split(":")) {
    if (dir && existsSync(join(dir, command))) return join(dir, command);
  }
  throw new Error(`guest: ${command} not found on PATH: run scripts/install-guest-deps.sh (as root)`);
}

/** The project's Bun runtime, which runs the agent in the guest; it must lie inside the shared checkout. */
function bunRuntime(): string {
  const link = join(ROOT, "node_modules/.bin/bun");
  if (!existsSync(link)) throw new Error(`guest: ${link} is missing: run npm ci`);
  const bun = realpathSync(link);
  if (!bun.startsWith(`${ROOT}/`)) {
    throw new Error(`guest: the Bun runtime ${bun} lies outside ${ROOT}, the guest's only view of the host`);
  }
  return bun;
}

/** Run folders (FIFOs, logs) of test processes that are gone. */
function removeStaleRuns(): void {
  const runs = join(CACHE_DIR, "runs");
  if (!existsSync(runs)) return;
  for (const name of readdirSync(runs)) {
    const pid = Number(name.split("-")[0]);
    if (pid !== process.pid && !existsSync(`/proc/${pid}`)) rmSync(join(runs, name), { recursive: true, force: true });
  }
}
