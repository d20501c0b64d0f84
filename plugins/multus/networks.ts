/**
 * Where a pod's delegates come from, resolved to configs (upstream multus v4.3.0
 * `pkg/k8sclient/k8sclient.go`: `getNetDelegate`, `GetDefaultNetworks`, `TryLoadPodDelegates`,
 * `getKubernetesDelegate`; the auxiliary chain of `CmdAdd`): `clusterNetwork` and each of
 * `defaultNetworks` as a NAD in `multusNamespace`, a conf of that name in `confDir`, or a
 * file/directory path (a conflist's plugins completed from `<dir>/<name>/*.conf` as libcni does);
 * the default-network and networks annotations' NADs, with namespace isolation, the NAD
 * nodeSelector and device-plugin resources.
 */
import { type Stats, readFileSync, readdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { CniError, ErrorCode } from "../../shared/cni/errors.ts";
import { isJsonObject } from "../../shared/cni/json.ts";
import type { JsonObject, JsonValue } from "../../shared/cni/types.ts";
import { errnoOf, messageOf } from "../../shared/errors.ts";
import {
  DEFAULT_NETWORK_ANNOTATION,
  NETWORKS_ANNOTATION,
  type NetworkSelection,
  parseDefaultNetworkAnnotation,
  parseNetworksAnnotation,
} from "./annotations.ts";
import type { MultusApi, Pod } from "./api.ts";
import type { MultusConfig } from "./config.ts";
import { type DelegateSources, type SelectedNetwork, withDeviceId } from "./delegates.ts";
import {
  type ConfDir,
  type DelegateConf,
  NODE_SELECTOR_ANNOTATION,
  type Nad,
  checkNamespaceAccess,
  delegateFromConfig,
  delegateFromNad,
  findConfByName,
  nadAppliesToNode,
  resourceNameOf,
} from "./nad.ts";

/** The devices kubelet gave a pod, by resource name (kubelet's pod-resources API). */
export interface DeviceSource {
  devices(namespace: string, name: string): Promise<Map<string, string[]>>;
}

/** What resolving needs: the conf, the API (absent without Kubernetes), the pod, and a reporter. */
export interface Resolution {
  config: MultusConfig;
  api: MultusApi | undefined;
  /** Undefined for STATUS and GC, which resolve the cluster network only. */
  pod: Pod | undefined;
  devices: DeviceSource;
  /** A Warning `NoNetworkFound` event on the pod (upstream sends one per missing NAD). */
  noNetworkFound(namespace: string, name: string, reason: string): Promise<void>;
}

/** A directory's conf files, read through the file system. */
function confDirOf(dir: string): ConfDir {
  return {
    list: () => readdirSync(dir),
    read: (file) => readFileSync(join(dir, file), "utf8"),
  };
}

/**
 * clusterNetwork (or the inline `delegates`) and, for a known pod outside `systemNamespaces`,
 * `defaultNetworks`: the base of every pod's delegates.
 */
export async function resolveBase(r: Resolution): Promise<Pick<DelegateSources, "base" | "defaultNetworks">> {
  const { config } = r;
  if (config.clusterNetwork === "") {
    return { base: config.delegates.map((raw) => delegateFromConfig(JSON.stringify(raw))), defaultNetworks: [] };
  }
  const devices = new DeviceAllocator(r);
  let master: DelegateConf;
  try {
    master = await networkDelegate(r, config.clusterNetwork, devices);
  } catch (err) {
    throw prefixed(
      err,
      `failed to get clusterNetwork/defaultNetworks: failed to get clusterNetwork ${config.clusterNetwork} in namespace ${config.multusNamespace}: `,
    );
  }
  const defaultNetworks: DelegateConf[] = [];
  if (r.pod !== undefined && !config.systemNamespaces.includes(r.pod.metadata.namespace)) {
    for (const name of config.defaultNetworks) {
      try {
        defaultNetworks.push(await networkDelegate(r, name, devices));
      } catch (err) {
        throw prefixed(err, `failed to get clusterNetwork/defaultNetworks: ${name}: `);
      }
    }
  }
  return { base: [master], defaultNetworks };
}

/**
 * upstream `getNetDelegate`: a name is a NAD in multusNamespace, else a conf of that name in
 * confDir; a path is a directory (its first conf) or a file.
 */
async function networkDelegate(r: Resolution, value: string, devices: DeviceAllocator): Promise<DelegateConf> {
  if (value.includes("/")) return delegateFromPath(value);
  const namespace = r.config.multusNamespace;
  let nadProblem = "";
  if (r.api !== undefined) {
    try {
      const nad = await r.api.nad(namespace, value);
      if (nad !== undefined) return await nadDelegate(r, nad, devices);
      nadProblem = "not found";
    } catch (err) {
      // A NAD that exists but cannot be used is the answer; only an unreachable API falls back.
      if (!(err instanceof CniError) || err.code !== ErrorCode.TryAgainLater) throw err;
      nadProblem = err.message;
    }
    await r.noNetworkFound(namespace, value, nadProblem);
  }
  try {
    return delegateFromConfig(findConfByName(value, confDirOf(r.config.confDir)));
  } catch (err) {
    const via = r.api === undefined ? "" : `no NetworkAttachmentDefinition ${namespace}/${value} (${nadProblem}), and `;
    throw new CniError(err instanceof CniError ? err.code : ErrorCode.InvalidConfig, `cannot find network ${value}: ${via}${messageOf(err)}`);
  }
}

/** A conf given by path: a directory's first conf by name, a `.conflist` file, or a single plugin's file. */
function delegateFromPath(path: string): DelegateConf {
  let stats: Stats;
  try {
    stats = statSync(path);
  } catch (err) {
    throw new CniError(ErrorCode.InvalidConfig, `cannot find network ${path}: ${messageOf(err)}`);
  }
  if (stats.isDirectory()) {
    const files = readdirSync(path).sort();
    if (!files.some((file) => file.endsWith(".conf") || file.endsWith(".conflist"))) {
      throw new CniError(ErrorCode.InvalidConfig, `cannot find network ${path}: no .conf or .conflist file in the directory`);
    }
    const first = files.find((file) => /\.(conf|json|conflist)$/.test(file));
    return first?.endsWith(".conflist") ? conflistFromFile(join(path, first)) : singleFromFile(join(path, first ?? ""));
  }
  if (!stats.isFile()) throw new CniError(ErrorCode.InvalidConfig, `CNI configuration path ${path} is not a regular file`);
  return path.endsWith(".conflist") ? conflistFromFile(path) : singleFromFile(path);
}

function singleFromFile(file: string): DelegateConf {
  const text = readText(file);
  const raw = decode(text, file);
  if (typeof raw.type !== "string" || raw.type === "") {
    throw new CniError(ErrorCode.InvalidConfig, `error loading CNI config file ${file}: no 'type'; perhaps this is supposed to be a .conflist?`);
  }
  return delegateFromConfig(text);
}

/** A conflist file, its plugins completed from `<dir>/<network name>/*.conf` unless `loadOnlyInlinedPlugins`. */
function conflistFromFile(file: string): DelegateConf {
  const text = readText(file);
  try {
    return delegateFromConfig(withSubdirectoryPlugins(text, dirname(file)));
  } catch (err) {
    throw prefixed(err, `error loading CNI conflist file ${file}: `);
  }
}

/**
 * libcni's subdirectory chain (`NetworkPluginConfsFromFiles`): the `.conf` files of
 * `<dir>/<name>/`, in name order, appended to `plugins`. The text is kept as written when there
 * are none; otherwise every key of the list and of its plugins survives the rewrite.
 */
export function withSubdirectoryPlugins(text: string, dir: string): string {
  const raw = decode(text, "conflist");
  if (raw.loadOnlyInlinedPlugins === true) return text;
  const name = raw.name;
  if (typeof name !== "string" || !/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(name)) {
    throw new CniError(ErrorCode.InvalidConfig, `invalid network config name: ${typeof name === "string" ? name : JSON.stringify(name)}`);
  }
  const subdirectory = join(dir, name);
  let files: string[];
  try {
    files = readdirSync(subdirectory, { withFileTypes: true })
      .filter((entry) => !entry.isDirectory() && entry.name.endsWith(".conf"))
      .map((entry) => entry.name)
      .sort();
  } catch (err) {
    if (errnoOf(err) === "ENOENT" || errnoOf(err) === "ENOTDIR") files = [];
    else throw new CniError(ErrorCode.IOFailure, `failed to read plugin config files in ${subdirectory}: ${messageOf(err)}`);
  }
  if (files.length === 0) return text;
  const extra: JsonValue[] = files.map((file) => {
    const plugin = decode(readText(join(subdirectory, file)), join(subdirectory, file));
    if (typeof plugin.type !== "string" || plugin.type === "") {
      throw new CniError(ErrorCode.InvalidConfig, `error parsing configuration ${join(subdirectory, file)}: missing 'type'`);
    }
    return plugin;
  });
  const inline = Array.isArray(raw.plugins) ? raw.plugins : [];
  return JSON.stringify({ ...raw, plugins: [...inline, ...extra] });
}

/**
 * The `auxiliaryCNIChainName` chain (upstream v4.2.1+): a passthru plugin then the `.conf` files of
 * `<dir of clusterNetwork>/<chain>/`; undefined when that directory adds nothing.
 */
export function auxiliaryChain(config: MultusConfig): DelegateConf | undefined {
  const chain = config.auxiliaryCNIChainName;
  if (chain === "") return undefined;
  if (!config.clusterNetwork.includes("/")) {
    throw new CniError(ErrorCode.InvalidConfig, `auxiliary chain used but clusterNetwork must be a path, and it is not a path: ${config.clusterNetwork}`);
  }
  const base = JSON.stringify({ cniVersion: config.cniVersion, name: chain, plugins: [{ type: "passthru", name: "passthru-cni" }] });
  const text = withSubdirectoryPlugins(base, dirname(config.clusterNetwork));
  return text === base ? undefined : delegateFromConfig(text);
}

/**
 * The pod's own networks: the default-network annotation (replacing the master) and the
 * networks annotation, in order. Any missing NAD fails the ADD, after its NoNetworkFound event.
 */
export async function resolvePodNetworks(r: Resolution): Promise<Pick<DelegateSources, "defaultNetwork" | "networks">> {
  const { pod, api, config } = r;
  if (pod === undefined || api === undefined) return { networks: [] };
  const annotations = pod.metadata.annotations ?? {};
  const devices = new DeviceAllocator(r);
  const nodeLabels = new NodeLabels(r);
  const out: Pick<DelegateSources, "defaultNetwork" | "networks"> = { networks: [] };
  const defaultText = annotations[DEFAULT_NETWORK_ANNOTATION];
  if (defaultText !== undefined && defaultText.trim() !== "") {
    const selection = parseDefaultNetworkAnnotation(defaultText, config.multusNamespace);
    out.defaultNetwork = await selectedNetwork(r, selection, devices, nodeLabels);
  }
  const networksText = annotations[NETWORKS_ANNOTATION];
  if (networksText !== undefined) {
    for (const selection of parseNetworksAnnotation(networksText, pod.metadata.namespace)) {
      checkNamespaceAccess(config, pod.metadata.namespace, selection.namespace);
      out.networks.push(await selectedNetwork(r, selection, devices, nodeLabels));
    }
  }
  return out;
}

async function selectedNetwork(r: Resolution, selection: NetworkSelection, devices: DeviceAllocator, nodeLabels: NodeLabels): Promise<SelectedNetwork> {
  // resolvePodNetworks: only called with the API.
  const api = r.api as MultusApi;
  const nad = await api.nad(selection.namespace, selection.name);
  if (nad === undefined) {
    const reason = `network-attachment-definitions.k8s.cni.cncf.io "${selection.name}" not found`;
    await r.noNetworkFound(selection.namespace, selection.name, reason);
    throw new CniError(
      ErrorCode.InvalidConfig,
      `cannot find a network-attachment-definition (${selection.name}) in namespace (${selection.namespace}): ${reason}`,
    );
  }
  await nodeLabels.require(nad);
  // planDelegates injects the device into the config.
  const network: SelectedNetwork = { conf: delegateFromNad(nad, confDirOf(r.config.confDir)), selection };
  const resourceName = resourceNameOf(nad);
  if (resourceName !== undefined) {
    network.resourceName = resourceName;
    network.deviceID = await devices.next(resourceName, `${nad.namespace}/${nad.name}`);
  }
  return network;
}

async function nadDelegate(r: Resolution, nad: Nad, devices: DeviceAllocator): Promise<DelegateConf> {
  const conf = delegateFromNad(nad, confDirOf(r.config.confDir));
  const resourceName = resourceNameOf(nad);
  // clusterNetwork/defaultNetworks NADs with a resource get their device too (upstream's resourceMap).
  if (resourceName === undefined || r.pod === undefined) return conf;
  return withDeviceId(conf, await devices.next(resourceName, `${nad.namespace}/${nad.name}`));
}

/**
 * The pod's devices of each resource, handed out in order: two NADs of one resource get two
 * devices (upstream's resourceMap index).
 */
class DeviceAllocator {
  private assigned: Map<string, string[]> | undefined;
  private readonly used = new Map<string, number>();

  constructor(private readonly r: Resolution) {}

  async next(resourceName: string, nadName: string): Promise<string> {
    const pod = this.r.pod;
    if (pod === undefined)
      throw new CniError(ErrorCode.InvalidConfig, `NetworkAttachmentDefinition ${nadName} names resource ${resourceName}, which needs the pod`);
    this.assigned ??= await this.r.devices.devices(pod.metadata.namespace, pod.metadata.name);
    const ids = this.assigned.get(resourceName) ?? [];
    const index = this.used.get(resourceName) ?? 0;
    const id = ids[index];
    if (id === undefined) {
      throw new CniError(
        ErrorCode.InvalidConfig,
        `NetworkAttachmentDefinition ${nadName} needs a device of resource ${resourceName}, but kubelet assigned pod ${pod.metadata.namespace}/${pod.metadata.name} ${ids.length === 0 ? "none" : `only ${ids.length}`}`,
      );
    }
    this.used.set(resourceName, index + 1);
    return id;
  }
}

/** The labels of the pod's node, read once, for NADs with a nodeSelector. */
class NodeLabels {
  private labels: Record<string, string> | undefined;

  constructor(private readonly r: Resolution) {}

  async require(nad: Nad): Promise<void> {
    const selector = nad.annotations?.[NODE_SELECTOR_ANNOTATION];
    if (selector === undefined || selector.trim() === "") return;
    const nodeName = this.r.pod?.spec?.nodeName ?? "";
    if (nodeName === "") {
      throw new CniError(
        ErrorCode.InvalidConfig,
        `NetworkAttachmentDefinition ${nad.namespace}/${nad.name} has a node selector, but the pod has no spec.nodeName`,
      );
    }
    this.labels ??= await (this.r.api as MultusApi).nodeLabels(nodeName);
    if (!nadAppliesToNode(nad, this.labels)) {
      throw new CniError(
        ErrorCode.InvalidConfig,
        `NetworkAttachmentDefinition ${nad.namespace}/${nad.name} does not apply to node ${nodeName}: its ${NODE_SELECTOR_ANNOTATION} ${JSON.stringify(selector)} does not match the node's labels`,
      );
    }
  }
}

function readText(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    throw new CniError(ErrorCode.IOFailure, `error reading ${file}: ${messageOf(err)}`);
  }
}

function decode(text: string, what: string): JsonObject {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new CniError(ErrorCode.DecodingFailure, `error parsing ${what}: ${messageOf(err)}`);
  }
  if (!isJsonObject(value)) throw new CniError(ErrorCode.DecodingFailure, `error parsing ${what}: not a JSON object`);
  return value;
}

function prefixed(err: unknown, prefix: string): CniError {
  if (err instanceof CniError) return new CniError(err.code, `${prefix}${err.message}`, err.details);
  return new CniError(ErrorCode.Internal, `${prefix}${messageOf(err)}`);
}
