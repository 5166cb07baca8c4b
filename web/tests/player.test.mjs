// The player in real Chromium against real strom dev with ffmpeg pushing:
// WebTransport/MoQT first; LL-HLS when WebTransport is missing or its UDP is
// black-holed. Screenshots land in web/test-results/.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { join } from 'node:path';
import { devPushedAndBrowser, loginByMail, waitForStats, artefacts } from './harness.mjs';

const it = devPushedAndBrowser(300);

async function watchPage(setup) {
  const context = await it.browser.newContext({ viewport: { width: 1280, height: 800 } });
  if (setup) await setup(context);
  const page = await loginByMail(context, it.dev.endpoints, it.dev.endpoints.owner_email);
  const started = Date.now();
  await page.goto(it.dev.endpoints.player_url + '?debug=1');
  return { context, page, started };
}

test('plays over WebTransport: 10 s of video, >250 frames, latency < 1.5 s', async () => {
  const { context, page } = await watchPage();
  const first = await waitForStats(page, (s) => s.transport === 'webtransport' && s.currentTime > 0.5, 20_000);
  assert.equal(first?.transport, 'webtransport', `not on WebTransport: ${JSON.stringify(first)}`);
  const t0 = first.currentTime;
  const s = await waitForStats(page, (x) => x.currentTime - t0 >= 10 && x.decoded > 250, 25_000);
  await page.screenshot({ path: join(artefacts, 'player-webtransport.png') });
  console.log('webtransport', JSON.stringify(s));
  assert.ok(s.currentTime - t0 >= 10, `currentTime advanced ${s.currentTime - t0} s`);
  assert.ok(s.decoded > 250, `${s.decoded} frames decoded`);
  assert.equal(s.transport, 'webtransport');
  assert.ok(s.latencyMs !== null && s.latencyMs < 1500, `latency ${s.latencyMs} ms`);
  // The support overlay (?debug=1) shows the same figures.
  const overlay = await page.locator('.strom-overlay').textContent();
  assert.match(overlay, /webtransport/);
  assert.match(overlay, /latency\s+\d/);
  // The player reported its experience to the edge (QoE beacons: first
  // frame at once, then every 10 s), and the edge counts it for the event.
  const qoe = await edgeQoe((m) => m.beacons >= 2 && m.startups >= 1 && m.watchSeconds >= 5, 15_000);
  console.log('qoe at the edge', JSON.stringify(qoe));
  assert.ok(qoe.beacons >= 2, `beacons ${qoe.beacons}`);
  assert.ok(qoe.startups >= 1, 'no start-up time reported');
  assert.ok(qoe.watchSeconds >= 5, `watch seconds ${qoe.watchSeconds}`);
  assert.ok(qoe.latencyCount >= 1 && qoe.latencySum / qoe.latencyCount < 1.5, `reported latency ${JSON.stringify(qoe)}`);
  await context.close();
});

/** The edge's QoE figures for WebTransport viewers of the dev event, once `done` holds. */
async function edgeQoe(done, limitMs) {
  const deadline = Date.now() + limitMs;
  let m;
  for (;;) {
    const text = await (await fetch(it.dev.endpoints.edge_metrics_url)).text();
    const sum = (name) =>
      text
        .split('\n')
        .filter((l) => l.startsWith(name + '{') && l.includes('transport="webtransport"'))
        .reduce((a, l) => a + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
    m = {
      beacons: sum('strom_qoe_beacons_total'),
      startups: sum('strom_qoe_startup_seconds_count'),
      watchSeconds: sum('strom_qoe_watch_seconds_total'),
      latencyCount: sum('strom_qoe_latency_seconds_count'),
      latencySum: sum('strom_qoe_latency_seconds_sum'),
    };
    if (done(m) || Date.now() > deadline) return m;
    await new Promise((r) => setTimeout(r, 500));
  }
}

test('without WebTransport the same page plays over LL-HLS, latency < 4 s', async () => {
  const { context, page } = await watchPage((c) => c.addInitScript(() => { delete window.WebTransport; }));
  const first = await waitForStats(page, (s) => s.transport === 'hls' && s.currentTime > 0.5, 20_000);
  assert.equal(first?.transport, 'hls', `not on HLS: ${JSON.stringify(first)}`);
  const t0 = first.currentTime;
  const s = await waitForStats(page, (x) => x.currentTime - t0 >= 8 && x.latencyMs !== null, 25_000);
  await page.screenshot({ path: join(artefacts, 'player-hls.png') });
  console.log('hls (no WebTransport)', JSON.stringify(s));
  assert.ok(s.currentTime - t0 >= 8, `currentTime advanced ${s.currentTime - t0} s`);
  assert.ok(s.latencyMs < 4000, `latency ${s.latencyMs} ms`);
  assert.match(s.fallbackReason ?? '', /.+/);
  await context.close();
});

test('with its UDP black-holed the player falls back to LL-HLS within 3 s', async () => {
  // A UDP socket that takes every datagram and never answers: what a
  // firewall that drops QUIC looks like to the browser.
  const hole = dgram.createSocket('udp4');
  await new Promise((r) => hole.bind(0, '127.0.0.1', r));
  const port = hole.address().port;
  const { context, page, started } = await watchPage((c) =>
    c.route('**/webtransport.json', async (route) => {
      const real = await (await route.fetch()).json();
      await route.fulfill({ json: { ...real, url: `https://127.0.0.1:${port}/` } });
    }),
  );
  // The HLS path seeks to the live edge before its first frame, so
  // currentTime alone does not show playback: wait for a frame shown.
  const s = await waitForStats(page, (x) => x.transport === 'hls' && x.firstFrameMs !== null, 20_000);
  const elapsed = Date.now() - started;
  await page.screenshot({ path: join(artefacts, 'player-udp-blocked.png') });
  console.log('hls (UDP black-holed)', JSON.stringify(s), `playing after ${elapsed} ms`);
  hole.close();
  assert.equal(s?.transport, 'hls');
  assert.ok(s.firstFrameMs !== null, 'no first frame');
  // The switch itself (the player's own timer) comes within 3 s; the first
  // HLS frame follows it.
  assert.ok(s.fallbackAfterMs !== undefined ? s.fallbackAfterMs <= 3000 : s.firstFrameMs <= 4500,
    `fell back after ${s.fallbackAfterMs} ms, first frame after ${s.firstFrameMs} ms`);
  await context.close();
});
