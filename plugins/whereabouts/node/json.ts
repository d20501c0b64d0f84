/**
 * Reading back the JSON of this node's own files (the batch's requests and answers, the ledger's
 * entries, the journal's entries): decoded or undefined, then checked field by field before use,
 * never cast. A process killed while writing leaves a file or line cut short, and a file is
 * anyone's to edit: what does not check out is passed over, as each reader says.
 */
import { isJsonObject } from "../../../shared/cni/json.ts";
import type { JsonObject } from "../../../shared/cni/types.ts";

/** The decoded JSON of `text`, or undefined when it is not JSON. */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** `value` is an object whose `keys` all hold strings. */
export function hasStrings<K extends string>(value: unknown, keys: readonly K[]): value is JsonObject & Record<K, string> {
  return isJsonObject(value) && keys.every((key) => typeof value[key] === "string");
}
