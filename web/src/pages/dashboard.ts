// The live dashboard of an event on its admin page: viewers, latency to live
// and stall ratio (from the players' QoE beacons), per edge load, per site
// offload and WAN bitrate, and timeline charts of the last hour. Polls
// GET /api/v1/events/<id>/dashboard; charts are plain SVG (no library).

import type { EdgeNow, EventDashboard, Sample, SiteNow } from '../api/types';
import { api, ApiError } from './api';
import { h, show } from './dom';


const SVG = 'http://www.w3.org/2000/svg';

function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number>, ...children: (Node | string)[]): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c);
  return el;
}

const mbit = (bps: number) => `${(bps / 1e6).toFixed(1)} Mbit/s`;
const pct = (r: number | null | undefined) => (r === null || r === undefined ? '–' : `${(r * 100).toFixed(r < 0.1 ? 1 : 0)} %`);
const ms = (v: number | null | undefined) => (v === null || v === undefined ? '–' : v >= 10_000 ? `${(v / 1000).toFixed(0)} s` : `${Math.round(v)} ms`);

/** A timeline chart: one series over time, with its latest value in the title. */
function chart(id: string, title: string, samples: Sample[], value: (s: Sample) => number | null, format: (v: number) => string, fixedMax?: number): HTMLElement {
  const width = 320;
  const height = 110;
  const pad = { l: 58, r: 8, t: 8, b: 18 };
  const points = samples.map((s) => ({ t: s.at, v: value(s) }));
  const known = points.filter((p) => p.v !== null) as { t: number; v: number }[];
  const last = known.length ? known[known.length - 1].v : null;
  const max = fixedMax ?? Math.max(1e-9, ...known.map((p) => p.v)) * 1.15;
  const t0 = samples.length ? samples[0].at : 0;
  const t1 = samples.length ? Math.max(samples[samples.length - 1].at, t0 + 60) : 60;
  const x = (t: number) => pad.l + ((t - t0) / (t1 - t0)) * (width - pad.l - pad.r);
  const y = (v: number) => height - pad.b - (Math.min(v, max) / max) * (height - pad.t - pad.b);
  // Gaps (no figure in a sample) break the line.
  let d = '';
  let pen = false;
  for (const p of points) {
    if (p.v === null) {
      pen = false;
      continue;
    }
    d += `${pen ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)} `;
    pen = true;
  }
  const minutes = Math.round((t1 - t0) / 60);
  const plot = svg(
    'svg',
    { viewBox: `0 0 ${width} ${height}`, class: 'chart', role: 'img', 'aria-label': `${title} over the last ${minutes} minutes` },
    svg('line', { x1: pad.l, y1: height - pad.b, x2: width - pad.r, y2: height - pad.b, class: 'axis' }),
    svg('line', { x1: pad.l, y1: pad.t, x2: width - pad.r, y2: pad.t, class: 'grid' }),
    svg('text', { x: pad.l - 4, y: pad.t + 8, 'text-anchor': 'end', class: 'tick' }, format(max)),
    svg('text', { x: pad.l - 4, y: height - pad.b, 'text-anchor': 'end', class: 'tick' }, format(0)),
    svg('text', { x: pad.l, y: height - 4, class: 'tick' }, minutes > 0 ? `−${minutes} min` : ''),
    svg('text', { x: width - pad.r, y: height - 4, 'text-anchor': 'end', class: 'tick' }, 'now'),
    svg('path', { d: d.trim() || 'M0,0', class: 'series', fill: 'none' }),
  );
  // The latest figure as a dot (a lone sample has no line to draw).
  const lastKnown = known[known.length - 1];
  if (lastKnown) plot.append(svg('circle', { cx: x(lastKnown.t).toFixed(1), cy: y(lastKnown.v).toFixed(1), r: 2.5, class: 'dot' }));
  return h('figure', { class: 'timeline', id }, h('figcaption', {}, title, ' ', h('strong', {}, last === null ? '–' : format(last))), plot);
}

function tile(id: string, label: string, value: string, hint: string): HTMLElement {
  return h('div', { class: 'tile', id }, h('span', {}, label), h('strong', {}, value), h('small', {}, hint));
}

function render(el: HTMLElement, d: EventDashboard): void {
  const n = d.now;
  const tl = d.timeline;
  show(
    el,
    h('h2', {}, 'Live dashboard'),
    h(
      'div',
      { class: 'tiles' },
      tile('dash-viewers', 'Viewers', n ? String(n.viewers) : '0', 'at edges and peer-agents'),
      tile('dash-latency', 'Latency to live', ms(n?.latency_ms), 'players’ mean, last interval'),
      tile('dash-stalls', 'Stall ratio', pct(n?.stall_ratio), 'stalled over watched time'),
      tile('dash-offload', 'Offload', pct(n?.offload), `peers’ share · WAN ${mbit(n?.wan_bps ?? 0)}`),
      tile('dash-ingest', 'Ingest', mbit(n?.ingest_bps ?? 0), 'all streams'),
    ),
    h(
      'div',
      { class: 'charts' },
      chart('chart-viewers', 'Viewers', tl, (s) => s.viewers, (v) => String(Math.round(v))),
      chart('chart-latency', 'Latency to live', tl, (s) => s.latency_ms ?? null, ms),
      chart('chart-stalls', 'Stall ratio', tl, (s) => s.stall_ratio ?? null, (v) => pct(v), Math.max(0.05, ...tl.map((s) => (s.stall_ratio ?? 0) * 1.15))),
      chart('chart-offload', 'Offload', tl, (s) => s.offload ?? null, (v) => pct(v), 1),
      chart('chart-wan', 'WAN (all sites)', tl, (s) => s.wan_bps, mbit),
      chart('chart-egress', 'Edge egress', tl, (s) => s.egress_bps, mbit),
    ),
    h('h3', {}, 'Edges'),
    d.edges.length
      ? h(
          'table',
          { id: 'dash-edges' },
          h('thead', {}, h('tr', {}, h('th', {}, 'Edge'), h('th', {}, 'Viewers'), h('th', {}, 'Egress'), h('th', {}, 'CPU'), h('th', {}, 'Latency'), h('th', {}, 'Stall ratio'))),
          h(
            'tbody',
            {},
            ...d.edges.map((e) =>
              h('tr', { 'data-edge': e.edge }, h('td', {}, e.edge), h('td', {}, String(e.viewers)), h('td', {}, mbit(e.egress_bps)),
                h('td', {}, `${(e.cpu_cores * 100).toFixed(0)} %`), h('td', {}, ms(e.latency_ms)), h('td', {}, pct(e.stall_ratio))),
            ),
          ),
        )
      : h('p', { class: 'hint' }, 'No edge reports this event.'),
    h('h3', {}, 'Sites (peer-assisted delivery)'),
    d.sites.length
      ? h(
          'table',
          { id: 'dash-sites' },
          h('thead', {}, h('tr', {}, h('th', {}, 'Site'), h('th', {}, 'Agents'), h('th', {}, 'Viewers'), h('th', {}, 'Offload'), h('th', {}, 'WAN'), h('th', {}, 'Latency'), h('th', {}, 'Stall ratio'))),
          h(
            'tbody',
            {},
            ...d.sites.map((s) =>
              h('tr', { 'data-site': s.site }, h('td', {}, s.name || s.site), h('td', {}, String(s.agents)), h('td', {}, String(s.viewers)),
                h('td', {}, pct(s.offload)), h('td', {}, mbit(s.wan_bps)), h('td', {}, ms(s.latency_ms)), h('td', {}, pct(s.stall_ratio))),
            ),
          ),
        )
      : h('p', { class: 'hint' }, 'No peer-agents are reporting.'),
  );
}

/** Shows the dashboard in `el`, refreshed every sample; returns a stop function. */
export function pollDashboard(el: HTMLElement, event: string): () => void {
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const tick = async () => {
    if (stopped) return;
    let every = 5;
    try {
      const d = await api<EventDashboard>('GET', `/api/v1/events/${event}/dashboard`);
      every = d.sample_every_secs || 5;
      if (!stopped) render(el, d);
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return location.assign('/login?next=/admin');
      show(el, h('h2', {}, 'Live dashboard'), h('p', { class: 'notice error' }, (e as Error).message));
    }
    if (!stopped) timer = setTimeout(tick, every * 1000);
  };
  tick();
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
  };
}
