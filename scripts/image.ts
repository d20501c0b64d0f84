/**
 * The product's container image, without Docker or a registry: bin/cni-plugins at
 * /usr/src/cni-plugins/bin/cni-plugins, the shared libraries `ldd` lists for it and the dynamic
 * loader, and a static `test` (Debian's busybox-static, under that name) for the DaemonSet's
 * readiness probe; nothing else. Packed as a reproducible one-layer OCI archive (scripts/oci.ts)
 * named `localhost/cni-plugins:<package.json version>`, which deploy/daemonset.yaml runs
 * (docs/deploy.md).
 *
 *   npm run build && npm run image          # .cache/image/cni-plugins-<version>.tar
 *   ctr -n k8s.io images import .cache/image/cni-plugins-<version>.tar
 *   bun scripts/image.ts --rootfs DIR       # only the rootfs, into DIR (the Containerfile's build stage)
 *
 * Imported by the conformance suite under Node (buildImage): node: modules only.
 */
import { spawnSync } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { ociArchive } from "./oci.ts";

const ROOT = resolve(import.meta.dirname, "..");
const VERSION = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version;

/**
 * The image's name. `localhost/` says where it comes from: a local build, from no registry (the
 * prefix podman and buildah give local builds). A name without a domain would be read by the
 * runtime as docker.io/library/cni-plugins, which this image is not.
 */
export const IMAGE_NAME = `localhost/cni-plugins:${VERSION}`;
/** Where the executable sits in the image; its base name must stay `cni-plugins` (docs/installer.md). */
const EXECUTABLE_PATH = "/usr/src/cni-plugins/bin/cni-plugins";
/** The image's entrypoint, the same as the DaemonSet's command. */
export const ENTRYPOINT = [EXECUTABLE_PATH, "install"];
/** The readiness probe's `test -e`: Debian's busybox-static, which runs its `test` applet when named test. */
const TEST_PATH = "/usr/bin/test";
const BUSYBOX = "/bin/busybox";

export interface BuiltImage {
  name: string;
  /** The OCI archive, for `ctr images import`. */
  archive: string;
  /** The archive's size in bytes (the compressed layer, nearly all of it). */
  bytes: number;
  /** The rootfs' regular files, as paths in the image, sorted. */
  files: string[];
  /** The rootfs' size in bytes, uncompressed. */
  rootfsBytes: number;
}

/**
 * The shared libraries (and the loader) an `ldd` output names, as absolute paths, sorted. The
 * vDSO has no file and is skipped; a library ldd could not find is an error naming it.
 */
export function sharedLibraries(lddOutput: string): string[] {
  const paths = new Set<string>();
  for (const line of lddOutput.split("\n")) {
    const text = line.trim();
    if (text === "") continue;
    if (/=>\s*not found/.test(text)) throw new Error(`ldd: ${text}: the library is not installed on this machine`);
    // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)".
    const match = /^(?:\S+\s+=>\s+)?(\/\S+)\s+\(0x[0-9a-f]+\)$/.exec(text);
    if (match?.[1]) paths.add(match[1]);
    else if (!/^\S+\s+\(0x[0-9a-f]+\)$/.test(text)) throw new Error(`ldd: a line this script cannot read: ${JSON.stringify(text)}`);
  }
  return [...paths].sort();
}

/**
 * The image's tree in `dir` (created, mode 0755): the executable, its libraries at the paths
 * ldd names (links followed: the loader's path is a link on Debian), `test`. Every file 0755.
 * Returns the files as paths in the image, sorted.
 */
function writeRootfs(dir: string, executable = join(ROOT, "bin/cni-plugins")): string[] {
  if (!existsSync(executable)) throw new Error(`${executable} is missing: run npm run build first`);
  const ldd = spawnSync("ldd", [executable], { encoding: "utf8" });
  if (ldd.status !== 0) throw new Error(`ldd ${executable}: ${ldd.stderr}${ldd.stdout}${ldd.error ?? ""}`);
  if (!existsSync(BUSYBOX) || spawnSync("ldd", [BUSYBOX]).status === 0) {
    throw new Error(`${BUSYBOX} is missing or not static: apt-get install -y busybox-static (the readiness probe's test)`);
  }
  const sources = new Map<string, string>([
    [EXECUTABLE_PATH, executable],
    [TEST_PATH, BUSYBOX],
    ...sharedLibraries(ldd.stdout).map((path): [string, string] => [path, path]),
  ]);
  mkdirSync(dir, { recursive: true });
  chmodSync(dir, 0o755);
  for (const [path, source] of sources) {
    const target = join(dir, path);
    mkdirSync(dirname(target), { recursive: true, mode: 0o755 });
    copyFileSync(source, target);
    chmodSync(target, 0o755);
  }
  return [...sources.keys()].sort();
}

/** Builds the archive, `.cache/image/cni-plugins-<version>.tar` unless `archive` says otherwise. */
export function buildImage(options: { log?: (line: string) => void; executable?: string; archive?: string } = {}): BuiltImage {
  const log = options.log ?? (() => {});
  const started = Date.now();
  const archive = options.archive ?? join(ROOT, ".cache/image", `cni-plugins-${VERSION}.tar`);
  mkdirSync(dirname(archive), { recursive: true });
  const work = mkdtempSync(join(tmpdir(), "cni-plugins-image-"));
  try {
    const rootfs = join(work, "rootfs");
    const files = writeRootfs(rootfs, options.executable);
    const rootfsBytes = files.reduce((sum, path) => sum + statSync(join(rootfs, path)).size, 0);
    // Renamed into place: a reader of the archive (a test importing it) never sees half of one.
    const partial = `${archive}.${process.pid}.partial`;
    ociArchive(work, { name: IMAGE_NAME, rootfs, entrypoint: ENTRYPOINT }, partial);
    renameSync(partial, archive);
    const bytes = statSync(archive).size;
    log(`${IMAGE_NAME}: ${archive}, ${mb(bytes)} (rootfs ${mb(rootfsBytes)}: ${files.join(", ")}) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    return { name: IMAGE_NAME, archive, bytes, files, rootfsBytes };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

function mb(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

function main(args: string[]): number {
  if (args.length === 0) {
    buildImage({ log: (line) => console.log(line) });
    return 0;
  }
  if (args.length === 2 && args[0] === "--rootfs" && args[1]) {
    console.log(writeRootfs(resolve(args[1])).join("\n"));
    return 0;
  }
  console.error("usage: bun scripts/image.ts [--rootfs DIR]");
  return 2;
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) process.exit(main(process.argv.slice(2)));
