/**
 * The result model, always held in the newest (1.1.0) shape; shared/cni/result.ts converts it to
 * and from the shape of whatever cniVersion a request carries.
 */
export interface Interface {
  name: string;
  mac?: string;
  mtu?: number;
  /** CNI_NETNS as given, for interfaces inside the container; absent for host interfaces. */
  sandbox?: string;
  socketPath?: string;
  pciID?: string;
}

export interface IPConfig {
  /** Index into `interfaces`. */
  interface?: number;
  /** CIDR with the host bits kept, e.g. "10.1.2.3/24". */
  address: string;
  gateway?: string;
}

export interface Route {
  dst: string;
  gw?: string;
  mtu?: number;
  advmss?: number;
  priority?: number;
  table?: number;
  /** 0 global, 253 link, 254 host. */
  scope?: number;
}

export interface DNS {
  nameservers?: string[];
  domain?: string;
  search?: string[];
  options?: string[];
}

export interface Result {
  cniVersion: string;
  interfaces?: Interface[];
  ips?: IPConfig[];
  routes?: Route[];
  dns?: DNS;
}

/** A JSON object as decoded from stdin, before a plugin validates the keys it knows. */
export type JsonObject = { [key: string]: JsonValue };
export type JsonValue = string | number | boolean | null | JsonValue[] | JsonObject;

export type Verb = "ADD" | "DEL" | "CHECK" | "STATUS" | "GC" | "VERSION";

/** The keys every plugin's configuration shares (upstream's `NetConf`, containernetworking/cni `pkg/types/types.go`). */
export interface NetConf {
  cniVersion: string;
  name: string;
  type: string;
  ipam?: { type: string } & JsonObject;
  dns?: DNS;
  runtimeConfig?: JsonObject;
  args?: JsonObject;
  prevResult?: Result;
  /** The whole decoded object, for plugin-specific keys. */
  raw: JsonObject;
  /** stdin exactly as received, handed on to delegates unchanged. */
  bytes: string;
}

/** One container attachment, as GC's `cni.dev/valid-attachments` lists them. */
export interface Attachment {
  containerID: string;
  ifname: string;
}

/** Everything the dispatcher hands to a verb. */
export interface CmdArgs {
  command: Verb;
  /** Empty for verbs that do not need it (STATUS, GC, VERSION) when it was not given. */
  containerId: string;
  /** Empty when the runtime gave none (allowed for DEL). */
  netns: string;
  ifName: string;
  /** CNI_ARGS, raw. */
  args: string;
  /** CNI_PATH split on ':', empty entries dropped. */
  path: string[];
  conf: NetConf;
}
