/**
 * The netlink handle, `Netlink`: a blocking rtnetlink socket, one request at a time, matched to its
 * answer by sequence number. The object files beside it (link.ts, addr.ts, route.ts, rule.ts)
 * encode their requests and decode the answers; this file only carries bytes and errors.
 *
 * A netlink socket talks to the network namespace it was created in, whatever thread uses it
 * later; so sockets are created inside the target namespace (see shared/netns.ts) and stay bound
 * to it. Everything here is synchronous, so nobody can await while the thread sits in another
 * namespace.
 */
import { formatMessage, parseMessages, parseAttributes, readS32 } from "netlink/dist/structs";
import { CniError, ErrorCode } from "../cni/errors.ts";
import { errnoOf } from "../errors.ts";
import * as libc from "../sys/libc.ts";

const AF_NETLINK = 16;
const NETLINK_ROUTE = 0;
const SOL_NETLINK = 270;
const NETLINK_CAP_ACK = 10;
const NETLINK_EXT_ACK = 11;
const NETLINK_GET_STRICT_CHK = 12;

const NLM_F_REQUEST = 0x1;
const NLM_F_ACK = 0x4;
const NLM_F_DUMP_INTR = 0x10;
const NLM_F_ROOT = 0x100;
const NLM_F_MATCH = 0x200;
const NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH;
export const NLM_F_REPLACE = 0x100;
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;

const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
/** Set on an error message whose payload carries extended-ack attributes. */
const NLM_F_ACK_TLVS = 0x200;
const NLMSGERR_ATTR_MSG = 1;
/** nlmsgerr: s32 error followed by the (capped) header of the request it answers. */
const NLMSGERR_HEADER_LENGTH = 4 + 16;
const DUMP_RETRIES = 5;

/** A request the kernel refused: errno plus the kernel's own explanation, when it gives one. */
export class NetlinkError extends CniError {
  constructor(
    readonly errno: number,
    readonly extack: string,
  ) {
    super(ErrorCode.Kernel, extack ? `${libc.describeErrno(errno)}: ${extack}` : libc.describeErrno(errno));
    this.name = "NetlinkError";
  }
}

/** True for the errors that mean "that object is already gone". */
export function isAlreadyGone(err: unknown): boolean {
  const errno = err instanceof NetlinkError ? errnoOf(err) : undefined;
  return errno === "ENODEV" || errno === "ENOENT" || errno === "ESRCH" || errno === "EADDRNOTAVAIL";
}

/** A handle on the network namespace it was opened in; the object files' functions take it first. */
export class Netlink {
  private seq = Math.floor(Math.random() * 0x7fffffff);
  private readonly buffer = new Uint8Array(1 << 17);
  private closed = false;

  private constructor(private readonly fd: number) {}

  /** Opens an rtnetlink socket in the namespace the calling thread is in now. */
  static open(): Netlink {
    const fd = libc.socket(AF_NETLINK, libc.SOCK_RAW | libc.SOCK_CLOEXEC, NETLINK_ROUTE);
    try {
      // Capped acks keep error replies small; extended acks give the kernel's reason in words.
      libc.setsockoptInt(fd, SOL_NETLINK, NETLINK_CAP_ACK, 1);
      libc.setsockoptInt(fd, SOL_NETLINK, NETLINK_EXT_ACK, 1);
      // Strict checking lets the kernel filter dumps (by link, by table) instead of us.
      libc.setsockoptInt(fd, SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1);
    } catch (err) {
      libc.close(fd);
      throw err;
    }
    return new Netlink(fd);
  }

  close(): void {
    if (!this.closed) libc.close(this.fd);
    this.closed = true;
  }

  /** Sends a request and waits for its acknowledgement. */
  execute(type: number, flags: number, payload: Uint8Array[]): void {
    this.exchange(type, NLM_F_REQUEST | NLM_F_ACK | flags, payload, "ack");
  }

  /** Sends a request for one object and returns its payload. */
  get(type: number, payload: Uint8Array[]): Uint8Array {
    const [message] = this.exchange(type, NLM_F_REQUEST, payload, "one").messages;
    if (!message) throw new NetlinkError(61 /* ENODATA */, "empty answer");
    return message;
  }

  /** Sends a dump request and returns the payload of every message in the answer. */
  dump(type: number, payload: Uint8Array[]): Uint8Array[] {
    for (let attempt = 1; ; attempt++) {
      const { messages, interrupted } = this.exchange(type, NLM_F_REQUEST | NLM_F_DUMP, payload, "dump");
      // The kernel marks a dump that raced with a change; its content may be inconsistent.
      if (!interrupted || attempt === DUMP_RETRIES) return messages;
    }
  }

  private exchange(type: number, flags: number, payload: Uint8Array[], answer: "ack" | "one" | "dump"): { messages: Uint8Array[]; interrupted: boolean } {
    if (this.closed) throw new Error("netlink socket used after close");
    this.seq = (this.seq + 1) & 0x7fffffff;
    const seq = this.seq;
    libc.send(this.fd, Buffer.concat(formatMessage({ type, flags, seq, port: 0, data: payload })));
    const messages: Uint8Array[] = [];
    let interrupted = false;
    for (;;) {
      const length = libc.recv(this.fd, this.buffer);
      const received = Buffer.from(this.buffer.buffer, 0, length);
      for (const message of parseMessages(received)) {
        if (message.seq !== seq) continue; // a late answer to an earlier request
        if (message.flags & NLM_F_DUMP_INTR) interrupted = true;
        if (message.type === NLMSG_ERROR) {
          const errno = -readS32.call(message.data, 0);
          if (errno !== 0) throw new NetlinkError(errno, extendedAck(message.data, message.flags));
          return { messages, interrupted };
        }
        if (message.type === NLMSG_DONE) {
          const errno = message.data.length >= 4 ? -readS32.call(message.data, 0) : 0;
          if (errno > 0) throw new NetlinkError(errno, extendedAck(message.data, message.flags));
          return { messages, interrupted };
        }
        // Copy: the receive buffer is reused by the next recv.
        messages.push(Uint8Array.prototype.slice.call(message.data));
        if (answer === "one") return { messages, interrupted };
      }
    }
  }
}

/** Runs `work` with a handle on the namespace the calling thread is in now, and closes it. */
export function withNetlink<T>(work: (nl: Netlink) => T): T {
  const nl = Netlink.open();
  try {
    return work(nl);
  } finally {
    nl.close();
  }
}

function extendedAck(errorPayload: Buffer, flags: number): string {
  if (!(flags & NLM_F_ACK_TLVS) || errorPayload.length <= NLMSGERR_HEADER_LENGTH) return "";
  let text = "";
  parseAttributes(errorPayload.subarray(NLMSGERR_HEADER_LENGTH), (attribute) => {
    if (attribute.type === NLMSGERR_ATTR_MSG) text = attribute.data.toString("utf8").replace(/\0+$/, "");
  });
  return text;
}
