/**
 * The protobuf wire format, as much of it as kubelet's gRPC APIs need here: a reader that walks a
 * message's fields and skips those it is not asked about (any wire type, groups included), and a
 * writer for the few messages we send. Hand-written: the messages we read are four levels of
 * strings and repeated messages (podresources.ts), and a protobuf library with its generated code
 * would be loaded by every multus invocation for that.
 *
 * Wire format: https://protobuf.dev/programming-guides/encoding/
 */

/** The bytes are not a valid encoding (truncated, a bad wire type, bad UTF-8). */
export class ProtobufError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ProtobufError";
  }
}

/** The wire types (protobuf.dev "Message Structure"); 3 and 4 are the deprecated groups. */
export const WireType = { varint: 0, fixed64: 1, bytes: 2, startGroup: 3, endGroup: 4, fixed32: 5 } as const;

export interface FieldKey {
  field: number;
  wireType: number;
}

// fatal: proto3 strings must be UTF-8 (Go's runtime refuses invalid ones when it encodes), so
// bad bytes are a broken message, not text to patch with U+FFFD.
const utf8 = new TextDecoder("utf-8", { fatal: true });
const utf8Encoder = new TextEncoder();

/**
 * Reads one message's fields in order. The caller loops over `next()`, reads the fields it knows
 * with the matching method and hands every other one to `skip()`.
 */
export class ProtobufReader {
  private at = 0;

  constructor(private readonly bytes: Uint8Array) {}

  /** The next field's number and wire type, or undefined at the end of the message. */
  next(): FieldKey | undefined {
    if (this.at >= this.bytes.length) return undefined;
    const key = this.varint();
    const field = Math.floor(key / 8);
    const wireType = key % 8;
    if (field === 0) throw new ProtobufError(`field number 0 at byte ${this.at}`);
    return { field, wireType };
  }

  /**
   * A varint as a number: exact up to 2^53, which covers every length and field number (an
   * int64 above that loses precision; none is read as a value here).
   */
  varint(): number {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      const byte = this.bytes[this.at++];
      if (byte === undefined) throw new ProtobufError("truncated varint");
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) return value;
      scale *= 128;
    }
    throw new ProtobufError("varint longer than 10 bytes");
  }

  /** A length-delimited field's bytes (a view, not a copy). */
  bytesField(): Uint8Array {
    const length = this.varint();
    const end = this.at + length;
    if (end > this.bytes.length) throw new ProtobufError(`length ${length} runs past the end (${this.bytes.length - this.at} bytes left)`);
    const view = this.bytes.subarray(this.at, end);
    this.at = end;
    return view;
  }

  string(): string {
    try {
      return utf8.decode(this.bytesField());
    } catch (err) {
      if (err instanceof ProtobufError) throw err;
      throw new ProtobufError("a string field is not valid UTF-8");
    }
  }

  /** Skips the value of a field whose key `next()` just returned. */
  skip(key: FieldKey): void {
    switch (key.wireType) {
      case WireType.varint:
        this.varint();
        return;
      case WireType.fixed64:
        this.advance(8);
        return;
      case WireType.bytes:
        this.bytesField();
        return;
      case WireType.fixed32:
        this.advance(4);
        return;
      case WireType.startGroup:
        // A group ends at the end-group key of the same field; groups nest.
        for (;;) {
          const inner = this.next();
          if (inner === undefined) throw new ProtobufError(`group ${key.field} not closed`);
          if (inner.wireType === WireType.endGroup) {
            if (inner.field !== key.field) throw new ProtobufError(`group ${key.field} closed as ${inner.field}`);
            return;
          }
          this.skip(inner);
        }
      case WireType.endGroup:
        throw new ProtobufError(`end of group ${key.field} outside a group`);
      default:
        throw new ProtobufError(`wire type ${key.wireType} (field ${key.field}) does not exist`);
    }
  }

  /** The field has the wire type the schema gives it, or the message is not what we think it is. */
  expect(key: FieldKey, wireType: number): void {
    if (key.wireType !== wireType) throw new ProtobufError(`field ${key.field} has wire type ${key.wireType}, expected ${wireType}`);
  }

  private advance(count: number): void {
    if (this.at + count > this.bytes.length) throw new ProtobufError(`truncated: ${count} bytes wanted, ${this.bytes.length - this.at} left`);
    this.at += count;
  }
}

/** Builds one message: fields appended in the order written. */
export class ProtobufWriter {
  private readonly parts: number[] = [];

  string(field: number, value: string): this {
    return this.bytes(field, utf8Encoder.encode(value));
  }

  bytes(field: number, value: Uint8Array): this {
    this.key(field, WireType.bytes);
    this.varint(value.length);
    for (const byte of value) this.parts.push(byte);
    return this;
  }

  /** An embedded message: a length-delimited field holding the other writer's bytes. */
  message(field: number, value: ProtobufWriter): this {
    return this.bytes(field, value.finish());
  }

  bool(field: number, value: boolean): this {
    this.key(field, WireType.varint);
    this.varint(value ? 1 : 0);
    return this;
  }

  finish(): Uint8Array {
    return Uint8Array.from(this.parts);
  }

  private key(field: number, wireType: number): void {
    this.varint(field * 8 + wireType);
  }

  private varint(value: number): void {
    let rest = value;
    while (rest >= 0x80) {
      this.parts.push((rest % 128) | 0x80);
      rest = Math.floor(rest / 128);
    }
    this.parts.push(rest);
  }
}
