// Opens an event's admin page in headless Chromium as a staff member, waits
// until its live dashboard shows viewers, offload and latency, keeps a
// screenshot, and prints what the page and the dashboard API showed as one
// JSON line. Driven by the end-to-end test tests/tests/dashboard.rs (which
// builds the event, edges, agents and viewers around it).
//
// node tests/dashboard-shot.mjs <control plane URL> <tenant> <email> <password> <event id> <png>
//   [timeout s] [least viewers] [least offload %]

import { launch, sleep } from './harness.mjs';

const [cpUrl, tenant, email, password, event, png, timeoutArg, viewersArg, offloadArg] = process.argv.slice(2);
if (!png) {
  console.error('usage: dashboard-shot.mjs <cp url> <tenant> <email> <password> <event> <png> [timeout s]');
  process.exit(2);
}
const timeoutMs = Number(timeoutArg ?? 90) * 1000;
const leastViewers = Number(viewersArg ?? 1);
const leastOffload = Number(offloadArg ?? 1);

const browser = await launch();
let ok = false;
let shown = null;
let api = null;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') console.error(`page ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => console.error(`page error: ${e.message}`));
  await page.goto(cpUrl + 'login');
  const login = await page.request.post(cpUrl + 'api/v1/auth/login', { data: { tenant, email, password } });
  if (login.status() !== 200) throw new Error(`login: ${login.status()} ${await login.text()}`);
  await page.goto(`${cpUrl}admin#/events/${event}`);
  await page.waitForSelector('#dashboard .tiles', { timeout: 20_000 });
  const start = Date.now();
  while (Date.now() - start < timeoutMs) {
    shown = await page.evaluate(() => {
      const text = (sel) => document.querySelector(sel)?.textContent ?? null;
      const paths = [...document.querySelectorAll('#dashboard svg.chart path.series')].map((p) => p.getAttribute('d') ?? '');
      return {
        viewers: text('#dash-viewers strong'),
        watchingNow: text('#viewer-count'),
        latency: text('#dash-latency strong'),
        stalls: text('#dash-stalls strong'),
        offload: text('#dash-offload strong'),
        ingest: text('#dash-ingest strong'),
        edges: document.querySelectorAll('#dash-edges tbody tr').length,
        sites: [...document.querySelectorAll('#dash-sites tbody tr')].map((r) => [...r.cells].map((c) => c.textContent)),
        charts: paths.length,
        drawn: paths.filter((d) => (d.match(/L/g) ?? []).length >= 2).length,
        playing: (() => {
          const v = document.querySelector('#player video');
          return v ? v.currentTime : null;
        })(),
        preview: document.querySelector('#player')?.textContent ?? null,
        player: window.stromPlayer?.stats?.() ?? null,
      };
    });
    const number = (s) => (s === null ? NaN : parseFloat(s));
    if (
      number(shown.viewers) >= leastViewers &&
      number(shown.offload) >= leastOffload &&
      number(shown.latency) > 0 &&
      shown.drawn >= 3
    ) {
      ok = true;
      break;
    }
    await sleep(1000);
  }
  // The page refreshes every 5 s: let the charts settle, then keep the picture.
  await page.screenshot({ path: png, fullPage: true });
  const res = await page.request.get(`${cpUrl}api/v1/events/${event}/dashboard`);
  api = res.status() === 200 ? await res.json() : { status: res.status() };
} catch (e) {
  console.error(String(e?.stack ?? e));
} finally {
  await browser.close();
}
console.log(JSON.stringify({ ok, shown, api }));
process.exit(ok ? 0 : 1);
