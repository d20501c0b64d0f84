/**
 * libcni's result cache (containernetworking/cni `libcni/api.go`: `cachedInfo`, `cacheAdd`,
 * `getCachedResult`, `GetCachedAttachments`): one file per attachment,
 * `<cacheDir>/results/<network>-<containerID>-<ifName>`, directory 0700, file 0600, holding
 *
 *   {"kind":"cniCacheV1","containerId","config":<base64 of the list's bytes>,"ifName",
 *    "networkName","netns"?,"cniArgs"?:[[k,v]...],"capabilityArgs"?:{...},"result"?:{...}}
 *
 * compact, in that key order, as Go writes it. Files written by Go's libcni read back the same;
 * ours are written atomically (a temporary file renamed over the old one).
 */
import { mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { Buffer } from "node:buffer";
import { join } from "node:path";
import { errnoOf, messageOf } from "../errors.ts";
import { CniError, ErrorCode } from "./errors.ts";
import { FieldReader, describeValue, isJsonObject, marshalLikeGo } from "./json.ts";
import { parseResult, resultToVersion } from "./result.ts";
import type { JsonObject, JsonValue, Result } from "./types.ts";

const CACHE_KIND = "cniCacheV1";

/** One attachment as the cache holds it. */
export interface CacheEntry {
  containerId: string;
  /** The network list's bytes, decoded from base64. */
  config: string;
  ifName: string;
  networkName: string;
  netns?: string;
  cniArgs?: Array<[string, string]>;
  capabilityArgs?: JsonObject;
  /** The final ADD result, as JSON in its own version. */
  result?: JsonObject;
}

/** The file of one attachment; libcni refuses to name it when a part is empty. */
export function cacheFilePath(cacheDir: string, networkName: string, containerId: string, ifName: string): string {
  if (networkName === "" || containerId === "" || ifName === "") {
    throw new CniError(
      ErrorCode.InvalidEnvironment,
      `cache file path requires network name (${JSON.stringify(networkName)}), container ID (${JSON.stringify(containerId)}), and interface name (${JSON.stringify(ifName)})`,
    );
  }
  return join(cacheDir, "results", `${networkName}-${containerId}-${ifName}`);
}

/** The file's text: Go's struct order, empty optional fields left out (`omitempty`). */
export function encodeCacheEntry(entry: CacheEntry): string {
  const parts: string[] = [
    `"kind":${marshalLikeGo(CACHE_KIND)}`,
    `"containerId":${marshalLikeGo(entry.containerId)}`,
    `"config":${marshalLikeGo(Buffer.from(entry.config, "utf8").toString("base64"))}`,
    `"ifName":${marshalLikeGo(entry.ifName)}`,
    `"networkName":${marshalLikeGo(entry.networkName)}`,
  ];
  if (entry.netns) parts.push(`"netns":${marshalLikeGo(entry.netns)}`);
  if (entry.cniArgs?.length) parts.push(`"cniArgs":${marshalLikeGo(entry.cniArgs)}`);
  if (entry.capabilityArgs && Object.keys(entry.capabilityArgs).length > 0) {
    parts.push(`"capabilityArgs":${marshalLikeGo(entry.capabilityArgs)}`);
  }
  if (entry.result && Object.keys(entry.result).length > 0) parts.push(`"result":${marshalLikeGo(entry.result)}`);
  return `{${parts.join(",")}}`;
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * Reads a cache file's text. Undefined when it is not a `cniCacheV1` object (libcni then reads
 * the file as a bare result, the format before v0.8); a cniCacheV1 object with a field of the
 * wrong type is refused (code 6).
 */
export function decodeCacheEntry(text: string): CacheEntry | undefined {
  let decoded: unknown;
  try {
    decoded = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isJsonObject(decoded) || decoded.kind !== CACHE_KIND) return undefined;
  const fields = new FieldReader(decoded, ErrorCode.DecodingFailure, "", "cached result: ");
  const config = fields.string("config") ?? "";
  if (!BASE64.test(config)) fields.fail("config", "base64 text");
  const entry: CacheEntry = {
    containerId: fields.string("containerId") ?? "",
    config: Buffer.from(config, "base64").toString("utf8"),
    ifName: fields.string("ifName") ?? "",
    networkName: fields.string("networkName") ?? "",
  };
  const netns = fields.string("netns");
  if (netns) entry.netns = netns;
  const cniArgs = fields.array("cniArgs")?.map((pair) => readPair(fields, pair));
  if (cniArgs?.length) entry.cniArgs = cniArgs;
  const capabilityArgs = fields.object("capabilityArgs");
  if (capabilityArgs) entry.capabilityArgs = capabilityArgs;
  const result = fields.object("result");
  if (result) entry.result = result;
  return entry;
}

function readPair(fields: FieldReader, pair: JsonValue): [string, string] {
  if (Array.isArray(pair) && pair.length === 2) {
    const [key, value] = pair;
    if (typeof key === "string" && typeof value === "string") return [key, value];
  }
  throw fields.error(`invalid "cniArgs": expected [key, value] pairs of strings, got ${describeValue(pair)}`);
}

/** Writes (or replaces) the attachment's file. */
export function writeCacheEntry(cacheDir: string, entry: CacheEntry): void {
  const file = cacheFilePath(cacheDir, entry.networkName, entry.containerId, entry.ifName);
  // Beside results/, not in it, so that a reader listing the attachments never sees a half-written file.
  const temporary = join(cacheDir, `.result-${entry.networkName}-${entry.containerId}-${entry.ifName}.${process.pid}.tmp`);
  try {
    mkdirSync(join(cacheDir, "results"), { recursive: true, mode: 0o700 });
    writeFileSync(temporary, encodeCacheEntry(entry), { mode: 0o600, flush: true });
    renameSync(temporary, file);
  } catch (err) {
    rmSync(temporary, { force: true });
    throw new CniError(ErrorCode.IOFailure, `failed to set network ${JSON.stringify(entry.networkName)} cached result: ${messageOf(err)}`);
  }
}

/** The file's text, or undefined when there is none (or it cannot be read: libcni ignores that too). */
function readCacheText(file: string): string | undefined {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
}

/** The attachment's entry; undefined when there is no file or it is not a cniCacheV1 object. */
export function readCacheEntry(cacheDir: string, networkName: string, containerId: string, ifName: string): CacheEntry | undefined {
  const text = readCacheText(cacheFilePath(cacheDir, networkName, containerId, ifName));
  return text === undefined ? undefined : decodeCacheEntry(text);
}

/**
 * The cached ADD result in `cniVersion` (libcni `getCachedResult`), undefined when there is no
 * file. A file that is not cniCacheV1 is read as a bare result. A result that does not parse
 * throws (code 6): DEL then drops the file and goes on, CHECK fails.
 */
export function readCachedResult(cacheDir: string, networkName: string, containerId: string, ifName: string, cniVersion: string): Result | undefined {
  const text = readCacheText(cacheFilePath(cacheDir, networkName, containerId, ifName));
  if (text === undefined) return undefined;
  const entry = decodeCacheEntry(text);
  let raw: unknown = entry?.result ?? {};
  if (entry === undefined) {
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new CniError(ErrorCode.DecodingFailure, `cached result: ${messageOf(err)}`);
    }
  }
  const result = parseResult(raw, "cached result");
  // Converted to the list's version, so plugins get prevResult in the version of their config.
  resultToVersion(result, cniVersion);
  return { ...result, cniVersion };
}

/** Removes the attachment's file, if any. */
export function removeCacheEntry(cacheDir: string, networkName: string, containerId: string, ifName: string): void {
  try {
    rmSync(cacheFilePath(cacheDir, networkName, containerId, ifName), { force: true });
  } catch {
    // libcni ignores a cache file it cannot name or remove: DEL has done its work by then.
  }
}

/**
 * Every attachment in the cache, files in name order (libcni `GetCachedAttachments`): files that
 * cannot be read, are not cniCacheV1, or lack an interface or network name are skipped.
 */
export function listCachedAttachments(cacheDir: string): CacheEntry[] {
  const dir = join(cacheDir, "results");
  let names: string[];
  try {
    names = readdirSync(dir).sort();
  } catch (err) {
    if (errnoOf(err) === "ENOENT") return [];
    throw new CniError(ErrorCode.IOFailure, `failed to list cached results: ${messageOf(err)}`);
  }
  const entries: CacheEntry[] = [];
  for (const name of names) {
    const text = readCacheText(join(dir, name));
    let entry: CacheEntry | undefined;
    try {
      entry = text === undefined ? undefined : decodeCacheEntry(text);
    } catch {
      entry = undefined;
    }
    if (entry && entry.ifName !== "" && entry.networkName !== "") entries.push(entry);
  }
  return entries;
}

/** The cache's form of a result: the JSON of its own version. */
export function cachedResultJson(result: Result): JsonObject {
  return resultToVersion(result, result.cniVersion);
}
