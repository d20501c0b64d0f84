/**
 * `cni-plugins install`: what the DaemonSet's container runs on every node. Installs the
 * executable and its plugin names into the node's CNI bin dir, writes whereabouts' flat file and
 * the kubeconfigs from the pod's service-account token, generates the multus conf from the node's
 * primary conf, then keeps all of it current (the token rotates, the primary's installer rewrites
 * its conf) until SIGTERM, when it takes the multus conf away. Design: docs/installer.md.
 */
import { readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { env } from "node:process";
import { messageOf } from "../../shared/errors.ts";
import { createLogger, type Logger, writeAllSync } from "../../shared/log.ts";
import { installExecutable, readIfExists, writeIfChanged } from "./files.ts";
import { isLast, joinInstallers } from "./handover.ts";
import { FlagError, type InstallerOptions, parseFlags, usage } from "./flags.ts";
import {
  kubeconfig,
  MULTUS_CONF,
  MULTUS_CONFLIST,
  multusConf,
  PrimaryConfError,
  primaryCandidates,
  readPrimary,
  serverUrl,
  whereaboutsFlatFile,
} from "./generate.ts";

/** Credentials and the flat file: readable by root only, as upstream's installers write them. */
const SECRET_MODE = 0o600;

/** Runs the installer; resolves with the exit code (only with --once or on a start-up failure). */
export async function install(args: string[], pluginNames: string[]): Promise<number> {
  let options: InstallerOptions;
  try {
    options = parseFlags(args, env, process.execPath);
  } catch (err) {
    if (!(err instanceof FlagError)) throw err;
    writeAllSync(2, `cni-plugins install: ${err.message}\n\n${usage(env, process.execPath)}`);
    return 2;
  }
  if (options.help) {
    writeAllSync(1, usage(env, process.execPath));
    return 0;
  }
  // The installer is no plugin, but its stdout is the container's log all the same: stderr, like them.
  const log = createLogger({}, "installer");
  try {
    return await run(options, pluginNames, log);
  } catch (err) {
    log.error(messageOf(err));
    return 1;
  }
}

async function run(options: InstallerOptions, pluginNames: string[], log: Logger): Promise<number> {
  const unknown = options.plugins.filter((name) => !pluginNames.includes(name));
  if (unknown.length > 0) throw new Error(`--plugins names ${unknown.join(", ")}, which this executable does not carry (it carries ${pluginNames.join(", ")})`);
  const lockPath = join(options.cniConfDir, "multus.d", "installer.lock");
  let joined: number | undefined;
  if (!options.once) {
    // From the start: a pod deleted while it still waits for the primary conf must leave no multus conf either.
    const stop = (signal: string): void => {
      log.info(`${signal}: exiting`);
      if (!options.multus.skip && options.multus.cleanupConfigOnExit) {
        try {
          if (isLast(lockPath, joined)) removeMultusConf(options, log);
          else log.info("another installer runs on this node (an update with surge): the multus conf stays, in its care");
        } catch (err) {
          log.error(`cannot tell whether another installer runs on this node (${messageOf(err)}): the multus conf stays`);
        }
      }
      process.exit(0);
    };
    process.on("SIGTERM", () => stop("SIGTERM"));
    process.on("SIGINT", () => stop("SIGINT"));
  }
  if (!options.skipBinaryCopy) {
    const names = options.plugins.length > 0 ? options.plugins : pluginNames;
    installExecutable(options.sourceBinary, options.cniBinDir, names);
    log.info(`installed ${options.sourceBinary} in ${options.cniBinDir} as ${names.join(", ")}`);
  }
  // A missing token or CA at start is a broken pod spec: fail, and let the DaemonSet say so.
  syncCredentials(options, log);

  const state: MultusState = { problem: undefined };
  if (options.once) {
    while (!syncMultusConf(options, state, log)) await sleep(options.pollIntervalMs);
    return 0;
  }
  if (!options.multus.skip) {
    joined = await joinInstallers(lockPath);
    log.info(`running; ${lockPath} tells the installers of this node apart at exit`);
  }
  for (;;) {
    // From here on a failure is logged and tried again next round: the node keeps what it has.
    try {
      syncMultusConf(options, state, log);
    } catch (err) {
      log.error(`multus conf: ${messageOf(err)}`);
    }
    await sleep(options.pollIntervalMs);
    try {
      syncCredentials(options, log);
    } catch (err) {
      log.error(`kubeconfig: ${messageOf(err)}`);
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * The kubeconfigs (and whereabouts' flat file) as the current token and CA make them, rewritten
 * when they differ from what is on disk: that is how a rotated projected token reaches the node.
 */
function syncCredentials(options: InstallerOptions, log: Logger): void {
  if (options.multus.skip && options.whereabouts.skip) return;
  const service = options.kubernetes;
  if (!service) throw new Error("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set: no kubeconfig can be written");
  const saDir = options.serviceAccountDir;
  const token = readIfExists(join(saDir, "token"))?.trim();
  if (!token) throw new Error(`no service-account token in ${saDir}/token`);
  let ca: string | undefined;
  if (!options.skipTlsVerify) {
    ca = readIfExists(join(saDir, "ca.crt"));
    if (ca === undefined) throw new Error(`no ${saDir}/ca.crt (or pass --skip-tls-verify)`);
  }
  const server = serverUrl(service);
  const written: string[] = [];
  if (!options.multus.skip) {
    const path = join(options.cniConfDir, "multus.d", "multus.kubeconfig");
    if (writeIfChanged(path, kubeconfig({ server, ca, token, user: "multus" }), SECRET_MODE)) written.push(path);
  }
  if (!options.whereabouts.skip) {
    const namespace = options.whereabouts.namespace || readIfExists(join(saDir, "namespace"))?.trim() || "kube-system";
    const dir = join(options.cniConfDir, "whereabouts.d");
    const config = join(dir, "whereabouts.kubeconfig");
    if (writeIfChanged(config, kubeconfig({ server, ca, token, user: "whereabouts", namespace }), SECRET_MODE)) written.push(config);
    const flat = join(dir, "whereabouts.conf");
    if (writeIfChanged(flat, whereaboutsFlatFile(options.whereabouts), SECRET_MODE)) written.push(flat);
  }
  if (written.length > 0) log.info(`wrote ${written.join(", ")}`);
}

interface MultusState {
  /** The last reason the primary conf could not be used, so that a wait is logged once, not every round. */
  problem: string | undefined;
}

/**
 * Generates the multus conf from the primary conf as it is now; false while there is none to
 * use (the conf dir is empty, or its first conf is still being written). An existing multus conf
 * is then left as it is: pods keep being served by what the node had.
 */
function syncMultusConf(options: InstallerOptions, state: MultusState, log: Logger): boolean {
  if (options.multus.skip) return true;
  const dir = options.cniConfDir;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    return waiting(state, log, `cannot list ${dir}: ${messageOf(err)}`);
  }
  const candidates = primaryCandidates(names, options.multus.masterCniFileName);
  for (const fileName of candidates) {
    const text = readIfExists(join(dir, fileName));
    // Gone between the listing and the read: the primary's installer is at work; look again later.
    if (text === undefined) return waiting(state, log, `${fileName} disappeared while being read`);
    let primary: ReturnType<typeof readPrimary>;
    try {
      primary = readPrimary(fileName, text);
    } catch (err) {
      if (err instanceof PrimaryConfError && err.skip) continue;
      return waiting(state, log, messageOf(err));
    }
    const conf = multusConf(primary, { ...options.multus, confDirHost: options.cniConfDirHost });
    const path = join(dir, conf.fileName);
    const changed = writeIfChanged(path, conf.text, SECRET_MODE);
    // The primary's version may have crossed 1.0.0: never leave both names for the runtime to choose from.
    rmSync(join(dir, conf.fileName === MULTUS_CONF ? MULTUS_CONFLIST : MULTUS_CONF), { force: true });
    if (changed) log.info(`wrote ${path} for the primary conf ${fileName} (cniVersion ${primary.cniVersion})`);
    state.problem = undefined;
    return true;
  }
  const wanted = options.multus.masterCniFileName || "a primary CNI conf (.conf, .conflist, .json)";
  return waiting(state, log, `waiting for ${wanted} in ${dir}`);
}

function waiting(state: MultusState, log: Logger, problem: string): false {
  if (state.problem !== problem) log.info(problem);
  state.problem = problem;
  return false;
}

/** The node falls back to its primary network: the runtime takes the first conf that is left. */
function removeMultusConf(options: InstallerOptions, log: Logger): void {
  for (const name of [MULTUS_CONF, MULTUS_CONFLIST]) {
    const path = join(options.cniConfDir, name);
    if (readIfExists(path) === undefined) continue;
    rmSync(path, { force: true });
    log.info(`removed ${path}`);
  }
}
