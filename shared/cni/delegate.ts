/**
 * Running a network (a list of plugins) for a container, as a runtime does through libcni
 * (containernetworking/cni v1.3.0 `libcni/api.go`: AddNetworkList, CheckNetworkList,
 * DelNetworkList, GCNetworkList, GetStatusNetworkList; `pkg/invoke`). A meta plugin (multus)
 * runs its delegates with it. Synchronous: plugins run one after another through ./exec.ts, and
 * the result cache is ./result-cache.ts.
 *
 * Deliberate differences from libcni: a result is returned and cached in the list's cniVersion
 * (libcni keeps the last plugin's, which a conforming plugin makes the same); results of 0.1.0 and
 * 0.2.0 are not read (./result.ts); a plugin that fails keeps its own error code, with libcni's
 * message prefix (`plugin type="x" failed (add): ...`).
 */
import { messageOf } from "../errors.ts";
import { CniError, ErrorCode } from "./errors.ts";
import { CONTAINER_ID_PATTERN, validateContainerId, validateInterfaceName } from "./env.ts";
import { type ExecOptions, type PluginEnv, findPlugin, runDelegate } from "./exec.ts";
import { type Injection, type NetworkList, type PluginConf, cniArgsString, describePlugin, gcOrStatusStdin, pluginStdin } from "./netlist.ts";
import { parseResult } from "./result.ts";
import { cachedResultJson, listCachedAttachments, readCachedResult, removeCacheEntry, writeCacheEntry } from "./result-cache.ts";
import { isJsonObject } from "./json.ts";
import type { Attachment, JsonObject, Result, Verb } from "./types.ts";
import { LATEST, compareVersions } from "./version.ts";

/** One attachment's runtime values (libcni `RuntimeConf`). */
export interface RuntimeConf {
  containerId: string;
  netns: string;
  ifName: string;
  /** CNI_ARGS pairs, in the order given. */
  args: Array<[string, string]>;
  /** The runtime's capability arguments (`runtimeConfig` keys), passed on per declared capability. */
  capabilityArgs: JsonObject;
  /** Where `results/` lives: libcni's default is /var/lib/cni, multus uses its cniDir. */
  cacheDir: string;
}

export interface DelegateOptions extends ExecOptions {
  /** Where plugins are looked up, in order (binDir, then CNI_PATH); also the plugins' CNI_PATH. */
  path: readonly string[];
}

/** binDir first, then CNI_PATH's entries (empty ones dropped): the search path of a meta plugin. */
export function searchPath(binDir: string | undefined, cniPath: string): string[] {
  const entries = cniPath.split(":").filter((entry) => entry !== "");
  return binDir ? [binDir, ...entries.filter((entry) => entry !== binDir)] : entries;
}

/**
 * ADD: every plugin in order, each given the previous one's result; the last result is cached
 * and returned, in the list's version. Nothing is undone on failure: that is the caller's DEL.
 */
export async function addNetworkList(list: NetworkList, rt: RuntimeConf, options: DelegateOptions): Promise<Result> {
  requirePlugins(list);
  let result: Result | undefined;
  for (const plugin of list.plugins) {
    try {
      result = await addOne(list, plugin, result, rt, options);
    } catch (err) {
      throw wrap(err, `plugin ${describePlugin(plugin)} failed (add): `);
    }
  }
  // requirePlugins: at least one plugin ran.
  const final: Result = { ...(result ?? { cniVersion: list.cniVersion }), cniVersion: list.cniVersion };
  writeCacheEntry(rt.cacheDir, {
    containerId: rt.containerId,
    config: list.bytes,
    ifName: rt.ifName,
    networkName: list.name,
    netns: rt.netns,
    cniArgs: rt.args,
    capabilityArgs: rt.capabilityArgs,
    result: cachedResultJson(final),
  });
  return final;
}

async function addOne(list: NetworkList, plugin: PluginConf, prevResult: Result | undefined, rt: RuntimeConf, options: DelegateOptions): Promise<Result> {
  const binary = findPlugin(plugin.type, options.path);
  if (rt.containerId === "") throw new CniError(ErrorCode.UnknownContainer, "missing containerID");
  validateContainerId(rt.containerId);
  validateNetworkName(list.name);
  validateInterfaceName(rt.ifName);
  const stdin = pluginStdin(list, plugin, injection(rt, prevResult));
  const stdout = await runDelegate(binary, "ADD", pluginEnv(rt, options), stdin, options);
  let decoded: unknown;
  try {
    decoded = JSON.parse(stdout);
  } catch (err) {
    throw new CniError(ErrorCode.Delegate, `failed to unmarshal raw result: ${messageOf(err)}`);
  }
  // A result without cniVersion is taken to be in the config's, and `null` as an empty result
  // (libcni `fixupResultVersion`).
  return parseResult(decoded ?? {}, "result", list.cniVersion);
}

/** CHECK (>= 0.4.0): every plugin in order, each given the cached result. */
export async function checkNetworkList(list: NetworkList, rt: RuntimeConf, options: DelegateOptions): Promise<void> {
  if (compareVersions(list.cniVersion, "0.4.0") < 0) {
    throw new CniError(ErrorCode.IncompatibleVersion, `configuration version ${JSON.stringify(list.cniVersion)} does not support the CHECK command`);
  }
  if (list.disableCheck) return;
  let cached: Result | undefined;
  try {
    cached = readCachedResult(rt.cacheDir, list.name, rt.containerId, rt.ifName, list.cniVersion);
  } catch (err) {
    throw wrap(err, `failed to get network ${JSON.stringify(list.name)} cached result: `);
  }
  for (const plugin of list.plugins) {
    const stdin = pluginStdin(list, plugin, injection(rt, cached));
    await runDelegate(findPlugin(plugin.type, options.path), "CHECK", pluginEnv(rt, options), stdin, options);
  }
}

/**
 * DEL: every plugin in reverse order, each given the cached result (>= 0.4.0; a cache that does
 * not read is dropped and DEL goes on without it). The first failure stops it and keeps the cache
 * for the retry; success removes it.
 */
export async function delNetworkList(list: NetworkList, rt: RuntimeConf, options: DelegateOptions): Promise<void> {
  let cached: Result | undefined;
  if (compareVersions(list.cniVersion, "0.4.0") >= 0) {
    try {
      cached = readCachedResult(rt.cacheDir, list.name, rt.containerId, rt.ifName, list.cniVersion);
    } catch {
      removeCacheEntry(rt.cacheDir, list.name, rt.containerId, rt.ifName);
    }
  }
  for (const plugin of [...list.plugins].reverse()) {
    try {
      const stdin = pluginStdin(list, plugin, injection(rt, cached));
      await runDelegate(findPlugin(plugin.type, options.path), "DEL", pluginEnv(rt, options), stdin, options);
    } catch (err) {
      throw wrap(err, `plugin ${describePlugin(plugin)} failed (delete): `);
    }
  }
  removeCacheEntry(rt.cacheDir, list.name, rt.containerId, rt.ifName);
}

/**
 * GC (libcni `GCNetworkList`): DEL every cached attachment of this network that is not in
 * `validAttachments` (undefined: none is valid), with the values it was added with; then, for
 * versions >= 1.1.0, GC on every plugin. Goes on past failures and throws them all at the end.
 */
export async function gcNetworkList(list: NetworkList, validAttachments: Attachment[] | undefined, cacheDir: string, options: DelegateOptions): Promise<void> {
  if (list.disableGC) return;
  const valid = new Set((validAttachments ?? []).map((a) => attachmentKey(a.containerID, a.ifname)));
  const errors: CniError[] = [];
  let cached: ReturnType<typeof listCachedAttachments> = [];
  try {
    cached = listCachedAttachments(cacheDir);
  } catch {
    // libcni gives up silently when it cannot list its cache.
    return;
  }
  for (const entry of cached) {
    if (entry.networkName !== list.name || valid.has(attachmentKey(entry.containerId, entry.ifName))) continue;
    const rt: RuntimeConf = {
      containerId: entry.containerId,
      netns: entry.netns ?? "",
      ifName: entry.ifName,
      args: entry.cniArgs ?? [],
      capabilityArgs: entry.capabilityArgs ?? {},
      cacheDir,
    };
    try {
      await delNetworkList(list, rt, options);
    } catch (err) {
      errors.push(wrap(err, `failed to delete stale attachment ${rt.containerId} ${rt.ifName}: `));
    }
  }
  if (compareVersions(list.cniVersion, "1.1.0") >= 0) {
    for (const plugin of list.plugins) {
      try {
        await runWithoutAttachment(plugin, "GC", gcOrStatusStdin(list, plugin, validAttachments), options);
      } catch (err) {
        errors.push(wrap(err, `failed to GC plugin ${plugin.type}: `));
      }
    }
  }
  const [first] = errors;
  if (first) throw new CniError(first.code, errors.map((err) => err.message).join("\n"), first.details);
}

/** STATUS (>= 1.1.0; older lists succeed silently): every plugin, the first error as it was. */
export async function statusNetworkList(list: NetworkList, options: DelegateOptions): Promise<void> {
  if (compareVersions(list.cniVersion, "1.1.0") < 0) return;
  for (const plugin of list.plugins) {
    await runWithoutAttachment(plugin, "STATUS", gcOrStatusStdin(list, plugin), options);
  }
}

/**
 * The versions a plugin supports, from its VERSION answer (libcni `GetVersionInfo`: stdin
 * `{"cniVersion":"1.1.0"}`, dummy values for plugins built on an old skel).
 */
export async function pluginVersions(type: string, options: DelegateOptions): Promise<string[]> {
  const binary = findPlugin(type, options.path);
  const env: PluginEnv = { containerId: "", netns: "dummy", ifName: "dummy", args: "", path: ["dummy"] };
  const stdout = await runDelegate(binary, "VERSION", env, JSON.stringify({ cniVersion: LATEST }), options);
  let decoded: unknown;
  try {
    decoded = JSON.parse(stdout);
  } catch (err) {
    throw new CniError(ErrorCode.DecodingFailure, `decoding version info: ${messageOf(err)}`);
  }
  const info = isJsonObject(decoded) ? decoded : {};
  const { cniVersion, supportedVersions } = info;
  if (typeof cniVersion !== "string" || cniVersion === "") {
    throw new CniError(ErrorCode.DecodingFailure, "decoding version info: missing field cniVersion");
  }
  const versions = Array.isArray(supportedVersions) ? supportedVersions.filter((v): v is string => typeof v === "string") : [];
  if (versions.length > 0) return versions;
  if (cniVersion === "0.2.0") return ["0.1.0", "0.2.0"];
  throw new CniError(ErrorCode.DecodingFailure, "decoding version info: missing field supportedVersions");
}

/**
 * libcni `ValidateNetworkList`: every plugin is found and supports the list's version. Returns the
 * capabilities the list declares, each once.
 */
export async function validateNetworkList(list: NetworkList, options: DelegateOptions): Promise<string[]> {
  const wanted = list.cniVersion || "0.1.0";
  const problems: string[] = [];
  for (const plugin of list.plugins) {
    try {
      if (!(await pluginVersions(plugin.type, options)).includes(wanted)) {
        problems.push(`plugin ${plugin.type} does not support config version ${JSON.stringify(wanted)}`);
      }
    } catch (err) {
      problems.push(messageOf(err));
    }
  }
  if (problems.length > 0) throw new CniError(ErrorCode.IncompatibleVersion, `[${problems.join(" ")}]`);
  return [...new Set(list.plugins.flatMap((plugin) => plugin.capabilities))];
}

// ---- helpers -----------------------------------------------------------------------------------

function requirePlugins(list: NetworkList): void {
  if (list.plugins.length === 0) throw new CniError(ErrorCode.InvalidConfig, "no plugin configs found");
}

/** libcni `ValidateNetworkName`. */
function validateNetworkName(name: string): void {
  if (name === "") throw new CniError(ErrorCode.InvalidConfig, "missing network name:");
  if (!CONTAINER_ID_PATTERN.test(name)) {
    throw new CniError(ErrorCode.InvalidConfig, "invalid characters found in network name", name);
  }
}

function injection(rt: RuntimeConf, prevResult: Result | undefined): Injection {
  return prevResult === undefined ? { capabilityArgs: rt.capabilityArgs } : { capabilityArgs: rt.capabilityArgs, prevResult };
}

function pluginEnv(rt: RuntimeConf, options: DelegateOptions): PluginEnv {
  return {
    containerId: rt.containerId,
    netns: rt.netns,
    ifName: rt.ifName,
    args: cniArgsString(rt.args),
    path: [...options.path],
  };
}

/** GC and STATUS: CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME and CNI_ARGS empty. */
async function runWithoutAttachment(plugin: PluginConf, command: Verb, stdin: string, options: DelegateOptions): Promise<void> {
  const env: PluginEnv = { containerId: "", netns: "", ifName: "", args: "", path: [...options.path] };
  await runDelegate(findPlugin(plugin.type, options.path), command, env, stdin, options);
}

function attachmentKey(containerId: string, ifName: string): string {
  return JSON.stringify([containerId, ifName]);
}

/** The error with `prefix` before its message, its code and details kept. */
function wrap(err: unknown, prefix: string): CniError {
  const code = err instanceof CniError ? err.code : ErrorCode.Internal;
  const details = err instanceof CniError ? err.details : "";
  return new CniError(code, `${prefix}${messageOf(err)}`, details);
}
