/**
 * NetworkAttachmentDefinitions as multus reads them: `spec.config` turned into a delegate (one
 * plugin or a conflist, the NAD's name injected when the config has none, an empty spec meaning
 * "the conf of that name in confDir"), as network-attachment-definition-client v1.7.6
 * `pkg/utils/cniconfig.go` (`GetCNIConfig`) and multus-cni v4.3.0 `pkg/types/conf.go`
 * (`LoadDelegateNetConf`) do; the NAD annotations (`resourceName`, and `nodeSelector`, which is
 * GKE's, not upstream's); and the namespace-isolation rule. Pure: the confDir is read through an
 * interface.
 */
import { messageOf } from "../../shared/errors.ts";
import { CniError, ErrorCode } from "../../shared/cni/errors.ts";
import { describeValue, isJsonObject } from "../../shared/cni/json.ts";
import { type NetworkList, parseNetworkList, parseSingleConf } from "../../shared/cni/netlist.ts";
import type { JsonObject } from "../../shared/cni/types.ts";
import type { MultusConfig } from "./config.ts";

const RESOURCE_NAME_ANNOTATION = "k8s.v1.cni.cncf.io/resourceName";
export const NODE_SELECTOR_ANNOTATION = "k8s.v1.cni.cncf.io/nodeSelector";

/** A delegate's configuration, before the per-pod values (interface, args) are added. */
export interface DelegateConf {
  /** For status, events and device-info files: `<ns>/<nad>` for a NAD, else the config's `name`. */
  name: string;
  /** The JSON text the delegate runs with: a single plugin's or a conflist's. */
  bytes: string;
  /** The decoded `bytes`. */
  raw: JsonObject;
  isConfList: boolean;
  /** The network as shared/cni/delegate.ts runs it. */
  list: NetworkList;
}

/** The parts of a NetworkAttachmentDefinition multus uses. */
export interface Nad {
  namespace: string;
  name: string;
  /** `spec.config`; empty or absent for an empty spec. */
  config?: string;
  annotations?: Record<string, string>;
}

/** A confDir's files, read through this so the lookup stays testable. */
export interface ConfDir {
  /** The file names in the directory (not paths); an error if it cannot be listed. */
  list(): string[];
  read(file: string): string;
}

/**
 * A delegate from a config's JSON text: a single plugin when it has `type`, else a conflist with
 * a non-empty `plugins` whose first has `type`. `name` is the display name (default: the config's).
 */
export function delegateFromConfig(bytes: string, name?: string): DelegateConf {
  const raw = decodeObject(bytes, "delegate config");
  const plugins = raw.plugins;
  let isConfList: boolean;
  if (typeof raw.type === "string" && raw.type !== "") isConfList = false;
  else if (Array.isArray(plugins) && isJsonObject(plugins[0]) && typeof plugins[0].type === "string" && plugins[0].type !== "") isConfList = true;
  else throw new CniError(ErrorCode.InvalidConfig, "delegate must have the 'type' or 'plugin' field");
  const list = isConfList ? parseNetworkList(bytes) : parseSingleConf(bytes);
  return { name: name ?? list.name, bytes, raw, isConfList, list };
}

/**
 * A NAD's delegate: its `spec.config` with the NAD's name injected if the config has none (the
 * bytes otherwise kept as written), or for an empty spec the conf of that name in `confDir`.
 * Its display name is `<ns>/<nad>`.
 */
export function delegateFromNad(nad: Nad, confDir: ConfDir): DelegateConf {
  const display = `${nad.namespace}/${nad.name}`;
  const config = nad.config ?? "";
  try {
    if (config === "") return delegateFromConfig(findConfByName(nad.name, confDir), display);
    const raw = decodeObject(config, "spec.config");
    return delegateFromConfig(typeof raw.name === "string" && raw.name !== "" ? config : withName(config, nad.name), display);
  } catch (err) {
    // Which NAD is wrong is the first thing an operator needs from the error.
    if (err instanceof CniError) throw new CniError(err.code, `NetworkAttachmentDefinition ${display}: ${err.message}`, err.details);
    throw err;
  }
}

/**
 * The name added at the end of the object's text, so that every other byte stays as written (a
 * repeated key: the last one counts, for Go's decoder and JSON.parse alike).
 */
function withName(text: string, name: string): string {
  const end = text.lastIndexOf("}");
  const body = text.slice(0, end).trimEnd();
  const separator = body.endsWith("{") ? "" : ",";
  return `${body}${separator}"name":${JSON.stringify(name)}${text.slice(end)}`;
}

/**
 * The text of the first conf in `confDir` (`*.conf`, `*.json`, `*.conflist`, in name order)
 * whose `name` is `name` (upstream `GetCNIConfigFromFile`). A file that does not parse stops the
 * search, as upstream's does; a matching `.conf` without `type` is refused.
 */
export function findConfByName(name: string, confDir: ConfDir): string {
  let files: string[];
  try {
    files = confDir.list();
  } catch {
    files = [];
  }
  const candidates = files.filter((file) => /\.(conf|json|conflist)$/.test(file)).sort();
  if (candidates.length === 0) throw new CniError(ErrorCode.InvalidConfig, `no networks found in confDir (looking for ${JSON.stringify(name)})`);
  for (const file of candidates) {
    const text = confDir.read(file);
    const raw = decodeObject(text, `CNI config file ${file}`);
    if (raw.name !== name) continue;
    if (!file.endsWith(".conflist") && (typeof raw.type !== "string" || raw.type === "")) {
      throw new CniError(ErrorCode.InvalidConfig, `error loading CNI config file ${file}: no 'type'; perhaps this is a .conflist?`);
    }
    return text;
  }
  throw new CniError(ErrorCode.InvalidConfig, `no network available in the name ${JSON.stringify(name)} in confDir`);
}

/** The device-plugin resource a NAD asks for (`k8s.v1.cni.cncf.io/resourceName`), if any. */
export function resourceNameOf(nad: Nad): string | undefined {
  const value = nad.annotations?.[RESOURCE_NAME_ANNOTATION];
  return value ? value : undefined;
}

/**
 * `k8s.v1.cni.cncf.io/nodeSelector` (GKE's, not upstream multus'): comma-separated `key=value`
 * pairs, items trimmed. Absent or blank: no constraint (an empty object).
 */
export function parseNodeSelector(text: string | undefined): Record<string, string> {
  const selector: Record<string, string> = {};
  for (const item of (text ?? "").split(",")) {
    const pair = item.trim();
    if (pair === "") continue;
    const equals = pair.indexOf("=");
    const key = pair.slice(0, equals).trim();
    if (equals < 0 || key === "") {
      throw new CniError(ErrorCode.InvalidConfig, `invalid ${NODE_SELECTOR_ANNOTATION} annotation ${JSON.stringify(text)}: expected key=value pairs`);
    }
    selector[key] = pair.slice(equals + 1).trim();
  }
  return selector;
}

/** Whether a node with `labels` is one the NAD may be used on: every pair of its selector matches. */
export function nadAppliesToNode(nad: Nad, labels: Readonly<Record<string, string>>): boolean {
  const selector = parseNodeSelector(nad.annotations?.[NODE_SELECTOR_ANNOTATION]);
  return Object.entries(selector).every(([key, value]) => Object.hasOwn(labels, key) && labels[key] === value);
}

/**
 * With `namespaceIsolation`, a pod may use NADs of its own namespace and of `globalNamespaces`
 * only (upstream's error message). Not applied to clusterNetwork, defaultNetworks and the
 * default-network annotation, as upstream.
 */
export function checkNamespaceAccess(config: Pick<MultusConfig, "namespaceIsolation" | "globalNamespaces">, podNamespace: string, target: string): void {
  if (!config.namespaceIsolation || target === podNamespace || config.globalNamespaces.includes(target)) return;
  throw new CniError(
    ErrorCode.InvalidConfig,
    `namespace isolation enabled, annotation violates permission, pod is in namespace ${podNamespace} but refers to target namespace ${target}`,
  );
}

function decodeObject(text: string, what: string): JsonObject {
  let decoded: unknown;
  try {
    decoded = JSON.parse(text);
  } catch (err) {
    throw new CniError(ErrorCode.DecodingFailure, `failed to parse ${what}: ${messageOf(err)}`);
  }
  if (!isJsonObject(decoded)) throw new CniError(ErrorCode.DecodingFailure, `failed to parse ${what}: expected a JSON object, got ${describeValue(decoded)}`);
  return decoded;
}
