/**
 * The installer's writes into the node's directories, each atomic: a temporary name, fsync,
 * rename over the old file, fsync of the directory. A runtime that execs a plugin or reads a conf
 * at any moment sees the old file or the new one, never a part; and nobody execs a file that is
 * still open for writing, so no "text file busy".
 */
import {
  closeSync,
  copyFileSync,
  fchmodSync,
  fsyncSync,
  linkSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";

/** The multi-call name in the bin dir, beside one hard link per plugin. */
const EXECUTABLE_NAME = "cni-plugins";

/** The temporary names below: `.<name>.<pid>.new`. */
const TEMPORARY = /^\.[^/]+\.[0-9]+\.new$/;

/** The file's text, or undefined when it does not exist (any other failure is thrown). */
export function readIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    if (err instanceof Error && "code" in err && err.code === "ENOENT") return undefined;
    throw err;
  }
}

/**
 * Replaces `path` with `text` unless it already holds exactly that; returns whether it wrote.
 * Comparing first keeps a once-a-second loop from rewriting files (and bumping their mtime,
 * which runtimes watching the conf dir react to) when nothing changed.
 */
export function writeIfChanged(path: string, text: string, mode: number): boolean {
  if (readIfExists(path) === text) return false;
  writeAtomic(path, text, mode);
  return true;
}

function writeAtomic(path: string, text: string, mode: number): void {
  const dir = dirname(path);
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  // Upstream's temporary name: it ends in neither .conf nor .conflist, so no runtime loads it.
  const temporary = `${path}.new`;
  rmSync(temporary, { force: true });
  const fd = openSync(temporary, "wx", mode);
  try {
    // Mode given at creation is cut by the umask; credentials must be exactly 0600 whatever it is.
    fchmodSync(fd, mode);
    writeAllSync(fd, Buffer.from(text));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temporary, path);
  syncDirectory(dir);
}

function writeAllSync(fd: number, bytes: Buffer): void {
  for (let offset = 0; offset < bytes.length; ) offset += writeSync(fd, bytes, offset);
}

function syncDirectory(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Installs the executable as `<binDir>/cni-plugins` and every plugin name as a hard link to it.
 * The copy is made under a hidden temporary name, synced and closed before any name points at it;
 * each plugin name is then linked to it under a temporary name and renamed over the old one (a
 * rename replaces a name in one step, and a process running the old file keeps its inode).
 */
export function installExecutable(source: string, binDir: string, pluginNames: string[]): void {
  mkdirSync(binDir, { recursive: true, mode: 0o755 });
  // An installer killed mid-copy (SIGKILL past the grace period) leaves its temporary names behind,
  // under another pid than ours: 110 MB each, gone at the next start.
  for (const name of readdirSync(binDir)) if (TEMPORARY.test(name)) rmSync(join(binDir, name), { force: true });
  const temporary = join(binDir, `.${EXECUTABLE_NAME}.${process.pid}.new`);
  copyFileSync(source, temporary);
  const fd = openSync(temporary, "r+");
  try {
    fchmodSync(fd, 0o755);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    for (const name of pluginNames) {
      if (basename(name) !== name || name === "" || name.startsWith(".")) throw new Error(`not a plugin name: ${JSON.stringify(name)}`);
      const link = join(binDir, `.${name}.${process.pid}.new`);
      rmSync(link, { force: true });
      linkSync(temporary, link);
      renameSync(link, join(binDir, name));
    }
    renameSync(temporary, join(binDir, EXECUTABLE_NAME));
  } finally {
    rmSync(temporary, { force: true });
  }
  syncDirectory(binDir);
}
