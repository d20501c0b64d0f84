/**
 * multus' scratch cache `<cniDir>/<containerID>` (k8snetworkplumbingwg/multus-cni v4.3.0
 * `pkg/multus/multus.go` `saveDelegates`, `consumeScratchNetConf`): the pod's delegates as ADD
 * planned them, so that DEL runs the same ones. A JSON array of upstream's `DelegateNetConf`:
 *
 *   {"Conf":{...},"ConfList":{...},"Name","ifnameRequest"?,"macRequest"?,"infinibandGUIDRequest"?,
 *    "ipRequest"?,"default-route"?,"IsFilterV4Gateway","IsFilterV6Gateway","deviceID"?,
 *    "resourceName"?,"Bytes":<base64 of the delegate's JSON>}
 *
 * Files written by upstream read back (their extra `CNINetworkConfigList` is ignored); ours keep
 * `Bytes` exactly as the delegate ran (upstream re-marshalled a conflist loaded from a file and
 * lost its plugins' own keys) and are written atomically, directory 0700, file 0600.
 */
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { Buffer } from "node:buffer";
import { join } from "node:path";
import { errnoOf, messageOf } from "../../shared/errors.ts";
import { validateContainerId } from "../../shared/cni/env.ts";
import { CniError, ErrorCode } from "../../shared/cni/errors.ts";
import { FieldReader, describeValue, isJsonObject } from "../../shared/cni/json.ts";
import type { JsonObject, JsonValue } from "../../shared/cni/types.ts";
import { tryParseIp } from "../../shared/ip.ts";
import type { PodDelegate } from "./delegates.ts";
import { delegateFromConfig } from "./nad.ts";

/** One delegate as the cache holds it. */
export interface CachedDelegate {
  /** The display name (`Name`). */
  name: string;
  /** The delegate's JSON text (`Bytes`, decoded). */
  bytes: string;
  /** A conflist (upstream: `ConfList.plugins` is not empty). */
  isConfList: boolean;
  ifnameRequest?: string;
  mac?: string;
  infinibandGUID?: string;
  ips?: string[];
  defaultRoute?: string[];
  filterV4Gateway: boolean;
  filterV6Gateway: boolean;
  deviceID?: string;
  resourceName?: string;
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** The cache entry of a planned delegate. */
export function cachedDelegate(delegate: PodDelegate): CachedDelegate {
  const cached: CachedDelegate = {
    name: delegate.conf.name,
    bytes: delegate.conf.bytes,
    isConfList: delegate.conf.isConfList,
    filterV4Gateway: delegate.filterV4Gateway,
    filterV6Gateway: delegate.filterV6Gateway,
  };
  if (delegate.ifnameRequest) cached.ifnameRequest = delegate.ifnameRequest;
  if (delegate.mac) cached.mac = delegate.mac;
  if (delegate.infinibandGUID) cached.infinibandGUID = delegate.infinibandGUID;
  if (delegate.ips?.length) cached.ips = delegate.ips;
  if (delegate.defaultRoute !== undefined) cached.defaultRoute = delegate.defaultRoute;
  if (delegate.deviceID) cached.deviceID = delegate.deviceID;
  if (delegate.resourceName) cached.resourceName = delegate.resourceName;
  return cached;
}

/** The file's text, in upstream's key order, so that upstream multus (a downgrade) reads it too. */
export function encodeScratchCache(delegates: readonly CachedDelegate[]): string {
  return JSON.stringify(delegates.map(entryJson));
}

function entryJson(delegate: CachedDelegate): JsonObject {
  const raw = decodeBytes(delegate.bytes);
  const plugins = Array.isArray(raw.plugins) ? raw.plugins : [];
  const entry: Array<[string, JsonValue | undefined]> = [
    // What upstream reads a delegate's kind from: a non-empty ConfList.plugins is a conflist.
    ["Conf", delegate.isConfList ? {} : raw],
    ["ConfList", delegate.isConfList ? { cniVersion: raw.cniVersion ?? "", name: raw.name ?? "", plugins } : {}],
    ["Name", delegate.name],
    ["ifnameRequest", delegate.ifnameRequest],
    ["macRequest", delegate.mac],
    ["infinibandGUIDRequest", delegate.infinibandGUID],
    ["ipRequest", delegate.ips],
    ["default-route", delegate.defaultRoute],
    ["IsFilterV4Gateway", delegate.filterV4Gateway],
    ["IsFilterV6Gateway", delegate.filterV6Gateway],
    ["deviceID", delegate.deviceID],
    ["resourceName", delegate.resourceName],
    ["Bytes", Buffer.from(delegate.bytes, "utf8").toString("base64")],
  ];
  const json: JsonObject = {};
  for (const [key, value] of entry) if (value !== undefined) json[key] = value;
  return json;
}

function decodeBytes(bytes: string): JsonObject {
  const decoded: unknown = JSON.parse(bytes);
  if (!isJsonObject(decoded)) throw new CniError(ErrorCode.InvalidConfig, `delegate config is not a JSON object: ${describeValue(decoded)}`);
  return decoded;
}

/**
 * Reads a cache file's text (ours or upstream's), every field checked. Code 6 when it is not a
 * non-empty array of delegates or a field has the wrong type.
 */
export function decodeScratchCache(text: string): CachedDelegate[] {
  let decoded: unknown;
  try {
    decoded = JSON.parse(text);
  } catch (err) {
    throw new CniError(ErrorCode.DecodingFailure, `multus cache: ${messageOf(err)}`);
  }
  if (!Array.isArray(decoded) || decoded.length === 0) {
    throw new CniError(ErrorCode.DecodingFailure, `multus cache: expected a non-empty array of delegates, got ${describeValue(decoded)}`);
  }
  return decoded.map((item: unknown, index: number) => {
    if (!isJsonObject(item)) throw new CniError(ErrorCode.DecodingFailure, `multus cache: delegate ${index}: expected an object, got ${describeValue(item)}`);
    return readEntry(new FieldReader(item, ErrorCode.DecodingFailure, `[${index}].`, "multus cache: "));
  });
}

function readEntry(fields: FieldReader): CachedDelegate {
  const encoded = fields.string("Bytes") ?? "";
  if (encoded === "" || !BASE64.test(encoded)) fields.fail("Bytes", "base64 text");
  const confList = fields.object("ConfList");
  const plugins = confList === undefined ? undefined : fields.nested(confList, "ConfList").array("plugins");
  const cached: CachedDelegate = {
    name: fields.string("Name") ?? "",
    bytes: Buffer.from(encoded, "base64").toString("utf8"),
    isConfList: (plugins?.length ?? 0) > 0,
    filterV4Gateway: fields.boolean("IsFilterV4Gateway") ?? false,
    filterV6Gateway: fields.boolean("IsFilterV6Gateway") ?? false,
  };
  fields.object("Conf");
  const ifnameRequest = fields.string("ifnameRequest");
  if (ifnameRequest) cached.ifnameRequest = ifnameRequest;
  const mac = fields.string("macRequest");
  if (mac) cached.mac = mac;
  const guid = fields.string("infinibandGUIDRequest");
  if (guid) cached.infinibandGUID = guid;
  const ips = fields.stringArray("ipRequest");
  if (ips?.length) cached.ips = ips;
  const defaultRoute = fields.stringArray("default-route");
  if (defaultRoute !== undefined) {
    for (const gateway of defaultRoute) if (tryParseIp(gateway) === undefined) fields.fail("default-route", "IP addresses");
    cached.defaultRoute = defaultRoute;
  }
  const deviceID = fields.string("deviceID");
  if (deviceID) cached.deviceID = deviceID;
  const resourceName = fields.string("resourceName");
  if (resourceName) cached.resourceName = resourceName;
  return cached;
}

/**
 * The delegates DEL runs, from the cache: the first is the master; interface names as ADD gave
 * them (the request, else CNI_IFNAME for the master, else net<index>).
 */
export function podDelegatesFromCache(cached: readonly CachedDelegate[], runtimeIfName: string): PodDelegate[] {
  return cached.map((entry, index) => {
    const master = index === 0;
    const delegate: PodDelegate = {
      conf: delegateFromConfig(entry.bytes, entry.name),
      master,
      ifName: entry.ifnameRequest || (master ? runtimeIfName : `net${index}`),
      filterV4Gateway: entry.filterV4Gateway,
      filterV6Gateway: entry.filterV6Gateway,
    };
    if (entry.ifnameRequest) delegate.ifnameRequest = entry.ifnameRequest;
    if (entry.mac) delegate.mac = entry.mac;
    if (entry.infinibandGUID) delegate.infinibandGUID = entry.infinibandGUID;
    if (entry.ips) delegate.ips = entry.ips;
    if (entry.defaultRoute) delegate.defaultRoute = entry.defaultRoute;
    if (entry.deviceID) delegate.deviceID = entry.deviceID;
    if (entry.resourceName) delegate.resourceName = entry.resourceName;
    return delegate;
  });
}

// ---- the file ----------------------------------------------------------------------------------

export function scratchCachePath(cniDir: string, containerId: string): string {
  validateContainerId(containerId);
  return join(cniDir, containerId);
}

/** Writes the pod's delegates before any runs: a temporary file renamed over the old one. */
export function writeScratchCache(cniDir: string, containerId: string, delegates: readonly PodDelegate[]): void {
  const file = scratchCachePath(cniDir, containerId);
  const temporary = join(cniDir, `.${containerId}.${process.pid}.tmp`);
  try {
    mkdirSync(cniDir, { recursive: true, mode: 0o700 });
    writeFileSync(temporary, encodeScratchCache(delegates.map(cachedDelegate)), { mode: 0o600, flush: true });
    renameSync(temporary, file);
  } catch (err) {
    rmSync(temporary, { force: true });
    throw new CniError(ErrorCode.IOFailure, `failed to write the multus cache ${file}: ${messageOf(err)}`);
  }
}

/** The cached delegates; undefined when there is no file. A file that does not read throws (code 5 or 6). */
export function readScratchCache(cniDir: string, containerId: string): CachedDelegate[] | undefined {
  const file = scratchCachePath(cniDir, containerId);
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    if (errnoOf(err) === "ENOENT") return undefined;
    throw new CniError(ErrorCode.IOFailure, `failed to read the multus cache ${file}: ${messageOf(err)}`);
  }
  return decodeScratchCache(text);
}

/** Removes the file, if any. */
export function removeScratchCache(cniDir: string, containerId: string): void {
  rmSync(scratchCachePath(cniDir, containerId), { force: true });
}
