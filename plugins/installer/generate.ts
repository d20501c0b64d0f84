/**
 * What the installer writes, as text: the multus conf generated from the node's primary CNI conf
 * (upstream multus' thin installer, reference §9.4), the kubeconfigs made from the pod's
 * service-account token (§9.3; whereabouts' install-cni.sh), and whereabouts' flat file. Pure:
 * file names and contents in, file contents out; main.ts does the reading and writing.
 */
import { isJsonObject } from "../../shared/cni/json.ts";
import type { JsonObject, JsonValue } from "../../shared/cni/types.ts";
import { compareVersions } from "../../shared/cni/version.ts";
import type { KubernetesService } from "./flags.ts";

/** Our own conf's names: `.conflist` when the primary's version has no single-plugin confs. */
export const MULTUS_CONF = "00-multus.conf";
export const MULTUS_CONFLIST = "00-multus.conflist";

/** The extensions libcni's ConfFiles loads, so the conf we find first is the one the runtime would. */
const CONF_EXTENSIONS = [".conf", ".conflist", ".json"];

/**
 * The conf files that may be the primary, in the order the runtime tries them (byte order, as
 * Go's sort.Strings): ours excluded by upstream's rule (a base name starting with 00-multus.conf),
 * or only the one named by --multus-master-cni-file-name.
 */
export function primaryCandidates(fileNames: string[], masterFileName: string): string[] {
  if (masterFileName) return fileNames.includes(masterFileName) ? [masterFileName] : [];
  return fileNames.filter((name) => CONF_EXTENSIONS.some((ext) => name.endsWith(ext)) && !name.startsWith(MULTUS_CONF)).sort(byteOrder);
}

function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

export interface PrimaryConf {
  fileName: string;
  cniVersion: string;
  name: string;
  /** The union of the capabilities its plugins declare true. */
  capabilities: string[];
}

/** Why a file cannot be the primary; `skip` means look at the next file instead of waiting. */
export class PrimaryConfError extends Error {
  constructor(
    message: string,
    readonly skip: boolean,
  ) {
    super(message);
    this.name = "PrimaryConfError";
  }
}

/**
 * Reads a candidate primary conf. A file that does not parse is being written (or is broken):
 * the caller waits rather than falling through to the next file, which the runtime would not
 * use either. A multus conf of someone else's (an older install's 70-multus.conf) is skipped:
 * multus as its own cluster network would run itself.
 */
export function readPrimary(fileName: string, text: string): PrimaryConf {
  let decoded: unknown;
  try {
    decoded = JSON.parse(text);
  } catch (err) {
    throw new PrimaryConfError(`${fileName} is not valid JSON (${err instanceof Error ? err.message : String(err)})`, false);
  }
  if (!isJsonObject(decoded)) throw new PrimaryConfError(`${fileName} does not hold a JSON object`, false);
  const plugins = Array.isArray(decoded.plugins) ? decoded.plugins.filter(isJsonObject) : [decoded];
  if (Array.isArray(decoded.plugins) && plugins.length === 0) throw new PrimaryConfError(`${fileName} has no plugins`, false);
  if (plugins.some((plugin) => plugin.type === "multus" || plugin.type === "multus-shim")) {
    throw new PrimaryConfError(`${fileName} is a multus conf, not a primary network`, true);
  }
  const { cniVersion, name } = decoded;
  if (typeof cniVersion !== "string" || cniVersion === "") throw new PrimaryConfError(`${fileName} has no cniVersion`, false);
  if (typeof name !== "string" || name === "") throw new PrimaryConfError(`${fileName} has no name`, false);
  const capabilities = new Set<string>();
  for (const plugin of plugins) {
    const declared = plugin.capabilities;
    if (!isJsonObject(declared)) continue;
    for (const [capability, on] of Object.entries(declared)) if (on === true) capabilities.add(capability);
  }
  return { fileName, cniVersion, name, capabilities: [...capabilities].sort() };
}

export interface MultusConfOptions {
  /** The primary conf's directory as the node sees it: clusterNetwork is a path there. */
  confDirHost: string;
  kubeconfigFileHost: string;
  logFile: string;
  logLevel: string;
  logToStderr: boolean;
  namespaceIsolation: boolean;
  globalNamespaces: string;
  readinessIndicatorFile: string;
  overrideNetworkName: boolean;
}

/**
 * The multus conf for a primary conf: its cniVersion and capabilities, the primary as
 * clusterNetwork by path (multus reads it at every ADD, so the primary's own changes apply at
 * once, and nothing of it is re-marshalled as upstream's inline `delegates` is). A
 * `.conflist` for version 1.0.0 and later, whose spec has only network configuration lists,
 * as upstream writes it.
 */
export function multusConf(primary: PrimaryConf, options: MultusConfOptions): { fileName: string; text: string } {
  const plugin: JsonObject = { type: "multus" };
  if (primary.capabilities.length > 0) plugin.capabilities = Object.fromEntries(primary.capabilities.map((c) => [c, true]));
  plugin.kubeconfig = options.kubeconfigFileHost;
  plugin.clusterNetwork = joinHost(options.confDirHost, primary.fileName);
  if (options.logFile) plugin.logFile = options.logFile;
  if (options.logLevel) plugin.logLevel = options.logLevel;
  if (!options.logToStderr) plugin.logToStderr = false;
  if (options.namespaceIsolation) plugin.namespaceIsolation = true;
  if (options.globalNamespaces) plugin.globalNamespaces = options.globalNamespaces;
  if (options.readinessIndicatorFile) plugin.readinessindicatorfile = options.readinessIndicatorFile;
  const name = options.overrideNetworkName ? primary.name : "multus-cni-network";
  const asList = compareVersions(primary.cniVersion, "1.0.0") >= 0;
  const conf: JsonObject = asList ? { cniVersion: primary.cniVersion, name, plugins: [plugin] } : { cniVersion: primary.cniVersion, name, ...plugin };
  return { fileName: asList ? MULTUS_CONFLIST : MULTUS_CONF, text: `${JSON.stringify(conf, null, 2)}\n` };
}

/** A path on the node: the installer runs on Linux, so plain "/" joining. */
function joinHost(dir: string, fileName: string): string {
  return `${dir.replace(/\/+$/, "")}/${fileName}`;
}

/** The API server's URL from the pod's environment; an IPv6 address in brackets. */
export function serverUrl(service: KubernetesService): string {
  const host = service.host.includes(":") && !service.host.startsWith("[") ? `[${service.host}]` : service.host;
  return `${service.protocol}://${host}:${service.port}`;
}

export interface KubeconfigInput {
  server: string;
  /** PEM of the cluster's CA; undefined means skip the server certificate check. */
  ca: string | undefined;
  token: string;
  /** The user and the context are named after it (`multus`, `multus-context`), as upstream's. */
  user: string;
  /** The context's namespace; whereabouts keeps its objects there. */
  namespace?: string;
}

/**
 * A kubeconfig with the token inline (a projected token's path in the pod is not a path on the
 * node), in JSON: JSON is YAML, so client-go (upstream's plugins) reads it as it reads upstream's
 * YAML, and ours parse it with JSON.parse, their fast path, never loading a YAML parser.
 */
export function kubeconfig(input: KubeconfigInput): string {
  const cluster: JsonObject = { server: input.server };
  if (input.ca === undefined) cluster["insecure-skip-tls-verify"] = true;
  else cluster["certificate-authority-data"] = Buffer.from(input.ca).toString("base64");
  const context: JsonObject = { cluster: "local", user: input.user };
  if (input.namespace) context.namespace = input.namespace;
  const document: JsonValue = {
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "local", cluster }],
    users: [{ name: input.user, user: { token: input.token } }],
    contexts: [{ name: `${input.user}-context`, context }],
    "current-context": `${input.user}-context`,
  };
  return `${JSON.stringify(document, null, 2)}\n`;
}

/**
 * whereabouts' flat file (`whereabouts.d/whereabouts.conf`): the Kubernetes store through the
 * kubeconfig written beside it, and the log file. Upstream's `configuration_path` (for its
 * node-slice `nodename` file) and `reconciler_cron_expression` (for its reconciler) are left
 * out: neither is read by our plugin.
 */
export function whereaboutsFlatFile(options: { kubeconfigFileHost: string; logFile: string; logLevel: string }): string {
  const flat: JsonObject = { datastore: "kubernetes", kubernetes: { kubeconfig: options.kubeconfigFileHost } };
  if (options.logFile) flat.log_file = options.logFile;
  if (options.logLevel) flat.log_level = options.logLevel;
  return `${JSON.stringify(flat, null, 2)}\n`;
}
