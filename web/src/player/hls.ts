// The fallback path: the edge's LL-HLS, through hls.js where MSE exists and
// the browser's own HLS (Safari on iOS) where it does not.

import type HlsJs from 'hls.js';
import type { ErrorData } from 'hls.js';

// hls.js (~600 KB) is fetched only when HLS is needed or about to be: a
// player on WebTransport never loads it.
let Hls: typeof HlsJs | null = null;
let loading: Promise<typeof HlsJs> | null = null;

export function loadHlsJs(): Promise<typeof HlsJs> {
  loading ??= import('hls.js').then((m) => (Hls = m.default));
  return loading;
}

export interface HlsOptions {
  edge: string;
  namespace: string;
  token: () => string;
  lowLatency: boolean;
  /** Called once when playback breaks after it started. */
  onFail: (reason: string) => void;
}

/** Time allowed from attaching to the video to the first frame. */
const START_TIMEOUT_MS = 10_000;

/** Puts the current token into a URL the edge gave out with an older one. */
function withToken(url: string, token: string): string {
  return url.replace(/([?&]token=)[^&#]*/, `$1${encodeURIComponent(token)}`);
}

function nativeHlsOnly(video: HTMLVideoElement): boolean {
  const mse = typeof window.MediaSource !== 'undefined' || 'ManagedMediaSource' in window;
  return !mse && video.canPlayType('application/vnd.apple.mpegurl') !== '';
}

export class HlsPlayback {
  private hls: HlsJs | null = null;
  private received: Array<[number, number]> = []; // [ms, bytes] over the last 4 s
  /** Ends start(): set while starting, null before and after. */
  private settle: ((err?: Error) => void) | null = null;
  private playing = false;
  /** A fatal error while preloading, reported by start(). */
  private preloadError: Error | null = null;
  private stopped = false;
  /** The browser's own HLS has the video (no hls.js). */
  private native = false;

  constructor(
    private video: HTMLVideoElement,
    private opts: HlsOptions,
  ) {}

  get edge(): string {
    return this.opts.edge;
  }

  private url(): string {
    return `${this.opts.edge}hls/${this.opts.namespace}/master.m3u8?token=${encodeURIComponent(this.opts.token())}`;
  }

  /**
   * Loads the playlists and the first fragment without touching the video,
   * which WebTransport may still be using: a head start for the case where
   * WebTransport is about to time out. (hls.js only; a no-op otherwise.)
   */
  preload(): void {
    if (nativeHlsOnly(this.video)) return;
    loadHlsJs()
      .then(() => {
        if (!this.hls && !this.stopped) this.createHls();
      })
      .catch((err: unknown) => (this.preloadError = new Error(`hls.js did not load: ${String(err)}`)));
  }

  /** Plays on the video; resolves at the first frame played, throws on failure or stop(). */
  async start(): Promise<void> {
    if (!nativeHlsOnly(this.video)) await loadHlsJs();
    if (this.preloadError) {
      this.stop();
      return Promise.reject(this.preloadError);
    }
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => this.settle?.(new Error('HLS did not start in time')), START_TIMEOUT_MS);
      const onPlaying = () => this.settle?.();
      this.settle = (err?: Error) => {
        this.settle = null;
        clearTimeout(timer);
        this.video.removeEventListener('playing', onPlaying);
        if (err) {
          this.stop();
          reject(err);
        } else {
          this.playing = true;
          resolve();
        }
      };
      this.video.addEventListener('playing', onPlaying);
      if (nativeHlsOnly(this.video)) {
        this.native = true;
        this.video.src = this.url();
        this.video.addEventListener('error', () => this.failed(`native HLS error ${this.video.error?.code ?? ''}`), { once: true });
      } else {
        (this.hls ?? this.createHls()).attachMedia(this.video);
      }
      this.video.play().catch(() => {});
    });
  }

  private createHls(): HlsJs {
    if (!Hls) throw new Error('hls.js is not loaded');
    const hls = new Hls({
      lowLatencyMode: this.opts.lowLatency,
      backBufferLength: 30,
      // Let hls.js catch up to its target latency by playing slightly faster (a late start, a stall).
      maxLiveSyncPlaybackRate: this.opts.lowLatency ? 1.1 : 1,
      // Fetch the first fragment even before the video is attached (see preload()).
      startFragPrefetch: true,
      // Tokens expire (10 min) and every HLS request is checked: always send the current one.
      // hls.js skips its own open() when this one has opened the request.
      xhrSetup: (xhr, u) => xhr.open('GET', withToken(u, this.opts.token()), true),
    });
    this.hls = hls;
    let recoveredMedia = false;
    const { Events, ErrorTypes } = Hls;
    hls.on(Events.ERROR, (_e, data: ErrorData) => {
      if (!data.fatal) return;
      // A decoder hiccup is worth one in-place recovery before giving up.
      if (data.type === ErrorTypes.MEDIA_ERROR && !recoveredMedia) {
        recoveredMedia = true;
        hls.recoverMediaError();
        return;
      }
      const code = data.response?.code;
      const status = code ? ` (HTTP ${code}${code === 401 || code === 403 ? ', token refused' : ''})` : '';
      this.failed(`HLS ${data.details}${status}`);
    });
    hls.on(Events.FRAG_LOADED, (_e, data) => this.noteBytes(data.payload.byteLength));
    hls.loadSource(this.url());
    return hls;
  }

  /** Before the first frame the failure rejects start(); after it the player hears of it once. */
  private failed(reason: string): void {
    if (this.stopped) return;
    if (this.settle) return this.settle(new Error(reason));
    if (!this.playing) {
      this.preloadError ??= new Error(reason);
      return;
    }
    this.stop();
    this.opts.onFail(reason);
  }

  private noteBytes(n: number): void {
    const now = performance.now();
    this.received.push([now, n]);
    while (this.received.length && this.received[0][0] < now - 4000) this.received.shift();
  }

  /** From the program date time (the origin stamps it from prft): wall clock now minus the frame's ingest time. */
  latencyMs(): number | null {
    if (this.video.readyState < 2) return null;
    if (this.hls) {
      const date = this.hls.playingDate;
      if (date) return Math.round(Date.now() - date.getTime());
      return Number.isFinite(this.hls.latency) ? Math.round(this.hls.latency * 1000) : null;
    }
    const start = (this.video as HTMLVideoElement & { getStartDate?: () => Date }).getStartDate?.();
    if (!start || isNaN(start.getTime())) return null;
    return Math.round(Date.now() - (start.getTime() + this.video.currentTime * 1000));
  }

  bitrateBps(): number {
    // Parts arrive in bursts; a longer window than on WebTransport keeps the figure steady.
    const bytes = this.received.reduce((n, [, b]) => n + b, 0);
    return Math.round((bytes * 8) / 4);
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.settle?.(new Error('stopped'));
    if (this.hls) {
      this.hls.destroy(); // detaches the video too, if attached
      this.hls = null;
    } else if (this.native) {
      this.video.removeAttribute('src');
      this.video.load();
    }
  }
}
