// Watches an event in headless Chromium through the portal's embeddable
// player (/embed/<tenant>/<event>) as the participant whose session cookie
// is given, and prints the player's figures as one JSON line every 2 s for
// <seconds>. Driven by tests/tests/postgres.rs, which stops every
// control-plane replica while this page plays: the player must keep
// playing (token refreshes fail and are retried; the edge keeps serving).
//
// node tests/outage-watch.mjs <cp url> <tenant> <event> <session> <seconds>

import { launch, sleep } from './harness.mjs';

const [cpUrl, tenant, event, session, secondsArg] = process.argv.slice(2);
if (!secondsArg) {
  console.error('usage: outage-watch.mjs <cp url> <tenant> <event> <session> <seconds>');
  process.exit(2);
}
const browser = await launch();
try {
  const context = await browser.newContext();
  await context.addCookies([{ name: 'strom_session', value: session, url: cpUrl }]);
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') console.error(`page ${m.type()}: ${m.text()}`);
  });
  await page.goto(`${cpUrl}embed/${tenant}/${event}?debug=1`);
  const end = Date.now() + Number(secondsArg) * 1000;
  while (Date.now() < end) {
    const seen = await page.evaluate(() => {
      const p = window.stromPlayer;
      const v = document.querySelector('video');
      if (!p || !v) return { text: document.body.innerText.slice(0, 200) };
      return { ...p.stats(), currentTime: v.currentTime, paused: v.paused };
    });
    console.log(JSON.stringify({ at: Date.now(), ...seen }));
    await sleep(2000);
  }
} finally {
  await browser.close();
}
