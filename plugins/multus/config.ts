/**
 * The multus configuration (the conf in /etc/cni/net.d that names `type: multus`), read as
 * k8snetworkplumbingwg/multus-cni v4.3.0 `pkg/types/conf.go` (`GetDefaultNetConf`,
 * `LoadNetConf`) reads it: upstream's defaults first, the given keys over them, unknown keys
 * ignored. Also the runtime-config shapes (`portMappings`, `bandwidth`, ...) that the pod
 * annotation shares (`pkg/types/types.go`). Pure: no process, file or network access.
 */
import { parseNetConf } from "../../shared/cni/config.ts";
import { CniError, ErrorCode } from "../../shared/cni/errors.ts";
import { FieldReader } from "../../shared/cni/json.ts";
import type { JsonObject, Result } from "../../shared/cni/types.ts";

const DEFAULT_CONF_DIR = "/etc/cni/multus/net.d";
const DEFAULT_CNI_DIR = "/var/lib/cni/multus";
const DEFAULT_BIN_DIR = "/opt/cni/bin";
const DEFAULT_MULTUS_NAMESPACE = "kube-system";
const DEFAULT_GLOBAL_NAMESPACE = "default";
const LOG_LEVELS = ["debug", "verbose", "error", "panic"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** One `portMappings` entry (upstream `PortMapEntry`). */
export interface PortMapping {
  hostPort: number;
  containerPort: number;
  protocol?: string;
  hostIP?: string;
}

/** A `bandwidth` request (upstream `BandwidthEntry`: every key an int, 0 when absent). */
export interface Bandwidth {
  ingressRate: number;
  ingressBurst: number;
  egressRate: number;
  egressBurst: number;
}

/** The runtime-config keys multus reads (upstream `RuntimeConfig`); every other key is dropped. */
export interface RuntimeConfig {
  portMappings?: PortMapping[];
  bandwidth?: Bandwidth;
  ips?: string[];
  mac?: string;
  infinibandGUID?: string;
  deviceID?: string;
  CNIDeviceInfoFile?: string;
}

export interface LogOptions {
  /** Days. */
  maxAge: number;
  /** Megabytes. */
  maxSize: number;
  maxBackups: number;
  compress: boolean;
}

export interface MultusConfig {
  cniVersion: string;
  name: string;
  type: string;
  kubeconfig: string;
  clusterNetwork: string;
  defaultNetworks: string[];
  /** Inline delegate configs, in order (the first is the master); empty when clusterNetwork is set. */
  delegates: JsonObject[];
  confDir: string;
  cniDir: string;
  binDir: string;
  logFile: string;
  logLevel: LogLevel;
  /** A `logLevel` upstream does not know: the caller says so on stderr; the level stays `panic`. */
  unknownLogLevel?: string;
  logToStderr: boolean;
  logOptions: LogOptions;
  readinessIndicatorFile: string;
  namespaceIsolation: boolean;
  /** `globalNamespaces` split on commas, items trimmed; `["default"]` when the key is absent or empty. */
  globalNamespaces: string[];
  multusNamespace: string;
  systemNamespaces: string[];
  retryDeleteOnError: boolean;
  auxiliaryCNIChainName: string;
  /** Declared for the runtime's sake; multus itself does not read them. */
  capabilities: JsonObject;
  runtimeConfig: RuntimeConfig;
  prevResult?: Result;
  /** The whole decoded object, as given. */
  raw: JsonObject;
}

/** Parses the multus conf from stdin. Errors are code 7 naming the key (code 6 for unreadable JSON). */
export function loadMultusConfig(stdin: string): MultusConfig {
  const conf = parseNetConf(stdin);
  const fields = new FieldReader(conf.raw, ErrorCode.InvalidConfig);
  const clusterNetwork = fields.string("clusterNetwork") ?? "";
  const delegates = readDelegates(fields);
  if (clusterNetwork === "" && delegates.length === 0) {
    throw new CniError(ErrorCode.InvalidConfig, "at least one delegate/clusterNetwork must be specified");
  }
  const level = (fields.string("logLevel") ?? "").toLowerCase();
  const logLevel = LOG_LEVELS.find((candidate) => candidate === level);
  const config: MultusConfig = {
    cniVersion: conf.cniVersion,
    name: conf.name,
    type: conf.type,
    kubeconfig: fields.string("kubeconfig") ?? "",
    clusterNetwork,
    defaultNetworks: fields.stringArray("defaultNetworks") ?? [],
    // Upstream ignores `delegates` when clusterNetwork is set.
    delegates: clusterNetwork === "" ? delegates : [],
    confDir: fields.string("confDir") || DEFAULT_CONF_DIR,
    cniDir: fields.string("cniDir") || DEFAULT_CNI_DIR,
    binDir: fields.string("binDir") || DEFAULT_BIN_DIR,
    logFile: fields.string("logFile") ?? "",
    logLevel: logLevel ?? "panic",
    logToStderr: fields.boolean("logToStderr") ?? true,
    logOptions: readLogOptions(fields),
    readinessIndicatorFile: fields.string("readinessindicatorfile") ?? "",
    namespaceIsolation: fields.boolean("namespaceIsolation") ?? false,
    globalNamespaces: splitNamespaces(fields.string("globalNamespaces") ?? ""),
    multusNamespace: fields.string("multusNamespace") || DEFAULT_MULTUS_NAMESPACE,
    systemNamespaces: fields.stringArray("systemNamespaces") ?? [DEFAULT_MULTUS_NAMESPACE],
    retryDeleteOnError: fields.boolean("retryDeleteOnError") ?? false,
    auxiliaryCNIChainName: fields.string("auxiliaryCNIChainName") ?? "",
    capabilities: fields.object("capabilities") ?? {},
    runtimeConfig: readRuntimeConfig(fields, "runtimeConfig"),
    raw: conf.raw,
  };
  if (level !== "" && logLevel === undefined) config.unknownLogLevel = level;
  if (conf.prevResult !== undefined) config.prevResult = conf.prevResult;
  return config;
}

/** `globalNamespaces`: a comma-separated string (not an array), items trimmed, empty items dropped. */
export function splitNamespaces(text: string): string[] {
  const items = text
    .split(",")
    .map((item) => item.trim())
    .filter((item) => item !== "");
  return items.length > 0 ? items : [DEFAULT_GLOBAL_NAMESPACE];
}

function readDelegates(fields: FieldReader): JsonObject[] {
  const readers = fields.objectArray("delegates") ?? [];
  return readers.map((reader) => reader.obj);
}

function readLogOptions(fields: FieldReader): LogOptions {
  const defaults: LogOptions = { maxAge: 5, maxSize: 100, maxBackups: 5, compress: true };
  const given = fields.object("logOptions");
  if (given === undefined) return defaults;
  const options = fields.nested(given, "logOptions");
  return {
    maxAge: options.integer("maxAge", { min: 0 }) ?? defaults.maxAge,
    maxSize: options.integer("maxSize", { min: 0 }) ?? defaults.maxSize,
    maxBackups: options.integer("maxBackups", { min: 0 }) ?? defaults.maxBackups,
    compress: options.boolean("compress") ?? defaults.compress,
  };
}

/**
 * The runtime-config keys under `key` of `fields` (the conf's `runtimeConfig`, or one annotation
 * element, whose keys have the same shapes), each checked for its type.
 */
function readRuntimeConfig(fields: FieldReader, key: string): RuntimeConfig {
  const given = fields.object(key);
  if (given === undefined) return {};
  const inner = fields.nested(given, key);
  const config: RuntimeConfig = {};
  const portMappings = readPortMappings(inner, "portMappings");
  if (portMappings !== undefined) config.portMappings = portMappings;
  const bandwidth = readBandwidth(inner, "bandwidth");
  if (bandwidth !== undefined) config.bandwidth = bandwidth;
  const ips = inner.stringArray("ips");
  if (ips !== undefined) config.ips = ips;
  for (const name of ["mac", "infinibandGUID", "deviceID", "CNIDeviceInfoFile"] as const) {
    const value = inner.string(name);
    if (value) config[name] = value;
  }
  return config;
}

/** `portMappings`: an array of `{hostPort, containerPort, protocol?, hostIP?}`. */
export function readPortMappings(fields: FieldReader, key: string): PortMapping[] | undefined {
  return fields.objectArray(key)?.map((given) => {
    const entry = given.goKeys(["hostPort", "containerPort", "protocol", "hostIP"]);
    const mapping: PortMapping = {
      hostPort: entry.integer("hostPort") ?? 0,
      containerPort: entry.integer("containerPort") ?? 0,
    };
    const protocol = entry.string("protocol");
    if (protocol) mapping.protocol = protocol;
    const hostIP = entry.string("hostIP");
    if (hostIP) mapping.hostIP = hostIP;
    return mapping;
  });
}

/** `bandwidth`: `{ingressRate, ingressBurst, egressRate, egressBurst}`, integers, 0 when absent. */
export function readBandwidth(fields: FieldReader, key: string): Bandwidth | undefined {
  const given = fields.object(key);
  if (given === undefined) return undefined;
  const inner = fields.nested(given, key).goKeys(["ingressRate", "ingressBurst", "egressRate", "egressBurst"]);
  return {
    ingressRate: inner.integer("ingressRate") ?? 0,
    ingressBurst: inner.integer("ingressBurst") ?? 0,
    egressRate: inner.integer("egressRate") ?? 0,
    egressBurst: inner.integer("egressBurst") ?? 0,
  };
}
