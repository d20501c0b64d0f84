/**
 * The guest's initramfs: busybox, iproute2's ip, ping, bash, dash as /bin/sh, the libraries they
 * and Bun need, the kernel modules for the links under test and for 9p/virtio, and an /init that
 * mounts the host's shares and starts the agent. Built from this machine's own files, so it is
 * cached under a key of the kernel version and a hash of every input: a package upgrade rebuilds it.
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, extname, join } from "node:path";
import { moduleLoadOrder, type Module } from "./kernel.ts";
import { AGENT_PORT_NAME } from "./protocol.ts";

/** Binaries copied in: the first existing candidate, at every destination (paths inside the guest). */
const BINARIES: { candidates: string[]; destinations: string[] }[] = [
  { candidates: ["/usr/bin/busybox", "/bin/busybox"], destinations: ["/usr/bin/busybox"] },
  // busybox has its own `ip`, which knows no ipvlan: iproute2's takes every path a caller may use.
  { candidates: ["/usr/sbin/ip", "/sbin/ip", "/bin/ip"], destinations: ["/usr/sbin/ip", "/usr/bin/ip"] },
  { candidates: ["/usr/bin/ping", "/bin/ping"], destinations: ["/usr/bin/ping"] },
  { candidates: ["/usr/bin/bash", "/bin/bash"], destinations: ["/usr/bin/bash"] },
  // dash, not busybox, is /bin/sh: busybox's sh runs its own applets first (its `ip` above all),
  // so a helper script would behave differently than on the host.
  { candidates: ["/usr/bin/dash", "/bin/dash"], destinations: ["/usr/bin/dash", "/usr/bin/sh"] },
];

/** busybox insmod reads plain .ko files; newer kernels ship them compressed. */
const DECOMPRESSORS: Record<string, string | undefined> = { ".xz": "xz", ".zst": "zstd", ".gz": "gzip" };

/** busybox applets left out: real programs stand in for them, or they would shadow one. */
const SKIPPED_APPLETS = new Set(["ip", "ipneigh", "ping", "ping6", "tc", "sh", "init", "linuxrc"]);

export interface InitramfsInputs {
  kernel: string;
  /** Extra dynamically linked executables run in the guest from the shares (Bun): their libraries are packed. */
  sharedExecutables: string[];
}

/** One thing in the image, at `path` inside the guest. */
type Entry = { path: string } & (
  | { kind: "dir"; mode: number }
  | { kind: "link"; target: string }
  | { kind: "file"; mode: number; text: string }
  /** A copy of a host file; `decompress` names the tool for a compressed kernel module. */
  | { kind: "copy"; mode: number; source: string; decompress?: string }
);

/**
 * Returns the path of a cpio archive for `inputs`, building it unless it is cached. Uncompressed:
 * gunzip under TCG costs more than it saves (measured: 0.7 s for a 12 MB image, 5.8 MB gzip'ed).
 */
export function initramfs(inputs: InitramfsInputs, cacheDir: string): string {
  const entries = plan(inputs);
  const hash = createHash("sha256").update("initramfs v2\n");
  for (const entry of entries) {
    hash.update(`${JSON.stringify({ ...entry, text: undefined })}\n`);
    if (entry.kind === "file") hash.update(entry.text);
    if (entry.kind === "copy") hash.update(readFileSync(entry.source));
  }
  const image = join(cacheDir, `initramfs-${inputs.kernel}-${hash.digest("hex").slice(0, 16)}.cpio`);
  if (existsSync(image)) return image;

  mkdirSync(cacheDir, { recursive: true });
  const staging = join(cacheDir, `staging-${process.pid}`);
  rmSync(staging, { recursive: true, force: true });
  try {
    for (const entry of entries) stage(entry, join(staging, entry.path));
    // Written aside and renamed: a concurrent run sees either no image or a whole one.
    const partial = `${image}.${process.pid}.tmp`;
    const pack = spawnSync("bash", ["-c", 'set -o pipefail; find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet > "$1"', "pack", partial], {
      cwd: staging,
      encoding: "utf8",
    });
    if (pack.status !== 0) throw new Error(`packing the initramfs failed (is cpio installed?): ${pack.stderr}`);
    renameSync(partial, image);
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
  return image;
}

function stage(entry: Entry, target: string): void {
  mkdirSync(dirname(target), { recursive: true });
  switch (entry.kind) {
    case "dir":
      mkdirSync(target, { recursive: true });
      chmodSync(target, entry.mode);
      return;
    case "link":
      symlinkSync(entry.target, target);
      return;
    case "file":
      writeFileSync(target, entry.text);
      chmodSync(target, entry.mode);
      return;
    case "copy":
      if (entry.decompress) {
        const out = spawnSync(entry.decompress, ["-dc", entry.source], { maxBuffer: 256 * 1024 * 1024 });
        if (out.status !== 0) throw new Error(`${entry.decompress} -dc ${entry.source} failed: ${out.stderr}`);
        writeFileSync(target, out.stdout);
      } else {
        copyFileSync(entry.source, target);
      }
      chmodSync(target, entry.mode);
  }
}

/** Every file, link and folder of the image, in a stable order (the order feeds the cache key). */
function plan(inputs: InitramfsInputs): Entry[] {
  const entries = new Map<string, Entry>();
  const add = (entry: Entry): void => void entries.set(entry.path, entry);

  // Debian's merged /usr: /bin, /sbin, /lib, /lib64 are links, so every usual path of a binary works.
  for (const top of ["bin", "sbin", "lib", "lib64"]) add({ path: `/${top}`, kind: "link", target: `usr/${top}` });
  for (const path of ["/dev", "/proc", "/sys", "/run", "/root", "/etc", "/var", "/var/lib", "/mnt"]) add({ path, kind: "dir", mode: 0o755 });
  add({ path: "/tmp", kind: "dir", mode: 0o1777 });
  add({ path: "/var/run", kind: "link", target: "../run" });
  add({ path: "/etc/passwd", kind: "file", mode: 0o644, text: "root:x:0:0:root:/root:/bin/sh\n" });
  add({ path: "/etc/group", kind: "file", mode: 0o644, text: "root:x:0:\n" });
  // iproute2 names tables, protocols and realms from here, as on the host.
  for (const source of listFiles("/etc/iproute2")) add({ path: source, kind: "copy", mode: 0o644, source });

  const executables: string[] = [...inputs.sharedExecutables];
  for (const binary of BINARIES) {
    const source = binary.candidates.find((candidate) => existsSync(candidate));
    if (!source) throw new Error(`${binary.candidates[0]} is missing: run scripts/install-guest-deps.sh`);
    executables.push(source);
    for (const path of binary.destinations) add({ path, kind: "copy", mode: 0o755, source });
  }
  for (const source of libraries(executables)) add({ path: usrMerged(source), kind: "copy", mode: 0o755, source });

  for (const applet of busyboxApplets()) {
    const path = usrMerged(`/${applet}`);
    const name = path.slice(path.lastIndexOf("/") + 1);
    if (!SKIPPED_APPLETS.has(name) && !entries.has(path)) add({ path, kind: "link", target: "/usr/bin/busybox" });
  }

  const modules = moduleLoadOrder(inputs.kernel);
  for (const { name, file } of modules) {
    const decompress = DECOMPRESSORS[extname(file)];
    add({ path: `/usr/lib/modules/${name}.ko`, kind: "copy", mode: 0o644, source: file, ...(decompress ? { decompress } : {}) });
  }
  add({ path: "/init", kind: "file", mode: 0o755, text: initScript(modules) });

  return [...entries.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** `/lib/x/y` and `/usr/lib/x/y` are one file in a merged /usr; the image keeps it under /usr. */
function usrMerged(path: string): string {
  return path.startsWith("/usr/") ? path : `/usr${path}`;
}

function listFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const found = spawnSync("find", [dir, "-type", "f"], { encoding: "utf8" });
  return found.stdout.split("\n").filter(Boolean).sort();
}

/** The shared libraries (and the dynamic loader) that `ldd` lists for each executable. */
function libraries(executables: string[]): string[] {
  const found = new Set<string>();
  for (const executable of executables) {
    const ldd = spawnSync("ldd", [executable], { encoding: "utf8" });
    // Static executables (busybox, Go) make ldd say "not a dynamic executable" and exit 1.
    if (ldd.status !== 0) {
      if (/not a dynamic executable/.test(ldd.stdout + ldd.stderr)) continue;
      throw new Error(`ldd ${executable} failed: ${ldd.stderr}`);
    }
    for (const line of ldd.stdout.split("\n")) {
      // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
      const path = /(?:=>\s*)?(\/\S+)\s+\(0x/.exec(line)?.[1];
      if (path) found.add(path);
    }
  }
  return [...found].sort();
}

/** Applet paths as busybox installs them ("usr/bin/cat", "sbin/insmod"...). */
function busyboxApplets(): string[] {
  const list = spawnSync("busybox", ["--list-full"], { encoding: "utf8" });
  if (list.status !== 0) throw new Error("busybox --list-full failed: run scripts/install-guest-deps.sh");
  return list.stdout.split("\n").filter(Boolean);
}

/**
 * /init, run by busybox. The host passes its paths on the kernel command line (cni_repo,
 * cni_scratch, cni_bun, cni_agent, and cni_net, eth0's address, when the guest has a network),
 * which the kernel hands to /init as environment variables.
 * Lines starting "cni-guest:" on the serial console tell the host what happened.
 */
function initScript(modules: Module[]): string {
  const insmods = modules.map((m) => `$bb insmod /lib/modules/${m.name}.ko ${m.params} || fail "insmod ${m.name}"`);
  return `#!/usr/bin/busybox sh
# /init of the conformance guest, generated by conformance/guest/initramfs.ts.
bb=/usr/bin/busybox
$bb mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
say() { echo "cni-guest: $*"; }
fail() { say "FAILED: $*"; $bb poweroff -f; }

$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mkdir -p /dev/shm /dev/pts
$bb mount -t tmpfs -o mode=1777 tmpfs /dev/shm
# ip netns add bind-mounts namespaces under /run/netns: it needs a writable /run.
$bb mount -t tmpfs -o mode=0755 tmpfs /run

${insmods.join("\n")}

# A network only when the host gave one (cni_net, guest.ts's forwardPort): qemu's user-mode NIC,
# whose one destination is on the link, so no route beyond the subnet's own.
if [ -n "$cni_net" ]; then
  for attempt in $($bb seq 100); do [ -e /sys/class/net/eth0 ] && break; $bb sleep 0.05; done
  /usr/sbin/ip link set lo up && /usr/sbin/ip addr add "$cni_net" dev eth0 && /usr/sbin/ip link set eth0 up \\
    || fail "configuring eth0 as $cni_net"
fi

# The checkout read-only, with cached pages (Bun executables are read once, then run from memory);
# the scratch folder uncached, so files written on either side are seen at once on the other.
$bb mkdir -p "$cni_repo" && $bb mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 repo "$cni_repo" \\
  || fail "mounting the checkout at $cni_repo"
$bb mkdir -p "$cni_scratch" && $bb mount -t 9p -o trans=virtio,version=9p2000.L,cache=none,msize=512000 scratch "$cni_scratch" \\
  || fail "mounting the scratch folder at $cni_scratch"

# The agent's port appears once the host's virtio-serial device has announced it.
port=
for attempt in $($bb seq 100); do
  for dir in /sys/class/virtio-ports/*; do
    [ "$($bb cat "$dir/name" 2>/dev/null)" = "${AGENT_PORT_NAME}" ] && port=/dev/\${dir##*/}
  done
  [ -n "$port" ] && [ -e "$port" ] && break
  $bb sleep 0.05
done
[ -e "$port" ] || fail "no virtio-serial port named ${AGENT_PORT_NAME}"

say "starting the agent after $($bb cut -d' ' -f1 /proc/uptime) s"
cd /
$bb env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$cni_bun" "$cni_agent" "$port"
say "agent exited with status $?"
$bb poweroff -f
`;
}
