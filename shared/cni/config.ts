/**
 * The network configuration on stdin (containernetworking/cni `SPEC.md`, read as upstream's
 * `pkg/skel/skel.go` does): the keys every plugin shares, plus typed accessors plugins use for
 * their own keys. Bad values are code 7 (invalid config) with a message naming the key; only
 * unreadable JSON and a bad prevResult are code 6 (decoding).
 */
import { messageOf } from "../errors.ts";
import { CniError, ErrorCode, quoteList } from "./errors.ts";
import { CONTAINER_ID_PATTERN } from "./env.ts";
import { FieldReader, type IntegerRange, describeValue, isJsonObject } from "./json.ts";
import type { Attachment, JsonObject, NetConf } from "./types.ts";
import { parseResult, readDns } from "./result.ts";

/**
 * `lenientPrevResult`: a prevResult that does not parse is dropped instead of refused. DEL uses it:
 * a runtime's cached result it cannot read must not make the attachment undeletable.
 */
export function parseNetConf(stdin: string, options: { lenientPrevResult?: boolean } = {}): NetConf {
  let decoded: unknown;
  try {
    decoded = JSON.parse(stdin);
  } catch (err) {
    const reason = messageOf(err);
    throw new CniError(ErrorCode.DecodingFailure, `error parsing network configuration: ${reason}`);
  }
  if (!isJsonObject(decoded)) {
    throw new CniError(ErrorCode.DecodingFailure, `error parsing network configuration: expected a JSON object, got ${describeValue(decoded)}`);
  }

  const fields = new FieldReader(decoded, ErrorCode.InvalidConfig);
  const name = fields.string("name");
  if (name === undefined || name === "") {
    throw new CniError(ErrorCode.InvalidConfig, "missing network name");
  }
  // The name ends up in file names (result cache, IPAM state), hence the container-ID rules.
  if (!CONTAINER_ID_PATTERN.test(name)) {
    throw new CniError(ErrorCode.InvalidConfig, "invalid characters found in network name", name);
  }

  const cniVersion = fields.string("cniVersion") ?? "";
  const conf: NetConf = {
    cniVersion,
    name,
    type: fields.string("type") ?? "",
    raw: decoded,
    bytes: stdin,
  };

  // `"ipam": {}` is common in real configs and means "no IPAM" upstream, so an IPAM section
  // without a type is left out rather than refused.
  const ipam = fields.object("ipam");
  const ipamType = ipam && fields.nested(ipam, "ipam").string("type");
  if (ipam !== undefined && ipamType) conf.ipam = { ...ipam, type: ipamType };

  const dnsObject = fields.object("dns");
  const dns = dnsObject && readDns(fields.nested(dnsObject, "dns"));
  if (dns !== undefined) conf.dns = dns;

  const runtimeConfig = fields.object("runtimeConfig");
  if (runtimeConfig !== undefined) conf.runtimeConfig = runtimeConfig;
  const args = fields.object("args");
  if (args !== undefined) conf.args = args;

  const prevResult = fields.get("prevResult");
  if (prevResult !== undefined) {
    try {
      conf.prevResult = parseResult(prevResult, "prevResult", cniVersion);
    } catch (err) {
      if (!options.lenientPrevResult) throw err;
    }
  }
  return conf;
}

/** The key GC's stdin lists the still-valid attachments under (spec 1.1 final). */
export const VALID_ATTACHMENTS_KEY = "cni.dev/valid-attachments";
/** The same list's name in the spec-v1.1.0 tag; libcni sends both. */
export const LEGACY_ATTACHMENTS_KEY = "cni.dev/attachments";

/**
 * The attachments a GC request says are still in use. Absent means none: the runtime (cnitool
 * gc, for one) wants everything released.
 */
export function gcAttachments(raw: JsonObject): Attachment[] {
  const fields = reader(raw);
  const key = fields.get(VALID_ATTACHMENTS_KEY) !== undefined ? VALID_ATTACHMENTS_KEY : LEGACY_ATTACHMENTS_KEY;
  const entries = fields.objectArray(key) ?? [];
  return entries.map((entry) => ({
    containerID: entry.requiredString("containerID"),
    ifname: entry.requiredString("ifname"),
  }));
}

// ---- accessors for plugin-specific keys --------------------------------------------------------
// Each returns undefined for an absent (or null) key and throws code 7 naming the key and the bad
// value otherwise. `label` replaces the key in messages, e.g. "ipam.range" for a nested key.

export function optionalString(obj: JsonObject, key: string, label?: string): string | undefined {
  return reader(obj).string(key, label);
}

export function requiredString(obj: JsonObject, key: string, label?: string): string {
  return reader(obj).requiredString(key, label);
}

export function optionalInteger(obj: JsonObject, key: string, range: IntegerRange & { label?: string } = {}): number | undefined {
  return reader(obj).integer(key, range);
}

/** Only JSON booleans: the strings "true"/"false" are refused, as upstream's decoder does. */
export function optionalBoolean(obj: JsonObject, key: string, label?: string): boolean | undefined {
  return reader(obj).boolean(key, label);
}

export function optionalObject(obj: JsonObject, key: string, label?: string): JsonObject | undefined {
  return reader(obj).object(key, label);
}

export function optionalStringArray(obj: JsonObject, key: string, label?: string): string[] | undefined {
  return reader(obj).stringArray(key, label);
}

/**
 * A string that must be one of `allowed`; `fallback` when absent or empty. With a `label` the
 * error reads `unknown <label> "foo"` (upstream's style for enums such as macvlan's mode).
 */
export function oneOf<T extends string>(obj: JsonObject, key: string, allowed: readonly T[], fallback: T, label?: string): T {
  const value = reader(obj).string(key, label);
  if (value === undefined || value === "") return fallback;
  const match = allowed.find((candidate) => candidate === value);
  if (match !== undefined) return match;
  const message = label ? `unknown ${label} ${JSON.stringify(value)}` : `invalid "${key}": expected one of ${quoteList(allowed)}, got ${JSON.stringify(value)}`;
  throw new CniError(ErrorCode.InvalidConfig, message, label ? `expected one of ${quoteList(allowed)}` : "");
}

function reader(obj: JsonObject): FieldReader {
  return new FieldReader(obj, ErrorCode.InvalidConfig);
}
