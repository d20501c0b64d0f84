/**
 * The delegates of one pod, in the order multus runs them, and what each is run with: its
 * interface name, CNI_ARGS and capability arguments, as a shared/cni/delegate.ts `RuntimeConf`.
 * Follows k8snetworkplumbingwg/multus-cni v4.3.0: `pkg/k8sclient/k8sclient.go`
 * (`GetDefaultNetworks`, `TryLoadPodDelegates`), `pkg/types/conf.go` (`LoadDelegateNetConf`,
 * `CheckGatewayConfig`, `CreateCNIRuntimeConf`, `mergeCNIRuntimeConfig`), `pkg/multus/multus.go`
 * (`getIfname`, the `MAC=`/`IP=` args of `DelegateAdd`). Pure: the networks come in resolved.
 */
import { ARG_IP, ARG_MAC } from "../../shared/cni/args.ts";
import type { RuntimeConf } from "../../shared/cni/delegate.ts";
import { CniError, ErrorCode } from "../../shared/cni/errors.ts";
import { describeValue, isJsonObject } from "../../shared/cni/json.ts";
import type { JsonObject, JsonValue } from "../../shared/cni/types.ts";
import { tryParseIp } from "../../shared/ip.ts";
import type { NetworkSelection } from "./annotations.ts";
import type { MultusConfig, RuntimeConfig } from "./config.ts";
import { type DelegateConf, delegateFromConfig } from "./nad.ts";

/** Where device-info files for delegates go (network-attachment-definition-client `GetCNIDeviceInfoPath`). */
export const CNI_DEVICE_INFO_DIR = "/var/run/k8s.cni.cncf.io/devinfo/cni";

/** A network from the pod's annotation (or the default-network annotation), its NAD resolved. */
export interface SelectedNetwork {
  conf: DelegateConf;
  selection: NetworkSelection;
  /** The device the NAD's resourceName yielded for this pod; injected into the config. */
  deviceID?: string;
  resourceName?: string;
}

/** What the pod's delegates are made of, every network already resolved. */
export interface DelegateSources {
  /** clusterNetwork's delegate, or the conf's `delegates`: the first is the master. */
  base: DelegateConf[];
  /** `defaultNetworks`, resolved; used unless the pod's namespace is a system namespace. */
  defaultNetworks: DelegateConf[];
  /** The pod's namespace; undefined when the pod is not known (then no defaultNetworks). */
  podNamespace?: string;
  /** `v1.multus-cni.io/default-network`: replaces the master. */
  defaultNetwork?: SelectedNetwork;
  /** `k8s.v1.cni.cncf.io/networks`, in order. */
  networks: SelectedNetwork[];
  /** The `auxiliaryCNIChainName` chain, run last. */
  auxiliary?: DelegateConf;
}

/** One delegate as multus runs it (upstream `DelegateNetConf`). */
export interface PodDelegate {
  conf: DelegateConf;
  master: boolean;
  ifName: string;
  /** The annotation's `interface`, if any (cached as `ifnameRequest`). */
  ifnameRequest?: string;
  mac?: string;
  infinibandGUID?: string;
  ips?: string[];
  portMappings?: RuntimeConfig["portMappings"];
  bandwidth?: RuntimeConfig["bandwidth"];
  defaultRoute?: string[];
  deviceID?: string;
  resourceName?: string;
  /** Default routes of this family are removed after ADD (§6.2 of the reference). */
  filterV4Gateway: boolean;
  filterV6Gateway: boolean;
}

/**
 * The delegates in order: the master (clusterNetwork, the first inline delegate, or the
 * default-network annotation's), the rest of `base`, `defaultNetworks` (not for pods of a
 * system namespace), the annotation's networks, the auxiliary chain. `runtimeIfName` is CNI_IFNAME.
 */
export function planDelegates(config: Pick<MultusConfig, "systemNamespaces">, sources: DelegateSources, runtimeIfName: string): PodDelegate[] {
  const entries: Array<{ conf: DelegateConf; network?: SelectedNetwork }> = sources.base.map((conf) => ({ conf }));
  if (sources.podNamespace !== undefined && !config.systemNamespaces.includes(sources.podNamespace)) {
    entries.push(...sources.defaultNetworks.map((conf) => ({ conf })));
  }
  if (sources.defaultNetwork !== undefined) {
    if (entries.length === 0) throw new CniError(ErrorCode.InvalidConfig, "no default network to replace with the default-network annotation's");
    entries[0] = { conf: sources.defaultNetwork.conf, network: sources.defaultNetwork };
  }
  entries.push(...sources.networks.map((network) => ({ conf: network.conf, network })));
  if (sources.auxiliary !== undefined) entries.push({ conf: sources.auxiliary });
  const delegates = entries.map(({ conf, network }, index) => podDelegate(conf, network, index === 0, index, runtimeIfName));
  markGatewayFilters(delegates);
  return delegates;
}

function podDelegate(base: DelegateConf, network: SelectedNetwork | undefined, master: boolean, index: number, runtimeIfName: string): PodDelegate {
  const selection = network?.selection;
  let conf = base;
  if (network?.deviceID) conf = withDeviceId(conf, network.deviceID);
  if (selection?.cniArgs !== undefined) conf = withCniArgs(conf, selection.cniArgs);
  const delegate: PodDelegate = {
    conf,
    master,
    // upstream `getIfname`: the request, else CNI_IFNAME for the master, else net<index>.
    ifName: selection?.interface || (master ? runtimeIfName : `net${index}`),
    filterV4Gateway: false,
    filterV6Gateway: false,
  };
  if (selection?.interface) delegate.ifnameRequest = selection.interface;
  if (selection?.mac) delegate.mac = selection.mac;
  if (selection?.infinibandGUID) delegate.infinibandGUID = selection.infinibandGUID;
  if (selection?.ips !== undefined) delegate.ips = selection.ips;
  if (selection?.portMappings !== undefined) delegate.portMappings = selection.portMappings;
  if (selection?.bandwidth !== undefined) delegate.bandwidth = selection.bandwidth;
  if (selection?.defaultRoute !== undefined) delegate.defaultRoute = selection.defaultRoute;
  // A device from the NAD's resource wins over the annotation's deviceID.
  if (network?.deviceID) {
    delegate.deviceID = network.deviceID;
    if (network.resourceName) delegate.resourceName = network.resourceName;
  } else if (selection?.deviceID) {
    delegate.deviceID = selection.deviceID;
  }
  return delegate;
}

/**
 * upstream `CheckGatewayConfig`, when any delegate has `default-route`: at most one gateway per
 * family over all delegates, and each delegate filters the families its own list lacks.
 */
function markGatewayFilters(delegates: PodDelegate[]): void {
  if (!delegates.some((delegate) => delegate.defaultRoute !== undefined)) return;
  const families = delegates.flatMap((delegate) => (delegate.defaultRoute ?? []).map((gateway) => tryParseIp(gateway)?.kind()));
  if (families.filter((kind) => kind === "ipv4").length > 1 || families.filter((kind) => kind !== "ipv4").length > 1) {
    throw new CniError(ErrorCode.InvalidConfig, "multus does not support ECMP for default-route");
  }
  for (const delegate of delegates) {
    const own = (delegate.defaultRoute ?? []).map((gateway) => tryParseIp(gateway)?.kind());
    delegate.filterV4Gateway = !own.includes("ipv4");
    delegate.filterV6Gateway = !own.some((kind) => kind !== "ipv4");
  }
}

// ---- config injections -------------------------------------------------------------------------

/** The objects a key is injected into: the config itself, or each plugin of a conflist. */
function targets(conf: DelegateConf, raw: JsonObject): JsonObject[] {
  if (!conf.isConfList) return [raw];
  const plugins = raw.plugins;
  return Array.isArray(plugins) ? plugins.filter(isJsonObject) : [];
}

function rebuilt(conf: DelegateConf, edit: (target: JsonObject) => void): DelegateConf {
  const raw: JsonObject = structuredClone(conf.raw);
  for (const target of targets(conf, raw)) edit(target);
  return delegateFromConfig(JSON.stringify(raw), conf.name);
}

/** The device a resource yielded, as `deviceID` and `pciBusID` of the config (each plugin of a conflist). */
export function withDeviceId(conf: DelegateConf, deviceID: string): DelegateConf {
  return rebuilt(conf, (target) => {
    target.deviceID = deviceID;
    target.pciBusID = deviceID;
  });
}

/** The annotation's `cni-args` merged over `args.cni` of the config (each plugin of a conflist). */
export function withCniArgs(conf: DelegateConf, cniArgs: JsonObject): DelegateConf {
  return rebuilt(conf, (target) => {
    const args = target.args ?? {};
    if (!isJsonObject(args)) throw new CniError(ErrorCode.InvalidConfig, `cannot add cni-args: "args" is ${describeValue(args)}, not an object`);
    const cni = args.cni ?? {};
    if (!isJsonObject(cni)) throw new CniError(ErrorCode.InvalidConfig, `cannot add cni-args: "args.cni" is ${describeValue(cni)}, not an object`);
    target.args = { ...args, cni: { ...cni, ...cniArgs } };
  });
}

// ---- what each delegate is run with ------------------------------------------------------------

/** The pod's identity, from multus' own CNI_ARGS. */
export interface PodArgs {
  namespace: string;
  name: string;
  infraContainerId: string;
  uid: string;
}

/**
 * CNI_ARGS for a delegate: `IgnoreUnknown=true`, the pod's four keys, then the runtime's pairs
 * (a key already present is filled if empty, otherwise not repeated), then on ADD `MAC=` and
 * `IP=a,b` for what the annotation requested.
 */
export function delegateArgs(pod: PodArgs, runtimeArgs: string, delegate: PodDelegate, add: boolean): Array<[string, string]> {
  const args: Array<[string, string]> = [
    ["IgnoreUnknown", "true"],
    ["K8S_POD_NAMESPACE", pod.namespace],
    ["K8S_POD_NAME", pod.name],
    ["K8S_POD_INFRA_CONTAINER_ID", pod.infraContainerId],
    ["K8S_POD_UID", pod.uid],
  ];
  for (const pair of runtimeArgs === "" ? [] : runtimeArgs.split(";")) {
    const equals = pair.indexOf("=");
    if (equals < 0) continue;
    const key = pair.slice(0, equals);
    const value = pair.slice(equals + 1);
    const existing = args.find(([known]) => known === key);
    if (existing === undefined) args.push([key, value]);
    else if (existing[1] === "") existing[1] = value;
  }
  if (add && delegate.mac) args.push([ARG_MAC, delegate.mac]);
  if (add && delegate.ips !== undefined) args.push([ARG_IP, delegate.ips.join(",")]);
  return args;
}

/**
 * The runtime config a delegate is given (upstream `delegateRuntimeConfig`): the runtime's, and
 * for every delegate but the master the annotation's values over it; with a device, the
 * device-info file it is to write.
 */
function delegateRuntimeConfig(runtime: RuntimeConfig, delegate: PodDelegate, containerId: string): RuntimeConfig {
  const merged: RuntimeConfig = { ...runtime };
  if (!delegate.master) {
    if (delegate.portMappings !== undefined) merged.portMappings = delegate.portMappings;
    if (delegate.bandwidth !== undefined) merged.bandwidth = delegate.bandwidth;
    if (delegate.ips !== undefined) merged.ips = delegate.ips;
    if (delegate.mac) merged.mac = delegate.mac;
    if (delegate.infinibandGUID) merged.infinibandGUID = delegate.infinibandGUID;
    if (delegate.deviceID) merged.deviceID = delegate.deviceID;
  }
  if (merged.deviceID) merged.CNIDeviceInfoFile = deviceInfoFile(delegate.conf.name, containerId, delegate.ifName);
  return merged;
}

/** `/var/run/k8s.cni.cncf.io/devinfo/cni/<name with / as ->-<containerID>_<ifName>`. */
export function deviceInfoFile(delegateName: string, containerId: string, ifName: string): string {
  return `${CNI_DEVICE_INFO_DIR}/${`${delegateName}-${containerId}_${ifName}`.replaceAll("/", "-")}`;
}

/** The capability arguments libcni passes on (only non-empty keys), from a runtime config. */
export function capabilityArgs(runtime: RuntimeConfig): JsonObject {
  const args: JsonObject = {};
  if (runtime.portMappings?.length) args.portMappings = runtime.portMappings.map(portMappingJson);
  if (runtime.bandwidth !== undefined) args.bandwidth = { ...runtime.bandwidth };
  if (runtime.ips?.length) args.ips = [...runtime.ips];
  if (runtime.mac) args.mac = runtime.mac;
  if (runtime.infinibandGUID) args.infinibandGUID = runtime.infinibandGUID;
  if (runtime.deviceID) args.deviceID = runtime.deviceID;
  if (runtime.CNIDeviceInfoFile) args.CNIDeviceInfoFile = runtime.CNIDeviceInfoFile;
  return args;
}

function portMappingJson(mapping: NonNullable<RuntimeConfig["portMappings"]>[number]): JsonValue {
  const json: JsonObject = { hostPort: mapping.hostPort, containerPort: mapping.containerPort };
  if (mapping.protocol) json.protocol = mapping.protocol;
  if (mapping.hostIP) json.hostIP = mapping.hostIP;
  return json;
}

/** The request's values besides the delegate's: those every delegate of one request shares. */
export interface Invocation {
  containerId: string;
  netns: string;
  /** CNI_ARGS as the runtime gave it. */
  args: string;
  pod: PodArgs;
  /** The conf's `runtimeConfig`. */
  runtimeConfig: RuntimeConfig;
  /** The conf's `cniDir`: libcni's cache lives in its `results/`. */
  cniDir: string;
}

/** The shared/cni/delegate.ts runtime values of one delegate, for ADD (`add`) or the other verbs. */
export function runtimeConfFor(invocation: Invocation, delegate: PodDelegate, add: boolean): RuntimeConf {
  return {
    containerId: invocation.containerId,
    netns: invocation.netns,
    ifName: delegate.ifName,
    args: delegateArgs(invocation.pod, invocation.args, delegate, add),
    capabilityArgs: capabilityArgs(delegateRuntimeConfig(invocation.runtimeConfig, delegate, invocation.containerId)),
    cacheDir: invocation.cniDir,
  };
}
