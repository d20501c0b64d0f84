/**
 * multus' log, as upstream's (`pkg/logging`): lines `<RFC 3339 time> [<level>] <message>` in
 * `logFile` (0600) and, with `logToStderr`, on stderr; levels debug > verbose > error > panic,
 * only those at or above `logLevel`'s severity written. The file is rotated as lumberjack does
 * (`logOptions`): when it has reached `maxSize` MB it is renamed `<name>-<time>.<ext>`, gzipped
 * with `compress`, and backups beyond `maxBackups` or older than `maxAge` days are removed.
 */
import { openSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, extname, join } from "node:path";
import { gzipSync } from "node:zlib";
import { writeAllSync } from "../../shared/log.ts";
import type { LogLevel, LogOptions } from "./config.ts";

const SEVERITY: Record<LogLevel, number> = { panic: 1, error: 2, verbose: 3, debug: 4 };
const STDERR = 2;
const MB = 1024 * 1024;
const DAY_MS = 24 * 60 * 60 * 1000;

export interface MultusLog {
  debug(message: string): void;
  verbose(message: string): void;
  error(message: string): void;
}

export interface MultusLogOptions {
  file: string;
  level: LogLevel;
  toStderr: boolean;
  rotation: LogOptions;
}

export function openMultusLog(options: MultusLogOptions): MultusLog {
  const threshold = SEVERITY[options.level];
  let fd: number | undefined;
  if (options.file !== "") {
    try {
      rotate(options.file, options.rotation);
      fd = openSync(options.file, "a", 0o600);
    } catch (err) {
      writeQuietly(STDERR, `${timestamp()} [error] cannot open the log file ${options.file}: ${err instanceof Error ? err.message : String(err)}\n`);
    }
  }
  const write = (level: LogLevel, message: string): void => {
    if (SEVERITY[level] > threshold) return;
    const line = `${timestamp()} [${level}] ${message.replace(/\r?\n/g, "\\n")}\n`;
    if (fd !== undefined) writeQuietly(fd, line);
    if (options.toStderr) writeQuietly(STDERR, line);
  };
  return {
    debug: (message) => write("debug", message),
    verbose: (message) => write("verbose", message),
    error: (message) => write("error", message),
  };
}

/** Go's `time.RFC3339`: seconds, `Z` for UTC. */
function timestamp(): string {
  return new Date().toISOString().replace(/\.\d+Z$/, "Z");
}

/** Rotates `file` if it has reached maxSize, then prunes old backups. */
function rotate(file: string, options: LogOptions): void {
  let size: number;
  try {
    size = statSync(file).size;
  } catch {
    return;
  }
  if (options.maxSize <= 0 || size < options.maxSize * MB) return;
  const ext = extname(file);
  const stem = basename(file, ext);
  // lumberjack's backup name: <stem>-2006-01-02T15-04-05.000<ext>, in UTC.
  const stamp = new Date().toISOString().replace(/:/g, "-").replace(/Z$/, "");
  const backup = join(dirname(file), `${stem}-${stamp}${ext}`);
  try {
    renameSync(file, backup);
  } catch {
    return; // another process rotated it first
  }
  if (options.compress) {
    try {
      writeFileSync(`${backup}.gz`, gzipSync(readFileSync(backup)), { mode: 0o600 });
      rmSync(backup, { force: true });
    } catch {
      // The uncompressed backup stays; rotation must never cost a request.
    }
  }
  prune(file, stem, ext, options);
}

function prune(file: string, stem: string, ext: string, options: LogOptions): void {
  const dir = dirname(file);
  const pattern = new RegExp(`^${regexpLiteral(stem)}-\\d{4}-\\d{2}-\\d{2}T\\d{2}-\\d{2}-\\d{2}\\.\\d{3}${regexpLiteral(ext)}(\\.gz)?$`);
  const backups = readdirSync(dir)
    .filter((name) => pattern.test(name))
    .sort()
    .reverse();
  const oldest = Date.now() - options.maxAge * DAY_MS;
  backups.forEach((name, index) => {
    const path = join(dir, name);
    const tooMany = options.maxBackups > 0 && index >= options.maxBackups;
    let tooOld = false;
    if (options.maxAge > 0) {
      try {
        tooOld = statSync(path).mtimeMs < oldest;
      } catch {
        return;
      }
    }
    if (tooMany || tooOld) rmSync(path, { force: true });
  });
}

function regexpLiteral(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function writeQuietly(fd: number, line: string): void {
  try {
    writeAllSync(fd, line);
  } catch {
    // A failed log write must never fail the request it describes.
  }
}
