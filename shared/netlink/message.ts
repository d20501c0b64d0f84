/**
 * What the netlink object files (link.ts, addr.ts, route.ts, rule.ts) share. They encode requests
 * and decode answers with the `netlink` package's rtnetlink codecs; this holds the glue between
 * those codecs, our socket (./socket.ts) and our IP model (../ip.ts): attribute streams as bytes,
 * address families, and the codecs' enum fields as numbers.
 */
import { AttrStream, type StreamData } from "netlink/dist/structs";
import type { Family } from "../ip.ts";

export const AF_UNSPEC = 0;
const AF_INET = 2;
const AF_INET6 = 10;

/** Runs a codec's writer and returns what it wrote as one buffer. */
export function encode(data: StreamData): Buffer {
  const stream = new AttrStream();
  stream.emit(data);
  return Buffer.concat(stream.bufs);
}

/** The codecs read Buffers; the socket hands out plain Uint8Arrays. */
export function asBuffer(payload: Uint8Array): Buffer {
  return Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
}

export function afOf(family: Family): number {
  return family === 4 ? AF_INET : AF_INET6;
}

/** The family of a message's header; anything but AF_INET is taken as IPv6, as we dump no other. */
export function familyOfAf(af: number | undefined): Family {
  return af === AF_INET ? 4 : 6;
}

/** The codecs hand enum fields back as their names when they know them; we want the numbers. */
export function enumNumber(values: Record<string, string | number>, value: number | string | undefined): number {
  if (typeof value === "number") return value;
  const number = value === undefined ? undefined : values[value];
  return typeof number === "number" ? number : 0;
}
