/**
 * HTTP/1.1 on the wire for the Kubernetes client (RFC 9112): a request's bytes, and a parser
 * that turns a connection's bytes back into responses. Pure, so unit tests drive it byte by byte;
 * the socket is transport.ts's.
 *
 * Only what talking to a kube-apiserver needs: no compression is asked for (no Accept-Encoding),
 * so bodies come as sent, framed by Content-Length, chunked transfer coding, or the end of the
 * connection.
 */

export interface Http1Request {
  method: string;
  /** Path and query, as sent on the request line. */
  target: string;
  /** host[:port], as the server's URL names it. */
  host: string;
  headers: Record<string, string>;
  body?: string;
}

export interface Http1Response {
  status: number;
  /** Header names in lower case; a repeated header's values joined by ", ". */
  headers: Map<string, string>;
  body: string;
  /** The server keeps the connection open for another request. */
  keepAlive: boolean;
}

export class Http1Error extends Error {
  constructor(message: string) {
    super(message);
    this.name = "Http1Error";
  }
}

const CRLF = "\r\n";
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The request's bytes; the body's length is always declared, so the server never waits for more. */
export function encodeRequest(request: Http1Request): Uint8Array {
  const body = request.body === undefined ? undefined : encoder.encode(request.body);
  let head = `${request.method} ${request.target} HTTP/1.1${CRLF}Host: ${request.host}${CRLF}`;
  for (const [name, value] of Object.entries(request.headers)) {
    if (/[\r\n]/.test(name) || /[\r\n]/.test(value)) throw new Http1Error(`header ${JSON.stringify(name)} holds a line break`);
    head += `${name}: ${value}${CRLF}`;
  }
  if (body !== undefined || request.method === "POST" || request.method === "PUT" || request.method === "PATCH") {
    head += `Content-Length: ${body?.length ?? 0}${CRLF}`;
  }
  head += CRLF;
  const headBytes = encoder.encode(head);
  if (body === undefined) return headBytes;
  const bytes = new Uint8Array(headBytes.length + body.length);
  bytes.set(headBytes);
  bytes.set(body, headBytes.length);
  return bytes;
}

type Framing = { kind: "length"; remaining: number } | { kind: "chunked" } | { kind: "close" };

/**
 * Turns the bytes of one connection into responses, in order. `push` the bytes as they arrive; it
 * returns the responses they completed. `end` when the connection closes: it returns the response
 * the close completes (one framed by the end of the connection), or throws if one was cut short.
 */
export class Http1ResponseParser {
  private buffer: Uint8Array = new Uint8Array(0);
  private head: { status: number; headers: Map<string, string>; keepAlive: boolean; framing: Framing } | undefined;
  private body: Uint8Array[] = [];
  private chunkRemaining = 0;
  private chunkState: "size" | "data" | "data-end" | "trailers" = "size";

  /** Nothing of a response has arrived yet: a close now cut no answer short. */
  get idle(): boolean {
    return this.head === undefined && this.buffer.length === 0;
  }

  push(bytes: Uint8Array): Http1Response[] {
    // A copy: the socket may reuse the memory it handed us once its callback returns.
    this.buffer = this.buffer.length === 0 ? bytes.slice() : concat([this.buffer, bytes]);
    const done: Http1Response[] = [];
    for (;;) {
      const response = this.step();
      if (response === undefined) return done;
      done.push(response);
    }
  }

  end(): Http1Response | undefined {
    if (this.head?.framing.kind === "close") {
      this.body.push(this.buffer);
      this.buffer = new Uint8Array(0);
      return this.finish();
    }
    if (!this.idle) throw new Http1Error("the connection closed in the middle of a response");
    return undefined;
  }

  /** Parses what the buffer holds; a completed response, or undefined when more bytes are needed. */
  private step(): Http1Response | undefined {
    if (this.head === undefined) {
      const end = indexOfHeadEnd(this.buffer);
      if (end < 0) {
        if (this.buffer.length > 64 * 1024) throw new Http1Error("response headers longer than 64 KiB");
        return undefined;
      }
      const head = parseHead(decoder.decode(this.buffer.subarray(0, end)));
      this.buffer = this.buffer.subarray(end + 4);
      // 1xx answers precede the real one (RFC 9110 §15.2).
      if (head.status >= 100 && head.status < 200) return this.step();
      this.head = head;
      this.body = [];
      this.chunkState = "size";
    }
    const framing = this.head.framing;
    if (framing.kind === "length") {
      const take = Math.min(framing.remaining, this.buffer.length);
      this.body.push(this.buffer.subarray(0, take));
      this.buffer = this.buffer.subarray(take);
      framing.remaining -= take;
      return framing.remaining === 0 ? this.finish() : undefined;
    }
    if (framing.kind === "chunked") return this.stepChunked();
    this.body.push(this.buffer);
    this.buffer = new Uint8Array(0);
    return undefined;
  }

  private stepChunked(): Http1Response | undefined {
    for (;;) {
      if (this.chunkState === "data") {
        const take = Math.min(this.chunkRemaining, this.buffer.length);
        this.body.push(this.buffer.subarray(0, take));
        this.buffer = this.buffer.subarray(take);
        this.chunkRemaining -= take;
        if (this.chunkRemaining > 0) return undefined;
        this.chunkState = "data-end";
        continue;
      }
      const lineEnd = indexOfCrlf(this.buffer);
      if (lineEnd < 0) return undefined;
      const line = decoder.decode(this.buffer.subarray(0, lineEnd));
      this.buffer = this.buffer.subarray(lineEnd + 2);
      if (this.chunkState === "data-end") {
        if (line !== "") throw new Http1Error("a chunk is longer than its size says");
        this.chunkState = "size";
      } else if (this.chunkState === "size") {
        const size = line.split(";")[0]!.trim();
        if (!/^[0-9a-fA-F]{1,8}$/.test(size)) throw new Http1Error(`bad chunk size ${JSON.stringify(line)}`);
        this.chunkRemaining = Number.parseInt(size, 16);
        this.chunkState = this.chunkRemaining === 0 ? "trailers" : "data";
      } else if (line === "") {
        return this.finish();
      }
      // A trailer field: nothing the client needs.
    }
  }

  private finish(): Http1Response {
    const head = this.head!;
    this.head = undefined;
    const body = decoder.decode(concat(this.body));
    this.body = [];
    return { status: head.status, headers: head.headers, body, keepAlive: head.keepAlive && head.framing.kind !== "close" };
  }
}

function parseHead(text: string): { status: number; headers: Map<string, string>; keepAlive: boolean; framing: Framing } {
  const [statusLine = "", ...lines] = text.split(CRLF);
  const match = /^HTTP\/1\.([01]) (\d{3})(?: .*)?$/.exec(statusLine);
  if (!match) throw new Http1Error(`not an HTTP/1.x status line: ${JSON.stringify(statusLine.slice(0, 80))}`);
  const status = Number(match[2]);
  const headers = new Map<string, string>();
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon <= 0) throw new Http1Error(`bad header line ${JSON.stringify(line.slice(0, 80))}`);
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    const before = headers.get(name);
    headers.set(name, before === undefined ? value : `${before}, ${value}`);
  }
  const connection = (headers.get("connection") ?? "").toLowerCase();
  const keepAlive = match[1] === "1" ? !connection.includes("close") : connection.includes("keep-alive");
  return { status, headers, keepAlive, framing: framingOf(status, headers) };
}

/** How the body's end is found (RFC 9112 §6.3). */
function framingOf(status: number, headers: Map<string, string>): Framing {
  if (status === 204 || status === 304) return { kind: "length", remaining: 0 };
  const coding = headers.get("transfer-encoding");
  if (coding !== undefined) {
    if (coding.toLowerCase().split(",").pop()!.trim() === "chunked") return { kind: "chunked" };
    return { kind: "close" };
  }
  const length = headers.get("content-length");
  if (length === undefined) return { kind: "close" };
  if (!/^\d{1,15}$/.test(length)) throw new Http1Error(`bad Content-Length ${JSON.stringify(length)}`);
  return { kind: "length", remaining: Number(length) };
}

function indexOfHeadEnd(bytes: Uint8Array): number {
  for (let i = 0; i + 3 < bytes.length; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) return i;
  }
  return -1;
}

function indexOfCrlf(bytes: Uint8Array): number {
  for (let i = 0; i + 1 < bytes.length; i++) if (bytes[i] === 13 && bytes[i + 1] === 10) return i;
  return -1;
}

function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}
