// Byte-level coding for MoQT draft-18 as moq-transport 0.17 puts it on the wire.
//
// The varint is draft-18's "vi64", not the QUIC varint: the number of leading
// 1-bits in the first byte is the number of bytes that follow (big-endian).
// 0xxxxxxx = 7 bits, 10xxxxxx + 1 byte = 14 bits, … 11111110 + 7 bytes = 56 bits,
// 11111111 + 8 bytes = 64 bits.

export class ProtocolError extends Error {}

// Largest value for each encoded length 1..8; anything above needs 9 bytes.
const LIMITS = [0x7f, 0x3fff, 0x1fffff, 0x0fffffff, 0x07_ffff_ffff, 0x03ff_ffff_ffff, 0x01_ffff_ffff_ffff];

export function encodeVi(value: number): Uint8Array {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`vi64 out of range: ${value}`);
  // Every safe integer (< 2^53) fits the 8-byte form, so 9 bytes are never written.
  let n = LIMITS.findIndex((limit) => value <= limit) + 1;
  if (n === 0) n = 8;
  const out = new Uint8Array(n);
  let rest = value;
  for (let i = n - 1; i >= 1; i--) {
    out[i] = rest % 256;
    rest = Math.floor(rest / 256);
  }
  // n leading bits: n-1 ones then a zero; the first byte keeps what is left of the value.
  out[0] = ((0xff00 >> (n - 1)) & 0xff) | rest;
  return out;
}

/** Total encoded length of a vi64 announced by its first byte. */
export function viLength(first: number): number {
  let ones = 0;
  while (ones < 8 && first & (0x80 >> ones)) ones++;
  return ones + 1;
}

/** Decodes a vi64 from `b` at `at`; returns the value and the offset after it. */
export function decodeVi(b: Uint8Array, at: number): [number, number] {
  if (at >= b.length) throw new ProtocolError('truncated varint');
  const n = viLength(b[at]);
  if (at + n > b.length) throw new ProtocolError('truncated varint');
  // Data bits left in the first byte: 7 for n=1 down to 0 for n>=8.
  let value = n >= 8 ? 0 : b[at] & (0xff >> n);
  for (let i = 1; i < n; i++) value = value * 256 + b[at + i];
  if (!Number.isSafeInteger(value)) throw new ProtocolError('varint beyond 2^53');
  return [value, at + n];
}

export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const utf8 = new TextEncoder();

/** Builds a message payload field by field. */
export class Writer {
  private parts: Uint8Array[] = [];
  vi(value: number): this {
    this.parts.push(encodeVi(value));
    return this;
  }
  raw(bytes: Uint8Array): this {
    this.parts.push(bytes);
    return this;
  }
  /** `vi length + bytes`; strings are UTF-8. */
  bytes(value: Uint8Array | string): this {
    const b = typeof value === 'string' ? utf8.encode(value) : value;
    return this.vi(b.length).raw(b);
  }
  finish(): Uint8Array {
    return concat(this.parts);
  }
}

/** A control message frame: `vi type, u16 length, payload`. */
export function frame(type: number, payload: Uint8Array): Uint8Array {
  if (payload.length > 0xffff) throw new RangeError('control message too long');
  return concat([encodeVi(type), Uint8Array.of(payload.length >> 8, payload.length & 0xff), payload]);
}

/**
 * Pulls typed fields off a WebTransport receive stream. Chunks are kept as a
 * list and only joined when a read spans them, because media payloads are
 * large and arrive in many small pieces.
 */
export class StreamReader {
  private reader: ReadableStreamDefaultReader<Uint8Array>;
  private chunks: Uint8Array[] = [];
  private available = 0;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.reader = stream.getReader();
  }

  /** False when the stream ended before `n` bytes were available. */
  private async fill(n: number): Promise<boolean> {
    while (this.available < n) {
      const { value, done } = await this.reader.read();
      if (done) return false;
      if (value.length) {
        this.chunks.push(value);
        this.available += value.length;
      }
    }
    return true;
  }

  /** Removes the next `n` bytes (all buffered) into a fresh array. */
  private take(n: number): Uint8Array {
    // A fresh copy: a subarray would pin the whole chunk it came from.
    const out = new Uint8Array(n);
    let at = 0;
    while (at < n) {
      const c = this.chunks[0];
      const k = Math.min(c.length, n - at);
      out.set(c.subarray(0, k), at);
      at += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    this.available -= n;
    return out;
  }

  async bytes(n: number): Promise<Uint8Array> {
    if (!(await this.fill(n))) throw new ProtocolError('stream ended early');
    return this.take(n);
  }

  async u8(): Promise<number> {
    return (await this.bytes(1))[0];
  }

  async u16(): Promise<number> {
    const b = await this.bytes(2);
    return (b[0] << 8) | b[1];
  }

  /** The next vi64, or null at a clean end of stream. */
  async viOrEnd(): Promise<number | null> {
    if (!(await this.fill(1))) return null;
    const n = viLength(this.chunks[0][0]);
    return decodeVi(await this.bytes(n), 0)[0];
  }

  async vi(): Promise<number> {
    const v = await this.viOrEnd();
    if (v === null) throw new ProtocolError('stream ended early');
    return v;
  }

  cancel(): void {
    this.reader.cancel().catch(() => {});
  }
}
