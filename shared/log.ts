/**
 * Plugin logging. stdout belongs to the CNI protocol (one result or error object), so logs go to
 * stderr, which runtimes capture, or to a file. Writes are synchronous so that a line logged just
 * before the process exits is not lost.
 */
import { Buffer } from "node:buffer";
import { openSync, writeSync } from "node:fs";
import { env } from "node:process";
import { errnoOf, messageOf } from "./errors.ts";

export type LogLevel = "debug" | "info" | "error";

export interface Logger {
  debug(message: string): void;
  info(message: string): void;
  error(message: string): void;
}

export interface LoggerOptions {
  /** Append here instead of stderr. The directory must exist; the file is created with mode 0600. */
  file?: string;
  /** The least severe level written; default "info". */
  level?: LogLevel;
  /** Receives each finished line instead of stderr/file; lets tests and the dispatcher capture logs. */
  sink?: (line: string) => void;
}

const SEVERITY: Record<LogLevel, number> = { debug: 0, info: 1, error: 2 };

const STDERR = 2;

export function createLogger(opts: LoggerOptions, component: string): Logger {
  const threshold = SEVERITY[opts.level ?? "info"];
  const sink = opts.sink ?? openSink(opts.file);
  const write = (level: LogLevel, message: string): void => {
    if (SEVERITY[level] < threshold) return;
    // One entry per line, whatever the message holds, so log files stay greppable.
    const oneLine = message.replace(/\r?\n/g, "\\n");
    sink(`${new Date().toISOString()} ${level} ${component}: ${oneLine}\n`);
  };
  return {
    debug: (message) => write("debug", message),
    info: (message) => write("info", message),
    error: (message) => write("error", message),
  };
}

/** A logger to stderr at the level named by CNI_LOG_LEVEL (default "info"). */
export function logger(component: string): Logger {
  return createLogger({ level: levelFromEnv(env.CNI_LOG_LEVEL) }, component);
}

function levelFromEnv(value: string | undefined): LogLevel {
  return value === "debug" || value === "info" || value === "error" ? value : "info";
}

function openSink(file: string | undefined): (line: string) => void {
  const toStderr = (line: string): void => writeQuietly(STDERR, line);
  if (file === undefined) return toStderr;
  let fd: number;
  try {
    fd = openSync(file, "a", 0o600);
  } catch (err) {
    const reason = messageOf(err);
    toStderr(`${new Date().toISOString()} error log: cannot open log file, logging to stderr: ${reason}\n`);
    return toStderr;
  }
  // The descriptor stays open for the life of the process, which for a plugin is one request.
  return (line) => writeQuietly(fd, line);
}

/** A failed log write must never fail the request it describes. */
function writeQuietly(fd: number, line: string): void {
  try {
    writeAllSync(fd, line);
  } catch {
    // Nothing sensible to do: the place we would report this is the one that just failed.
  }
}

/**
 * Writes all of `text` before returning. A pipe inherited in non-blocking mode may take only part
 * of a write, or none (EAGAIN) while the reader lags; we retry until it has everything, since
 * the caller may exit right after and the runtime needs the whole output.
 */
export function writeAllSync(fd: number, text: string): void {
  let pending = Buffer.from(text, "utf8");
  while (pending.length > 0) {
    try {
      pending = pending.subarray(writeSync(fd, pending));
    } catch (err) {
      if (errnoOf(err) !== "EAGAIN") throw err;
    }
  }
}
