/**
 * A network as a runtime runs it: a list of plugin configurations (a `.conflist`, or a single
 * `.conf` up-converted into a one-element list), read as containernetworking/cni `libcni/conf.go`
 * (`NetworkConfFromBytes`, `NetworkPluginConfFromBytes`, `ConfListFromConf`) does, and the stdin
 * each plugin gets, built as `libcni/api.go` (`buildOneConfig`, `injectRuntimeConfig`,
 * `InjectConf`) builds it. Pure: no process, file or network access.
 */
import { messageOf } from "../errors.ts";
import { CniError, ErrorCode } from "./errors.ts";
import { FieldReader, describeValue, isJsonObject, marshalLikeGo } from "./json.ts";
import { LEGACY_ATTACHMENTS_KEY, VALID_ATTACHMENTS_KEY } from "./config.ts";
import { resultToVersion } from "./result.ts";
import type { Attachment, JsonObject, JsonValue, Result } from "./types.ts";
import { LATEST, compareVersions } from "./version.ts";

/** One plugin of a list, as it is on disk. */
export interface PluginConf {
  type: string;
  /** The plugin object's own `name`, if it has one (error messages name it, as libcni does). */
  name?: string;
  /** The capabilities the plugin declares `true`; only these reach its `runtimeConfig`. */
  capabilities: string[];
  /** The whole object, every key kept. */
  raw: JsonObject;
}

export interface NetworkList {
  name: string;
  /** The version every plugin is run with (the list's, whatever a plugin object says). */
  cniVersion: string;
  disableCheck: boolean;
  disableGC: boolean;
  loadOnlyInlinedPlugins: boolean;
  plugins: PluginConf[];
  /** The list's bytes (for a single conf, the list it was up-converted into): the cache's `config`. */
  bytes: string;
}

/**
 * A conflist when the object has `plugins`, else a single plugin configuration: how a meta plugin
 * reads a delegate it was given inline (multus' NetworkAttachmentDefinition `spec.config`).
 */
export function parseNetwork(text: string): NetworkList {
  const decoded = decode(text, "error parsing configuration");
  return Object.hasOwn(decoded, "plugins") ? parseNetworkList(text) : parseSingleConf(text);
}

/** A `.conflist` (libcni `NetworkConfFromBytes`). A list without `plugins` has none; callers decide. */
export function parseNetworkList(text: string): NetworkList {
  const where = "error parsing configuration list";
  const decoded = decode(text, where);
  const fields = new FieldReader(decoded, ErrorCode.InvalidConfig, "", `${where}: `);
  if (fields.get("name") === undefined) throw fields.error("no name");
  const name = fields.string("name") ?? "";
  const cniVersion = negotiateListVersion(fields, fields.string("cniVersion") ?? "");
  const loadOnlyInlinedPlugins = looseBoolean(fields, "loadOnlyInlinedPlugins");
  const list: NetworkList = {
    name,
    cniVersion,
    disableCheck: looseBoolean(fields, "disableCheck"),
    disableGC: looseBoolean(fields, "disableGC"),
    loadOnlyInlinedPlugins,
    plugins: [],
    bytes: text,
  };
  if (fields.get("plugins") === undefined) {
    if (loadOnlyInlinedPlugins) throw fields.error("`loadOnlyInlinedPlugins` is true, and no 'plugins' key");
    return list;
  }
  const plugins = fields.array("plugins") ?? [];
  if (plugins.length === 0) throw fields.error("no plugins in list");
  list.plugins = plugins.map((plugin, index) => {
    if (!isJsonObject(plugin)) {
      throw new CniError(ErrorCode.InvalidConfig, `failed to parse plugin config ${index}: expected an object, got ${describeValue(plugin)}`);
    }
    return readPlugin(plugin, `failed to parse plugin config ${index}: `);
  });
  return list;
}

/** A single plugin `.conf`, up-converted into a one-element list (libcni `ConfListFromConf`). */
export function parseSingleConf(text: string): NetworkList {
  const where = "error parsing configuration";
  const raw = decode(text, where);
  const plugin = readPlugin(raw, `${where}: `);
  const fields = new FieldReader(raw, ErrorCode.InvalidConfig);
  const listBytes = marshalLikeGo({
    cniVersion: fields.string("cniVersion") ?? "",
    name: plugin.name ?? "",
    plugins: [raw],
  });
  return parseNetworkList(listBytes);
}

/**
 * `cniVersions`: the highest listed version libcni implements (<= 1.1.0), `cniVersion` counted
 * among them; without the key, `cniVersion` as given.
 */
function negotiateListVersion(fields: FieldReader, cniVersion: string): string {
  if (fields.get("cniVersions") === undefined) return cniVersion;
  const listed = fields.stringArray("cniVersions") ?? [];
  const candidates = [...listed, ...(cniVersion === "" ? [] : [cniVersion])].filter((version) => {
    try {
      return compareVersions(version, LATEST) <= 0;
    } catch (err) {
      throw fields.error(`invalid cniVersions entry ${JSON.stringify(version)}: ${messageOf(err)}`);
    }
  });
  return candidates.sort(compareVersions).at(-1) ?? cniVersion;
}

/** libcni's list flags: a JSON boolean, or the strings "true"/"false" in any case. */
function looseBoolean(fields: FieldReader, key: string): boolean {
  const value = fields.get(key);
  if (value === undefined || typeof value === "boolean") return value ?? false;
  if (typeof value === "string") {
    const word = value.toLowerCase();
    if (word === "true" || word === "false") return word === "true";
  }
  return fields.fail(key, 'true, false, "true" or "false"');
}

/** libcni `NetworkPluginConfFromBytes`: the typed keys must have their types, and `type` is required. */
function readPlugin(raw: JsonObject, prefix: string): PluginConf {
  const fields = new FieldReader(raw, ErrorCode.InvalidConfig, "", prefix);
  fields.string("cniVersion");
  const name = fields.string("name");
  const type = fields.string("type");
  const ipam = fields.object("ipam");
  if (ipam !== undefined) fields.nested(ipam, "ipam").string("type");
  const declared = fields.object("capabilities") ?? {};
  const capabilities: string[] = [];
  for (const [capability, enabled] of Object.entries(declared)) {
    if (typeof enabled !== "boolean" && enabled !== null) {
      throw fields.error(`invalid "capabilities.${capability}": expected true or false, got ${describeValue(enabled)}`);
    }
    if (enabled === true) capabilities.push(capability);
  }
  if (!type) throw fields.error("missing 'type'");
  const plugin: PluginConf = { type, capabilities, raw };
  if (name) plugin.name = name;
  return plugin;
}

function decode(text: string, where: string): JsonObject {
  let decoded: unknown;
  try {
    decoded = JSON.parse(text);
  } catch (err) {
    throw new CniError(ErrorCode.DecodingFailure, `${where}: ${messageOf(err)}`);
  }
  if (!isJsonObject(decoded)) {
    throw new CniError(ErrorCode.DecodingFailure, `${where}: expected a JSON object, got ${describeValue(decoded)}`);
  }
  return decoded;
}

// ---- stdin for one plugin ----------------------------------------------------------------------

/** What a plugin is told besides its own object (libcni `buildOneConfig`). */
export interface Injection {
  prevResult?: Result;
  /** The runtime's capability arguments; only the plugin's declared capabilities are passed on. */
  capabilityArgs?: JsonObject;
}

/**
 * The stdin of one plugin for ADD, DEL or CHECK: its object with the list's `name` and
 * `cniVersion`, the previous result (in the list's version), and `runtimeConfig` holding the
 * capability arguments it declared (absent when none applies). Keys sorted, as libcni's are.
 */
export function pluginStdin(list: NetworkList, plugin: PluginConf, injection: Injection = {}): string {
  const conf: JsonObject = { ...plugin.raw, name: list.name, cniVersion: list.cniVersion };
  if (injection.prevResult !== undefined) conf.prevResult = resultToVersion(injection.prevResult, list.cniVersion);
  const runtimeConfig = capabilityRuntimeConfig(plugin, injection.capabilityArgs ?? {});
  if (runtimeConfig !== undefined) conf.runtimeConfig = runtimeConfig;
  return marshalLikeGo(conf);
}

/** libcni `injectRuntimeConfig`: the capability arguments the plugin declared, or undefined if none. */
export function capabilityRuntimeConfig(plugin: PluginConf, capabilityArgs: JsonObject): JsonObject | undefined {
  const runtimeConfig: JsonObject = {};
  for (const capability of plugin.capabilities) {
    if (Object.hasOwn(capabilityArgs, capability)) runtimeConfig[capability] = capabilityArgs[capability] ?? null;
  }
  return Object.keys(runtimeConfig).length > 0 ? runtimeConfig : undefined;
}

/**
 * The stdin of GC (with the still-valid attachments, under both names libcni sends, when the
 * runtime gave a list) and of STATUS (without): the plugin's object, the list's name and version.
 */
export function gcOrStatusStdin(list: NetworkList, plugin: PluginConf, validAttachments?: Attachment[]): string {
  const conf: JsonObject = { ...plugin.raw, name: list.name, cniVersion: list.cniVersion };
  if (validAttachments !== undefined) {
    const attachments: JsonValue[] = validAttachments.map((a) => ({ containerID: a.containerID, ifname: a.ifname }));
    conf[VALID_ATTACHMENTS_KEY] = attachments;
    conf[LEGACY_ATTACHMENTS_KEY] = attachments;
  }
  return marshalLikeGo(conf);
}

/** CNI_ARGS from the runtime's pairs, in their order: `K=V;K2=V2` (libcni `invoke.Args`). */
export function cniArgsString(pairs: ReadonlyArray<readonly [string, string]>): string {
  return pairs.map(([key, value]) => `${key}=${value}`).join(";");
}

/** libcni's ` name="..."`-suffixed plugin description in error messages. */
export function describePlugin(plugin: PluginConf): string {
  return `type=${JSON.stringify(plugin.type)}${plugin.name ? ` name=${JSON.stringify(plugin.name)}` : ""}`;
}
