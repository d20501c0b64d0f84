/**
 * The CNI_* environment variables, validated per verb the way upstream skel does
 * (containernetworking/cni `pkg/skel/skel.go`).
 */
import { CniError, ErrorCode } from "./errors.ts";
import type { CmdArgs, Verb } from "./types.ts";

/** What the environment says about a request: everything the verbs get but the config. */
export type Environment = Omit<CmdArgs, "conf">;

const VERBS: readonly Verb[] = ["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"];

export const CONTAINER_ID_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

/** Linux's IFNAMSIZ (16) minus the terminating NUL. */
const MAX_INTERFACE_NAME_BYTES = 15;

type Variable = "CNI_COMMAND" | "CNI_CONTAINERID" | "CNI_NETNS" | "CNI_IFNAME" | "CNI_ARGS" | "CNI_PATH";

/**
 * Which verbs require each variable, in the order upstream lists missing ones. CNI_COMMAND is
 * handled before this table (an unset command is not an error), and CNI_ARGS is never required.
 */
const REQUIRED_BY: ReadonlyArray<readonly [Variable, readonly Verb[]]> = [
  ["CNI_CONTAINERID", ["ADD", "DEL", "CHECK"]],
  ["CNI_NETNS", ["ADD", "CHECK"]],
  ["CNI_IFNAME", ["ADD", "DEL", "CHECK"]],
  ["CNI_ARGS", []],
  // The spec calls CNI_PATH optional except for GC; upstream requires it for all but VERSION.
  ["CNI_PATH", ["ADD", "DEL", "CHECK", "STATUS", "GC"]],
];

const VALIDATORS: Partial<Record<Variable, (value: string) => void>> = {
  CNI_CONTAINERID: validateContainerId,
  CNI_IFNAME: validateInterfaceName,
};

/**
 * Reads and validates the CNI_* variables. Returns null when CNI_COMMAND is unset or empty: the
 * binary was started by hand, not by a runtime, and the caller prints its "about" text instead.
 * An empty variable counts as missing, as upstream treats it.
 */
export function readEnvironment(env: Record<string, string | undefined>): Environment | null {
  const command = env.CNI_COMMAND ?? "";
  if (command === "") return null;
  if (!isVerb(command)) {
    throw new CniError(ErrorCode.InvalidEnvironment, `unknown CNI_COMMAND: ${command}`);
  }

  // Upstream validates a present value as soon as it reaches it, but reports missing ones only
  // after the whole pass; so a bad value wins over a missing variable wherever either sits.
  const missing: Variable[] = [];
  for (const [name, verbs] of REQUIRED_BY) {
    if (!verbs.includes(command)) continue;
    const value = env[name] ?? "";
    if (value === "") missing.push(name);
    else VALIDATORS[name]?.(value);
  }
  if (missing.length > 0) {
    throw new CniError(ErrorCode.InvalidEnvironment, `required env variables [${missing.join(",")}] missing`);
  }

  return {
    command,
    containerId: env.CNI_CONTAINERID ?? "",
    netns: env.CNI_NETNS ?? "",
    ifName: env.CNI_IFNAME ?? "",
    args: env.CNI_ARGS ?? "",
    path: (env.CNI_PATH ?? "").split(":").filter((dir) => dir !== ""),
  };
}

function isVerb(value: string): value is Verb {
  return (VERBS as readonly string[]).includes(value);
}

export function validateContainerId(id: string): void {
  if (!CONTAINER_ID_PATTERN.test(id)) {
    throw new CniError(ErrorCode.InvalidEnvironment, "invalid characters in containerID", id);
  }
}

/** The kernel's rules for a link name, checked before anything touches a namespace. */
export function validateInterfaceName(name: string): void {
  if (name === "") {
    throw new CniError(ErrorCode.InvalidEnvironment, "interface name is empty");
  }
  // The kernel limit is in bytes, so a short name of multi-byte characters can still be too long.
  if (new TextEncoder().encode(name).length > MAX_INTERFACE_NAME_BYTES) {
    throw new CniError(
      ErrorCode.InvalidEnvironment,
      "interface name is too long",
      `interface name should be less than ${MAX_INTERFACE_NAME_BYTES + 1} characters`,
    );
  }
  if (name === "." || name === "..") {
    throw new CniError(ErrorCode.InvalidEnvironment, "interface name is . or ..");
  }
  // \u0085 (next line) counts as whitespace for upstream but not for JavaScript's \s.
  if (/[/:\s\u0085]/.test(name)) {
    throw new CniError(ErrorCode.InvalidEnvironment, "interface name contains / or : or whitespace characters");
  }
}
