/**
 * CNI_ARGS: `K=V;K2=V2`, as upstream's `LoadArgs` reads it (containernetworking/cni
 * `pkg/types/args.go`). Keys are matched case-sensitively, and an unknown key is an error unless
 * IgnoreUnknown is true: upstream plugins behave this way, and runtimes (kubelet, multus) add
 * IgnoreUnknown=1 when they pass keys a plugin may not know.
 */
import { CniError, ErrorCode, quoteList } from "./errors.ts";

const ARG_IGNORE_UNKNOWN = "IgnoreUnknown";
export const ARG_MAC = "MAC";
export const ARG_IP = "IP";
export const ARG_GATEWAY = "GATEWAY";
export const ARG_K8S_POD_NAMESPACE = "K8S_POD_NAMESPACE";
export const ARG_K8S_POD_NAME = "K8S_POD_NAME";
const ARG_K8S_POD_INFRA_CONTAINER_ID = "K8S_POD_INFRA_CONTAINER_ID";
const ARG_K8S_POD_UID = "K8S_POD_UID";

/** The keys kubelet passes to every plugin. */
export const K8S_ARGS: readonly string[] = [ARG_K8S_POD_NAMESPACE, ARG_K8S_POD_NAME, ARG_K8S_POD_INFRA_CONTAINER_ID, ARG_K8S_POD_UID];

/**
 * Parses CNI_ARGS, keeping only the `known` keys (IgnoreUnknown is always known). When a key
 * repeats, the last value wins. Values may be empty (`K=`).
 */
export function parseCniArgs(raw: string, known: readonly string[]): Map<string, string> {
  const values = new Map<string, string>();
  if (raw === "") return values;

  const unknown: string[] = [];
  let ignoreUnknown = false;
  for (const pair of raw.split(";")) {
    const parts = pair.split("=");
    if (parts.length !== 2) {
      throw new CniError(ErrorCode.InvalidConfig, `ARGS: invalid pair ${JSON.stringify(pair)}`);
    }
    const [key = "", value = ""] = parts;
    if (key === ARG_IGNORE_UNKNOWN) ignoreUnknown = parseFlag(pair, value);
    if (key === ARG_IGNORE_UNKNOWN || known.includes(key)) values.set(key, value);
    else unknown.push(pair);
  }
  if (unknown.length > 0 && !ignoreUnknown) {
    throw new CniError(ErrorCode.InvalidConfig, `ARGS: unknown args ${quoteList(unknown)}`);
  }
  return values;
}

/** Upstream's boolean for CNI_ARGS: 1/0 or true/false in any letter case. */
function parseFlag(pair: string, value: string): boolean {
  const word = value.toLowerCase();
  if (word === "1" || word === "true") return true;
  if (word === "0" || word === "false") return false;
  throw new CniError(ErrorCode.InvalidConfig, `ARGS: invalid value in pair ${JSON.stringify(pair)}`, "expected 1, 0, true or false");
}
