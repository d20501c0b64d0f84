/**
 * The host end of the agent's channel: a pair of FIFOs that qemu (`-chardev pipe`) connects to the
 * guest's virtio-serial port. Plain file descriptors give what vitest's synchronous tests need, a
 * blocking round trip with no helper process per call; they are opened non-blocking so that a
 * wait can have a deadline and an exited qemu shows up as end-of-file instead of a hang.
 */
import { closeSync, constants, openSync, readSync, writeSync } from "node:fs";
import { StringDecoder } from "node:string_decoder";
import { errnoOf } from "../../shared/errors.ts";

/** What `poll()` saw: a whole line, nothing yet, or end-of-file (no writer left on the FIFO). */
export type Poll = { line: string } | "nothing" | "eof";

export class LineChannel {
  private readFd: number | undefined;
  private writeFd: number | undefined;
  private readonly decoder = new StringDecoder("utf8");
  private readonly chunk = Buffer.alloc(1 << 16);
  private pending = "";

  /**
   * `base` is the path given to qemu's `-chardev pipe,path=`: qemu reads `<base>.in` and writes
   * `<base>.out`. A non-blocking open for reading succeeds before qemu has opened the FIFO.
   */
  constructor(private readonly base: string) {
    this.readFd = openSync(`${base}.out`, constants.O_RDONLY | constants.O_NONBLOCK);
  }

  /**
   * One non-blocking look for a line. Before qemu has opened its end, "eof" only means "not yet";
   * once the agent has spoken, qemu holds the FIFO open until it exits, so "eof" means it is gone.
   */
  poll(): Poll {
    for (;;) {
      const newline = this.pending.indexOf("\n");
      if (newline >= 0) {
        const line = this.pending.slice(0, newline);
        this.pending = this.pending.slice(newline + 1);
        return { line };
      }
      if (this.readFd === undefined) return "eof";
      let count: number;
      try {
        count = readSync(this.readFd, this.chunk, 0, this.chunk.length, null);
      } catch (error) {
        if (errnoOf(error) === "EAGAIN") return "nothing";
        throw error;
      }
      if (count === 0) return "eof";
      this.pending += this.decoder.write(this.chunk.subarray(0, count));
    }
  }

  /** Waits for a line, blocking the thread; "eof" or "timeout" instead of a line when there is none. */
  readLine(deadline: number): Poll | "timeout" {
    // Replies come within milliseconds to seconds: short sleeps keep the added latency at ~1 ms.
    for (;;) {
      const result = this.poll();
      if (result !== "nothing") return result;
      if (Date.now() > deadline) return "timeout";
      sleepSync(1);
    }
  }

  /** Writes one line; false when it could not be delivered before the deadline. Throws (EPIPE, ENXIO) when qemu is gone. */
  writeLine(line: string, deadline: number): boolean {
    if (this.readFd === undefined) throw new Error("the channel is closed");
    // Opened on first use: a non-blocking open for writing fails (ENXIO) while qemu holds no read end.
    this.writeFd ??= openSync(`${this.base}.in`, constants.O_WRONLY | constants.O_NONBLOCK);
    const bytes = Buffer.from(`${line}\n`);
    let done = 0;
    while (done < bytes.length) {
      try {
        done += writeSync(this.writeFd, bytes, done);
      } catch (error) {
        // The FIFO is full (64 KiB): qemu passes it on as fast as the guest reads.
        if (errnoOf(error) !== "EAGAIN") throw error;
        if (Date.now() > deadline) return false;
        sleepSync(1);
      }
    }
    return true;
  }

  /** Closes both ends; idempotent (a descriptor closed twice could be someone else's by then). */
  close(): void {
    for (const fd of [this.readFd, this.writeFd]) if (fd !== undefined) closeSync(fd);
    this.readFd = this.writeFd = undefined;
  }
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/** Blocks the thread: run() must be synchronous, and there is nothing else to do meanwhile. */
function sleepSync(ms: number): void {
  Atomics.wait(sleeper, 0, 0, ms);
}
