/**
 * The installer's command line (`cni-plugins install [flags]`): flags named after upstream
 * multus' `thin_entrypoint` where it has one (reference §9.2), with the defaults of a DaemonSet
 * pod that mounts the node's /opt/cni/bin and /etc/cni/net.d under /host. Pure: arguments and
 * environment in, options out.
 */

const MULTUS_LOG_LEVELS = ["debug", "verbose", "error", "panic"];

export interface KubernetesService {
  /** "https" unless KUBERNETES_SERVICE_PROTOCOL says otherwise, as upstream's installers read it. */
  protocol: string;
  host: string;
  port: string;
}

export interface InstallerOptions {
  /** The executable copied into the node (defaults to this very executable). */
  sourceBinary: string;
  cniBinDir: string;
  cniConfDir: string;
  /** The conf dir as the node (and so the plugins) see it: what paths written into confs start with. */
  cniConfDirHost: string;
  /** Plugin names hard-linked in cniBinDir; empty means every plugin the executable carries. */
  plugins: string[];
  skipBinaryCopy: boolean;
  serviceAccountDir: string;
  /** Undefined when KUBERNETES_SERVICE_HOST/PORT are not set (no kubeconfig can be written then). */
  kubernetes: KubernetesService | undefined;
  skipTlsVerify: boolean;
  multus: {
    skip: boolean;
    kubeconfigFileHost: string;
    /** A conf file name in cniConfDir to use as the primary instead of the first one. */
    masterCniFileName: string;
    logFile: string;
    logLevel: string;
    logToStderr: boolean;
    namespaceIsolation: boolean;
    globalNamespaces: string;
    readinessIndicatorFile: string;
    overrideNetworkName: boolean;
    cleanupConfigOnExit: boolean;
  };
  whereabouts: {
    skip: boolean;
    kubeconfigFileHost: string;
    logFile: string;
    logLevel: string;
    /** The namespace of whereabouts' IPPools and reservations (its kubeconfig context's). */
    namespace: string;
  };
  once: boolean;
  pollIntervalMs: number;
  help: boolean;
}

export class FlagError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FlagError";
  }
}

type Kind = "string" | "bool" | "int";
interface Flag {
  kind: Kind;
  help: string;
  /** Writes the parsed value into the options. */
  set(options: InstallerOptions, value: string | boolean | number): void;
}

const str = (help: string, set: (o: InstallerOptions, v: string) => void): Flag => ({ kind: "string", help, set: (o, v) => set(o, String(v)) });
const bool = (help: string, set: (o: InstallerOptions, v: boolean) => void): Flag => ({ kind: "bool", help, set: (o, v) => set(o, v === true) });

const FLAGS: Record<string, Flag> = {
  "cni-bin-dir": str("the node's CNI bin dir, as mounted in the pod", (o, v) => (o.cniBinDir = v)),
  "cni-conf-dir": str("the node's CNI conf dir, as mounted in the pod", (o, v) => (o.cniConfDir = v)),
  "cni-conf-dir-host": str("the same conf dir as the node sees it (paths written into confs)", (o, v) => (o.cniConfDirHost = v)),
  "cni-plugins-bin-file": str("the executable to install (default: this one)", (o, v) => (o.sourceBinary = v)),
  plugins: str("comma-separated plugin names to link in the bin dir (default: all)", (o, v) => (o.plugins = splitList(v))),
  "skip-binary-copy": bool("do not install the executable", (o, v) => (o.skipBinaryCopy = v)),
  "service-account-dir": str("where the pod's token, ca.crt and namespace are", (o, v) => (o.serviceAccountDir = v)),
  "skip-tls-verify": bool("kubeconfigs skip the API server's certificate check instead of carrying ca.crt", (o, v) => (o.skipTlsVerify = v)),
  "skip-multus": bool("write no multus kubeconfig or conf", (o, v) => (o.multus.skip = v)),
  "multus-kubeconfig-file-host": str("the multus kubeconfig's path on the node", (o, v) => (o.multus.kubeconfigFileHost = v)),
  "multus-master-cni-file-name": str("the primary conf's file name (default: the first conf in the conf dir)", (o, v) => (o.multus.masterCniFileName = v)),
  "multus-log-file": str("multus' logFile (a path on the node; empty: none)", (o, v) => (o.multus.logFile = v)),
  "multus-log-level": str("multus' logLevel: debug, verbose, error, panic (empty: not written)", (o, v) => (o.multus.logLevel = v)),
  "multus-log-to-stderr": bool("multus' logToStderr", (o, v) => (o.multus.logToStderr = v)),
  "namespace-isolation": bool("multus' namespaceIsolation", (o, v) => (o.multus.namespaceIsolation = v)),
  "global-namespaces": str("multus' globalNamespaces (comma-separated)", (o, v) => (o.multus.globalNamespaces = v)),
  "readiness-indicator-file": str("multus' readinessindicatorfile", (o, v) => (o.multus.readinessIndicatorFile = v)),
  "override-network-name": bool("name the multus network after the primary's network", (o, v) => (o.multus.overrideNetworkName = v)),
  "cleanup-config-on-exit": bool("remove the multus conf on SIGTERM", (o, v) => (o.multus.cleanupConfigOnExit = v)),
  "skip-whereabouts": bool("write no whereabouts kubeconfig or flat file", (o, v) => (o.whereabouts.skip = v)),
  "whereabouts-kubeconfig-file-host": str("whereabouts' kubeconfig's path on the node", (o, v) => (o.whereabouts.kubeconfigFileHost = v)),
  "whereabouts-log-file": str("whereabouts' log_file (a path on the node; empty: none)", (o, v) => (o.whereabouts.logFile = v)),
  "whereabouts-log-level": str("whereabouts' log_level: debug, verbose, error, panic (empty: not written)", (o, v) => (o.whereabouts.logLevel = v)),
  "whereabouts-namespace": str("namespace of whereabouts' objects (default: $WHEREABOUTS_NAMESPACE, else the pod's)", (o, v) => (o.whereabouts.namespace = v)),
  once: bool("install, write the files once (waiting for the primary conf) and exit", (o, v) => (o.once = v)),
  "poll-interval-ms": {
    kind: "int",
    help: "how often the conf dir, token and CA are looked at again",
    set: (o, v) => (o.pollIntervalMs = Number(v)),
  },
  help: bool("this text", (o, v) => (o.help = v)),
};

/** The defaults, before flags: what a DaemonSet pod mounting the node under /host wants. */
function defaults(env: Record<string, string | undefined>, executable: string): InstallerOptions {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  return {
    sourceBinary: executable,
    cniBinDir: "/host/opt/cni/bin",
    cniConfDir: "/host/etc/cni/net.d",
    cniConfDirHost: "/etc/cni/net.d",
    plugins: [],
    skipBinaryCopy: false,
    serviceAccountDir: "/var/run/secrets/kubernetes.io/serviceaccount",
    kubernetes: host && port ? { protocol: env.KUBERNETES_SERVICE_PROTOCOL || "https", host, port } : undefined,
    skipTlsVerify: false,
    multus: {
      skip: false,
      kubeconfigFileHost: "/etc/cni/net.d/multus.d/multus.kubeconfig",
      masterCniFileName: "",
      logFile: "/var/log/multus.log",
      // Upstream writes no level (multus then logs panics only, so its log file stays empty):
      // failures at least should reach the node's log file.
      logLevel: "error",
      logToStderr: true,
      namespaceIsolation: false,
      globalNamespaces: "",
      readinessIndicatorFile: "",
      overrideNetworkName: false,
      // Upstream's default is false, which leaves a node pointing at multus after the DaemonSet is gone.
      cleanupConfigOnExit: true,
    },
    whereabouts: {
      skip: false,
      kubeconfigFileHost: "/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig",
      logFile: "/var/log/whereabouts.log",
      logLevel: "error",
      namespace: env.WHEREABOUTS_NAMESPACE ?? "",
    },
    once: false,
    pollIntervalMs: 1000,
    help: false,
  };
}

/**
 * Parses `--name=value`, `--name value` and, for booleans, `--name` and `--name=true|false`, as
 * Go's flag packages do. Throws FlagError naming the bad argument.
 */
export function parseFlags(args: string[], env: Record<string, string | undefined>, executable: string): InstallerOptions {
  const options = defaults(env, executable);
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] ?? "";
    const match = /^--?([a-z0-9-]+)(?:=(.*))?$/s.exec(arg);
    if (!match) throw new FlagError(`unexpected argument ${JSON.stringify(arg)}`);
    const name = match[1] ?? "";
    let text = match[2];
    const flag = FLAGS[name];
    if (!flag) throw new FlagError(`unknown flag --${name}`);
    if (flag.kind === "bool") {
      if (text === undefined) flag.set(options, true);
      else if (text === "true" || text === "false") flag.set(options, text === "true");
      else throw new FlagError(`--${name} takes true or false, not ${JSON.stringify(text)}`);
      continue;
    }
    if (text === undefined) {
      i++;
      if (i >= args.length) throw new FlagError(`--${name} needs a value`);
      text = args[i] ?? "";
    }
    if (flag.kind === "int") {
      if (!/^[0-9]+$/.test(text) || Number(text) < 1) throw new FlagError(`--${name} takes a positive integer, not ${JSON.stringify(text)}`);
      flag.set(options, Number(text));
    } else flag.set(options, text);
  }
  validate(options);
  return options;
}

function validate(options: InstallerOptions): void {
  for (const [flag, level] of [
    ["multus-log-level", options.multus.logLevel],
    ["whereabouts-log-level", options.whereabouts.logLevel],
  ] as const) {
    if (level !== "" && !MULTUS_LOG_LEVELS.includes(level.toLowerCase())) {
      throw new FlagError(`--${flag} must be one of ${MULTUS_LOG_LEVELS.join(", ")} (or empty), not ${JSON.stringify(level)}`);
    }
  }
  const master = options.multus.masterCniFileName;
  if (master.includes("/")) throw new FlagError(`--multus-master-cni-file-name is a file name in --cni-conf-dir, not a path: ${JSON.stringify(master)}`);
}

function splitList(text: string): string[] {
  return text
    .split(",")
    .map((item) => item.trim())
    .filter((item) => item !== "");
}

/** The help text: every flag with its default. */
export function usage(env: Record<string, string | undefined>, executable: string): string {
  const base = defaults(env, executable);
  const lines = ["usage: cni-plugins install [flags]", ""];
  for (const [name, flag] of Object.entries(FLAGS)) {
    const value = defaultOf(name, base);
    lines.push(`  --${name}${flag.kind === "bool" ? "" : ` <${flag.kind}>`}  ${flag.help}${value === undefined ? "" : ` (default ${JSON.stringify(value)})`}`);
  }
  lines.push("", "environment: KUBERNETES_SERVICE_HOST, KUBERNETES_SERVICE_PORT, KUBERNETES_SERVICE_PROTOCOL, WHEREABOUTS_NAMESPACE", "");
  return lines.join("\n");
}

function defaultOf(name: string, o: InstallerOptions): string | boolean | number | undefined {
  const table: Record<string, string | boolean | number> = {
    "cni-bin-dir": o.cniBinDir,
    "cni-conf-dir": o.cniConfDir,
    "cni-conf-dir-host": o.cniConfDirHost,
    "service-account-dir": o.serviceAccountDir,
    "multus-kubeconfig-file-host": o.multus.kubeconfigFileHost,
    "multus-log-file": o.multus.logFile,
    "multus-log-level": o.multus.logLevel,
    "multus-log-to-stderr": o.multus.logToStderr,
    "cleanup-config-on-exit": o.multus.cleanupConfigOnExit,
    "whereabouts-kubeconfig-file-host": o.whereabouts.kubeconfigFileHost,
    "whereabouts-log-file": o.whereabouts.logFile,
    "whereabouts-log-level": o.whereabouts.logLevel,
    "poll-interval-ms": o.pollIntervalMs,
  };
  return table[name];
}
