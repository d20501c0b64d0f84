/**
 * The pod annotations multus reads and writes: `k8s.v1.cni.cncf.io/networks` (short and JSON
 * form, validated as k8snetworkplumbingwg/multus-cni v4.3.0 `pkg/k8sclient/k8sclient.go`
 * `parsePodNetworkAnnotation` validates it), `v1.multus-cni.io/default-network`, and the text of
 * `k8s.v1.cni.cncf.io/network-status` built from the delegates' results as
 * network-attachment-definition-client v1.7.6 `pkg/utils/net-attach-def.go`
 * (`CreateNetworkStatuses`, `SetNetworkStatus`) builds it. Pure: no process, file or network access.
 */
import { messageOf } from "../../shared/errors.ts";
import { CniError, ErrorCode } from "../../shared/cni/errors.ts";
import { FieldReader, describeValue, isJsonObject } from "../../shared/cni/json.ts";
import type { DNS, JsonObject, JsonValue, Result } from "../../shared/cni/types.ts";
import { formatIp, tryParseIp, tryParsePrefix } from "../../shared/ip.ts";
import { type Bandwidth, type PortMapping, readBandwidth, readPortMappings } from "./config.ts";

export const NETWORKS_ANNOTATION = "k8s.v1.cni.cncf.io/networks";
export const DEFAULT_NETWORK_ANNOTATION = "v1.multus-cni.io/default-network";
export const NETWORK_STATUS_ANNOTATION = "k8s.v1.cni.cncf.io/network-status";

/** One network a pod asks for (upstream `NetworkSelectionElement`), its namespace filled in. */
export interface NetworkSelection {
  name: string;
  namespace: string;
  /** The requested interface name (`interface`, else the deprecated `interfaceRequest`). */
  interface?: string;
  ips?: string[];
  mac?: string;
  /** JSON key `infiniband-guid`. */
  infinibandGUID?: string;
  portMappings?: PortMapping[];
  bandwidth?: Bandwidth;
  deviceID?: string;
  /** JSON key `cni-args`: merged into every plugin's `args.cni`. */
  cniArgs?: JsonObject;
  /** JSON key `default-route`: gateway addresses, as given. */
  defaultRoute?: string[];
}

/** DNS-1123 label: what the short form allows for a namespace and a name. */
const LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
/** IFNAMSIZ - 1. */
const MAX_IFNAME = 15;

/**
 * `k8s.v1.cni.cncf.io/networks`: a JSON array when the text holds `[`, `{` or `"`, else a comma
 * list of `[ns/]name[@ifname]`. Namespaces default to `defaultNamespace` (the pod's). An empty
 * (or blank) annotation asks for nothing.
 */
export function parseNetworksAnnotation(text: string, defaultNamespace: string, annotation = NETWORKS_ANNOTATION): NetworkSelection[] {
  if (text.trim() === "") return [];
  const fail = (reason: string): CniError => new CniError(ErrorCode.InvalidConfig, `invalid ${annotation} annotation ${JSON.stringify(text)}: ${reason}`);
  const selections = /[[{"]/.test(text) ? parseJsonForm(text, fail) : text.split(",").map((item) => parseShortItem(item.trim(), fail));
  for (const selection of selections) {
    if (selection.namespace === "") selection.namespace = defaultNamespace;
  }
  return selections;
}

/**
 * `v1.multus-cni.io/default-network`: the same syntax, exactly one network, its namespace
 * defaulting to `multusNamespace` (not the pod's: upstream's rule).
 */
export function parseDefaultNetworkAnnotation(text: string, multusNamespace: string): NetworkSelection {
  const selections = parseNetworksAnnotation(text, multusNamespace, DEFAULT_NETWORK_ANNOTATION);
  const [first] = selections;
  if (first === undefined || selections.length > 1) {
    throw new CniError(
      ErrorCode.InvalidConfig,
      `invalid ${DEFAULT_NETWORK_ANNOTATION} annotation ${JSON.stringify(text)}: exactly one network must be specified`,
    );
  }
  return first;
}

function parseShortItem(item: string, fail: (reason: string) => CniError): NetworkSelection {
  const slash = item.split("/");
  if (slash.length > 2) throw fail(`invalid network object ${JSON.stringify(item)} (failed at '/')`);
  const namespace = slash.length === 2 ? (slash[0] ?? "").trim() : "";
  const at = (slash.at(-1) ?? "").split("@");
  if (at.length > 2) throw fail(`invalid network object ${JSON.stringify(item)} (failed at '@')`);
  const name = (at[0] ?? "").trim();
  const ifname = (at[1] ?? "").trim();
  if (name === "") throw fail("empty network name");
  for (const part of [namespace, name]) {
    if (part !== "" && !LABEL.test(part)) {
      throw fail(`${JSON.stringify(part)} must consist of lower case alphanumeric characters or '-', and start and end with an alphanumeric character`);
    }
  }
  const selection: NetworkSelection = { name, namespace };
  if (ifname !== "") {
    if (ifname.length > MAX_IFNAME || /[\s/]/.test(ifname)) {
      throw fail(`interface name ${JSON.stringify(ifname)} must be at most ${MAX_IFNAME} characters and contain no '/' or whitespace`);
    }
    selection.interface = ifname;
  }
  return selection;
}

function parseJsonForm(text: string, fail: (reason: string) => CniError): NetworkSelection[] {
  let decoded: unknown;
  try {
    decoded = JSON.parse(text);
  } catch (err) {
    throw fail(`not JSON: ${messageOf(err)}`);
  }
  if (!Array.isArray(decoded)) throw fail(`expected a JSON array, got ${describeValue(decoded)}`);
  return decoded.map((element: unknown, index: number) => {
    if (!isJsonObject(element)) throw fail(`element ${index}: expected an object, got ${describeValue(element)}`);
    try {
      return readElement(new FieldReader(element, ErrorCode.InvalidConfig, `[${index}].`));
    } catch (err) {
      throw fail(messageOf(err));
    }
  });
}

function readElement(fields: FieldReader): NetworkSelection {
  const selection: NetworkSelection = { name: fields.requiredString("name"), namespace: fields.string("namespace") ?? "" };
  const ifname = fields.string("interface") || fields.string("interfaceRequest");
  if (ifname) selection.interface = ifname;
  const ips = fields.stringArray("ips");
  if (ips !== undefined) {
    for (const ip of ips) {
      const valid = ip.includes("/") ? tryParsePrefix(ip) !== undefined : tryParseIp(ip) !== undefined;
      if (!valid) throw fields.error(`invalid IP address or CIDR ${JSON.stringify(ip)} in "ips"`);
    }
    selection.ips = ips;
  }
  const mac = fields.string("mac");
  if (mac) {
    if (!isGoMac(mac)) fields.fail("mac", "a MAC address");
    selection.mac = mac;
  }
  const guid = fields.string("infiniband-guid");
  if (guid) {
    if (!isGoMac(guid)) fields.fail("infiniband-guid", "an InfiniBand GUID");
    selection.infinibandGUID = guid;
  }
  const portMappings = readPortMappings(fields, "portMappings");
  if (portMappings !== undefined) selection.portMappings = portMappings;
  const bandwidth = readBandwidth(fields, "bandwidth");
  if (bandwidth !== undefined) selection.bandwidth = bandwidth;
  const deviceID = fields.string("deviceID");
  if (deviceID) selection.deviceID = deviceID;
  const cniArgs = fields.object("cni-args");
  if (cniArgs !== undefined) selection.cniArgs = cniArgs;
  const defaultRoute = fields.stringArray("default-route");
  if (defaultRoute !== undefined) {
    for (const gateway of defaultRoute) {
      if (tryParseIp(gateway) === undefined) throw fields.error(`invalid IP address ${JSON.stringify(gateway)} in "default-route"`);
    }
    selection.defaultRoute = defaultRoute;
  }
  return selection;
}

/**
 * Go's `net.ParseMAC`: 6, 8 or 20 bytes as `xx:xx:...`, `xx-xx-...` or `xxxx.xxxx.xxxx...`
 * (a MAC, an EUI-64, an InfiniBand link-layer address).
 */
export function isGoMac(text: string): boolean {
  const sizes = [6, 8, 20];
  if (text[2] === ":" || text[2] === "-") {
    const separator = text[2];
    const groups = text.split(separator);
    return sizes.includes(groups.length) && groups.every((group) => /^[0-9a-fA-F]{2}$/.test(group));
  }
  if (text[4] === ".") {
    const groups = text.split(".");
    return sizes.includes(groups.length * 2) && groups.every((group) => /^[0-9a-fA-F]{4}$/.test(group));
  }
  return false;
}

// ---- network-status ----------------------------------------------------------------------------

/** One delegate's outcome, as the status is built from it. */
export interface StatusSource {
  /** The delegate's display name: `<ns>/<nad>` or the CNI config's name. */
  name: string;
  result: Result;
  /** The default network (the master delegate). */
  isDefault: boolean;
  /** The device-info file's object, if the delegate has one. */
  deviceInfo?: JsonObject;
}

/**
 * The status entries of one delegate: one per sandbox interface (one for a single-interface
 * result, none for a result without interfaces). Keys in upstream's order: name, interface, ips,
 * mac, mtu, default, dns, device-info, gateway; empty ones left out but `dns`. A default route
 * without a gateway adds nothing to `gateway` (upstream writes `"<nil>"`).
 */
export function statusEntries(source: StatusSource): JsonObject[] {
  const { result } = source;
  const interfaces = result.interfaces ?? [];
  const ips = result.ips ?? [];
  const gateways = defaultGateways(result);
  const dns = dnsJson(result.dns);
  const entry = (iface: { name?: string; mac?: string; mtu?: number } | undefined, addresses: string[], isDefault: boolean): JsonObject =>
    ordered([
      ["name", source.name],
      ["interface", iface?.name || undefined],
      ["ips", addresses.length > 0 ? addresses : undefined],
      ["mac", iface?.mac || undefined],
      ["mtu", iface?.mtu || undefined],
      ["default", isDefault || undefined],
      ["dns", dns],
      ["device-info", source.deviceInfo],
      ["gateway", gateways.length > 0 ? gateways : undefined],
    ]);

  if (interfaces.length === 1) {
    const sandboxed = interfaces.filter((iface) => iface.sandbox);
    return [
      entry(
        sandboxed.at(-1),
        ips.map((ip) => bareAddress(ip.address)),
        source.isDefault,
      ),
    ];
  }

  const gatewayIndex = source.isDefault ? (ips.find((ip) => ip.gateway !== undefined && ip.interface !== undefined)?.interface ?? -1) : -1;
  const slots: Array<{ index: number; iface: (typeof interfaces)[number]; addresses: string[]; isDefault: boolean }> = [];
  interfaces.forEach((iface, index) => {
    if (!iface.sandbox) return;
    const isDefault = source.isDefault && (gatewayIndex === -1 ? slots.length === 0 : index === gatewayIndex);
    slots.push({ index, iface, addresses: [], isDefault });
  });
  for (const ip of ips) {
    const slot = ip.interface === undefined ? slots.at(-1) : slots.find((candidate) => candidate.index === ip.interface);
    slot?.addresses.push(bareAddress(ip.address));
  }
  return slots.map((slot) => entry(slot.iface, slot.addresses, slot.isDefault));
}

/**
 * The annotation's text: each entry as Go's `json.MarshalIndent(entry, "", "    ")` writes it,
 * joined by `,` inside `[...]`.
 */
export function networkStatusText(sources: StatusSource[]): string {
  const entries = sources.flatMap(statusEntries);
  return `[${entries.map((entry) => escapeLikeGo(JSON.stringify(entry, null, 4))).join(",")}]`;
}

/** Go escapes these inside strings; they cannot appear in JSON outside strings. */
function escapeLikeGo(json: string): string {
  return json.replace(/[<>&\u2028\u2029]/g, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

function ordered(entries: ReadonlyArray<readonly [string, JsonValue | undefined]>): JsonObject {
  const out: JsonObject = {};
  for (const [key, value] of entries) if (value !== undefined) out[key] = value;
  return out;
}

/** "10.1.2.3/24" → "10.1.2.3", written as Go prints an IP. */
function bareAddress(cidr: string): string {
  const prefix = tryParsePrefix(cidr);
  return prefix ? formatIp(prefix.ip) : (cidr.split("/")[0] ?? cidr);
}

/** The gateways of routes to 0.0.0.0 or :: (any prefix length, as upstream's `isDefaultRoute`). */
function defaultGateways(result: Result): string[] {
  const gateways: string[] = [];
  for (const route of result.routes ?? []) {
    const dst = tryParsePrefix(route.dst);
    if (dst === undefined || !dst.ip.toByteArray().every((byte) => byte === 0)) continue;
    const gw = route.gw === undefined ? undefined : tryParseIp(route.gw);
    if (gw !== undefined) gateways.push(formatIp(gw));
  }
  return gateways;
}

/** Always an object (`{}` when empty), keys in upstream's order. */
function dnsJson(dns: DNS | undefined): JsonObject {
  return ordered([
    ["nameservers", dns?.nameservers?.length ? dns.nameservers : undefined],
    ["domain", dns?.domain || undefined],
    ["search", dns?.search?.length ? dns.search : undefined],
    ["options", dns?.options?.length ? dns.options : undefined],
  ]);
}
