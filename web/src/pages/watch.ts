// Puts a player for an event on a page: asks the control plane for a
// playback token (with the session cookie), refreshes it before it expires
// and hands the current one to the player, which presents it on every
// connect and HLS request.

import { StromPlayer } from '../player/player';
import type { PlaybackToken } from '../api/types';
import { api, session, Session } from './api';
import { h, show } from './dom';

export interface MountOptions {
  tenant: string;
  event: string;
  stream?: string;
  session?: Session;
  mode?: 'auto' | 'webtransport' | 'hls';
  overlay?: boolean;
  lowLatency?: boolean;
}

declare global {
  interface Window {
    stromPlayer?: StromPlayer;
  }
}

/** The player this page shows, and its token refresh. */
let mounted: { player: StromPlayer | null; timer: ReturnType<typeof setTimeout> | null } | null = null;

/** Removes the page's player (e.g. when an admin page moves to another event). */
export function unmountPlayer(): void {
  if (!mounted) return;
  if (mounted.timer) clearTimeout(mounted.timer);
  mounted.player?.destroy();
  mounted = null;
  window.stromPlayer = undefined;
}

export async function mountPlayer(el: HTMLElement, opts: MountOptions): Promise<StromPlayer | null> {
  unmountPlayer();
  const mine = { player: null as StromPlayer | null, timer: null as ReturnType<typeof setTimeout> | null };
  mounted = mine;
  const s = opts.session ?? (await session());
  if (!s) {
    show(
      el,
      h('p', { class: 'notice' }, 'Log in to watch. ', h('a', { href: `/e/${opts.tenant}/${opts.event}`, target: '_top' }, 'Go to the event page')),
    );
    return null;
  }
  const path = `/api/v1/events/${encodeURIComponent(opts.event)}/playback-token`;
  let grant: PlaybackToken;
  try {
    grant = await api<PlaybackToken>('POST', path);
  } catch (e) {
    show(el, h('p', { class: 'notice error' }, `No access to this stream: ${(e as Error).message}`));
    return null;
  }
  if (mounted !== mine) return null; // replaced while waiting
  const stream = opts.stream ?? grant.streams?.[0];
  if (!stream) {
    show(el, h('p', { class: 'notice' }, 'This event has no stream yet.'));
    return null;
  }
  const debug = new URLSearchParams(location.search).get('debug') === '1';
  const player = new StromPlayer(el, {
    edges: grant.edges,
    namespace: `${grant.namespace}/${stream}`,
    token: () => grant.token,
    mode: opts.mode,
    lowLatency: opts.lowLatency ?? true,
    overlay: opts.overlay ?? debug,
  });
  window.stromPlayer = player;
  mine.player = player;
  const refresh = async (): Promise<void> => {
    if (mounted !== mine) return;
    try {
      grant = await api<PlaybackToken>('POST', path);
      mine.timer = setTimeout(refresh, grant.refresh_in_secs * 1000);
    } catch {
      // Keep the current token and try again soon; a revoked participant
      // gets refused here and by the edge.
      mine.timer = setTimeout(refresh, 15_000);
    }
  };
  mine.timer = setTimeout(refresh, grant.refresh_in_secs * 1000);
  await player.start();
  return player;
}
