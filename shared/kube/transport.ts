/**
 * The Kubernetes client's connection: HTTP/1.1 (http1.ts) over one TLS socket of Bun's
 * (`Bun.connect`), kept open for the plugin's few requests, which go one at a time.
 *
 * Why not fetch: a plugin process makes one connection, and fetch's first request (its HTTP
 * client thread and TLS setup) costs several times the CPU of a socket of Bun's with the same
 * certificate checks, which every ADD and DEL pays
 * (docs/performance.md#start-up-costs-behind-the-clients-design).
 * Bun.connect verifies the server's chain against `ca` and its name (or IP) against the URL's
 * host, as fetch does (the conformance suite runs every request through here).
 */
import type { Socket } from "bun";
import { messageOf } from "../errors.ts";
import { Http1Error, type Http1Response, Http1ResponseParser, encodeRequest } from "./http1.ts";

/** A kept-open connection idle longer than this is replaced, not reused. */
const MAX_IDLE_MS = 1000;

export interface TransportOptions {
  /** "https://host:port" or "http://host:port", optionally with a path prefix (an API proxy's). */
  server: string;
  /** PEM roots; undefined: the system's. */
  ca?: string;
  cert?: string;
  key?: string;
  rejectUnauthorized: boolean;
}

export interface TransportRequest {
  method: string;
  /** Below the server URL: "/apis/...". */
  path: string;
  headers: Record<string, string>;
  body?: string;
  /** Milliseconds to wait for the whole answer. */
  timeoutMs: number;
}

/** The server could not be reached or stopped answering: no answer to act on. */
export class TransportError extends Error {
  constructor(
    message: string,
    readonly timedOut = false,
  ) {
    super(message);
    this.name = "TransportError";
  }
}

interface Waiter {
  resolve(response: Http1Response): void;
  reject(error: Error): void;
}

export class Http1Transport {
  private readonly url: URL;
  private readonly basePath: string;
  private socket: Socket | undefined;
  private connecting: Promise<Socket> | undefined;
  /** A connection still in its TLS handshake: ended with the others when a request gives up. */
  private opening: Socket | undefined;
  private parser = new Http1ResponseParser();
  private waiter: Waiter | undefined;
  /** Bytes the socket did not take yet; written on drain. */
  private unsent: Uint8Array | undefined;
  /** Requests go one at a time: each waits for the one before it. */
  private queue: Promise<unknown> = Promise.resolve();
  /** When the connection last answered (epoch ms). */
  private lastUsed = 0;

  constructor(private readonly options: TransportOptions) {
    this.url = new URL(options.server);
    if (this.url.protocol !== "https:" && this.url.protocol !== "http:") {
      throw new TransportError(`server ${options.server}: only https:// and http:// are supported`);
    }
    this.basePath = this.url.pathname.replace(/\/+$/, "");
  }

  request(request: TransportRequest): Promise<Http1Response> {
    // The deadline counts from the call, not from when the requests before it are done.
    const deadline = Date.now() + request.timeoutMs;
    const run = this.queue.then(() => this.send(request, deadline));
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Closes the connection; a later request opens a new one. */
  close(): void {
    this.drop(new TransportError("connection closed by the client"));
  }

  private async send(request: TransportRequest, deadline: number): Promise<Http1Response> {
    let bytes: Uint8Array;
    try {
      bytes = encodeRequest({
        method: request.method,
        target: `${this.basePath}${request.path}`,
        host: this.url.host,
        headers: request.headers,
        ...(request.body !== undefined ? { body: request.body } : {}),
      });
    } catch (err) {
      throw new TransportError(`the request cannot be sent: ${(err as Error).message}`);
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => {
          const error = new TransportError("timed out", true);
          this.drop(error);
          reject(error);
        },
        Math.max(0, deadline - Date.now()),
      );
    });
    try {
      const socket = await Promise.race([this.connected(), timedOut]);
      const answered = new Promise<Http1Response>((resolve, reject) => {
        this.waiter = { resolve, reject };
      });
      this.write(socket, bytes);
      const response = await Promise.race([answered, timedOut]);
      this.lastUsed = Date.now();
      if (!response.keepAlive) this.drop(new TransportError("the server closed the connection"));
      return response;
    } finally {
      clearTimeout(timer);
      this.waiter = undefined;
    }
  }

  private connected(): Promise<Socket> {
    // A plugin blocks its event loop in flock while its node's ADDs queue: a close the server
    // sent meanwhile (a restart, a proxy's idle timeout) went unseen, and a request on that
    // connection would fail the whole batch. Idle that long, a new connection is cheaper.
    if (this.socket && Date.now() - this.lastUsed > MAX_IDLE_MS) this.drop(new TransportError("idle connection replaced"));
    if (this.socket) return Promise.resolve(this.socket);
    this.connecting ??= this.open().finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  /** A new connection; for TLS, resolved once the handshake verified the server. */
  private open(): Promise<Socket> {
    const tls = this.url.protocol === "https:";
    const hostname = this.url.hostname.replace(/^\[(.*)\]$/, "$1");
    const port = Number(this.url.port || (tls ? 443 : 80));
    return new Promise<Socket>((resolve, reject) => {
      let settled = false;
      const ready = (socket: Socket) => {
        settled = true;
        this.opening = undefined;
        // An idle connection must not keep the plugin's process alive: a request in flight
        // does, through its timer.
        socket.unref();
        this.socket = socket;
        this.lastUsed = Date.now();
        this.parser = new Http1ResponseParser();
        resolve(socket);
      };
      const fail = (error: unknown) => {
        if (settled) return;
        settled = true;
        reject(error instanceof TransportError ? error : new TransportError(messageOf(error)));
      };
      try {
        Bun.connect({
          hostname,
          port,
          ...(tls
            ? {
                tls: {
                  ...(this.options.ca !== undefined ? { ca: this.options.ca } : {}),
                  ...(this.options.cert !== undefined ? { cert: this.options.cert } : {}),
                  ...(this.options.key !== undefined ? { key: this.options.key } : {}),
                  rejectUnauthorized: this.options.rejectUnauthorized,
                },
              }
            : {}),
          socket: {
            open: (socket) => {
              if (tls) this.opening = socket;
              else ready(socket);
            },
            handshake: (socket, success, authorizationError) => {
              if (settled) return;
              // A failed verification may come as authorizationError with success still true.
              if (!this.options.rejectUnauthorized || (success && !authorizationError)) return ready(socket);
              fail(new TransportError(`TLS: the server's certificate is not trusted: ${authorizationError?.message ?? "verification failed"}`));
              socket.terminate();
            },
            data: (_socket, bytes) => this.received(bytes),
            drain: (socket) => {
              const pending = this.unsent;
              this.unsent = undefined;
              if (pending) this.write(socket, pending);
            },
            end: (socket) => {
              socket.end();
            },
            close: (socket, error) => {
              fail(new TransportError(`connection closed before it was ready${error ? `: ${error.message}` : ""}`));
              this.closed(socket);
            },
            error: (_socket, error) => fail(error),
            connectError: (_socket, error) => fail(error),
          },
        }).catch(fail);
      } catch (error) {
        // Options Bun cannot use (a PEM it cannot read) throw at once.
        fail(error);
      }
    });
  }

  private write(socket: Socket, bytes: Uint8Array): void {
    const written = socket.write(bytes);
    if (written < 0) this.drop(new TransportError("the connection closed while sending"));
    else if (written < bytes.length) this.unsent = bytes.subarray(written);
  }

  private received(bytes: Uint8Array): void {
    try {
      for (const response of this.parser.push(bytes)) this.answer(response);
    } catch (err) {
      this.drop(err instanceof Http1Error ? new TransportError(`bad answer from the server: ${err.message}`) : (err as Error));
    }
  }

  private answer(response: Http1Response): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    if (waiter) waiter.resolve(response);
    else this.drop(new TransportError("the server answered a request not asked"));
  }

  /** The peer closed: an answer framed by the close completes, a cut one fails its request. */
  private closed(socket: Socket): void {
    if (this.socket !== socket) return;
    this.socket = undefined;
    this.unsent = undefined;
    try {
      const last = this.parser.end();
      if (last) {
        this.answer(last);
        return;
      }
    } catch (err) {
      this.fail(new TransportError(`the server closed the connection mid-answer: ${(err as Error).message}`));
      return;
    }
    this.fail(new TransportError("the server closed the connection without answering"));
  }

  private drop(error: Error): void {
    const sockets = [this.socket, this.opening];
    this.socket = undefined;
    this.opening = undefined;
    this.unsent = undefined;
    for (const socket of sockets) socket?.terminate();
    this.fail(error);
  }

  private fail(error: Error): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(error);
  }
}
