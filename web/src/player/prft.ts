// The origin starts every object with a 32-byte `prft` box (version 1): its
// wall clock at ingest and the fragment's earliest PTS. That pair maps media
// time to wall time, which is what "latency to live" is measured against.

export interface WallClockRef {
  /** Origin wall clock at ingest, unix ms. */
  wallMs: number;
  /** Earliest presentation time of the fragment, in seconds. */
  mediaSec: number;
}

/** Seconds between the NTP epoch (1900) and the unix epoch (1970). */
const NTP_UNIX_OFFSET = 2_208_988_800;

export function parsePrft(payload: Uint8Array, timescale: number): WallClockRef | null {
  if (payload.length < 32) return null;
  const dv = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  // size(4) 'prft'(4) version(1) flags(3) reference_track_ID(4) ntp(8) media_time(8 in v1, 4 in v0)
  if (dv.getUint32(4) !== 0x70726674 /* 'prft' */) return null;
  const version = payload[8];
  const ntpSeconds = dv.getUint32(16);
  const ntpFraction = dv.getUint32(20);
  const mediaTime = version === 1 ? Number(dv.getBigUint64(24)) : dv.getUint32(24);
  return {
    wallMs: (ntpSeconds - NTP_UNIX_OFFSET) * 1000 + (ntpFraction / 2 ** 32) * 1000,
    mediaSec: mediaTime / timescale,
  };
}

/** How far behind the origin's ingest the frame at `currentTime` is, in ms. */
export function latencyMs(ref: WallClockRef, currentTime: number, now = Date.now()): number {
  return now - (ref.wallMs + (currentTime - ref.mediaSec) * 1000);
}
