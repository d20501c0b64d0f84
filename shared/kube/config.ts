/**
 * Where and how to reach the Kubernetes API: from a kubeconfig file (token, token file, client
 * certificate, CA; the namespace of the current context), or from the pod's in-cluster service
 * account. Pure apart from reading the files the config names; unit-tested.
 */
import { readFileSync } from "node:fs";
import { dirname, isAbsolute, join } from "node:path";
import { messageOf } from "../errors.ts";

export interface Connection {
  /** "https://10.0.0.1:443", no trailing slash. */
  server: string;
  /** PEM. Undefined: the system's roots. */
  ca?: string;
  insecureSkipTlsVerify: boolean;
  token?: string;
  /** Re-read on every start: projected service-account tokens rotate. */
  tokenFile?: string;
  clientCert?: string;
  clientKey?: string;
  /** The namespace of the current context, else "kube-system" (upstream whereabouts' default). */
  namespace: string;
}

export class KubeconfigError extends Error {
  constructor(path: string, problem: string) {
    super(`kubeconfig ${path}: ${problem}`);
    this.name = "KubeconfigError";
  }
}

const DEFAULT_NAMESPACE = "kube-system";
const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

/** Reads and resolves a kubeconfig file. YAML is parsed only when the file is not plain JSON. */
export async function loadKubeconfig(path: string): Promise<Connection> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new KubeconfigError(path, messageOf(err));
  }
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch {
    try {
      document = parseYaml(text);
    } catch (err) {
      throw new KubeconfigError(path, `not valid YAML: ${messageOf(err)}`);
    }
  }
  return resolveKubeconfig(document, path);
}

/**
 * Upstream's installer writes YAML, and the plugins read it with Bun's own parser, which costs a
 * process far less than the yaml package (docs/performance.md#start-up-costs-behind-the-clients-design).
 * It is the only YAML parser here: under Node there is none, and the unit tests read YAML
 * kubeconfigs through Bun as the plugins do (config.test.ts).
 */
function parseYaml(text: string): unknown {
  if (typeof Bun === "undefined") throw new Error("YAML is read by Bun's parser, and this is not Bun");
  return Bun.YAML.parse(text);
}

/** The connection a decoded kubeconfig describes through its current context. */
export function resolveKubeconfig(document: unknown, path: string): Connection {
  const config = asObject(document, path, "the document");
  const contextName = asString(config["current-context"]);
  if (!contextName) throw new KubeconfigError(path, "no current-context");
  const context = named(config, "contexts", contextName, "context", path);
  const cluster = named(config, "clusters", asString(context.cluster) ?? "", "cluster", path);
  const userName = asString(context.user);
  const user = userName ? named(config, "users", userName, "user", path) : {};

  const server = serverUrl(asString(cluster.server), path, asString(context.cluster) ?? "");
  const base = dirname(path);
  const connection: Connection = {
    server,
    insecureSkipTlsVerify: cluster["insecure-skip-tls-verify"] === true,
    namespace: asString(context.namespace) || DEFAULT_NAMESPACE,
  };
  const ca = pem(cluster, "certificate-authority", base, path);
  if (ca) connection.ca = ca;
  const token = asString(user.token);
  if (token) connection.token = token;
  const tokenFile = asString(user.tokenFile);
  if (tokenFile) connection.tokenFile = relativeTo(base, tokenFile);
  const cert = pem(user, "client-certificate", base, path);
  const key = pem(user, "client-key", base, path);
  if (cert) connection.clientCert = cert;
  if (key) connection.clientKey = key;
  return connection;
}

/**
 * The server as a URL without a trailing slash. Without a scheme it is https://, as client-go
 * reads it for a cluster with TLS settings (the only kind a plugin should talk to).
 */
function serverUrl(server: string | undefined, path: string, clusterName: string): string {
  if (!server) throw new KubeconfigError(path, `cluster "${clusterName}" has no server`);
  const withScheme = server.includes("://") ? server : `https://${server}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new KubeconfigError(path, `cluster "${clusterName}": server ${JSON.stringify(server)} is not a URL`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new KubeconfigError(path, `cluster "${clusterName}": server ${JSON.stringify(server)} is neither https:// nor http://`);
  }
  return withScheme.replace(/\/+$/, "");
}

/** In-cluster credentials: the pod's service account and the API's service address. */
export function inClusterConnection(env: Record<string, string | undefined>, dir = SERVICE_ACCOUNT_DIR): Connection {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (!host || !port) throw new KubeconfigError("in-cluster", "KUBERNETES_SERVICE_HOST/PORT are not set");
  const hostPart = host.includes(":") ? `[${host}]` : host;
  let namespace = DEFAULT_NAMESPACE;
  try {
    namespace = readFileSync(join(dir, "namespace"), "utf8").trim() || DEFAULT_NAMESPACE;
  } catch {
    // Not every projection carries the namespace file; upstream's default applies.
  }
  return {
    server: `https://${hostPart}:${port}`,
    ca: readFileSync(join(dir, "ca.crt"), "utf8"),
    insecureSkipTlsVerify: false,
    tokenFile: join(dir, "token"),
    namespace,
  };
}

/** The bearer token to send now: the token file wins, as client-go re-reads it. */
export function currentToken(connection: Connection): string | undefined {
  if (connection.tokenFile) return readFileSync(connection.tokenFile, "utf8").trim();
  return connection.token;
}

function named(config: Record<string, unknown>, list: string, name: string, field: string, path: string): Record<string, unknown> {
  const entries = Array.isArray(config[list]) ? (config[list] as unknown[]) : [];
  for (const entry of entries) {
    if (entry && typeof entry === "object" && (entry as Record<string, unknown>).name === name) {
      return asObject((entry as Record<string, unknown>)[field] ?? {}, path, `${field} "${name}"`);
    }
  }
  throw new KubeconfigError(path, `no ${field} named "${name}"`);
}

/** `<key>-data` (base64 PEM) or `<key>` (a file, relative to the kubeconfig). */
function pem(section: Record<string, unknown>, key: string, base: string, path: string): string | undefined {
  const data = asString(section[`${key}-data`]);
  if (data) return Buffer.from(data, "base64").toString("utf8");
  const file = asString(section[key]);
  if (!file) return undefined;
  try {
    return readFileSync(relativeTo(base, file), "utf8");
  } catch (err) {
    throw new KubeconfigError(path, `${key} ${file}: ${messageOf(err)}`);
  }
}

function relativeTo(base: string, file: string): string {
  return isAbsolute(file) ? file : join(base, file);
}

function asObject(value: unknown, path: string, what: string): Record<string, unknown> {
  if (!value || typeof value !== "object" || Array.isArray(value)) throw new KubeconfigError(path, `${what} is not an object`);
  return value as Record<string, unknown>;
}

function asString(value: unknown): string | undefined {
  return typeof value === "string" ? value : undefined;
}
