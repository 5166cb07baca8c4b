// strom's browser player: WebTransport/MoQT into MSE where it works, the
// edge's LL-HLS where it does not, and the next edge when one fails.
//
// Order of attempts per edge: WebTransport (unless the browser lacks it, the
// mode says HLS, or the edge offers none), then HLS on the same edge; an edge
// whose HTTP does not answer is skipped. When every edge failed the player
// says so and starts over after a growing pause.

import { HlsPlayback } from './hls';
import { errorText } from './moqt';
import { Overlay } from './overlay';
import { NoWebTransport, WebTransportPlayback, type WtEndpoint, fetchWtEndpoint } from './webtransport';
import { QOE_INTERVAL_MS, QoeMeter, sendBeacon } from './qoe';

export interface PlayerOptions {
  /** Edge HTTP base URLs, best first (e.g. "http://127.0.0.1:4443/"). */
  edges: string[];
  /** "tenant/event/stream". */
  namespace: string;
  /** The current playback token; called on every (re)connect and HLS request. */
  token: () => string;
  /** Default auto: WebTransport, falling back to HLS. */
  mode?: 'auto' | 'webtransport' | 'hls';
  /** Default true: ~0.4 s buffer on WebTransport, hls.js lowLatencyMode. */
  lowLatency?: boolean;
  /** Show the support overlay (also toggled by pressing "d", or ?debug=1). */
  overlay?: boolean;
  /** Default 2500: WebTransport ready + SETUP + catalog + first media, else fall back. */
  webTransportTimeoutMs?: number;
}

export interface PlayerStats {
  transport: 'webtransport' | 'hls' | 'none';
  state: 'connecting' | 'playing' | 'stalled' | 'failed' | 'stopped';
  /** To live: from prft (WebTransport) or the program date time (HLS). */
  latencyMs: number | null;
  bufferMs: number;
  bitrateBps: number;
  framesDecoded: number;
  droppedFrames: number;
  /** From start() to the first decoded frame. */
  firstFrameMs: number | null;
  stalls: number;
  fallbackReason: string | null;
  /** From start() to the decision to leave WebTransport for HLS. */
  fallbackAfterMs: number | null;
  error: string | null;
}

/** Buffer kept ahead of the playhead on WebTransport. */
const TARGET_LOW_LATENCY_SEC = 0.4;
const TARGET_NORMAL_SEC = 1.5;
/** A WebTransport session that ran this long has earned another reconnect. */
const STABLE_SESSION_MS = 60_000;
const RETRY_DELAYS_MS = [5_000, 10_000, 20_000, 30_000];

type Outcome = 'playing' | { reason: string; edgeDown: boolean };

export class StromPlayer {
  private readonly video: HTMLVideoElement;
  private readonly edges: string[];
  private readonly namespace: string[];
  private readonly mode: 'auto' | 'webtransport' | 'hls';
  private readonly lowLatency: boolean;
  private readonly wtTimeoutMs: number;
  private readonly overlay: Overlay;
  private readonly message: HTMLDivElement;
  private readonly unmute: HTMLButtonElement;
  private readonly teardown: Array<() => void> = [];

  private wt: WebTransportPlayback | null = null;
  private hls: HlsPlayback | null = null;
  /** HLS preloading while a slow WebTransport attempt may still succeed. */
  private warmHls: HlsPlayback | null = null;
  private edgeIndex = 0;
  /** Bumped by stop(): work of an older run ignores its results. */
  private run = 0;
  private running = false;
  private startedAt = 0;
  private retries = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private reconnects = 1;
  private stableTimer: ReturnType<typeof setTimeout> | null = null;

  private transport: PlayerStats['transport'] = 'none';
  private state: PlayerStats['state'] = 'stopped';
  private firstFrameMs: number | null = null;
  private stalls = 0;
  private fallbackReason: string | null = null;
  private fallbackAfterMs: number | null = null;
  private error: string | null = null;
  private readonly qoe = new QoeMeter();
  private qoeTimer: ReturnType<typeof setInterval> | null = null;

  constructor(
    container: HTMLElement,
    private readonly opts: PlayerOptions,
  ) {
    if (!opts.edges.length) throw new Error('StromPlayer needs at least one edge');
    this.edges = opts.edges.map((e) => (e.endsWith('/') ? e : `${e}/`));
    this.namespace = opts.namespace.split('/');
    this.mode = opts.mode ?? 'auto';
    this.lowLatency = opts.lowLatency ?? true;
    this.wtTimeoutMs = opts.webTransportTimeoutMs ?? 2500;

    if (getComputedStyle(container).position === 'static') container.style.position = 'relative';
    this.video = document.createElement('video');
    // Muted autoplay is allowed everywhere; sound needs a click on "Unmute".
    this.video.muted = true;
    this.video.autoplay = true;
    this.video.playsInline = true;
    this.video.setAttribute('playsinline', '');
    Object.assign(this.video.style, { width: '100%', height: '100%', background: '#000', display: 'block', objectFit: 'contain' });
    container.appendChild(this.video);

    this.message = document.createElement('div');
    Object.assign(this.message.style, {
      position: 'absolute',
      inset: '0',
      display: 'none',
      alignItems: 'center',
      justifyContent: 'center',
      textAlign: 'center',
      padding: '1em',
      color: '#fff',
      font: '15px/1.4 system-ui, sans-serif',
      pointerEvents: 'none',
    });
    container.appendChild(this.message);

    this.unmute = document.createElement('button');
    this.unmute.type = 'button';
    this.unmute.textContent = 'Unmute';
    Object.assign(this.unmute.style, {
      position: 'absolute',
      right: '12px',
      bottom: '12px',
      padding: '6px 12px',
      font: '14px system-ui, sans-serif',
      color: '#fff',
      background: 'rgba(0,0,0,0.6)',
      border: '1px solid rgba(255,255,255,0.6)',
      borderRadius: '4px',
      cursor: 'pointer',
      zIndex: '3',
    });
    this.unmute.addEventListener('click', () => {
      this.video.muted = false;
      this.video.play().catch(() => {});
    });
    container.appendChild(this.unmute);

    this.overlay = new Overlay(container, () => ({ ...this.stats(), edge: this.edgeLabel() }));
    const debug = new URLSearchParams(location.search).get('debug') === '1';
    this.overlay.show(opts.overlay ?? debug);

    this.listen(this.video, 'playing', () => {
      if (this.transport === 'none') return;
      this.qoe.stallEnded(performance.now());
      this.state = 'playing';
      this.error = null;
      this.retries = 0;
      this.render();
    });
    this.listen(this.video, 'waiting', () => {
      // Our own seeks (start-up, catching up) are not stalls.
      if (this.state !== 'playing' || this.video.seeking) return;
      this.stalls++;
      this.qoe.stallBegan(performance.now());
      this.state = 'stalled';
    });
    // The last figures go out when the page goes away.
    this.listen(window, 'pagehide', () => this.beacon(true));
    this.listen(this.video, 'volumechange', () => (this.unmute.style.display = this.video.muted ? '' : 'none'));
    this.listen(document, 'keydown', (e) => {
      const k = e as KeyboardEvent;
      const t = k.target as HTMLElement | null;
      if (k.key !== 'd' || k.ctrlKey || k.metaKey || k.altKey || t?.closest('input, textarea, select, [contenteditable]')) return;
      this.overlay.show(!this.overlay.visible);
    });
  }

  /**
   * Starts playback. Resolves once something plays, or once every edge has
   * failed (stats() then says why, and the player keeps retrying); it does
   * not reject.
   */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    const run = ++this.run;
    this.startedAt = performance.now();
    this.firstFrameMs = null;
    this.stalls = 0;
    this.fallbackReason = null;
    this.fallbackAfterMs = null;
    this.error = null;
    this.reconnects = 1;
    this.state = 'connecting';
    this.render();
    this.watchFirstFrame(run);
    if (this.qoeTimer) clearInterval(this.qoeTimer);
    this.qoeTimer = setInterval(() => this.beacon(false), QOE_INTERVAL_MS);
    await this.connectFrom(run, 0, true);
  }

  stop(): void {
    this.beacon(true);
    if (this.qoeTimer) clearInterval(this.qoeTimer);
    this.qoeTimer = null;
    this.run++;
    this.running = false;
    this.closePaths();
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.stableTimer) clearTimeout(this.stableTimer);
    this.retryTimer = this.stableTimer = null;
    this.transport = 'none';
    this.state = 'stopped';
    this.render();
  }

  /** Stops and removes everything the player put into the page. */
  destroy(): void {
    this.stop();
    this.teardown.forEach((f) => f());
    this.overlay.destroy();
    this.video.remove();
    this.message.remove();
    this.unmute.remove();
  }

  stats(): PlayerStats {
    const q = this.video.getVideoPlaybackQuality?.();
    const path = this.wt ?? this.hls;
    return {
      transport: this.transport,
      state: this.state,
      latencyMs: path && this.transport !== 'none' ? path.latencyMs() : null,
      bufferMs: Math.round(this.bufferAhead() * 1000),
      bitrateBps: path ? path.bitrateBps() : 0,
      framesDecoded: q?.totalVideoFrames ?? 0,
      droppedFrames: q?.droppedVideoFrames ?? 0,
      firstFrameMs: this.firstFrameMs,
      stalls: this.stalls,
      fallbackReason: this.fallbackReason,
      fallbackAfterMs: this.fallbackAfterMs,
      error: this.error,
    };
  }

  /** Tries the edges from `first` on; resolves when one plays or all failed. */
  private async connectFrom(run: number, first: number, allowWt: boolean): Promise<void> {
    let lastError = 'no edge answered';
    for (let i = first; i < this.edges.length; i++) {
      if (run !== this.run) return;
      this.edgeIndex = i;
      const edge = this.edges[i];
      if (allowWt && this.mode !== 'hls') {
        const outcome = await this.tryWebTransport(run, edge);
        if (run !== this.run || outcome === 'playing') return;
        lastError = outcome.reason;
        // A dead edge gets no HLS attempt; in webtransport mode nothing else is tried.
        if (outcome.edgeDown || this.mode === 'webtransport') continue;
        this.fellBack(outcome.reason);
      }
      try {
        await this.startHls(run, edge);
        return;
      } catch (err) {
        if (run !== this.run) return;
        lastError = errorText(err);
      }
    }
    this.giveUp(run, lastError);
  }

  private async tryWebTransport(run: number, edge: string): Promise<Outcome> {
    if (typeof WebTransport !== 'function') return { reason: 'this browser has no WebTransport', edgeDown: false };
    if (typeof MediaSource === 'undefined') return { reason: 'this browser has no Media Source Extensions', edgeDown: false };
    // One deadline for all of it: an edge behind a UDP black hole takes ~4 s to fail on its own.
    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(), this.wtTimeoutMs);
    // Halfway to the deadline without media, let HLS load its playlists and first fragment, so
    // that falling back shows a picture soon after the deadline rather than a second later.
    const headStart =
      this.mode === 'auto'
        ? setTimeout(() => {
            if (run !== this.run) return;
            this.warmHls = this.newHls(run, edge);
            this.warmHls.preload();
          }, this.wtTimeoutMs / 2)
        : undefined;
    try {
      return await this.connectWebTransport(run, edge, deadline.signal);
    } finally {
      clearTimeout(timer);
      clearTimeout(headStart);
    }
  }

  private async connectWebTransport(run: number, edge: string, signal: AbortSignal): Promise<Outcome> {
    let endpoint: WtEndpoint;
    try {
      endpoint = await fetchWtEndpoint(edge, signal);
    } catch (err) {
      if (err instanceof NoWebTransport) return { reason: err.message, edgeDown: false };
      return { reason: `edge ${this.edgeLabel()} unreachable`, edgeDown: true };
    }
    const wt = new WebTransportPlayback(this.video, {
      namespace: this.namespace,
      token: this.opts.token,
      targetSec: this.lowLatency ? TARGET_LOW_LATENCY_SEC : TARGET_NORMAL_SEC,
      onFail: (reason) => this.onWebTransportFail(run, wt, endpoint, reason),
    });
    this.wt = wt;
    try {
      await wt.connect(endpoint, signal);
    } catch (err) {
      wt.stop();
      if (this.wt === wt) this.wt = null;
      return { reason: `WebTransport: ${errorText(err)}`, edgeDown: false };
    }
    if (run !== this.run) return 'playing';
    this.warmHls?.stop();
    this.warmHls = null;
    this.transport = 'webtransport';
    this.markStable(run);
    return 'playing';
  }

  /** A WebTransport session broke while playing: reconnect once, then fall back to HLS. */
  private async onWebTransportFail(run: number, wt: WebTransportPlayback, endpoint: WtEndpoint, reason: string): Promise<void> {
    if (run !== this.run || this.wt !== wt) return;
    if (this.stableTimer) clearTimeout(this.stableTimer);
    this.error = reason;
    if (this.reconnects > 0) {
      this.reconnects--;
      this.state = 'connecting';
      const deadline = new AbortController();
      const timer = setTimeout(() => deadline.abort(), this.wtTimeoutMs);
      try {
        // Fetched again: a restarted edge has a new certificate and port.
        const fresh = await fetchWtEndpoint(this.edges[this.edgeIndex], deadline.signal).catch(() => endpoint);
        await wt.connect(fresh, deadline.signal);
        if (run !== this.run) return;
        this.error = null;
        // The picture may have played on from the buffer throughout: then no 'playing' event comes.
        if (!this.video.paused && this.video.readyState >= HTMLMediaElement.HAVE_FUTURE_DATA) this.state = 'playing';
        this.markStable(run);
        return;
      } catch (err) {
        reason = `${reason}; reconnect failed: ${errorText(err)}`;
      } finally {
        clearTimeout(timer);
      }
      if (run !== this.run) return;
    }
    wt.stop();
    this.wt = null;
    this.transport = 'none';
    this.state = 'connecting';
    this.fellBack(`WebTransport: ${reason}`);
    await this.connectFrom(run, this.edgeIndex, false);
  }

  private fellBack(reason: string): void {
    this.fallbackReason = reason;
    this.fallbackAfterMs = Math.round(performance.now() - this.startedAt);
  }

  /** After a stretch of good playing, a later break may reconnect again. */
  private markStable(run: number): void {
    if (this.stableTimer) clearTimeout(this.stableTimer);
    this.stableTimer = setTimeout(() => run === this.run && (this.reconnects = 1), STABLE_SESSION_MS);
  }

  private async startHls(run: number, edge: string): Promise<void> {
    let hls = this.warmHls;
    this.warmHls = null;
    if (!hls || hls.edge !== edge) {
      hls?.stop();
      hls = this.newHls(run, edge);
    }
    this.hls = hls;
    this.transport = 'hls';
    try {
      await hls.start();
    } catch (err) {
      if (this.hls === hls) {
        this.hls = null;
        this.transport = 'none';
      }
      throw err;
    }
  }

  private newHls(run: number, edge: string): HlsPlayback {
    const hls: HlsPlayback = new HlsPlayback(this.video, {
      edge,
      namespace: this.namespace.join('/'),
      token: this.opts.token,
      lowLatency: this.lowLatency,
      onFail: (reason) => {
        if (run !== this.run || this.hls !== hls) return;
        this.hls = null;
        this.transport = 'none';
        this.state = 'connecting';
        this.error = reason;
        this.connectFrom(run, this.edgeIndex + 1, false);
      },
    });
    return hls;
  }

  /** Every edge failed: say so, and start over after a pause that grows. */
  private giveUp(run: number, reason: string): void {
    this.closePaths();
    this.transport = 'none';
    this.state = 'failed';
    this.error = reason;
    this.render();
    const delay = RETRY_DELAYS_MS[Math.min(this.retries++, RETRY_DELAYS_MS.length - 1)];
    this.retryTimer = setTimeout(() => {
      if (run !== this.run) return;
      this.state = 'connecting';
      this.reconnects = 1;
      this.render();
      this.connectFrom(run, 0, true);
    }, delay);
  }

  private closePaths(): void {
    this.wt?.stop();
    this.hls?.stop();
    this.warmHls?.stop();
    this.wt = null;
    this.hls = null;
    this.warmHls = null;
  }

  /** Sends what this viewer experienced since the last beacon to the current edge. */
  private beacon(ending: boolean): void {
    if (!this.running) return;
    const now = performance.now();
    if (ending) this.qoe.ended(now);
    const s = this.stats();
    let token = '';
    try {
      token = this.opts.token();
    } catch {
      return;
    }
    const b = this.qoe.take(now, this.namespace.join('/'), token, s);
    if (b) sendBeacon(this.edges[this.edgeIndex], b);
  }

  private watchFirstFrame(run: number): void {
    const seen = () => {
      if (run === this.run && this.firstFrameMs === null) {
        this.firstFrameMs = Math.round(performance.now() - this.startedAt);
        this.qoe.firstFrame(this.firstFrameMs, performance.now());
        // Start-up time is reported at once.
        this.beacon(false);
      }
    };
    // requestVideoFrameCallback fires when a frame is actually shown; 'playing' is the stand-in elsewhere.
    const v = this.video as HTMLVideoElement & { requestVideoFrameCallback?: (cb: () => void) => number };
    if (v.requestVideoFrameCallback) v.requestVideoFrameCallback(seen);
    else v.addEventListener('playing', seen, { once: true });
  }

  private bufferAhead(): number {
    const b = this.video.buffered;
    const t = this.video.currentTime;
    for (let i = 0; i < b.length; i++) if (b.start(i) <= t && t <= b.end(i)) return b.end(i) - t;
    return 0;
  }

  /** Host of the current edge, for the overlay and messages. */
  private edgeLabel(): string | null {
    if (!this.running) return null;
    try {
      return new URL(this.edges[this.edgeIndex]).host;
    } catch {
      return this.edges[this.edgeIndex];
    }
  }

  /** The viewer-facing line over the picture: only while there is no picture to show. */
  private render(): void {
    const text =
      this.state === 'connecting' && this.firstFrameMs === null
        ? 'Connecting…'
        : this.state === 'failed'
          ? 'The stream cannot be reached right now. Retrying…'
          : '';
    this.message.textContent = text;
    this.message.style.display = text ? 'flex' : 'none';
  }

  private listen(target: EventTarget, type: string, fn: (e: Event) => void): void {
    target.addEventListener(type, fn);
    this.teardown.push(() => target.removeEventListener(type, fn));
  }
}
