/**
 * CNI results: conversion between our 1.1 model and the JSON shape of the version a request asked
 * for, both ways (printing ours, reading prevResult and IPAM answers), and the DNS section they
 * share with a config's top-level `dns`.
 */
import { type Family, familyOf, tryParseIp, tryParsePrefix } from "../ip.ts";
import { CniError, ErrorCode, quoteList } from "./errors.ts";
import { FieldReader, describeValue, isJsonObject } from "./json.ts";
import type { DNS, IPConfig, Interface, JsonObject, JsonValue, Result, Route } from "./types.ts";
import { SUPPORTED_VERSIONS } from "./version.ts";

/** Results of these versions carry `ips[].version` and always print `dns`. */
const LEGACY_RESULT_VERSIONS: readonly string[] = ["0.3.0", "0.3.1", "0.4.0"];

// ---- addresses ---------------------------------------------------------------------------------

/** "4" or "6" for an address Go's net.ParseIP would take, else undefined. */
export function ipFamily(text: string): "4" | "6" | undefined {
  const ip = tryParseIp(text);
  return ip ? familyText(familyOf(ip)) : undefined;
}

/** Like ipFamily, for `address/prefix` with the host bits allowed. */
export function cidrFamily(text: string): "4" | "6" | undefined {
  const prefix = tryParsePrefix(text);
  return prefix ? familyText(prefix.family) : undefined;
}

function familyText(family: Family): "4" | "6" {
  return family === 4 ? "4" : "6";
}

// ---- model → JSON ------------------------------------------------------------------------------

/**
 * Builds an object with keys in exactly the listed order, leaving out undefined values. Upstream
 * prints 1.x results with sorted keys and 0.x results in struct order; tests diff our output
 * against upstream's byte for byte, so every shape below lists its keys explicitly.
 */
function ordered(entries: ReadonlyArray<readonly [string, JsonValue | undefined]>): JsonObject {
  const out: JsonObject = {};
  for (const [key, value] of entries) if (value !== undefined) out[key] = value;
  return out;
}

// Upstream leaves out empty strings, zero MTUs and empty lists ("omitempty"); these mirror that.
const text = (value: string | undefined): string | undefined => (value ? value : undefined);
const nonZero = (value: number | undefined): number | undefined => (value ? value : undefined);
const list = (value: string[] | undefined): string[] | undefined => (value?.length ? value : undefined);

function interfaceJson(iface: Interface, legacy: boolean): JsonObject {
  if (legacy) {
    return ordered([
      ["name", iface.name],
      ["mac", text(iface.mac)],
      ["sandbox", text(iface.sandbox)],
    ]);
  }
  return ordered([
    ["mac", text(iface.mac)],
    ["mtu", nonZero(iface.mtu)],
    ["name", iface.name],
    ["pciID", text(iface.pciID)],
    ["sandbox", text(iface.sandbox)],
    ["socketPath", text(iface.socketPath)],
  ]);
}

function ipJson(ip: IPConfig, legacy: boolean): JsonObject {
  if (legacy) {
    const family = cidrFamily(ip.address);
    if (family === undefined) {
      throw new CniError(ErrorCode.Internal, `cannot convert result: invalid address ${describeValue(ip.address)}`);
    }
    return ordered([
      ["version", family],
      ["interface", ip.interface],
      ["address", ip.address],
      ["gateway", text(ip.gateway)],
    ]);
  }
  return ordered([
    ["address", ip.address],
    ["gateway", text(ip.gateway)],
    ["interface", ip.interface],
  ]);
}

/** `table` and `scope` are kept even when 0: 0 is meaningful for both (upstream uses pointers). */
function routeJson(route: Route, legacy: boolean): JsonObject {
  if (legacy) {
    return ordered([
      ["dst", route.dst],
      ["gw", text(route.gw)],
      ["mtu", nonZero(route.mtu)],
      ["advmss", nonZero(route.advmss)],
      ["priority", nonZero(route.priority)],
      ["table", route.table],
      ["scope", route.scope],
    ]);
  }
  return ordered([
    ["advmss", nonZero(route.advmss)],
    ["dst", route.dst],
    ["gw", text(route.gw)],
    ["mtu", nonZero(route.mtu)],
    ["priority", nonZero(route.priority)],
    ["scope", route.scope],
    ["table", route.table],
  ]);
}

function dnsJson(dns: DNS | undefined, legacy: boolean): JsonObject {
  if (legacy) {
    return ordered([
      ["nameservers", list(dns?.nameservers)],
      ["domain", text(dns?.domain)],
      ["search", list(dns?.search)],
      ["options", list(dns?.options)],
    ]);
  }
  return ordered([
    ["domain", text(dns?.domain)],
    ["nameservers", list(dns?.nameservers)],
    ["options", list(dns?.options)],
    ["search", list(dns?.search)],
  ]);
}

/** The JSON a plugin prints for `result` when the request's config said `cniVersion`. */
export function resultToVersion(result: Result, cniVersion: string): JsonObject {
  if (!SUPPORTED_VERSIONS.includes(cniVersion)) {
    throw new CniError(
      ErrorCode.IncompatibleVersion,
      `cannot convert result to version ${JSON.stringify(cniVersion)}`,
      `plugin supports ${quoteList(SUPPORTED_VERSIONS)}`,
    );
  }
  const legacy = LEGACY_RESULT_VERSIONS.includes(cniVersion);
  const interfaces = result.interfaces?.length ? result.interfaces.map((i) => interfaceJson(i, legacy)) : undefined;
  const ips = result.ips?.length ? result.ips.map((ip) => ipJson(ip, legacy)) : undefined;
  const routes = result.routes?.length ? result.routes.map((r) => routeJson(r, legacy)) : undefined;
  const dns = dnsJson(result.dns, legacy);
  if (legacy) {
    // 0.x results always carry "dns", even as {}.
    return ordered([
      ["cniVersion", cniVersion],
      ["interfaces", interfaces],
      ["ips", ips],
      ["routes", routes],
      ["dns", dns],
    ]);
  }
  return ordered([
    ["cniVersion", cniVersion],
    ["dns", Object.keys(dns).length > 0 ? dns : undefined],
    ["interfaces", interfaces],
    ["ips", ips],
    ["routes", routes],
  ]);
}

// ---- JSON → model ------------------------------------------------------------------------------

/**
 * Reads a result of any supported version (prevResult, or what an IPAM plugin printed) into our
 * model. `where` starts every error message. A result without cniVersion takes
 * `fallbackVersion` (upstream fills in the config's version for prevResult). Empty strings, lists
 * and DNS sections are dropped: they print the same as absent ones in every version.
 */
export function parseResult(value: unknown, where: string, fallbackVersion = ""): Result {
  if (!isJsonObject(value)) {
    throw new CniError(ErrorCode.DecodingFailure, `${where}: expected a JSON object, got ${describeValue(value)}`);
  }
  const top = new FieldReader(value, ErrorCode.DecodingFailure, "", `${where}: `);
  const cniVersion = top.string("cniVersion") ?? fallbackVersion;
  if (!SUPPORTED_VERSIONS.includes(cniVersion)) {
    throw top.error(`unsupported cniVersion ${JSON.stringify(cniVersion)}`, `supported versions are ${quoteList(SUPPORTED_VERSIONS)}`);
  }
  const legacy = LEGACY_RESULT_VERSIONS.includes(cniVersion);

  const result: Result = { cniVersion };
  const interfaces = top.objectArray("interfaces")?.map(readInterface) ?? [];
  const ips = top.objectArray("ips")?.map((ip) => readIpConfig(ip, legacy)) ?? [];
  const routes = top.objectArray("routes")?.map(readRoute) ?? [];
  const dnsObject = top.object("dns");
  const dns = dnsObject === undefined ? undefined : readDns(top.nested(dnsObject, "dns"));
  if (interfaces.length > 0) result.interfaces = interfaces;
  if (ips.length > 0) result.ips = ips;
  if (routes.length > 0) result.routes = routes;
  if (dns !== undefined) result.dns = dns;
  return result;
}

function readCidr(fields: FieldReader, key: string): string {
  const value = fields.requiredString(key);
  if (cidrFamily(value) === undefined) fields.fail(key, "a CIDR such as 10.1.2.3/24");
  return value;
}

function readIpAddress(fields: FieldReader, key: string): string | undefined {
  const value = fields.string(key);
  if (value && ipFamily(value) === undefined) fields.fail(key, "an IP address");
  return text(value);
}

function readInterface(fields: FieldReader): Interface {
  const iface: Interface = { name: fields.requiredString("name") };
  const mac = text(fields.string("mac"));
  const mtu = fields.integer("mtu", { min: 0 });
  const sandbox = text(fields.string("sandbox"));
  const socketPath = text(fields.string("socketPath"));
  const pciID = text(fields.string("pciID"));
  if (mac !== undefined) iface.mac = mac;
  if (mtu !== undefined) iface.mtu = mtu;
  if (sandbox !== undefined) iface.sandbox = sandbox;
  if (socketPath !== undefined) iface.socketPath = socketPath;
  if (pciID !== undefined) iface.pciID = pciID;
  return iface;
}

function readIpConfig(fields: FieldReader, legacy: boolean): IPConfig {
  const ip: IPConfig = { address: readCidr(fields, "address") };
  const gateway = readIpAddress(fields, "gateway");
  // An index past `interfaces` is kept, not refused: upstream accepts it (sbr counts such an
  // address as the interface's own), and refusing it would make a whole chain undeletable.
  const index = fields.integer("interface", { min: 0 });
  // Only 0.x results carry "version"; a 1.x reader ignores the key like any unknown one.
  if (legacy) {
    const version = fields.string("version");
    const family = cidrFamily(ip.address);
    if (version !== undefined && version !== family) {
      fields.fail("version", `"${family}" to match the address`);
    }
  }
  if (gateway !== undefined) ip.gateway = gateway;
  if (index !== undefined) ip.interface = index;
  return ip;
}

function readRoute(fields: FieldReader): Route {
  const route: Route = { dst: readCidr(fields, "dst") };
  const gw = readIpAddress(fields, "gw");
  const mtu = fields.integer("mtu", { min: 0 });
  const advmss = fields.integer("advmss", { min: 0 });
  const priority = fields.integer("priority", { min: 0 });
  const table = fields.integer("table", { min: 0 });
  const scope = fields.integer("scope", { min: 0, max: 255 });
  if (gw !== undefined) route.gw = gw;
  if (mtu !== undefined) route.mtu = mtu;
  if (advmss !== undefined) route.advmss = advmss;
  if (priority !== undefined) route.priority = priority;
  if (table !== undefined) route.table = table;
  if (scope !== undefined) route.scope = scope;
  return route;
}

/** Also validates a config's top-level `dns`; undefined when every field is empty. */
export function readDns(fields: FieldReader): DNS | undefined {
  const dns: DNS = {};
  const nameservers = list(fields.stringArray("nameservers"));
  const domain = text(fields.string("domain"));
  const search = list(fields.stringArray("search"));
  const options = list(fields.stringArray("options"));
  if (nameservers !== undefined) dns.nameservers = nameservers;
  if (domain !== undefined) dns.domain = domain;
  if (search !== undefined) dns.search = search;
  if (options !== undefined) dns.options = options;
  return Object.keys(dns).length > 0 ? dns : undefined;
}
