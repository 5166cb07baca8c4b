// Latency to live and time to first frame of the browser player, for the
// WebTransport/MoQT path and the LL-HLS path, in headless Chromium against
// strom dev with ffmpeg pushing a 720p30 test pattern (1 s GOP, 2.5 Mbit/s).
//
//   node bench/latency.mjs [runs per path, default 5] [seconds watched per run, default 20]
//
// Latency is the player's own figure: the `prft` box of each CMAF chunk carries
// the origin's wall clock when the frame arrived from the encoder; the player
// subtracts it from the browser clock at the frame on screen (same machine, so
// one clock). Time to first frame runs from player start to the first decoded
// frame (page load and login excluded).

import { startDev, push, launch, loginByMail, waitForStats, sleep } from '../tests/harness.mjs';

const runs = Number(process.argv[2] ?? 5);
const watchSecs = Number(process.argv[3] ?? 20);

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

const dev = await startDev();
const pusher = push(dev.endpoints.rtmp_publish_url, 3600);
const browser = await launch();
await sleep(3000);
const results = {};
try {
  for (const path of ['webtransport', 'hls']) {
    const ttff = [];
    const latency = [];
    for (let i = 0; i < runs; i++) {
      const context = await browser.newContext();
      if (path === 'hls') await context.addInitScript(() => { delete window.WebTransport; });
      const page = await loginByMail(context, dev.endpoints, dev.endpoints.owner_email);
      await page.goto(dev.endpoints.player_url);
      const first = await waitForStats(page, (s) => s.firstFrameMs !== null && s.transport === path, 20_000);
      if (!first || first.transport !== path) throw new Error(`${path}: not playing: ${JSON.stringify(first)}`);
      ttff.push(first.firstFrameMs);
      // Sample latency every 500 ms after a 3 s settling time.
      await sleep(3000);
      const end = Date.now() + (watchSecs - 3) * 1000;
      while (Date.now() < end) {
        const s = await page.evaluate(() => window.stromPlayer.stats());
        if (s.latencyMs !== null) latency.push(s.latencyMs);
        await sleep(500);
      }
      await context.close();
    }
    results[path] = {
      runs,
      ttff_ms: { p50: pct(ttff, 50), max: Math.max(...ttff) },
      latency_ms: { p50: pct(latency, 50), p95: pct(latency, 95), max: Math.max(...latency), samples: latency.length },
    };
    console.log(path, JSON.stringify(results[path]));
  }
} finally {
  await browser.close();
  pusher.stop();
  await dev.stop();
}
console.log(JSON.stringify(results, null, 2));
