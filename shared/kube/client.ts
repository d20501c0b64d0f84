/**
 * A thin typed Kubernetes API client: the handful of calls a CNI plugin makes, each bounded by a
 * deadline, over one kept-open connection (transport.ts). Chosen over @kubernetes/client-node by
 * measurement: loading that library is a cost every plugin start pays
 * (docs/performance.md#start-up-costs-behind-the-clients-design).
 *
 * Failures are typed: `KubeUnavailableError` when the API cannot be reached or answers too
 * slowly (the plugin answers "try again later"), `KubeApiError` for an answer with an error status.
 */
import { type Connection, currentToken } from "./config.ts";
import type { Http1Response } from "./http1.ts";
import { Http1Transport, TransportError } from "./transport.ts";

export class KubeUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "KubeUnavailableError";
  }
}

export class KubeApiError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
    this.name = "KubeApiError";
  }
}

export type JsonPatchOperation = { op: "add" | "replace" | "test"; path: string; value: unknown } | { op: "remove"; path: string };

/** The metadata every object we read carries. */
export interface ObjectMeta {
  name: string;
  namespace?: string;
  resourceVersion?: string;
  uid?: string;
  /** The API server's record of which client set which field (server-side apply's bookkeeping). */
  managedFields?: unknown[];
}

export interface KubeClientOptions {
  /** Deadline for the whole operation the client serves (e.g. one ADD), not per request. */
  deadline: number;
}

export class KubeClient {
  /** Requests sent so far: the benchmark reports API requests per ADD. */
  requests = 0;
  private readonly headers: Record<string, string>;
  private readonly transport: Http1Transport;

  constructor(
    private readonly connection: Connection,
    private options: KubeClientOptions,
  ) {
    const token = currentToken(connection);
    this.headers = { Accept: "application/json", "User-Agent": "cni-plugins", ...(token ? { Authorization: `Bearer ${token}` } : {}) };
    this.transport = new Http1Transport({
      server: connection.server,
      ...(connection.ca !== undefined ? { ca: connection.ca } : {}),
      ...(connection.clientCert !== undefined ? { cert: connection.clientCert } : {}),
      ...(connection.clientKey !== undefined ? { key: connection.clientKey } : {}),
      rejectUnauthorized: !connection.insecureSkipTlsVerify,
    });
  }

  /** Closes the connection to the API server (a later request opens a new one). */
  close(): void {
    this.transport.close();
  }

  get namespace(): string {
    return this.connection.namespace;
  }

  /** When the operation's time is up (epoch ms). */
  get deadline(): number {
    return this.options.deadline;
  }

  /** Moves the deadline later (never earlier): for cleanup that must run after a timeout. */
  extendDeadline(until: number): void {
    this.options.deadline = Math.max(this.options.deadline, until);
  }

  /** GET; undefined when the object does not exist. `accept` replaces the Accept header. */
  async get<T>(path: string, accept?: string): Promise<T | undefined> {
    const response = await this.send("GET", path, undefined, undefined, accept);
    if (response.status === 404) return undefined;
    return this.decode<T>("GET", path, response);
  }

  /** POST (create); throws KubeApiError 409 when the name is taken. */
  async create<T>(path: string, object: unknown): Promise<T> {
    const response = await this.send("POST", path, JSON.stringify(object), "application/json");
    return this.decode<T>("POST", path, response);
  }

  /** PUT (replace); throws KubeApiError 409 when the object changed since it was read. */
  async replace<T>(path: string, object: unknown): Promise<T> {
    const response = await this.send("PUT", path, JSON.stringify(object), "application/json");
    return this.decode<T>("PUT", path, response);
  }

  /** JSON Patch; a failed `test` comes back as KubeApiError 422, as upstream relies on. */
  async patch<T>(path: string, operations: JsonPatchOperation[]): Promise<T> {
    const response = await this.send("PATCH", path, JSON.stringify(operations), "application/json-patch+json");
    return this.decode<T>("PATCH", path, response);
  }

  /** DELETE, only if the object still has this resourceVersion when given; false when absent. */
  async delete(path: string, resourceVersion?: string): Promise<boolean> {
    const body = resourceVersion ? JSON.stringify({ preconditions: { resourceVersion } }) : undefined;
    const response = await this.send("DELETE", path, body, body ? "application/json" : undefined);
    if (response.status === 404) return false;
    this.decode("DELETE", path, response);
    return true;
  }

  private async send(method: string, path: string, body?: string, contentType?: string, accept?: string): Promise<Http1Response> {
    const remaining = this.options.deadline - Date.now();
    if (remaining <= 0) throw new KubeUnavailableError(`no time left for ${method} ${path}`);
    this.requests++;
    try {
      return await this.transport.request({
        method,
        path,
        headers: {
          ...this.headers,
          ...(contentType ? { "Content-Type": contentType } : {}),
          ...(accept ? { Accept: accept } : {}),
        },
        ...(body !== undefined ? { body } : {}),
        timeoutMs: remaining,
      });
    } catch (err) {
      // Only a failure to reach the server is worth retrying later; anything else is a bug.
      if (!(err instanceof TransportError)) throw err;
      throw new KubeUnavailableError(`${method} ${this.connection.server}${path}: ${err.message}`);
    }
  }

  private decode<T>(method: string, path: string, response: Http1Response): T {
    const text = response.body;
    if (response.status >= 200 && response.status < 300) return (text ? JSON.parse(text) : undefined) as T;
    // Overload and unavailability are worth retrying later; everything else is a real answer.
    if (response.status === 429 || response.status >= 500) {
      throw new KubeUnavailableError(`${method} ${path}: HTTP ${response.status}`);
    }
    let reason = "";
    let message = `HTTP ${response.status}`;
    try {
      const status = JSON.parse(text) as { reason?: string; message?: string };
      reason = status.reason ?? "";
      message = status.message ?? message;
    } catch {
      // Not a Status object; the HTTP code says enough.
    }
    throw new KubeApiError(response.status, reason, `${method} ${path}: ${message}`);
  }
}
