// A MoQT draft-18 subscriber, just what the player needs, over WebTransport.
// It speaks the dialect of moq-transport 0.17 (the edge's library); see
// docs/research/browser-player.md §2 for every byte of it.
//
// Streams: we open one uni stream for our SETUP; the server's SETUP comes on a
// uni stream of its own. Each SUBSCRIBE goes on its own bidi stream and its
// answers (without request id) come back on that stream. Media arrives on uni
// streams, one per group, each starting with a subgroup header.

import { ProtocolError, StreamReader, Writer, decodeVi, frame } from './wire';

const SETUP = 0x2f00;
const SUBSCRIBE = 0x03;
const SUBSCRIBE_OK = 0x04;
const REQUEST_ERROR = 0x05;
const UNSUBSCRIBE = 0x0a;
const PUBLISH_DONE = 0x0b;
const GOAWAY = 0x10;

const SETUP_AUTHORIZATION_TOKEN = 0x03;
const TOKEN_ALIAS_USE_VALUE = 0x03;
const TOKEN_TYPE = 0;

/** Objects that arrive for a track alias before its SUBSCRIBE_OK are kept, up to this many. */
const MAX_EARLY_OBJECTS = 500;

export interface MoqtObject {
  group: number;
  object: number;
  payload: Uint8Array;
}

export type ObjectHandler = (o: MoqtObject) => void;

/** The edge refused a request (REQUEST_ERROR). */
class RequestError extends Error {
  constructor(
    readonly code: number,
    reason: string,
  ) {
    super(`request refused (code 0x${code.toString(16)}${reason ? `: ${reason}` : ''})`);
  }
}

export interface Subscription {
  readonly track: string;
  /** Settles with a reason when the publisher ends the subscription or its stream closes. */
  readonly ended: Promise<string>;
  /** UNSUBSCRIBE. */
  close(): void;
}

export interface ConnectOptions {
  /** SHA-256 of the edge's certificate, for serverCertificateHashes. */
  certSha256?: Uint8Array;
  token: string;
  signal?: AbortSignal;
}

export class MoqtSession {
  /** Settles with a human-readable reason once the session is gone, for whatever cause. */
  readonly closed: Promise<string>;
  private handlers = new Map<number, ObjectHandler>();
  /** Aliases we unsubscribed from: their stragglers are dropped, not kept as early objects. */
  private ended = new Set<number>();
  private early = new Map<number, MoqtObject[]>();
  private earlyCount = 0;
  private nextRequestId = 0;
  private serverSetup: Promise<void>;
  /** Set when we end the session ourselves, so `closed` says why. */
  private localReason: string | null = null;

  private constructor(private wt: WebTransport) {
    this.closed = wt.closed.then(
      (info) =>
        this.localReason ??
        `session closed by the edge${info.closeCode ? ` (code ${info.closeCode})` : ''}${info.reason ? `: ${info.reason}` : ''}`,
      (err: unknown) => this.localReason ?? `session lost: ${errorText(err)}`,
    );
    let setupSeen!: () => void;
    this.serverSetup = new Promise((resolve) => (setupSeen = resolve));
    this.acceptUniStreams(setupSeen).catch((err) => this.close(`receiving streams failed: ${errorText(err)}`));
  }

  /**
   * Opens WebTransport and completes SETUP with the token as AUTHORIZATION
   * TOKEN. Not on the URL: Chromium prints a failed WebTransport URL to the
   * console, and URLs end up in logs.
   */
  static async connect(url: string, opts: ConnectOptions): Promise<MoqtSession> {
    const wt = new WebTransport(url, {
      serverCertificateHashes: opts.certSha256 ? [{ algorithm: 'sha-256', value: opts.certSha256 }] : undefined,
      protocols: ['moqt-18'],
    } as WebTransportOptions);
    // Unobserved rejections of these would be reported as unhandled.
    wt.closed.catch(() => {});
    const abort = () => wt.close();
    opts.signal?.addEventListener('abort', abort, { once: true });
    let opened = false;
    try {
      await wt.ready;
      opened = true;
      const protocol = (wt as WebTransport & { protocol?: string }).protocol;
      // "" means the browser or edge did not negotiate; the edge then speaks draft-18 anyway.
      if (protocol && protocol !== 'moqt-18') throw new Error(`edge chose protocol ${protocol}`);
      const session = new MoqtSession(wt);
      await session.sendSetup(opts.token);
      await Promise.race([session.serverSetup, session.closed.then((r) => Promise.reject(new Error(r)))]);
      return session;
    } catch (err) {
      wt.close();
      if (opts.signal?.aborted) throw new Error('timed out');
      // The edge drops a session with a missing, invalid or out-of-scope token right after it
      // opens, and Chromium reports only "Connection lost" (no close code).
      if (opened) throw new Error(`session ended during setup; token refused? (${errorText(err)})`);
      throw err;
    } finally {
      opts.signal?.removeEventListener('abort', abort);
    }
  }

  private async sendSetup(token: string): Promise<void> {
    // Setup options are delta-typed KVPs with no count; an odd type carries `vi len + bytes`.
    // The token value is `vi alias type, vi token type, token bytes` (no inner length).
    const value = new Writer().vi(TOKEN_ALIAS_USE_VALUE).vi(TOKEN_TYPE).raw(new TextEncoder().encode(token)).finish();
    const options = new Writer().vi(SETUP_AUTHORIZATION_TOKEN).bytes(value).finish();
    const control = await this.wt.createUnidirectionalStream();
    // The control stream stays open for the session's life; closing it would end the session.
    await control.getWriter().write(frame(SETUP, options));
  }

  private async acceptUniStreams(setupSeen: () => void): Promise<void> {
    const streams = this.wt.incomingUnidirectionalStreams.getReader();
    for (;;) {
      const { value, done } = await streams.read();
      if (done) return;
      this.readUniStream(value, setupSeen).catch(() => {
        // One broken media stream costs one group; the session carries on.
      });
    }
  }

  private async readUniStream(stream: ReadableStream<Uint8Array>, setupSeen: () => void): Promise<void> {
    const r = new StreamReader(stream);
    const type = await r.viOrEnd();
    if (type === null) return;
    if (type === SETUP) {
      await r.bytes(await r.u16()); // the edge sends no options we need
      setupSeen();
      await this.readControl(r);
    } else if (type >= 0x10 && type <= 0x7d) {
      await this.readSubgroup(r, type);
    } else {
      r.cancel(); // FETCH data or unknown: not ours
    }
  }

  /** Messages after SETUP on the server's control stream; its end ends the session. */
  private async readControl(r: StreamReader): Promise<void> {
    for (;;) {
      const type = await r.viOrEnd();
      if (type === null) break;
      await r.bytes(await r.u16());
      if (type === GOAWAY) {
        // The edge is draining; a fresh connection lands on a live one.
        this.close('the edge is going away');
        return;
      }
    }
    this.close('the edge ended the control stream');
  }

  private async readSubgroup(r: StreamReader, type: number): Promise<void> {
    const alias = await r.vi();
    const group = await r.vi();
    if ((type & 0x06) === 0x04) await r.vi(); // explicit subgroup id; the edge uses one subgroup per group
    if (!(type & 0x20)) await r.u8(); // publisher priority
    const hasProperties = (type & 0x01) !== 0;
    let previous = -1;
    for (;;) {
      const delta = await r.viOrEnd();
      if (delta === null) return;
      const object = previous < 0 ? delta : previous + delta + 1;
      previous = object;
      if (hasProperties) await r.bytes(await r.vi());
      const length = await r.vi();
      if (length === 0) {
        await r.vi(); // status: end of group / end of track; the stream's FIN says as much
        continue;
      }
      this.deliver(alias, { group, object, payload: await r.bytes(length) });
    }
  }

  private deliver(alias: number, o: MoqtObject): void {
    const handler = this.handlers.get(alias);
    if (handler) {
      handler(o);
      return;
    }
    // Data streams often overtake the SUBSCRIBE_OK that tells us the alias.
    if (this.earlyCount >= MAX_EARLY_OBJECTS || this.ended.has(alias)) return;
    const list = this.early.get(alias) ?? [];
    list.push(o);
    this.early.set(alias, list);
    this.earlyCount++;
  }

  /**
   * SUBSCRIBE with no filter: the edge starts at object 0 of the newest group,
   * which decodes on its own. Resolves at SUBSCRIBE_OK; throws RequestError.
   */
  async subscribe(namespace: string[], track: string, onObject: ObjectHandler): Promise<Subscription> {
    const id = this.nextRequestId;
    this.nextRequestId += 2; // client request ids are even
    const w = new Writer().vi(id).vi(namespace.length);
    for (const field of namespace) w.bytes(field);
    const payload = w.bytes(track).vi(0 /* no parameters */).finish();

    const bidi = await this.wt.createBidirectionalStream();
    const writer = bidi.writable.getWriter();
    await writer.write(frame(SUBSCRIBE, payload));
    const r = new StreamReader(bidi.readable);
    const type = await r.vi();
    const body = await r.bytes(await r.u16());
    if (type === REQUEST_ERROR) {
      const [code, a] = decodeVi(body, 0);
      const [, b] = decodeVi(body, a); // retry interval
      const [len, c] = decodeVi(body, b);
      throw new RequestError(code, new TextDecoder().decode(body.subarray(c, c + len)));
    }
    if (type !== SUBSCRIBE_OK) throw new ProtocolError(`unexpected answer 0x${type.toString(16)} to SUBSCRIBE`);
    // Use the alias the edge gives (0.17 happens to reuse the request id).
    const [alias] = decodeVi(body, 0);
    this.handlers.set(alias, onObject);
    const early = this.early.get(alias) ?? [];
    this.early.delete(alias);
    this.earlyCount -= early.length;
    early.forEach(onObject);

    const ended = this.readSubscriptionEnd(r);
    return {
      track,
      ended,
      close: () => {
        this.handlers.delete(alias);
        this.ended.add(alias);
        if (this.localReason) return;
        writer
          .write(frame(UNSUBSCRIBE, new Uint8Array(0)))
          .then(() => writer.close())
          .catch(() => {});
      },
    };
  }

  /** After SUBSCRIBE_OK the bidi carries at most PUBLISH_DONE, then FIN. */
  private async readSubscriptionEnd(r: StreamReader): Promise<string> {
    try {
      for (;;) {
        const type = await r.viOrEnd();
        if (type === null) return 'subscription stream closed';
        const body = await r.bytes(await r.u16());
        if (type === PUBLISH_DONE) return `publisher ended the track (status ${decodeVi(body, 0)[0]})`;
      }
    } catch (err) {
      return `subscription stream failed: ${errorText(err)}`;
    }
  }

  close(reason = 'closed by the player'): void {
    this.localReason ??= reason;
    this.wt.close();
  }
}

/** Error text for stats and logs; WebTransport errors carry no URL or token. */
export function errorText(err: unknown): string {
  if (err instanceof Error) return err.message || err.name;
  return String(err);
}
