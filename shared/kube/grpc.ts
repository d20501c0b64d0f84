/**
 * One unary gRPC call over a unix socket (kubelet's local APIs: pod-resources, device plugins),
 * on the HTTP/2 client of `node:http2` (Bun has its own implementation of it).
 *
 * `node:http2` and `node:net` are imported at the call, not at the top: the executable's start-up
 * is the plugin's main cost, and loading them costs ~4 ms of CPU (a compiled, bytecode Bun 1.4.5
 * executable importing both: 7.3 ms of task-clock against 3.3 ms for one importing nothing, `perf
 * stat -r 100`), which only an invocation that actually calls kubelet should pay.
 *
 * Protocol: https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md (length-prefixed
 * messages, the status in trailers or in a trailers-only response).
 */
import type { ClientHttp2Session, IncomingHttpHeaders, IncomingHttpStatusHeader } from "node:http2";
import { errnoOf, messageOf } from "../errors.ts";

export interface UnaryCall {
  /** The unix socket's path. */
  socket: string;
  /** "/<package>.<Service>/<Method>". */
  method: string;
  /** The request message, encoded. */
  request: Uint8Array;
  /** Epoch milliseconds by which the answer must be in. */
  deadline: number;
  /** The largest response message taken (gRPC clients default to 4 MiB). */
  maxResponseBytes: number;
}

/** No answer: the socket could not be reached, the connection broke, or the deadline passed. */
export class GrpcTransportError extends Error {
  constructor(
    message: string,
    /** The system call's errno ("ENOENT", "ECONNREFUSED"), when one failed. */
    readonly errno: string | undefined,
    readonly timedOut: boolean,
  ) {
    super(message);
    this.name = "GrpcTransportError";
  }
}

/** The server answered with a status other than OK (0), or with something that is no gRPC answer. */
export class GrpcStatusError extends Error {
  constructor(
    /** The grpc-status code (https://grpc.github.io/grpc/core/md_doc_statuscodes.html). */
    readonly status: number,
    /** grpc-message, percent-decoded. */
    readonly grpcMessage: string,
  ) {
    super(`grpc-status ${status}${grpcMessage ? `, grpc-message: ${grpcMessage}` : ""}`);
    this.name = "GrpcStatusError";
  }
}

/** gRPC's status codes for what is not a gRPC answer (the spec's HTTP-to-gRPC mapping). */
const INTERNAL = 13;
const UNKNOWN = 2;
const UNIMPLEMENTED = 12;
const UNAVAILABLE = 14;
const UNAUTHENTICATED = 16;
const PERMISSION_DENIED = 7;
const RESOURCE_EXHAUSTED = 8;

/** The response message's bytes; throws GrpcTransportError or GrpcStatusError. */
export async function grpcUnary(call: UnaryCall): Promise<Uint8Array> {
  const remaining = call.deadline - Date.now();
  if (remaining <= 0) throw new GrpcTransportError(`deadline passed before calling ${call.method} on ${call.socket}`, undefined, true);
  const [http2, net] = await Promise.all([import("node:http2"), import("node:net")]);
  return new Promise<Uint8Array>((resolve, reject) => {
    let session: ClientHttp2Session | undefined;
    let settled = false;
    const finish = (outcome: { ok: Uint8Array } | { error: Error }) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      // destroy, not close: nothing more is wanted from this connection, and close would wait
      // for the server's side of streams that failed.
      session?.destroy();
      if ("ok" in outcome) resolve(outcome.ok);
      else reject(outcome.error);
    };
    const transportError = (err: unknown) =>
      finish({ error: new GrpcTransportError(`${call.method} on ${call.socket}: ${messageOf(err)}`, errnoOf(err) ?? errnoOf(causeOf(err)), false) });
    const timer = setTimeout(
      () => finish({ error: new GrpcTransportError(`${call.method} on ${call.socket}: no answer within ${remaining} ms`, undefined, true) }),
      remaining,
    );

    // The authority is a formality on a unix socket; "localhost" is what gRPC's Go client sends.
    session = http2.connect("http://localhost", {
      createConnection: () => {
        // The socket's own error (ENOENT, ECONNREFUSED) first: Node's session reports it only
        // as the cause of a cancelled stream.
        const socket = net.connect(call.socket);
        socket.on("error", transportError);
        return socket;
      },
    });
    session.on("error", transportError);
    const stream = session.request({
      ":method": "POST",
      ":path": call.method,
      "content-type": "application/grpc",
      te: "trailers",
      // The server gives up at the same deadline ("m": milliseconds, at most 8 digits).
      "grpc-timeout": `${Math.min(remaining, 99_999_999)}m`,
    });

    let httpStatus = 0;
    let status: number | undefined;
    let grpcMessage = "";
    const chunks: Uint8Array[] = [];
    let received = 0;
    const readStatus = (headers: IncomingHttpHeaders) => {
      const value = headers["grpc-status"];
      if (typeof value === "string") status = Number(value);
      const message = headers["grpc-message"];
      if (typeof message === "string") grpcMessage = percentDecoded(message);
    };
    stream.on("response", (headers: IncomingHttpHeaders & IncomingHttpStatusHeader) => {
      httpStatus = headers[":status"] ?? 0;
      // A trailers-only answer (an error before any message) carries the status here.
      readStatus(headers);
    });
    stream.on("trailers", readStatus);
    stream.on("data", (chunk: Uint8Array) => {
      received += chunk.length;
      if (received > call.maxResponseBytes + 5) {
        finish({ error: new GrpcStatusError(RESOURCE_EXHAUSTED, `response larger than ${call.maxResponseBytes} bytes`) });
        return;
      }
      chunks.push(chunk);
    });
    stream.on("error", transportError);
    stream.on("close", () => {
      if (settled) return;
      if (httpStatus === 0) return transportError(new Error("the stream closed before any response"));
      if (httpStatus !== 200) return finish({ error: new GrpcStatusError(statusOfHttp(httpStatus), `HTTP status ${httpStatus}`) });
      if (status === undefined) return finish({ error: new GrpcStatusError(INTERNAL, "the response carries no grpc-status") });
      if (status !== 0) return finish({ error: new GrpcStatusError(status, grpcMessage) });
      try {
        finish({ ok: singleMessage(concat(chunks, received), call.maxResponseBytes) });
      } catch (err) {
        finish({ error: err instanceof Error ? err : new Error(String(err)) });
      }
    });
    stream.end(frame(call.request));
  });
}

function causeOf(err: unknown): unknown {
  return err instanceof Error ? err.cause : undefined;
}

/** A message with gRPC's 5-byte prefix: not compressed (0), then the length, big-endian. */
function frame(message: Uint8Array): Uint8Array {
  const framed = new Uint8Array(5 + message.length);
  new DataView(framed.buffer).setUint32(1, message.length);
  framed.set(message, 5);
  return framed;
}

/** A unary answer is exactly one length-prefixed message. */
function singleMessage(body: Uint8Array, maxBytes: number): Uint8Array {
  if (body.length < 5) throw new GrpcStatusError(INTERNAL, `response of ${body.length} bytes holds no message`);
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  // We offer no grpc-accept-encoding, so a compressed message breaks the protocol.
  if (view.getUint8(0) !== 0) throw new GrpcStatusError(INTERNAL, "compressed response message, none was offered");
  const length = view.getUint32(1);
  if (length > maxBytes) throw new GrpcStatusError(RESOURCE_EXHAUSTED, `response message of ${length} bytes, more than ${maxBytes}`);
  if (body.length !== 5 + length) throw new GrpcStatusError(INTERNAL, `response of ${body.length} bytes for a message of ${length}`);
  return body.subarray(5);
}

function concat(chunks: Uint8Array[], total: number): Uint8Array {
  const all = new Uint8Array(total);
  let at = 0;
  for (const chunk of chunks) {
    all.set(chunk, at);
    at += chunk.length;
  }
  return all;
}

/** grpc-message is percent-encoded UTF-8; a malformed one is shown as it came. */
function percentDecoded(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

/** The gRPC spec's mapping of an HTTP status from something that is not a gRPC server. */
function statusOfHttp(httpStatus: number): number {
  switch (httpStatus) {
    case 400:
      return INTERNAL;
    case 401:
      return UNAUTHENTICATED;
    case 403:
      return PERMISSION_DENIED;
    case 404:
      return UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return UNAVAILABLE;
    default:
      return UNKNOWN;
  }
}
