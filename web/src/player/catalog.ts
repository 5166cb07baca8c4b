// The catalog the origin publishes on track `catalog` (media/src/catalog.rs):
// MSF draft-00 style JSON with the CMAF init segment inline as base64.
// Each new catalog is a new group holding only object 0.

export interface CatalogTrack {
  name: string;
  role: 'video' | 'audio';
  codec: string;
  timescale: number;
  /** The whole CMAF init segment. */
  initData: Uint8Array;
}

export interface Catalog {
  generatedAt: number;
  /** What the player plays: the first video and the first audio track (either may be missing). */
  tracks: CatalogTrack[];
}

interface RawTrack {
  name?: unknown;
  packaging?: unknown;
  role?: unknown;
  codec?: unknown;
  timescale?: unknown;
  initData?: unknown;
}

export function parseCatalog(payload: Uint8Array): Catalog {
  const raw = JSON.parse(new TextDecoder().decode(payload)) as { version?: unknown; generatedAt?: unknown; tracks?: RawTrack[] };
  if (raw.version !== 1 || !Array.isArray(raw.tracks)) throw new Error('unsupported catalog');
  const tracks: CatalogTrack[] = [];
  for (const role of ['video', 'audio'] as const) {
    // One SourceBuffer per kind: further renditions of a kind would need ABR, which the origin does not offer yet.
    const t = raw.tracks.find((t) => t.role === role && t.packaging === 'cmaf');
    if (!t) continue;
    if (typeof t.name !== 'string' || typeof t.codec !== 'string' || typeof t.initData !== 'string') {
      throw new Error(`catalog track for ${role} is incomplete`);
    }
    tracks.push({
      name: t.name,
      role,
      codec: t.codec,
      timescale: typeof t.timescale === 'number' && t.timescale > 0 ? t.timescale : role === 'video' ? 90000 : 48000,
      initData: base64(t.initData),
    });
  }
  if (!tracks.length) throw new Error('catalog has no playable track');
  return { generatedAt: typeof raw.generatedAt === 'number' ? raw.generatedAt : 0, tracks };
}

export function mimeType(t: CatalogTrack): string {
  return `${t.role}/mp4; codecs="${t.codec}"`;
}

/** True when the two catalogs need different SourceBuffers (a track came, went or was renamed). */
export function sameTrackSet(a: Catalog, b: Catalog): boolean {
  return a.tracks.length === b.tracks.length && a.tracks.every((t, i) => t.name === b.tracks[i].name && t.role === b.tracks[i].role);
}

function base64(s: string): Uint8Array {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
