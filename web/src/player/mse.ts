// Media Source Extensions glue: one SourceBuffer per catalog track, fed the
// init segment from the catalog and then every object payload as it is
// (prft + moof + mdat; Chromium skips the top-level prft).

import { type Catalog, type CatalogTrack, mimeType } from './catalog';

type Op = { append: Uint8Array } | { remove: [number, number] } | { changeType: string };

/** Seconds kept behind the playhead; older media is removed so memory stays flat. */
const BACK_BUFFER_SEC = 30;

class TrackBuffer {
  private queue: Op[] = [];

  constructor(
    private sb: SourceBuffer,
    public track: CatalogTrack,
    private video: HTMLVideoElement,
    private onError: (message: string) => void,
    onUpdated: () => void,
  ) {
    sb.mode = 'segments'; // the fragments carry their own timestamps
    sb.addEventListener('updateend', () => {
      onUpdated();
      this.pump();
    });
    sb.addEventListener('error', () => this.onError(`SourceBuffer error on ${track.name}`));
  }

  push(op: Op): void {
    this.queue.push(op);
    this.pump();
  }

  private pump(): void {
    if (this.sb.updating) return;
    const op = this.queue.shift();
    if (!op) return;
    try {
      if ('append' in op) this.sb.appendBuffer(op.append as Uint8Array<ArrayBuffer>);
      else if ('remove' in op) this.sb.remove(op.remove[0], op.remove[1]);
      else {
        this.sb.changeType(op.changeType);
        this.pump(); // changeType is synchronous: no updateend follows
      }
    } catch (err) {
      if ('append' in op && err instanceof DOMException && err.name === 'QuotaExceededError') {
        // Full: drop all but the last few seconds behind the playhead, then retry this chunk.
        const end = this.video.currentTime - 5;
        if (this.bufferedStart() < end) this.queue.unshift({ remove: [0, end] }, op);
        this.pump();
        return;
      }
      this.onError(`append to ${this.track.name} failed: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  private bufferedStart(): number {
    return this.sb.buffered.length ? this.sb.buffered.start(0) : Infinity;
  }

  /** Removes media more than BACK_BUFFER_SEC behind the playhead. */
  trim(): void {
    const end = this.video.currentTime - BACK_BUFFER_SEC;
    if (this.bufferedStart() < end) this.push({ remove: [0, end] });
  }
}

export class MseSink {
  private ms = new MediaSource();
  private url: string;
  private buffers = new Map<string, TrackBuffer>();
  private opened: Promise<void>;
  /** The first failure; the owner polls this and gives up on the sink. */
  error: string | null = null;

  /** `onUpdated` runs after every append or removal. */
  constructor(
    private video: HTMLVideoElement,
    private onUpdated: () => void,
  ) {
    this.opened = new Promise((resolve) => this.ms.addEventListener('sourceopen', () => resolve(), { once: true }));
    this.url = URL.createObjectURL(this.ms);
    video.src = this.url;
  }

  /** True when the browser can play every track of the catalog through MSE. */
  static supports(catalog: Catalog): boolean {
    return typeof MediaSource !== 'undefined' && catalog.tracks.every((t) => MediaSource.isTypeSupported(mimeType(t)));
  }

  /**
   * Creates the SourceBuffers for the first catalog; for a later catalog with
   * the same tracks, switches codec if needed and appends the new init
   * segment. (A different set of tracks needs a new sink.)
   */
  async configure(catalog: Catalog): Promise<void> {
    await this.opened;
    for (const t of catalog.tracks) {
      const existing = this.buffers.get(t.name);
      if (!existing) {
        const sb = this.ms.addSourceBuffer(mimeType(t));
        const tb = new TrackBuffer(sb, t, this.video, (m) => (this.error ??= m), this.onUpdated);
        this.buffers.set(t.name, tb);
        tb.push({ append: t.initData });
        continue;
      }
      if (existing.track.codec !== t.codec) existing.push({ changeType: mimeType(t) });
      existing.track = t;
      existing.push({ append: t.initData });
    }
  }

  /** Appends a media object; objects for tracks without a SourceBuffer are dropped. */
  append(track: string, payload: Uint8Array): void {
    this.buffers.get(track)?.push({ append: payload });
  }

  trim(): void {
    for (const b of this.buffers.values()) b.trim();
  }

  /** Detaches from the video element and frees the MediaSource. */
  close(): void {
    if (this.video.src === this.url) {
      this.video.removeAttribute('src');
      this.video.load();
    }
    URL.revokeObjectURL(this.url);
  }
}
