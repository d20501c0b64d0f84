/**
 * The guest's kernel: which installed Debian kernel to boot, how to boot it quickly under
 * emulation, and which of its modules to load in which order.
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** The newest kernel in /boot whose modules are installed. */
export function newestKernel(): string {
  const versions = readdirSync("/boot")
    .filter((name) => name.startsWith("vmlinuz-"))
    .map((name) => name.slice("vmlinuz-".length))
    .filter((version) => existsSync(`/lib/modules/${version}/modules.dep`))
    .sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  const newest = versions.at(-1);
  if (!newest) throw new Error("guest: no kernel with modules in /boot: run scripts/install-guest-deps.sh (linux-image-amd64)");
  return newest;
}

/** Compressed payloads a bzImage may carry: the magic bytes and the tool that unpacks them. */
const PAYLOADS: { magic: Buffer; tool: string[] }[] = [
  { magic: Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), tool: ["xz", "-dc", "--single-stream"] },
  { magic: Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), tool: ["zstd", "-dc"] },
  { magic: Buffer.from([0x1f, 0x8b, 0x08]), tool: ["gzip", "-dc"] },
];

/**
 * What qemu's -kernel gets. Debian's bzImage unpacks its xz payload itself, which takes about 2.5 s
 * under TCG (measured: 5.2 s to a panicking /init against 2.8 s). A kernel built with CONFIG_PVH
 * boots straight from its uncompressed ELF image instead, so that image is unpacked once on the
 * host and cached. Without CONFIG_PVH, or if unpacking fails, the bzImage still boots, only slower.
 */
export function bootableKernel(kernel: string, cacheDir: string): string {
  const bzImage = `/boot/vmlinuz-${kernel}`;
  const config = `/boot/config-${kernel}`;
  if (!existsSync(config) || !/^CONFIG_PVH=y$/m.test(readFileSync(config, "utf8"))) return bzImage;

  const packed = readFileSync(bzImage);
  // Keyed by content too: a rebuilt package may keep its version string.
  const elf = join(cacheDir, `vmlinux-${kernel}-${createHash("sha256").update(packed).digest("hex").slice(0, 16)}`);
  if (existsSync(elf)) return elf;
  for (const { magic, tool } of PAYLOADS) {
    // The magic bytes may also occur by chance: the right offset is the one that unpacks to an ELF file.
    for (let at = packed.indexOf(magic); at >= 0; at = packed.indexOf(magic, at + 1)) {
      const unpacked = spawnSync(tool[0]!, tool.slice(1), { input: packed.subarray(at), maxBuffer: 1 << 30 });
      // Trailing bytes after the payload make some tools exit non-zero: judge by the output.
      if (unpacked.error || !unpacked.stdout?.subarray(0, 4).equals(Buffer.from("\x7fELF", "latin1"))) continue;
      mkdirSync(cacheDir, { recursive: true });
      writeFileSync(`${elf}.${process.pid}.tmp`, unpacked.stdout);
      renameSync(`${elf}.${process.pid}.tmp`, elf);
      return elf;
    }
  }
  return bzImage;
}

/**
 * Modules the guest loads (with whatever they depend on): the links the CNI suites create, then
 * the transport: virtio-pci, 9p over virtio for the shares, virtio_console for the agent's port,
 * virtio_net for the one forward a guest may be given (guest.ts, forwardPort; without it the
 * module finds no device and makes nothing).
 */
const MODULES: { name: string; params?: string }[] = [
  { name: "virtio_pci" },
  { name: "virtio_console" },
  { name: "9pnet_virtio" },
  { name: "9p" },
  { name: "virtio_net" },
  { name: "veth" },
  { name: "macvlan" },
  { name: "ipvlan" },
  // By default dummy makes a dummy0 in the root namespace; tests create what they need.
  { name: "dummy", params: "numdummies=0" },
];

export interface Module {
  name: string;
  /** The .ko on the host, maybe compressed (.ko.xz, .ko.zst). */
  file: string;
  params: string;
}

/**
 * MODULES and their dependencies, each after what it needs, from the kernel's modules.dep (whose
 * dependency lists are already transitive and ordered so that the last must load first).
 * Modules built into the kernel (modules.builtin) need no loading and are left out. Throws when
 * one is neither, naming it: a kernel without ipvlan is useless here.
 */
export function moduleLoadOrder(kernel: string): Module[] {
  const base = `/lib/modules/${kernel}`;
  if (!existsSync(`${base}/modules.dep`)) {
    throw new Error(`guest: ${base}/modules.dep is missing: the modules of kernel ${kernel} are not installed`);
  }
  const nameOf = (path: string): string =>
    path
      .slice(path.lastIndexOf("/") + 1)
      .replace(/\.ko(\.\w+)?$/, "")
      .replaceAll("-", "_");
  const depends = new Map<string, { path: string; deps: string[] }>();
  for (const line of readFileSync(`${base}/modules.dep`, "utf8").split("\n")) {
    const [path, deps = ""] = line.split(":");
    if (path) depends.set(nameOf(path), { path, deps: deps.trim().split(/\s+/).filter(Boolean) });
  }
  const builtinList = existsSync(`${base}/modules.builtin`) ? readFileSync(`${base}/modules.builtin`, "utf8") : "";
  const builtin = new Set(builtinList.split("\n").filter(Boolean).map(nameOf));

  const order: Module[] = [];
  const seen = new Set<string>();
  const visit = (name: string, params: string): void => {
    if (seen.has(name) || builtin.has(name)) return;
    const entry = depends.get(name);
    if (!entry) throw new Error(`guest: kernel ${kernel} has no module ${name} (neither in modules.dep nor built in)`);
    seen.add(name);
    for (const dep of [...entry.deps].reverse()) visit(nameOf(dep), "");
    order.push({ name, file: join(base, entry.path), params });
  };
  for (const module of MODULES) visit(module.name, module.params ?? "");
  return order;
}
