/**
 * CNI versions: which ones we speak and which verbs each allows (containernetworking/cni
 * `pkg/skel/skel.go` and `pkg/version/version.go`). Results in the shape of each version are
 * ./result.ts's.
 */
import { CniError, ErrorCode, quoteList } from "./errors.ts";
import type { JsonObject, Verb } from "./types.ts";

// whereabouts' config still takes readDns from here; the rest of the tree from ./result.ts.
export { readDns } from "./result.ts";

/** 0.1.0/0.2.0 are left out on purpose: their ip4/ip6 result shape is not worth carrying. */
export const SUPPORTED_VERSIONS: readonly string[] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
export const LATEST = "1.1.0";

/** The spec reads a config without cniVersion as 0.1.0, which we then reject. */
const IMPLIED_VERSION = "0.1.0";

/** The oldest config version that may use each verb; verbs not listed have no minimum. */
const MINIMUM_VERSION: Partial<Record<Verb, string>> = { CHECK: "0.4.0", GC: "1.1.0", STATUS: "1.1.0" };

function parseVersion(version: string): [number, number, number] {
  const text = version === "" ? IMPLIED_VERSION : version;
  const parts = text.split(".");
  if (parts.length > 3 || !parts.every((part) => /^\d{1,9}$/.test(part))) {
    throw new CniError(ErrorCode.DecodingFailure, `invalid version ${JSON.stringify(version)}: expected up to three dot-separated numbers`);
  }
  const [major = 0, minor = 0, patch = 0] = parts.map(Number);
  return [major, minor, patch];
}

/** Negative, zero or positive as `a` is older than, equal to or newer than `b`. "1.1" equals "1.1.0". */
export function compareVersions(a: string, b: string): number {
  const left = parseVersion(a);
  const right = parseVersion(b);
  for (let i = 0; i < 3; i++) {
    const diff = (left[i] ?? 0) - (right[i] ?? 0);
    if (diff !== 0) return Math.sign(diff);
  }
  return 0;
}

/** Throws the error upstream skel gives when the config's cniVersion cannot be served for `verb`. */
export function checkConfigVersion(verb: Verb, cniVersion: string): void {
  if (verb === "VERSION") return;
  const minimum = MINIMUM_VERSION[verb];
  if (minimum !== undefined) {
    if (compareVersions(cniVersion, minimum) < 0) {
      throw new CniError(ErrorCode.IncompatibleVersion, `config version does not allow ${verb}`);
    }
    if (compareVersions(cniVersion, LATEST) > 0) {
      throw new CniError(ErrorCode.IncompatibleVersion, `plugin version does not allow ${verb}`);
    }
  }
  // Only exact strings count: "1.0" compares equal to "1.0.0" above, but is still refused here.
  if (!SUPPORTED_VERSIONS.includes(cniVersion)) {
    throw new CniError(
      ErrorCode.IncompatibleVersion,
      "incompatible CNI versions",
      `config is ${JSON.stringify(cniVersion || IMPLIED_VERSION)}, plugin supports ${quoteList(SUPPORTED_VERSIONS)}`,
    );
  }
}

/** The VERSION verb's answer. */
export function versionOutput(): JsonObject {
  return { cniVersion: LATEST, supportedVersions: [...SUPPORTED_VERSIONS] };
}
