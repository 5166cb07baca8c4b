// The WebTransport path: MoQT session → catalog → media tracks → MSE, with a
// small controller that keeps the playhead a fixed distance behind the newest
// buffered media.

import { type Catalog, parseCatalog, sameTrackSet } from './catalog';
import { MoqtSession, type Subscription, errorText } from './moqt';
import { MseSink } from './mse';
import { type WallClockRef, latencyMs, parsePrft } from './prft';

/** What `GET <edge>/webtransport.json` tells. */
export interface WtEndpoint {
  url: string;
  certSha256?: Uint8Array;
}

/** Answer of an edge that offers no WebTransport, as opposed to one that cannot be reached. */
export class NoWebTransport extends Error {}

export async function fetchWtEndpoint(edge: string, signal: AbortSignal): Promise<WtEndpoint> {
  const res = await fetch(`${edge}webtransport.json`, { signal, cache: 'no-store' });
  if (!res.ok) throw new NoWebTransport(`edge offers no WebTransport (HTTP ${res.status})`);
  const j = (await res.json()) as { url?: unknown; cert_sha256?: unknown; protocols?: unknown };
  if (typeof j.url !== 'string') throw new NoWebTransport('edge gave no WebTransport URL');
  if (Array.isArray(j.protocols) && !j.protocols.includes('moqt-18')) throw new NoWebTransport('edge speaks no moqt-18');
  const hex = typeof j.cert_sha256 === 'string' ? j.cert_sha256 : '';
  // Without a hash the certificate must be publicly trusted (a production edge).
  const certSha256 = /^[0-9a-f]{64}$/i.test(hex) ? Uint8Array.from(hex.match(/../g)!, (h) => parseInt(h, 16)) : undefined;
  return { url: j.url, certSha256 };
}

export interface WtOptions {
  namespace: string[];
  token: () => string;
  /** Seconds of buffer to keep ahead of the playhead. */
  targetSec: number;
  /** Called once when a connected session breaks; the player decides what next. */
  onFail: (reason: string) => void;
}

/** A live session with no media for this long counts as broken. */
const MEDIA_WATCHDOG_MS = 6000;
// Frequent enough to place the playhead soon after the first media lands.
const CONTROL_INTERVAL_MS = 100;
const TRIM_INTERVAL_MS = 10_000;
/** At start-up, accept this much more buffer than the target to begin on a keyframe. */
const MAX_START_EXCESS_SEC = 0.3;

export class WebTransportPlayback {
  private session: MoqtSession | null = null;
  private subs = new Map<string, Subscription>();
  private sink: MseSink | null = null;
  private catalog: Catalog | null = null;
  private catalogGroup = -1;
  private clock: { ref: WallClockRef; video: boolean } | null = null;
  private received: Array<[number, number]> = []; // [ms, bytes] over the last 2 s
  private lastMediaAt = 0;
  private timer: ReturnType<typeof setInterval> | null = null;
  private lastTrim = 0;
  private rate = 1;
  /** Between a successful connect and a failure: the only time the controller and watchdog act. */
  private live = false;

  constructor(
    private video: HTMLVideoElement,
    private opts: WtOptions,
  ) {}

  /**
   * Connects (or reconnects) and returns once the first media object is in,
   * or throws. Keeps the MSE sink of an earlier session so a reconnect does
   * not blank the picture.
   */
  async connect(endpoint: WtEndpoint, signal: AbortSignal): Promise<void> {
    this.dropSession();
    const aborted = new Promise<never>((_, reject) => {
      const fail = () => reject(new Error('timed out'));
      if (signal.aborted) fail();
      signal.addEventListener('abort', fail, { once: true });
    });
    aborted.catch(() => {});
    const session = await MoqtSession.connect(endpoint.url, { certSha256: endpoint.certSha256, token: this.opts.token(), signal });
    this.session = session;
    const died = session.closed.then((reason) => Promise.reject(new Error(reason)));
    died.catch(() => {});
    try {
      let firstMedia!: () => void;
      const mediaSeen = new Promise<void>((resolve) => (firstMedia = resolve));
      let firstCatalog!: (c: Catalog) => void;
      let badCatalog!: (e: unknown) => void;
      const catalogSeen = new Promise<Catalog>((resolve, reject) => ((firstCatalog = resolve), (badCatalog = reject)));
      this.catalogGroup = -1;
      let catalogKnown = false;
      this.subs.set(
        'catalog',
        await Promise.race([
          session.subscribe(this.opts.namespace, 'catalog', (o) => {
            // Each catalog is a new group; a straggler from an older group is stale.
            if (o.group <= this.catalogGroup) return;
            this.catalogGroup = o.group;
            let c: Catalog;
            try {
              c = parseCatalog(o.payload);
            } catch (err) {
              badCatalog(err);
              return;
            }
            if (!catalogKnown) {
              catalogKnown = true;
              firstCatalog(c);
            } else if (this.session === session) this.applyCatalog(session, c, firstMedia).catch((err) => this.fail(`catalog update failed: ${errorText(err)}`));
          }),
          aborted,
          died,
        ]),
      );
      const catalog = await Promise.race([catalogSeen, aborted, died]);
      await Promise.race([this.applyCatalog(session, catalog, firstMedia), aborted, died]);
      await Promise.race([mediaSeen, aborted, died]);
    } catch (err) {
      this.dropSession();
      throw err;
    }
    this.lastMediaAt = performance.now();
    this.live = true;
    session.closed.then((reason) => this.session === session && this.fail(reason));
    this.timer ??= setInterval(() => this.control(), CONTROL_INTERVAL_MS);
  }

  /** (Re)builds MSE as the catalog needs and subscribes to its media tracks. */
  private async applyCatalog(session: MoqtSession, catalog: Catalog, firstMedia: () => void): Promise<void> {
    if (!MseSink.supports(catalog)) throw new Error(`this browser cannot play ${catalog.tracks.map((t) => t.codec).join(', ')}`);
    const rebuild = !this.sink || !this.catalog || !sameTrackSet(this.catalog, catalog);
    if (rebuild) {
      for (const [name, sub] of this.subs) {
        if (name === 'catalog') continue;
        sub.close();
        this.subs.delete(name);
      }
      this.sink?.close();
      // Until the first frame shows, place the playhead as soon as media is buffered rather than on the next tick.
      this.sink = new MseSink(this.video, () => this.video.readyState < 2 && this.control());
      this.clock = null;
    }
    this.catalog = catalog;
    await this.sink!.configure(catalog);
    // In parallel: each SUBSCRIBE_OK takes a round trip through the edge.
    const missing = catalog.tracks.filter((t) => !this.subs.has(t.name));
    const subs = await Promise.all(
      missing.map((t) =>
        session.subscribe(this.opts.namespace, t.name, (o) => {
          const sink = this.sink;
          if (!sink || this.session !== session) return;
          sink.append(t.name, o.payload);
          this.noteMedia(t.role === 'video', t.timescale, o.payload);
          firstMedia();
        }),
      ),
    );
    for (const sub of subs) {
      this.subs.set(sub.track, sub);
      sub.ended.then((reason) => this.subs.get(sub.track) === sub && this.fail(`${sub.track}: ${reason}`));
    }
  }

  private noteMedia(isVideo: boolean, timescale: number, payload: Uint8Array): void {
    const now = performance.now();
    this.lastMediaAt = now;
    this.received.push([now, payload.length]);
    while (this.received.length && this.received[0][0] < now - 2000) this.received.shift();
    // The video track's clock is preferred; audio stands in for audio-only streams.
    if (isVideo || !this.clock?.video) {
      const ref = parsePrft(payload, timescale);
      if (ref) this.clock = { ref, video: isVideo };
    }
  }

  /** Keeps the playhead `targetSec` behind the newest media: seek when far off, speed up a little when slightly behind. */
  private control(): void {
    if (!this.live) return;
    const v = this.video;
    const now = performance.now();
    if (this.sink?.error) return this.fail(this.sink.error);
    if (v.error) return this.fail(`media error: ${v.error.message || v.error.code}`);
    if (now - this.lastMediaAt > MEDIA_WATCHDOG_MS) return this.fail(`no media for ${MEDIA_WATCHDOG_MS / 1000} s`);
    if (now - this.lastTrim > TRIM_INTERVAL_MS) {
      this.lastTrim = now;
      this.sink?.trim();
    }
    const b = v.buffered;
    if (!b.length || v.seeking) return;
    const start = b.start(b.length - 1);
    const end = b.end(b.length - 1);
    const target = this.opts.targetSec;
    const t = v.currentTime;
    if (t < start || t > end) {
      // Outside the newest range (start-up, or a gap left by a lost group): jump in. The range
      // starts at a keyframe, which shows at once; any other point first decodes up to it, so
      // take the keyframe unless that leaves us far behind.
      v.currentTime = end - start <= target + MAX_START_EXCESS_SEC ? start : end - target;
    } else if (end - t > target + Math.max(1, target)) {
      // Far behind (a stall, a background tab): jump forward.
      v.currentTime = end - target;
    } else {
      // Small corrections by rate are inaudible (pitch is preserved) and do not stutter like a
      // seek. Hysteresis: correct from 0.1 s off until back on target.
      const ahead = end - t;
      if (ahead > target + 0.5) this.rate = 1.1;
      else if (ahead > target + 0.1 && this.rate <= 1) this.rate = 1.05;
      else if (ahead < target - 0.1) this.rate = 0.95;
      else if ((this.rate > 1 && ahead <= target) || (this.rate < 1 && ahead >= target)) this.rate = 1;
      if (v.playbackRate !== this.rate) v.playbackRate = this.rate;
    }
    if (v.paused) v.play().catch(() => {});
  }

  latencyMs(): number | null {
    if (!this.clock || this.video.readyState < 2) return null;
    return Math.round(latencyMs(this.clock.ref, this.video.currentTime));
  }

  bitrateBps(): number {
    const bytes = this.received.reduce((n, [, b]) => n + b, 0);
    return Math.round((bytes * 8) / 2);
  }

  private fail(reason: string): void {
    if (!this.live) return;
    this.live = false;
    this.dropSession();
    this.opts.onFail(reason);
  }

  /** Ends the session; the sink stays for a reconnect. */
  private dropSession(): void {
    for (const s of this.subs.values()) s.close();
    this.subs.clear();
    this.session?.close();
    this.session = null;
  }

  stop(): void {
    this.live = false;
    this.dropSession();
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.sink?.close();
    this.sink = null;
    this.video.playbackRate = 1;
  }
}
