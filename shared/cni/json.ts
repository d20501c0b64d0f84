/**
 * Typed reading of decoded JSON. Config validation (code 7) and result parsing (code 6) share
 * these checks; only the error code and the message prefix differ.
 */
import { CniError } from "./errors.ts";
import type { JsonObject, JsonValue } from "./types.ts";

export function isJsonObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A value as it appears in an error message: JSON text, cut short so one bad key cannot flood a log. */
export function describeValue(value: unknown): string {
  const text = value === undefined ? "nothing" : JSON.stringify(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

export interface IntegerRange {
  min?: number;
  max?: number;
}

/**
 * Reads keys of one JSON object. Absent keys and `null` both read as `undefined`, as they do for
 * Go's decoder, so configs written for upstream plugins keep working.
 */
export class FieldReader {
  constructor(
    readonly obj: JsonObject,
    private readonly code: number,
    /** Put before every key in messages, e.g. "ips[0]." for a nested object. */
    private readonly path = "",
    /** Put before the whole message, e.g. "prevResult: ". */
    private readonly prefix = "",
  ) {}

  /** A reader for an object nested under this one; its keys show as `segment.key`. */
  nested(obj: JsonObject, segment: string): FieldReader {
    return new FieldReader(obj, this.code, `${this.path}${segment}.`, this.prefix);
  }

  get(key: string): JsonValue | undefined {
    const value = Object.hasOwn(this.obj, key) ? this.obj[key] : undefined;
    return value === null ? undefined : value;
  }

  /** Throws `invalid "<key>": expected <expected>, got <value>`. */
  fail(key: string, expected: string, label?: string): never {
    const got = describeValue(this.get(key));
    throw this.error(`invalid "${label ?? this.path + key}": expected ${expected}, got ${got}`);
  }

  error(message: string, details = ""): CniError {
    return new CniError(this.code, `${this.prefix}${message}`, details);
  }

  string(key: string, label?: string): string | undefined {
    const value = this.get(key);
    if (value === undefined || typeof value === "string") return value;
    return this.fail(key, "a string", label);
  }

  requiredString(key: string, label?: string): string {
    const value = this.string(key, label);
    if (value === undefined || value === "") return this.fail(key, "a non-empty string", label);
    return value;
  }

  integer(key: string, range: IntegerRange & { label?: string } = {}): number | undefined {
    const value = this.get(key);
    if (value === undefined) return undefined;
    const { min, max, label } = range;
    const expected =
      min !== undefined && max !== undefined
        ? `an integer from ${min} to ${max}`
        : min !== undefined
          ? `an integer >= ${min}`
          : max !== undefined
            ? `an integer <= ${max}`
            : "an integer";
    if (typeof value !== "number" || !Number.isSafeInteger(value)) return this.fail(key, expected, label);
    if ((min !== undefined && value < min) || (max !== undefined && value > max)) {
      return this.fail(key, expected, label);
    }
    return value;
  }

  boolean(key: string, label?: string): boolean | undefined {
    const value = this.get(key);
    if (value === undefined || typeof value === "boolean") return value;
    return this.fail(key, "true or false", label);
  }

  object(key: string, label?: string): JsonObject | undefined {
    const value = this.get(key);
    if (value === undefined || isJsonObject(value)) return value;
    return this.fail(key, "an object", label);
  }

  array(key: string, label?: string): JsonValue[] | undefined {
    const value = this.get(key);
    if (value === undefined || Array.isArray(value)) return value;
    return this.fail(key, "an array", label);
  }

  stringArray(key: string, label?: string): string[] | undefined {
    const value = this.array(key, label);
    if (value === undefined) return undefined;
    const strings: string[] = [];
    for (const item of value) {
      if (typeof item !== "string") return this.fail(key, "an array of strings", label);
      strings.push(item);
    }
    return strings;
  }

  /**
   * A reader that finds each of `names` as Go's encoding/json does: the exact key, else the
   * first key equal to it in any letter case (containerd sends `HostPort` for `hostPort`).
   */
  goKeys(names: readonly string[]): FieldReader {
    const obj: JsonObject = { ...this.obj };
    for (const name of names) {
      if (Object.hasOwn(obj, name)) continue;
      const lower = name.toLowerCase();
      const match = Object.keys(this.obj).find((key) => key.toLowerCase() === lower);
      if (match !== undefined) obj[name] = this.obj[match] ?? null;
    }
    return new FieldReader(obj, this.code, this.path, this.prefix);
  }

  /** Each element of an array of objects, with a reader whose messages say `key[i].field`. */
  objectArray(key: string): FieldReader[] | undefined {
    const value = this.array(key);
    if (value === undefined) return undefined;
    return value.map((item, index) => {
      if (!isJsonObject(item)) {
        throw this.error(`invalid "${this.path}${key}[${index}]": expected an object, got ${describeValue(item)}`);
      }
      return this.nested(item, `${key}[${index}]`);
    });
  }
}

/**
 * JSON text as Go's `json.Marshal` writes a decoded value: compact, every object's keys sorted,
 * and `<`, `>`, `&`, U+2028, U+2029 escaped. libcni builds delegate stdin and its result cache this
 * way, so files we write read the same as Go-written ones.
 */
export function marshalLikeGo(value: JsonValue): string {
  if (Array.isArray(value)) return `[${value.map(marshalLikeGo).join(",")}]`;
  if (isJsonObject(value)) {
    const keys = Object.keys(value).sort();
    return `{${keys.map((key) => `${goString(key)}:${marshalLikeGo(value[key] ?? null)}`).join(",")}}`;
  }
  return typeof value === "string" ? goString(value) : JSON.stringify(value);
}

const GO_ESCAPES: Record<string, string> = {
  "<": "\\u003c",
  ">": "\\u003e",
  "&": "\\u0026",
  "\u2028": "\\u2028",
  "\u2029": "\\u2029",
};

function goString(text: string): string {
  return JSON.stringify(text).replace(/[<>&\u2028\u2029]/g, (char) => GO_ESCAPES[char] ?? char);
}
