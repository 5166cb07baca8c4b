// Entry of the embeddable page `/embed/<tenant>/<event>`, served by the
// control plane (same origin as its API, so the session cookie applies).
// Query: stream (default: the event's first), mode=auto|webtransport|hls,
// debug=1 (support overlay), latency=low|normal.
//
// The session check, the playback token and its refresh are the portal's
// (pages/watch.ts); this page only reads its address and mounts.

import { mountPlayer } from '../pages/watch';

function modeOf(v: string | null): 'auto' | 'webtransport' | 'hls' | undefined {
  return v === 'auto' || v === 'webtransport' || v === 'hls' ? v : undefined;
}

async function main(): Promise<void> {
  const [, prefix, tenant, event] = location.pathname.split('/').map(decodeURIComponent);
  let el = document.getElementById('player');
  if (!el) {
    el = document.createElement('div');
    el.id = 'player';
    document.body.appendChild(el);
  }
  if (prefix !== 'embed' || !tenant || !event) {
    el.textContent = 'This address names no event (expected /embed/<tenant>/<event>).';
    return;
  }
  const q = new URLSearchParams(location.search);
  await mountPlayer(el, {
    tenant,
    event,
    stream: q.get('stream') ?? undefined,
    mode: modeOf(q.get('mode')),
    overlay: q.get('debug') === '1',
    lowLatency: q.get('latency') !== 'normal',
  });
}

main().catch((err: unknown) => {
  console.error('strom player:', err instanceof Error ? err.message : err);
});
