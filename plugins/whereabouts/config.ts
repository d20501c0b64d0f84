/**
 * whereabouts configuration (upstream: `pkg/config/config.go`, `GetFlatIPAM` and
 * `LoadIPAMConfig`): the `ipam` section, merged over the flat file `whereabouts.conf`, plus
 * CNI_ARGS. Everything is validated here, at load, so an ADD never fails
 * half-way on a config error. Pure apart from reading the flat file through `FileSource`;
 * unit-tested.
 */
import { isAbsolute, join } from "node:path";
import { readFileSync, statSync } from "node:fs";
import { ARG_GATEWAY, ARG_IP, K8S_ARGS, ARG_K8S_POD_NAME, ARG_K8S_POD_NAMESPACE, parseCniArgs } from "../../shared/cni/args.ts";
import { CniError, ErrorCode } from "../../shared/cni/errors.ts";
import { FieldReader, isJsonObject } from "../../shared/cni/json.ts";
import type { DNS, IPConfig, JsonObject, JsonValue, NetConf, Route } from "../../shared/cni/types.ts";
import { readDns } from "../../shared/cni/version.ts";
import { messageOf } from "../../shared/errors.ts";
import type { LogLevel } from "../../shared/log.ts";
import { type Address, type IpRange, type RangeSpec, formatAddress, formatCidr, networkSpan, parseAddress, parseCidr, parseRange } from "./range.ts";

const PLUGIN_TYPE = "whereabouts";

/** Where upstream looks for the flat file after `configuration_path`, in this order. */
export const FLAT_FILE_PATHS: readonly string[] = [
  "/etc/kubernetes/cni/net.d/whereabouts.d/whereabouts.conf",
  "/etc/cni/net.d/whereabouts.d/whereabouts.conf",
  "/host/etc/cni/net.d/whereabouts.d/whereabouts.conf",
];
const FLAT_FILE_NAME = "whereabouts.conf";

export const DEFAULT_DATASTORE_DIR = "/var/lib/cni/whereabouts";
/** Upstream's shared deadline for the API calls of one ADD or DEL (`pkg/storage/storage.go`, `RequestTimeout`). */
const DEFAULT_API_TIMEOUT_MS = 10_000;

/** client-go's defaults, which upstream applies to 0 values too (milliseconds). */
const LEADER_DEFAULTS = { leaseDurationMs: 1500, renewDeadlineMs: 1000, retryPeriodMs: 500 };
/** client-go refuses a renew deadline not above retryPeriod × this. */
const LEADER_JITTER = 1.2;

export type StoreChoice =
  | { kind: "file"; dir: string }
  | {
      kind: "kubernetes";
      /** Empty: the pod's in-cluster service account. */
      kubeconfig: string;
      apiRoot: string;
      /** One deadline for all API calls of one invocation; past it the answer is "try again later". */
      timeoutMs: number;
      /** Releases the API could not take yet, replayed by the next invocation on this node. */
      journalDir: string;
      /** Lock files that serialise this node's writers of a pool, and the queues of its ADDs. */
      lockDir: string;
      /** The attachments this node's ADDs allocated for: what GC may release (node/ledger.ts). */
      ledgerDir: string;
    };

export interface WhereaboutsConfig {
  /** The CNI network's name (top-level `name`). */
  name: string;
  /** `network_name`: prefixes every pool and reservation name, so equal ranges stay apart. */
  networkName: string;
  /** The top-level range first, then `ipRanges`; one address from each. */
  ranges: IpRange[];
  gateway?: Address;
  routes: Route[];
  dns?: DNS;
  /** `addresses`, then CNI_ARGS `IP=`, in result form; never stored, appended to every result. */
  addresses: IPConfig[];
  overlappingRanges: boolean;
  store: StoreChoice;
  /** Fast IPAM by node slices; only the Kubernetes store can serve it. */
  nodeSliceSize?: string;
  configurationPath?: string;
  leader: { leaseDurationMs: number; renewDeadlineMs: number; retryPeriodMs: number };
  sleepForRaceSeconds: number;
  log: { file?: string; level: LogLevel };
  /** From CNI_ARGS; `podRef` ("<namespace>/<name>") is undefined without a pod name. */
  pod: { namespace: string; name: string; podRef?: string };
  /** The flat file merged in, if one was found. */
  flatFile?: string;
  /** Things worth a log line once the logger exists. */
  warnings: string[];
}

/** The flat file's side of the file system, replaceable in tests. */
export interface FileSource {
  kind(path: string): "file" | "directory" | undefined;
  read(path: string): string;
}

const realFiles: FileSource = {
  kind(path) {
    try {
      const stat = statSync(path);
      return stat.isDirectory() ? "directory" : "file";
    } catch {
      return undefined;
    }
  },
  read: (path) => readFileSync(path, "utf8"),
};

// ---- keys, as Go's decoder matches them -----------------------------------------------------------

interface KeyRule {
  /** A nested object merged key by key. */
  object?: KeySchema;
  /** A list of objects, each with these keys. */
  items?: KeySchema;
}
type KeySchema = Record<string, KeyRule>;

const ROUTE_KEYS: KeySchema = { dst: {}, gw: {}, mtu: {}, advmss: {}, priority: {}, table: {}, scope: {} };
const DNS_KEYS: KeySchema = { nameservers: {}, domain: {}, search: {}, options: {} };
const RANGE_KEYS: KeySchema = { range: {}, range_start: {}, range_end: {}, exclude: {} };
const OVERLAPPING = "enable_overlapping_ranges";

/** Upstream's IPAM config struct (`pkg/types/types.go`, `IPAMConfig`), plus our `datastore_dir`. */
const IPAM_KEYS: KeySchema = {
  type: {},
  name: {},
  ...RANGE_KEYS,
  ipRanges: { items: RANGE_KEYS },
  gateway: {},
  routes: { items: ROUTE_KEYS },
  dns: { object: DNS_KEYS },
  addresses: { items: { address: {}, gateway: {} } },
  [OVERLAPPING]: {},
  network_name: {},
  node_slice_size: {},
  kubernetes: { object: { kubeconfig: {}, k8s_api_root: {}, timeout_ms: {} } },
  configuration_path: {},
  log_file: {},
  log_level: {},
  leader_lease_duration: {},
  leader_renew_deadline: {},
  leader_retry_period: {},
  sleep_for_race: {},
  reconciler_cron_expression: {},
  datastore: {},
  datastore_dir: {},
  etcd_host: {},
  etcd_username: {},
  etcd_password: {},
  etcd_key_file: {},
  etcd_cert_file: {},
  etcd_ca_cert_file: {},
};

/**
 * Renames keys to their canonical spelling and drops unknown ones. Go's decoder matches keys
 * case-insensitively ("Range" fills `range`), and when two spellings appear the later one wins.
 */
export function canonicalKeys(value: JsonObject, schema: KeySchema = IPAM_KEYS): JsonObject {
  const byLowerCase = new Map(Object.entries(schema).map(([key, rule]) => [key.toLowerCase(), { canonical: key, rule }]));
  const out: JsonObject = {};
  for (const [key, item] of Object.entries(value)) {
    const known = byLowerCase.get(key.toLowerCase());
    if (known === undefined) continue;
    const { canonical, rule } = known;
    if (rule.object && isJsonObject(item)) out[canonical] = canonicalKeys(item, rule.object);
    else if (rule.items && Array.isArray(item)) {
      const nested = rule.items;
      out[canonical] = item.map((entry) => (isJsonObject(entry) ? canonicalKeys(entry, nested) : entry));
    } else out[canonical] = item;
  }
  return out;
}

/** Go's zero values, which the flat file may fill in. */
function isZero(value: JsonValue | undefined): boolean {
  if (value === undefined || value === null || value === "" || value === 0 || value === false) return true;
  if (Array.isArray(value)) return value.length === 0;
  return isJsonObject(value) && Object.keys(value).length === 0;
}

/**
 * The flat file under the inline config, as upstream merges them (mergo): every inline key that
 * is absent or zero ("", 0, false, [], {}) takes the flat file's value, nested objects (`dns`,
 * `kubernetes`) key by key, lists whole. `enable_overlapping_ranges` set inline wins even when
 * false; when the inline config leaves it out, the flat file's value counts (upstream ignores
 * the flat file's value, always defaulting to true).
 */
export function mergeFlatFile(inline: JsonObject, flat: JsonObject, schema: KeySchema = IPAM_KEYS): JsonObject {
  const out: JsonObject = { ...inline };
  for (const [key, rule] of Object.entries(schema)) {
    const mine = inline[key];
    const theirs = flat[key];
    if (theirs === undefined || theirs === null) continue;
    const nested = rule.object;
    if (key === OVERLAPPING) {
      if (mine === undefined || mine === null) out[key] = theirs;
    } else if (nested && isJsonObject(mine) && isJsonObject(theirs)) {
      out[key] = mergeFlatFile(mine, theirs, nested);
    } else if (isZero(mine)) {
      out[key] = theirs;
    }
  }
  return out;
}

// ---- loading ------------------------------------------------------------------------------------

function invalid(message: string, details = ""): CniError {
  return new CniError(ErrorCode.InvalidConfig, message, details);
}

/**
 * The flat file to merge: `configuration_path` (from the inline config only; a directory means
 * its whereabouts.conf), else the first of the standard paths that exists. None is fine: the
 * file only supplies defaults. Returns its path and decoded keys.
 */
function readFlatFile(configurationPath: string | undefined, files: FileSource): { path: string; keys: JsonObject } | undefined {
  const candidates: string[] = [];
  if (configurationPath) {
    candidates.push(files.kind(configurationPath) === "directory" ? join(configurationPath, FLAT_FILE_NAME) : configurationPath);
  }
  candidates.push(...FLAT_FILE_PATHS);
  for (const path of candidates) {
    const kind = files.kind(path);
    if (kind === undefined) continue;
    if (kind === "directory") throw invalid(`flat file ${path} is a directory`);
    let text: string;
    try {
      text = files.read(path);
    } catch (err) {
      throw new CniError(ErrorCode.IOFailure, `cannot read flat file ${path}: ${messageOf(err)}`);
    }
    let decoded: unknown;
    try {
      decoded = JSON.parse(text);
    } catch (err) {
      throw invalid(`flat file ${path} is not valid JSON: ${messageOf(err)}`);
    }
    if (!isJsonObject(decoded)) throw invalid(`flat file ${path} must hold a JSON object`);
    return { path, keys: canonicalKeys(decoded) };
  }
  return undefined;
}

export function loadConfig(conf: NetConf, cniArgs: string, files: FileSource = realFiles): WhereaboutsConfig {
  if (conf.ipam === undefined) throw invalid("IPAM config missing 'ipam' key");
  if (conf.ipam.type !== PLUGIN_TYPE) {
    throw invalid(`ipam type is ${JSON.stringify(conf.ipam.type)}: this plugin only serves ipam type "${PLUGIN_TYPE}"`);
  }
  const inline = canonicalKeys(conf.ipam);
  const inlinePath = inline.configuration_path;
  const flat = readFlatFile(typeof inlinePath === "string" ? inlinePath : undefined, files);
  const merged = flat ? mergeFlatFile(inline, flat.keys) : inline;
  const fields = new FieldReader(merged, ErrorCode.InvalidConfig, "ipam.");
  const warnings: string[] = [];

  const args = parseCniArgs(cniArgs, [ARG_IP, ARG_GATEWAY, ...K8S_ARGS]);
  const podName = args.get(ARG_K8S_POD_NAME) ?? "";
  const podNamespace = args.get(ARG_K8S_POD_NAMESPACE) ?? "";

  const ranges = readRanges(fields).map(parseRange);
  const gateway = readGateway(fields);
  const config: WhereaboutsConfig = {
    name: conf.name,
    networkName: readNetworkName(fields),
    ranges,
    routes: readRoutes(fields),
    addresses: readStaticAddresses(fields, args.get(ARG_IP), args.get(ARG_GATEWAY)),
    overlappingRanges: fields.boolean(OVERLAPPING) ?? true,
    store: readStoreChoice(fields),
    leader: readLeader(fields),
    sleepForRaceSeconds: fields.integer("sleep_for_race", { min: 0, max: 3600 }) ?? 0,
    log: readLog(fields, warnings),
    pod: { namespace: podNamespace, name: podName, ...(podName ? { podRef: `${podNamespace}/${podName}` } : {}) },
    warnings,
  };
  if (gateway) config.gateway = gateway;
  const dnsObject = fields.object("dns");
  const dns = dnsObject && readDns(fields.nested(dnsObject, "dns"));
  if (dns) config.dns = dns;
  const sliceSize = fields.string("node_slice_size");
  if (sliceSize) {
    if (!/^\/?\d{1,3}$/.test(sliceSize))
      throw invalid(`invalid "ipam.node_slice_size": expected a prefix length such as "/24", got ${JSON.stringify(sliceSize)}`);
    config.nodeSliceSize = sliceSize;
  }
  const configurationPath = fields.string("configuration_path");
  if (configurationPath) config.configurationPath = configurationPath;
  if (flat) config.flatFile = flat.path;
  // Read only by upstream's controllers or not at all; still type-checked, as Go's decoder does.
  for (const key of ["reconciler_cron_expression", "etcd_host", "etcd_username", "etcd_password", "etcd_key_file", "etcd_cert_file", "etcd_ca_cert_file"]) {
    fields.string(key);
  }
  return config;
}

function readRanges(fields: FieldReader): RangeSpec[] {
  const specs: RangeSpec[] = [];
  const spec = (reader: FieldReader, range: string, label: string, exclude: string[]): RangeSpec => {
    const entry: RangeSpec = { range, exclude, label };
    const start = reader.string("range_start");
    const end = reader.string("range_end");
    if (start) entry.rangeStart = start;
    if (end) entry.rangeEnd = end;
    return entry;
  };
  const range = fields.string("range");
  // The top-level exclude belongs to the top-level range only.
  const exclude = fields.stringArray("exclude") ?? [];
  if (range) specs.push(spec(fields, range, "ipam.range", exclude));
  (fields.objectArray("ipRanges") ?? []).forEach((entry, index) => {
    const label = `ipam.ipRanges[${index}].range`;
    specs.push(spec(entry, entry.requiredString("range", label), label, entry.stringArray("exclude") ?? []));
  });
  if (specs.length === 0) throw invalid('no range configured: set "ipam.range" or "ipam.ipRanges"');
  return specs;
}

function readAddressField(reader: FieldReader, key: string, label: string): Address | undefined {
  const text = reader.string(key);
  if (!text) return undefined;
  const address = parseAddress(text);
  if (address === undefined) reader.fail(key, "an IP address", label);
  return address;
}

function readGateway(fields: FieldReader): Address | undefined {
  return readAddressField(fields, "gateway", "ipam.gateway");
}

/** The name becomes part of file and object names: nothing that could leave a directory. */
function readNetworkName(fields: FieldReader): string {
  const name = fields.string("network_name") ?? "";
  if (name === "." || name === ".." || /[/\0]/.test(name)) {
    throw invalid(`invalid "ipam.network_name": ${JSON.stringify(name)} cannot name a file or a Kubernetes object`);
  }
  return name;
}

function readRoutes(fields: FieldReader): Route[] {
  return (fields.objectArray("routes") ?? []).map((entry, index) => {
    const label = `ipam.routes[${index}]`;
    const dstText = entry.requiredString("dst", `${label}.dst`);
    const dst = parseCidr(dstText);
    if (dst === undefined) return entry.fail("dst", "a CIDR such as 172.31.0.0/16", `${label}.dst`);
    const route: Route = { dst: formatCidr(dst.address.family, dst.address.value, dst.prefix) };
    const gw = readAddressField(entry, "gw", `${label}.gw`);
    if (gw) route.gw = formatAddress(gw);
    const integers = [
      ["mtu", 0, 0xffffffff],
      ["advmss", 0, 0xffffffff],
      ["priority", 0, 0xffffffff],
      ["table", 0, 0xffffffff],
      ["scope", 0, 255],
    ] as const;
    for (const [key, min, max] of integers) {
      const value = entry.integer(key, { min, max, label: `${label}.${key}` });
      if (value !== undefined) route[key] = value;
    }
    return route;
  });
}

/**
 * Static addresses (upstream: `pkg/config/config.go`, `configureStatic` and `handleEnvArgs`):
 * `addresses`, then each of CNI_ARGS `IP=a,b`. Each CNI_ARGS
 * `GATEWAY=` address becomes the gateway of every static address whose subnet holds it.
 */
function readStaticAddresses(fields: FieldReader, argIps: string | undefined, argGateways: string | undefined): IPConfig[] {
  const entries: { address: Address; prefix: number; gateway?: Address }[] = [];
  for (const [index, entry] of (fields.objectArray("addresses") ?? []).entries()) {
    const label = `ipam.addresses[${index}]`;
    const cidr = parseCidr(entry.requiredString("address", `${label}.address`)) ?? entry.fail("address", "a CIDR such as 10.1.2.3/24", `${label}.address`);
    const gateway = readAddressField(entry, "gateway", `${label}.gateway`);
    entries.push({ ...cidr, ...(gateway ? { gateway } : {}) });
  }
  for (const text of splitList(argIps)) {
    const cidr = parseCidr(text);
    if (cidr === undefined) throw invalid(`invalid CNI_ARGS IP ${JSON.stringify(text)}: expected a CIDR such as 10.1.2.3/24`);
    entries.push(cidr);
  }
  for (const text of splitList(argGateways)) {
    const gateway = parseAddress(text);
    if (gateway === undefined) throw invalid(`invalid CNI_ARGS GATEWAY ${JSON.stringify(text)}: expected an IP address`);
    for (const entry of entries) {
      const subnet = networkSpan(entry.address.family, entry.address.value, entry.prefix);
      if (gateway.family === entry.address.family && gateway.value >= subnet.start && gateway.value <= subnet.end) {
        entry.gateway = gateway;
      }
    }
  }
  return entries.map(({ address, prefix, gateway }) => ({
    address: formatCidr(address.family, address.value, prefix),
    ...(gateway ? { gateway: formatAddress(gateway) } : {}),
  }));
}

function splitList(value: string | undefined): string[] {
  return (value ?? "")
    .split(",")
    .map((item) => item.trim())
    .filter((item) => item !== "");
}

/**
 * Which store serves this network. Upstream has only the Kubernetes one and requires a
 * kubeconfig; the file store must be asked for by name, because a node-local store chosen by
 * accident would hand the same address to pods on two nodes.
 */
function readStoreChoice(fields: FieldReader): StoreChoice {
  const datastore = fields.string("datastore") ?? "";
  const kubernetes = fields.object("kubernetes");
  const kubeFields = kubernetes && fields.nested(kubernetes, "kubernetes");
  const kubeconfig = kubeFields?.string("kubeconfig") ?? "";
  const apiRoot = kubeFields?.string("k8s_api_root") ?? "";
  const dir = fields.string("datastore_dir") || DEFAULT_DATASTORE_DIR;
  if (datastore === "file") {
    if (!isAbsolute(dir)) throw invalid(`invalid "ipam.datastore_dir": ${JSON.stringify(dir)} is not an absolute path`);
    return { kind: "file", dir };
  }
  // Upstream accepts and ignores any other datastore value (etcd is gone), as long as a kubeconfig is set.
  if (datastore === "kubernetes" || kubeconfig) {
    const timeoutMs = kubeFields?.integer("timeout_ms", { min: 100, max: 600_000 }) ?? DEFAULT_API_TIMEOUT_MS;
    return {
      kind: "kubernetes",
      kubeconfig,
      apiRoot,
      timeoutMs,
      journalDir: join(dir, "journal"),
      lockDir: join(dir, "locks"),
      ledgerDir: join(dir, "attachments"),
    };
  }
  const named = datastore ? `datastore ${JSON.stringify(datastore)} is not supported and ` : "";
  throw invalid(
    `no usable datastore: ${named}no kubeconfig is configured`,
    'set "datastore": "file" for a store on this node only, or "kubernetes": {"kubeconfig": "<path>"} (usually in the flat file whereabouts.conf) for the cluster-wide store',
  );
}

/** Validated the way client-go's leader election would, which upstream leaves to a panic. */
function readLeader(fields: FieldReader): WhereaboutsConfig["leader"] {
  const read = (key: string, fallback: number): number => fields.integer(key, { min: 0, max: 3_600_000 }) || fallback;
  const leader = {
    leaseDurationMs: read("leader_lease_duration", LEADER_DEFAULTS.leaseDurationMs),
    renewDeadlineMs: read("leader_renew_deadline", LEADER_DEFAULTS.renewDeadlineMs),
    retryPeriodMs: read("leader_retry_period", LEADER_DEFAULTS.retryPeriodMs),
  };
  if (leader.leaseDurationMs <= leader.renewDeadlineMs) {
    throw invalid(`"ipam.leader_lease_duration" (${leader.leaseDurationMs}) must be greater than "ipam.leader_renew_deadline" (${leader.renewDeadlineMs})`);
  }
  if (leader.renewDeadlineMs <= LEADER_JITTER * leader.retryPeriodMs) {
    throw invalid(
      `"ipam.leader_renew_deadline" (${leader.renewDeadlineMs}) must be greater than ${LEADER_JITTER} × "ipam.leader_retry_period" (${leader.retryPeriodMs})`,
    );
  }
  return leader;
}

/** Upstream's levels, least verbose first: panic, error, verbose, debug. */
const LOG_LEVELS = new Map<string, LogLevel>([
  ["panic", "error"],
  ["error", "error"],
  ["verbose", "info"],
  ["debug", "debug"],
]);

function readLog(fields: FieldReader, warnings: string[]): WhereaboutsConfig["log"] {
  const log: WhereaboutsConfig["log"] = { level: "info" };
  const file = fields.string("log_file");
  if (file) log.file = file;
  const levelText = fields.string("log_level");
  if (levelText) {
    const level = LOG_LEVELS.get(levelText.toLowerCase());
    if (level) log.level = level;
    else warnings.push(`unknown log_level ${JSON.stringify(levelText)} (expected debug, verbose, error or panic): logging at ${log.level}`);
  }
  return log;
}
