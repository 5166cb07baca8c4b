// Quality-of-experience beacons (OPS-5): what this viewer experienced, sent
// to the edge it watches from. Pseudonymous: no user id, no session id —
// only the broadcast, the transport and figures. The playback token rides
// in the body (not the URL, which servers log) so the edge can refuse
// beacons for broadcasts the viewer may not watch.

export interface QoeSample {
  transport: 'webtransport' | 'hls' | 'none';
  latencyMs: number | null;
  bitrateBps: number;
}

/** One beacon as the edge expects it (`POST /qoe`, JSON as text/plain). */
export interface QoeBeacon {
  v: 1;
  ns: string;
  token: string;
  transport: 'webtransport' | 'hls';
  /** Start to first frame; only in the first beacon after a start. */
  first_frame_ms: number | null;
  /** Time since the last beacon spent watching (playing or stalled). */
  watch_ms: number;
  /** Of that, time stalled. */
  stall_ms: number;
  /** Stalls that began since the last beacon. */
  stalls: number;
  latency_ms: number | null;
  bitrate_bps: number;
}

export const QOE_INTERVAL_MS = 10_000;

/** Accumulates watch and stall time between beacons. */
export class QoeMeter {
  private watchingSince: number | null = null;
  private stalledSince: number | null = null;
  private watchMs = 0;
  private stallMs = 0;
  private stalls = 0;
  private firstFrameMs: number | null = null;

  /** The first frame was shown `ms` after start. */
  firstFrame(ms: number, now: number): void {
    this.firstFrameMs = ms;
    this.watchingSince = now;
  }

  stallBegan(now: number): void {
    if (this.watchingSince === null || this.stalledSince !== null) return;
    this.stalls++;
    this.stalledSince = now;
  }

  stallEnded(now: number): void {
    if (this.stalledSince === null) return;
    this.stallMs += now - this.stalledSince;
    this.stalledSince = null;
  }

  /** Watching ended (stop, page hidden for good). */
  ended(now: number): void {
    this.stallEnded(now);
    if (this.watchingSince !== null) this.watchMs += now - this.watchingSince;
    this.watchingSince = null;
  }

  /** The figures since the last take, or null when nothing was watched. */
  take(now: number, ns: string, token: string, s: QoeSample): QoeBeacon | null {
    if (this.watchingSince !== null) {
      this.watchMs += now - this.watchingSince;
      this.watchingSince = now;
    }
    if (this.stalledSince !== null) {
      this.stallMs += now - this.stalledSince;
      this.stalledSince = now;
    }
    if (s.transport === 'none' || (this.watchMs === 0 && this.firstFrameMs === null)) return null;
    const beacon: QoeBeacon = {
      v: 1,
      ns,
      token,
      transport: s.transport,
      first_frame_ms: this.firstFrameMs,
      watch_ms: Math.round(this.watchMs),
      stall_ms: Math.round(Math.min(this.stallMs, this.watchMs)),
      stalls: this.stalls,
      latency_ms: s.latencyMs === null ? null : Math.round(s.latencyMs),
      bitrate_bps: Math.round(s.bitrateBps),
    };
    this.watchMs = this.stallMs = this.stalls = 0;
    this.firstFrameMs = null;
    return beacon;
  }
}

/** Sends a beacon without a CORS preflight and without waiting. */
export function sendBeacon(edge: string, beacon: QoeBeacon): void {
  const body = JSON.stringify(beacon);
  const url = `${edge}qoe`;
  if (navigator.sendBeacon?.(url, new Blob([body], { type: 'text/plain' }))) return;
  fetch(url, { method: 'POST', body, keepalive: true, headers: { 'content-type': 'text/plain' } }).catch(() => {});
}
