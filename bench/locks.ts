/**
 * `bun bench/locks.ts`: the measurement behind the whereabouts file store's lock choice
 * (docs/performance.md#the-file-stores-lock). Compares proper-lockfile (a mkdir lock directory, retried by
 * polling, freed after a crash only once it is "stale") with flock(2) through the project's
 * libc shim (the kernel queues waiters and frees the lock when its holder dies).
 *
 * Measured, for each: the cost of loading the module, an uncontended lock+unlock, many processes
 * racing for the lock once each (the shape of a burst of CNI ADDs), and how long a lock stays
 * taken after its holder is killed with SIGKILL.
 */
import { spawn } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { median } from "./stats.ts";

type Impl = "flock" | "proper-lockfile";
type Release = () => Promise<void>;

async function acquire(impl: Impl, path: string): Promise<Release> {
  if (impl === "flock") {
    const libc = await import("../shared/sys/libc.ts");
    const fd = openSync(path, "a", 0o600);
    libc.flock(fd, libc.LOCK_EX);
    return async () => closeSync(fd);
  }
  const lockfile = await import("proper-lockfile");
  // Polling every 5-50 ms, for up to a minute: about what a CNI plugin can afford to wait.
  const release = await lockfile.lock(path, {
    realpath: false,
    stale: 10_000,
    retries: { retries: 2000, minTimeout: 5, maxTimeout: 50, factor: 1.2 },
  });
  return release;
}

/** One lock, one read-increment-write of a counter under it: the shape of an allocation. */
async function criticalSection(impl: Impl, lockPath: string, counterPath: string): Promise<void> {
  const release = await acquire(impl, lockPath);
  const value = Number(readFileSync(counterPath, "utf8") || "0");
  writeFileSync(counterPath, String(value + 1));
  await release();
}

async function worker(): Promise<void> {
  const [, , , impl, lockPath, counterPath, mode] = process.argv as string[];
  if (mode === "hold-and-die") {
    await acquire(impl as Impl, lockPath!);
    process.stdout.write("held\n");
    setInterval(() => {}, 1000); // keep the lock until killed
    return;
  }
  await criticalSection(impl as Impl, lockPath!, counterPath!);
}

function run(argv: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", "ignore", "inherit"] });
    child.on("error", reject);
    child.on("exit", (code) => resolve(code ?? -1));
  });
}

async function importCost(impl: Impl): Promise<number> {
  // A fresh process per sample: module loading happens once per CNI process.
  const samples: number[] = [];
  const module = impl === "flock" ? "./shared/sys/libc.ts" : "proper-lockfile";
  for (let i = 0; i < 7; i++) {
    const script = `const t=performance.now(); await import(${JSON.stringify(module)}); console.log(performance.now()-t)`;
    const child = Bun.spawnSync([process.execPath, "-e", script], { cwd: join(import.meta.dir, "..") });
    samples.push(Number(child.stdout.toString()));
  }
  return median(samples);
}

async function uncontended(impl: Impl, dir: string, n: number): Promise<number> {
  const lockPath = join(dir, `${impl}-solo`);
  writeFileSync(lockPath, "");
  await (await acquire(impl, lockPath))(); // load the module outside the timing
  const started = performance.now();
  for (let i = 0; i < n; i++) await (await acquire(impl, lockPath))();
  return ((performance.now() - started) * 1000) / n;
}

/** `processes` processes started at once, each taking the lock once. Returns wall ms; checks the counter. */
async function race(impl: Impl, dir: string, processes: number): Promise<number> {
  const lockPath = join(dir, `${impl}-race`);
  const counterPath = join(dir, `${impl}-counter`);
  writeFileSync(lockPath, "");
  writeFileSync(counterPath, "0");
  const started = performance.now();
  const codes = await Promise.all(
    Array.from({ length: processes }, () => run([process.execPath, import.meta.path, "worker", impl, lockPath, counterPath, "once"])),
  );
  const ms = performance.now() - started;
  const count = Number(readFileSync(counterPath, "utf8"));
  if (codes.some((code) => code !== 0) || count !== processes) {
    throw new Error(`${impl}: ${codes.filter((c) => c !== 0).length} workers failed, counter ${count} != ${processes}`);
  }
  return ms;
}

/** Time from SIGKILL of a holder until another process gets the lock. */
async function afterCrash(impl: Impl, dir: string): Promise<number> {
  const lockPath = join(dir, `${impl}-crash`);
  writeFileSync(lockPath, "");
  const holder = spawn(process.execPath, [import.meta.path, "worker", impl, lockPath, "", "hold-and-die"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  await new Promise<void>((resolve) => holder.stdout.once("data", () => resolve()));
  holder.kill("SIGKILL");
  await new Promise((resolve) => holder.once("exit", resolve));
  const started = performance.now();
  await (await acquire(impl, lockPath))();
  return performance.now() - started;
}

/** Whole-process baseline: the same worker with nothing to lock, to subtract process start-up. */
async function spawnBaseline(processes: number): Promise<number> {
  const started = performance.now();
  await Promise.all(Array.from({ length: processes }, () => run([process.execPath, "-e", "0"])));
  return performance.now() - started;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "lockbench-"));
  try {
    const racers = Number(process.env.LOCK_RACERS ?? 80);
    const baseline = await spawnBaseline(racers);
    console.log(`${racers} bare bun processes started at once: ${baseline.toFixed(0)} ms (start-up baseline)`);
    for (const impl of ["flock", "proper-lockfile"] as const) {
      const load = await importCost(impl);
      const solo = await uncontended(impl, dir, impl === "flock" ? 5000 : 500);
      const raced = await race(impl, dir, racers);
      const crash = await afterCrash(impl, dir);
      console.log(
        `${impl.padEnd(16)} load ${load.toFixed(1)} ms | lock+unlock ${solo.toFixed(1)} µs | ` +
          `${racers} racing processes ${raced.toFixed(0)} ms | free after SIGKILL of holder ${crash.toFixed(0)} ms`,
      );
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === "worker") await worker();
else await main();
