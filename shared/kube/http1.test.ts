import { describe, expect, test } from "vitest";
import { Http1Error, Http1ResponseParser, encodeRequest } from "./http1.ts";

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
const bytes = (s: string) => new TextEncoder().encode(s);

/** Feeds `wire` to a parser `step` bytes at a time, as a socket may cut it anywhere. */
function parseInPieces(wire: string, step: number) {
  const parser = new Http1ResponseParser();
  const all = bytes(wire);
  const responses = [];
  for (let at = 0; at < all.length; at += step) responses.push(...parser.push(all.subarray(at, at + step)));
  return { parser, responses };
}

describe("HTTP/1.1 requests", () => {
  test("a GET: request line, Host, the headers given, no body and no length", () => {
    const wire = text(encodeRequest({ method: "GET", target: "/api/v1/pods?limit=1", host: "10.0.0.1:6443", headers: { Accept: "application/json" } }));
    expect(wire).toBe("GET /api/v1/pods?limit=1 HTTP/1.1\r\nHost: 10.0.0.1:6443\r\nAccept: application/json\r\n\r\n");
  });

  test("a body's length is counted in bytes, not characters", () => {
    const wire = text(encodeRequest({ method: "PATCH", target: "/x", host: "h", headers: {}, body: '{"podref":"ns/pöd"}' }));
    expect(wire).toBe('PATCH /x HTTP/1.1\r\nHost: h\r\nContent-Length: 20\r\n\r\n{"podref":"ns/pöd"}');
  });

  test("a POST without a body still says its length is 0", () => {
    expect(text(encodeRequest({ method: "POST", target: "/x", host: "h", headers: {} }))).toContain("Content-Length: 0\r\n");
  });

  test("a header value with a line break is refused (no header injection from a token file)", () => {
    expect(() => encodeRequest({ method: "GET", target: "/", host: "h", headers: { Authorization: "Bearer a\r\nX-Evil: 1" } })).toThrow(Http1Error);
  });
});

describe("HTTP/1.1 responses", () => {
  const chunked =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + '6\r\n{"a":"\r\n7;ext=1\r\nxyzä"}\r\n0\r\nX-Trailer: t\r\n\r\n';

  test.each([1, 3, 17, 4096])("chunked, fed %i bytes at a time: the body joined, multi-byte characters intact", (step) => {
    const { responses, parser } = parseInPieces(chunked, step);
    expect(responses).toHaveLength(1);
    expect(responses[0]).toMatchObject({ status: 200, body: '{"a":"xyzä"}', keepAlive: true });
    expect(responses[0]!.headers.get("content-type")).toBe("application/json");
    expect(parser.idle).toBe(true);
  });

  test("Content-Length framing, two responses on one connection, in one read", () => {
    const wire = "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 404 Not Found\r\ncontent-length: 5\r\n\r\nnope!";
    const { responses } = parseInPieces(wire, 1000);
    expect(responses.map((r) => [r.status, r.body])).toEqual([
      [201, "{}"],
      [404, "nope!"],
    ]);
  });

  test("a 1xx answer before the real one is skipped", () => {
    const { responses } = parseInPieces("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", 5);
    expect(responses.map((r) => r.status)).toEqual([200]);
  });

  test("204 has no body whatever it declares", () => {
    const { responses, parser } = parseInPieces("HTTP/1.1 204 No Content\r\n\r\n", 1);
    expect(responses).toMatchObject([{ status: 204, body: "" }]);
    expect(parser.idle).toBe(true);
  });

  test("no length: the body runs to the close, and the connection is not reused", () => {
    const { responses, parser } = parseInPieces("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it", 4);
    expect(responses).toEqual([]);
    expect(parser.end()).toMatchObject({ status: 200, body: "all of it", keepAlive: false });
  });

  test("Connection: close on a framed answer: not kept alive; HTTP/1.0 only with keep-alive", () => {
    expect(parseInPieces("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", 99).responses[0]!.keepAlive).toBe(false);
    expect(parseInPieces("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 99).responses[0]!.keepAlive).toBe(false);
    expect(parseInPieces("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", 99).responses[0]!.keepAlive).toBe(true);
  });

  test("a close in the middle of a response is an error; between responses it is not", () => {
    const cut = parseInPieces("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", 99);
    expect(() => cut.parser.end()).toThrow(/in the middle of a response/);
    const between = parseInPieces("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 99);
    expect(between.parser.end()).toBeUndefined();
  });

  test.each([
    ["not HTTP", "SSH-2.0-OpenSSH\r\n\r\n", /not an HTTP\/1.x status line/],
    ["a bad Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", /bad Content-Length/],
    ["a bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", /bad chunk size/],
    ["a chunk longer than declared", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", /longer than its size/],
    ["a header line without a colon", "HTTP/1.1 200 OK\r\nbroken\r\n\r\n", /bad header line/],
  ])("%s is an error, not a response", (_, wire, message) => {
    expect(() => parseInPieces(wire, 99)).toThrow(message);
  });
});
