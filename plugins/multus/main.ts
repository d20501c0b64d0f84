/**
 * The multus thin plugin, a drop-in for upstream multus v4.3.0 `cmd/multus` (`pkg/multus`): each
 * verb loads the conf, opens the Kubernetes API it names, and runs the pod's delegates through
 * shared/cni/delegate.ts (libcni's behaviour). ADD plans the delegates (cluster network, default
 * networks, the pod's annotations), caches the plan, runs them in order and undoes them all on any
 * failure; DEL runs what the cache (or, failing that, libcni's result cache) says, in reverse;
 * CHECK, STATUS and GC go beyond upstream (docs/multus.md).
 */
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { K8S_ARGS, parseCniArgs } from "../../shared/cni/args.ts";
import {
  type DelegateOptions,
  type RuntimeConf,
  addNetworkList,
  checkNetworkList,
  delNetworkList,
  gcNetworkList,
  searchPath,
  statusNetworkList,
} from "../../shared/cni/delegate.ts";
import { CONTAINER_ID_PATTERN } from "../../shared/cni/env.ts";
import { CniError, ErrorCode } from "../../shared/cni/errors.ts";
import { type NetworkList, parseNetwork } from "../../shared/cni/netlist.ts";
import { type CacheEntry, listCachedAttachments, readCacheEntry } from "../../shared/cni/result-cache.ts";
import type { PluginVerbs } from "../../shared/cni/skel.ts";
import type { Attachment, CmdArgs, Result } from "../../shared/cni/types.ts";
import { messageOf } from "../../shared/errors.ts";
import { type StatusSource, networkStatusText } from "./annotations.ts";
import { MultusApi, type Pod, isStaticPod } from "./api.ts";
import { type CachedDelegate, podDelegatesFromCache, readScratchCache, removeScratchCache, writeScratchCache } from "./cache.ts";
import { type MultusConfig, loadMultusConfig } from "./config.ts";
import { type Invocation, type PodArgs, type PodDelegate, planDelegates, runtimeConfFor } from "./delegates.ts";
import { copyDeviceInfo, readDeviceInfo, removeDeviceInfo } from "./devinfo.ts";
import { type MultusLog, openMultusLog } from "./log.ts";
import { delegateFromConfig } from "./nad.ts";
import { type DeviceSource, type Resolution, auxiliaryChain, resolveBase, resolvePodNetworks } from "./networks.ts";
import { kubeletDevices } from "./devices.ts";
import { applyRouteChange, requireFreeName } from "./kernel.ts";
import { rewriteCachedRoutes, routeChangeOf } from "./routes.ts";

/** The Kubernetes calls of one invocation (upstream's client: a one-minute request timeout). */
const API_TIME_MS = 60_000;
/** After a failure, the rollback and its report get this much more time. */
const CLEANUP_TIME_MS = 10_000;
/** upstream `GetReadinessIndicatorFile`: a 1 s poll for 45 s. */
const READINESS_POLL_MS = 1000;
const READINESS_WAIT_MS = 45_000;
/**
 * GC leaves alone a container whose multus cache is younger than this: its ADD may still be
 * running, and the runtime lists an attachment only once it is set up. Longer than any ADD lives
 * (kubelet's runtime request timeout is 2 minutes).
 */
const GC_GRACE_MS = 10 * 60_000;

/** One invocation's context. */
interface Request {
  args: CmdArgs;
  config: MultusConfig;
  log: MultusLog;
  api: MultusApi | undefined;
  pod: PodArgs;
  options: DelegateOptions;
  devices: DeviceSource;
}

/** An event to write on the pod once the work is done. */
interface PendingEvent {
  type: "Normal" | "Warning";
  reason: string;
  message: string;
}

export const multus: PluginVerbs = {
  name: "multus",
  keepsResultVersion: true,

  add: (args) => withRequest(args, add),
  del: (args) => withRequest(args, del),
  check: (args) => withRequest(args, check),
  status: (args) => withRequest(args, status),
  gc: (args, valid) => withRequest(args, (req) => gc(req, valid)),
};

async function withRequest<T>(args: CmdArgs, work: (req: Request) => Promise<T>): Promise<T> {
  const config = loadMultusConfig(args.conf.bytes);
  const log = openMultusLog({ file: config.logFile, level: config.logLevel, toStderr: config.logToStderr, rotation: config.logOptions });
  if (config.unknownLogLevel !== undefined) log.error(`unknown logLevel ${JSON.stringify(config.unknownLogLevel)}, keeping "panic"`);
  const api = await MultusApi.open(config.kubeconfig, Date.now() + API_TIME_MS);
  const req: Request = {
    args,
    config,
    log,
    api,
    pod: podArgsOf(args),
    options: { path: searchPath(config.binDir, args.path.join(":")) },
    devices: kubeletDevices(),
  };
  try {
    return await work(req);
  } catch (err) {
    const error = err instanceof CniError ? err : new CniError(ErrorCode.Internal, messageOf(err));
    log.error(`${args.command} ${args.containerId}: ${error.message}`);
    throw error;
  } finally {
    api?.close();
  }
}

function podArgsOf(args: CmdArgs): PodArgs {
  const values = parseCniArgs(args.args, K8S_ARGS);
  return {
    namespace: values.get("K8S_POD_NAMESPACE") ?? "",
    name: values.get("K8S_POD_NAME") ?? "",
    infraContainerId: values.get("K8S_POD_INFRA_CONTAINER_ID") ?? "",
    uid: values.get("K8S_POD_UID") ?? "",
  };
}

// ---- ADD ---------------------------------------------------------------------------------------

async function add(req: Request): Promise<Result> {
  const { args, config, api, log } = req;
  await waitForReadiness(config.readinessIndicatorFile);
  let pod: Pod | undefined;
  if (api !== undefined) {
    const found = await api.pod(req.pod.namespace, req.pod.name);
    if ("gone" in found) {
      log.verbose(`pod ${req.pod.namespace}/${req.pod.name} not found: an empty result, as upstream (a pod deleted before its sandbox)`);
      return emptyResult(args, config.cniVersion);
    }
    pod = found.pod;
    checkUid(req, pod);
  }
  const events: PendingEvent[] = [];
  const delegates = await planPod(req, pod, events, true);
  writeScratchCache(config.cniDir, args.containerId, delegates);

  const invocation = invocationOf(req);
  const added: PodDelegate[] = [];
  const statuses: StatusSource[] = [];
  let master: Result | undefined;
  let failing: PodDelegate | undefined;
  try {
    for (const delegate of delegates) {
      failing = delegate;
      requireFreeName(args.netns, delegate.ifName, delegate);
      const copyProblem = copyDeviceInfo(delegate, args.containerId);
      if (copyProblem !== undefined) log.debug(`device-info of ${delegate.conf.name} not copied: ${copyProblem}`);
      added.push(delegate);
      const result = await addNetworkList(delegate.conf.list, runtimeConfFor(invocation, delegate, true), req.options);
      log.verbose(
        `Add: ${req.pod.namespace}:${req.pod.name}:${pod?.metadata.uid ?? "unknownUID"}:${delegate.conf.name}(${delegate.conf.list.name}):${delegate.ifName} ${JSON.stringify(result)}`,
      );
      if (delegate.master || master === undefined) master = result;
      if (result.interfaces !== undefined || result.ips !== undefined) {
        const ips = (result.ips ?? []).map((ip) => ip.address);
        events.push({ type: "Normal", reason: "AddedInterface", message: `Add ${delegate.ifName} [${ips.join(" ")}] from ${delegate.conf.name}` });
        const change = routeChangeOf(delegate);
        if (change !== undefined) {
          applyRouteChange(args.netns, delegate.ifName, change);
          rewriteCachedRoutes(config.cniDir, delegate.conf.list.name, args.containerId, delegate.ifName, change);
        }
      }
      const deviceInfo = readDeviceInfo(delegate, args.containerId);
      statuses.push({ name: delegate.conf.name, result, isDefault: delegate.master, ...(deviceInfo ? { deviceInfo } : {}) });
    }
    failing = undefined;
    if (api !== undefined && pod !== undefined && statuses.length > 0) {
      await api.writeNetworkStatus(pod, req.pod.uid, networkStatusText(statuses));
    }
  } catch (err) {
    const error = addFailure(req, failing, err);
    api?.extendDeadline(Date.now() + CLEANUP_TIME_MS);
    const clean = await rollBack(req, invocation, added);
    if (clean) removeScratchCache(config.cniDir, args.containerId);
    events.push({ type: "Warning", reason: "ErrorAddingInterface", message: error.message });
    await writeEvents(req, pod, events);
    throw error;
  }
  await writeEvents(req, pod, events);
  // Only an empty plan gets here without a result; planPod refuses one.
  return master ?? emptyResult(args, config.cniVersion);
}

/** The pod's delegates in order, every network resolved. `add`: NoNetworkFound events are queued. */
async function planPod(req: Request, pod: Pod | undefined, events: PendingEvent[], add: boolean): Promise<PodDelegate[]> {
  const { config, api } = req;
  if (api === undefined && config.clusterNetwork !== "" && config.delegates.length === 0 && !config.clusterNetwork.includes("/")) {
    throw new CniError(
      ErrorCode.InvalidConfig,
      `clusterNetwork ${JSON.stringify(config.clusterNetwork)} names a network, which needs Kubernetes: set "kubeconfig"`,
    );
  }
  const resolution: Resolution = {
    config,
    api,
    pod,
    devices: req.devices,
    noNetworkFound: async (namespace, name, reason) => {
      if (add && pod !== undefined) {
        events.push({
          type: "Warning",
          reason: "NoNetworkFound",
          message: `cannot find a network-attachment-definition (${name}) in namespace (${namespace}): ${reason}`,
        });
      }
    },
  };
  const base = await resolveBase(resolution);
  let podNetworks: Awaited<ReturnType<typeof resolvePodNetworks>>;
  try {
    podNetworks = await resolvePodNetworks(resolution);
  } catch (err) {
    // The NoNetworkFound event must reach the pod even though ADD stops here.
    if (add) await writeEvents(req, pod, events.splice(0));
    throw prefixed(req, err, "error loading k8s delegates k8s args: ");
  }
  const auxiliary = auxiliaryChain(config);
  const delegates = planDelegates(
    config,
    {
      ...base,
      ...podNetworks,
      ...(pod !== undefined ? { podNamespace: pod.metadata.namespace } : {}),
      ...(auxiliary !== undefined ? { auxiliary } : {}),
    },
    req.args.ifName,
  );
  if (delegates.length === 0) throw new CniError(ErrorCode.InvalidConfig, "no delegates to run");
  return delegates;
}

/** upstream: a UID from the runtime that is not the API's is refused (static pods excepted). */
function checkUid(req: Request, pod: Pod): void {
  if (req.pod.uid === "" || pod.metadata.uid === req.pod.uid || isStaticPod(pod)) return;
  throw prefixed(
    req,
    new CniError(ErrorCode.InvalidConfig, `expected pod UID ${JSON.stringify(req.pod.uid)} but got ${JSON.stringify(pod.metadata.uid)} from Kube API`),
    "",
  );
}

/** The failure as the runtime sees it: which pod, network and plugin, with the delegate's code. */
function addFailure(req: Request, delegate: PodDelegate | undefined, err: unknown): CniError {
  if (delegate === undefined) return prefixed(req, err, "");
  const network = delegate.conf.name;
  const plugin = delegate.conf.list.plugins.map((p) => p.type).join(",");
  const { namespace, name, uid } = req.pod;
  const code = err instanceof CniError ? err.code : ErrorCode.Internal;
  const details = err instanceof CniError ? err.details : "";
  return new CniError(
    code,
    `[${namespace}/${name}/${uid}:${network}]: error adding container to network ${JSON.stringify(network)} (plugin ${plugin}): ${messageOf(err)}`,
    details,
  );
}

/** DELs the delegates already (or partly) added, last first. True when every DEL succeeded. */
async function rollBack(req: Request, invocation: Invocation, added: readonly PodDelegate[]): Promise<boolean> {
  let clean = true;
  for (const delegate of [...added].reverse()) {
    try {
      await delNetworkList(delegate.conf.list, runtimeConfFor(invocation, delegate, false), req.options);
      removeDeviceInfo(delegate, req.args.containerId);
    } catch (err) {
      clean = false;
      req.log.error(`rollback: DEL of ${delegate.conf.name} on ${delegate.ifName} failed, kept for the runtime's DEL: ${messageOf(err)}`);
    }
  }
  return clean;
}

async function writeEvents(req: Request, pod: Pod | undefined, events: readonly PendingEvent[]): Promise<void> {
  if (req.api === undefined || pod === undefined) return;
  for (const event of events) {
    try {
      await req.api.event(pod, event.type, event.reason, event.message);
    } catch (err) {
      req.log.error(`event ${event.reason} on pod ${pod.metadata.namespace}/${pod.metadata.name} not written: ${messageOf(err)}`);
    }
  }
}

/** upstream `emptyCNIResult`: for a pod that no longer exists. */
function emptyResult(args: CmdArgs, cniVersion: string): Result {
  return { cniVersion, interfaces: [{ name: args.ifName, sandbox: args.netns }], ips: [{ address: "0.0.0.0/0", gateway: "0.0.0.0" }] };
}

// ---- DEL ---------------------------------------------------------------------------------------

/**
 * Never fails for a missing pod, NAD, API or netns: the delegates come from the scratch cache,
 * else from libcni's result cache (every delegate that was added has an entry), else, for a known
 * pod, from its annotations as now. Delegates' failures are collected and reported together.
 */
async function del(req: Request): Promise<void> {
  const { args, config, log } = req;
  if (config.readinessIndicatorFile !== "" && !existsSync(config.readinessIndicatorFile)) {
    log.verbose(`warning: readinessindicatorfile @ ${config.readinessIndicatorFile} does not exist on CNI DEL`);
  }
  let cached: CachedDelegate[] | undefined;
  let unreadable = "";
  try {
    cached = readScratchCache(config.cniDir, args.containerId);
  } catch (err) {
    unreadable = messageOf(err);
    log.error(`multus cache of ${args.containerId} unreadable, deleting from libcni's result cache: ${unreadable}`);
  }
  const errors: string[] = [];
  let firstCode: number | undefined;
  const fail = (err: unknown): void => {
    errors.push(messageOf(err));
    firstCode ??= err instanceof CniError ? err.code : ErrorCode.Internal;
  };

  if (cached !== undefined) {
    const invocation = invocationOf(req);
    for (const delegate of podDelegatesFromCache(cached, args.ifName).reverse()) {
      try {
        await delNetworkList(networkForDel(config, delegate, args.containerId), runtimeConfFor(invocation, delegate, false), req.options);
        removeDeviceInfo(delegate, args.containerId);
      } catch (err) {
        fail(err);
      }
    }
  } else {
    const entries = cachedAttachmentsOf(config.cniDir, args.containerId);
    if (entries.length > 0) {
      for (const entry of entries) {
        try {
          await delNetworkList(parseNetwork(entry.config), runtimeFromCache(req, entry), req.options);
        } catch (err) {
          fail(err);
        }
      }
    } else if (unreadable === "") {
      await delFromPod(req, fail);
    }
  }

  const succeeded = errors.length === 0;
  if (!config.retryDeleteOnError || succeeded || errors.some((message) => message.includes("no such file or directory"))) {
    removeScratchCache(config.cniDir, args.containerId);
  }
  if (!succeeded) throw new CniError(firstCode ?? ErrorCode.Internal, `${podPrefix(req)}errors: ${errors.join(" / ")}`);
}

/** No record of the container at all: the pod's delegates as its annotations say now (upstream). */
async function delFromPod(req: Request, fail: (err: unknown) => void): Promise<void> {
  const { args, api, log } = req;
  let pod: Pod | undefined;
  if (api !== undefined) {
    try {
      const found = await api.pod(req.pod.namespace, req.pod.name);
      if ("pod" in found && (req.pod.uid === "" || found.pod.metadata.uid === req.pod.uid || isStaticPod(found.pod))) pod = found.pod;
    } catch (err) {
      log.error(`GetPod failed: ${messageOf(err)}, but continue to delete`);
    }
  }
  if (pod === undefined) {
    log.error(`no cached delegates for container ${args.containerId} and no pod to rebuild them from: nothing to delete`);
    return;
  }
  let delegates: PodDelegate[];
  try {
    delegates = await planPod(req, pod, [], false);
  } catch (err) {
    log.error(`cannot rebuild the delegates of ${args.containerId} from pod ${req.pod.namespace}/${req.pod.name}: ${messageOf(err)}`);
    return;
  }
  const invocation = invocationOf(req);
  for (const delegate of delegates.reverse()) {
    try {
      await delNetworkList(delegate.conf.list, runtimeConfFor(invocation, delegate, false), req.options);
    } catch (err) {
      fail(err);
    }
  }
}

/**
 * What a cached delegate is DELeted with: the config libcni cached when it ran, if any (a scratch
 * cache written by upstream v4.3.0 may hold a re-marshalled copy that lost plugin keys, issues
 * #1449/#1454), else the cached one.
 */
function networkForDel(config: MultusConfig, delegate: PodDelegate, containerId: string): NetworkList {
  const entry = readCacheEntry(config.cniDir, delegate.conf.list.name, containerId, delegate.ifName);
  if (entry !== undefined) {
    try {
      return parseNetwork(entry.config);
    } catch {
      // An unreadable cached config: the scratch cache's is the next best.
    }
  }
  return withVersion(delegate, config.cniVersion).list;
}

/** upstream DEL: a conflist delegate without cniVersion runs with multus'. */
function withVersion(delegate: PodDelegate, cniVersion: string): PodDelegate["conf"] {
  const { conf } = delegate;
  if (!conf.isConfList || cniVersion === "" || (typeof conf.raw.cniVersion === "string" && conf.raw.cniVersion !== "")) return conf;
  return delegateFromConfig(JSON.stringify({ ...conf.raw, cniVersion }), conf.name);
}

/** The container's entries in libcni's result cache, the runtime's own interface last. */
function cachedAttachmentsOf(cniDir: string, containerId: string): CacheEntry[] {
  let entries: CacheEntry[];
  try {
    entries = listCachedAttachments(cniDir).filter((entry) => entry.containerId === containerId);
  } catch {
    return [];
  }
  return entries.sort((a, b) => ifNameOrder(b.ifName) - ifNameOrder(a.ifName));
}

/** net<N> by N; any other name (the runtime's eth0, a requested name) before them, so it goes last when reversed. */
function ifNameOrder(ifName: string): number {
  const match = /^net(\d+)$/.exec(ifName);
  return match ? Number(match[1]) : 0;
}

function runtimeFromCache(req: Request, entry: CacheEntry): RuntimeConf {
  return {
    containerId: entry.containerId,
    netns: req.args.netns,
    ifName: entry.ifName,
    args: entry.cniArgs ?? [],
    capabilityArgs: entry.capabilityArgs ?? {},
    cacheDir: req.config.cniDir,
  };
}

// ---- CHECK -------------------------------------------------------------------------------------

/** Every cached delegate's CHECK against its cached result (upstream checks none with clusterNetwork). */
async function check(req: Request): Promise<void> {
  const { args, config } = req;
  const cached = readScratchCache(config.cniDir, args.containerId);
  if (cached === undefined)
    throw new CniError(ErrorCode.UnknownContainer, `${podPrefix(req)}no multus cache for container ${args.containerId}: it was not added`);
  const invocation = invocationOf(req);
  for (const delegate of podDelegatesFromCache(cached, args.ifName)) {
    try {
      await checkNetworkList(delegate.conf.list, runtimeConfFor(invocation, delegate, false), req.options);
    } catch (err) {
      throw prefixedDelegate(req, delegate, err, "CHECK");
    }
  }
}

// ---- STATUS ------------------------------------------------------------------------------------

/** Readiness, then the cluster network's STATUS (codes 50/51 kept). */
async function status(req: Request): Promise<void> {
  await waitForReadiness(req.config.readinessIndicatorFile);
  const [master] = (await resolveBase(resolutionWithoutPod(req))).base;
  if (master === undefined) throw new CniError(ErrorCode.InvalidConfig, "no cluster network");
  await statusNetworkList(master.list, req.options);
}

// ---- GC ----------------------------------------------------------------------------------------

/**
 * The runtime's valid attachments are multus' own (its CNI_IFNAME); every container not among
 * them (nor added in the last GC_GRACE_MS) is deleted whole from multus' cache, then each cached
 * network (and the cluster network) is GC'd with the valid containers' attachments of that network.
 */
async function gc(req: Request, valid: Attachment[]): Promise<void> {
  const { config } = req;
  await waitForReadiness(config.readinessIndicatorFile);
  const validContainers = new Set(valid.map((attachment) => attachment.containerID));
  for (const containerId of scratchCacheIds(config.cniDir)) {
    if (ageOf(join(config.cniDir, containerId)) < GC_GRACE_MS) validContainers.add(containerId);
  }
  const errors: CniError[] = [];
  const collect = (err: unknown, what: string): void => {
    const code = err instanceof CniError ? err.code : ErrorCode.Internal;
    errors.push(new CniError(code, `${what}: ${messageOf(err)}`));
  };

  for (const containerId of scratchCacheIds(config.cniDir)) {
    if (validContainers.has(containerId)) continue;
    try {
      await gcContainer(req, containerId);
    } catch (err) {
      collect(err, `failed to delete stale container ${containerId}`);
    }
  }

  const networks = new Map<string, NetworkList>();
  try {
    const [master] = (await resolveBase(resolutionWithoutPod(req))).base;
    if (master !== undefined) networks.set(master.list.name, master.list);
  } catch (err) {
    req.log.error(`GC: cluster network not resolved: ${messageOf(err)}`);
  }
  const entries = listCachedAttachments(config.cniDir);
  for (const entry of entries) {
    if (networks.has(entry.networkName)) continue;
    try {
      networks.set(entry.networkName, parseNetwork(entry.config));
    } catch (err) {
      collect(err, `cached network ${entry.networkName} unreadable`);
    }
  }
  const stillValid: Attachment[] = entries
    .filter((entry) => validContainers.has(entry.containerId))
    .map((entry) => ({ containerID: entry.containerId, ifname: entry.ifName }));
  for (const list of networks.values()) {
    try {
      await gcNetworkList(list, stillValid, config.cniDir, req.options);
    } catch (err) {
      collect(err, `GC of network ${list.name}`);
    }
  }
  const [first] = errors;
  if (first) throw new CniError(first.code, errors.map((err) => err.message).join("\n"));
}

/** DEL of a container the runtime no longer has, from multus' cache, with what libcni's cache recorded. */
async function gcContainer(req: Request, containerId: string): Promise<void> {
  const { config } = req;
  const cached = readScratchCache(config.cniDir, containerId);
  if (cached === undefined) return;
  const entries = listCachedAttachments(config.cniDir).filter((entry) => entry.containerId === containerId);
  const [first] = cached;
  const masterName = first ? delegateFromConfig(first.bytes, first.name).list.name : "";
  const masterEntry = entries.find((entry) => entry.networkName === masterName);
  const ifName = masterEntry?.ifName ?? "eth0";
  const netns = masterEntry?.netns ?? "";
  const pod = podArgsFromCache(masterEntry);
  const invocation: Invocation = { containerId, netns, args: "", pod, runtimeConfig: config.runtimeConfig, cniDir: config.cniDir };
  const failures: string[] = [];
  for (const delegate of podDelegatesFromCache(cached, ifName).reverse()) {
    try {
      await delNetworkList(networkForDel(config, delegate, containerId), runtimeConfFor(invocation, delegate, false), req.options);
      removeDeviceInfo(delegate, containerId);
    } catch (err) {
      failures.push(messageOf(err));
    }
  }
  if (failures.length > 0) throw new CniError(ErrorCode.Internal, failures.join(" / "));
  removeScratchCache(config.cniDir, containerId);
}

function podArgsFromCache(entry: CacheEntry | undefined): PodArgs {
  const args = new Map(entry?.cniArgs ?? []);
  return {
    namespace: args.get("K8S_POD_NAMESPACE") ?? "",
    name: args.get("K8S_POD_NAME") ?? "",
    infraContainerId: args.get("K8S_POD_INFRA_CONTAINER_ID") ?? "",
    uid: args.get("K8S_POD_UID") ?? "",
  };
}

/** The container IDs multus has a scratch cache for: files of cniDir named like one. */
function scratchCacheIds(cniDir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(cniDir);
  } catch {
    return [];
  }
  return names.filter((name) => CONTAINER_ID_PATTERN.test(name) && name !== "results" && isFile(join(cniDir, name)));
}

/** Milliseconds since the file was last written; infinite when it is gone. */
function ageOf(path: string): number {
  try {
    return Date.now() - statSync(path).mtimeMs;
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

// ---- shared ------------------------------------------------------------------------------------

function invocationOf(req: Request): Invocation {
  return {
    containerId: req.args.containerId,
    netns: req.args.netns,
    args: req.args.args,
    pod: req.pod,
    runtimeConfig: req.config.runtimeConfig,
    cniDir: req.config.cniDir,
  };
}

function resolutionWithoutPod(req: Request): Resolution {
  return { config: req.config, api: req.api, pod: undefined, devices: req.devices, noNetworkFound: async () => {} };
}

/** upstream `GetReadinessIndicatorFile`: poll for the file; fail after 45 s. */
async function waitForReadiness(file: string): Promise<void> {
  if (file === "") return;
  const until = Date.now() + READINESS_WAIT_MS;
  for (;;) {
    if (existsSync(file)) return;
    if (Date.now() >= until) {
      throw new CniError(
        ErrorCode.TryAgainLater,
        `have you checked that your default network is ready? still waiting for readinessindicatorfile @ ${file}. pollimmediate error: timed out waiting for the condition`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, READINESS_POLL_MS));
  }
}

function podPrefix(req: Request): string {
  const { namespace, name, uid } = req.pod;
  return namespace === "" && name === "" ? "" : `[${namespace}/${name}/${uid}]: `;
}

function prefixed(req: Request, err: unknown, what: string): CniError {
  const code = err instanceof CniError ? err.code : ErrorCode.Internal;
  const details = err instanceof CniError ? err.details : "";
  return new CniError(code, `${podPrefix(req)}${what}${messageOf(err)}`, details);
}

function prefixedDelegate(req: Request, delegate: PodDelegate, err: unknown, verb: string): CniError {
  const code = err instanceof CniError ? err.code : ErrorCode.Internal;
  const details = err instanceof CniError ? err.details : "";
  const { namespace, name, uid } = req.pod;
  return new CniError(
    code,
    `[${namespace}/${name}/${uid}:${delegate.conf.name}]: ${verb} of network ${JSON.stringify(delegate.conf.name)} on ${delegate.ifName}: ${messageOf(err)}`,
    details,
  );
}
