// Viewer and admin journeys through the real pages: register with consent,
// log in by the mailed link, watch; refused without login. Managers create an
// event and a stream, import 100 participants from CSV and export them.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startDev, push, launch, loginByMail, waitForStats, mailsTo, nextMail, linkIn, artefacts } from './harness.mjs';

let dev, pusher, browser;

before(async () => {
  dev = await startDev();
  pusher = push(dev.endpoints.rtmp_publish_url, 300);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  pusher?.stop();
  await dev?.stop();
});

test('viewer: refused without login; register → consent → magic link → watch', async () => {
  const e = dev.endpoints;
  const context = await browser.newContext();
  const page = await context.newPage();

  // Not logged in: the embed refuses, the API gives no token, the edge no media.
  await page.goto(e.embed_url);
  await page.getByText('Log in to watch').waitFor({ timeout: 10_000 });
  const token = await page.request.post(`${e.control_plane_url}api/v1/events/${e.event}/playback-token`);
  assert.equal(token.status(), 401);
  const hls = await page.request.get(e.hls_url.replace(/\?token=.*/, ''));
  assert.equal(hls.status(), 401);

  // Register: consent is required before the form goes out.
  await page.goto(e.player_url);
  const email = 'viewer-journey@example.com';
  await page.fill('#register input[name=name]', 'Vera Viewer');
  await page.fill('#register input[name=email]', email);
  for (const input of await page.locator('#register [name^="field:"]').all()) {
    if ((await input.getAttribute('type')) === 'checkbox') continue;
    if ((await input.evaluate((el) => el.tagName)) === 'SELECT') await input.selectOption({ index: 1 });
    else await input.fill('Example Ltd');
  }
  await page.click('#register button[type=submit]');
  assert.equal(await page.locator('#register #consent:invalid').count(), 1, 'sent without consent');
  assert.equal(mailsTo(e.outbox, email).length, 0);
  await page.check('#consent');
  await page.click('#register button[type=submit]');
  await page.locator('#registered').waitFor({ timeout: 10_000 });

  // The link from the mail, opened in this browser, logs in and lands on the player.
  const link = linkIn(await nextMail(e.outbox, email, 0));
  assert.ok(link, 'no link in the mail');
  await page.goto(link);
  await page.waitForURL(new RegExp(`/e/${e.tenant}/${e.event}$`), { timeout: 15_000 });
  const s = await waitForStats(page, (x) => x.currentTime > 3, 25_000);
  await page.screenshot({ path: join(artefacts, 'viewer-journey.png') });
  assert.ok(s && s.currentTime > 3, `not playing: ${JSON.stringify(s)}`);

  // The embed snippet plays inside an iframe of a page on the same site.
  await page.goto(`${e.control_plane_url}healthz`);
  await page.setContent(`<iframe src="${e.embed_url}" width="640" height="360" allow="autoplay; fullscreen"></iframe>`);
  const frame = await (await page.waitForSelector('iframe')).contentFrame();
  await frame.waitForFunction(() => (document.querySelector('video')?.currentTime ?? 0) > 2, null, { timeout: 25_000 });

  // Consent was recorded with the registration (DATA-5).
  const owner = await browser.newContext();
  const admin = await loginByMail(owner, e, e.owner_email);
  const people = await admin.request.get(`${e.control_plane_url}api/v1/events/${e.event}/participants`);
  const me = (await people.json()).find((p) => p.email === email);
  assert.ok(me?.consent, `consent not recorded: ${JSON.stringify(me)}`);

  // The event's admin page shows the broadcaster live, its bitrate and the viewers.
  await admin.goto(`${e.control_plane_url}admin#/events/${e.event}`);
  const row = admin.locator('#live tr[data-stream=main]');
  await row.locator('.badge.live').waitFor({ timeout: 15_000 });
  await admin.waitForFunction(() => Number(document.querySelector('#viewer-count')?.textContent) >= 1, null, { timeout: 15_000 });
  const ingest = await row.locator('td').nth(2).textContent();
  const mbit = parseFloat(ingest);
  assert.ok(mbit > 1 && mbit < 5, `ingest shown as ${ingest}`);
  await admin.screenshot({ path: join(artefacts, 'admin-live.png'), fullPage: true });
  await owner.close();
  await context.close();
});

test('admin: create an event and a stream, import 100 participants from CSV, export them; staff roles', async () => {
  const e = dev.endpoints;
  const context = await browser.newContext({ acceptDownloads: true });
  const page = await loginByMail(context, e, e.owner_email);
  await page.locator('#new-event').waitFor();
  await page.fill('#new-event input[name=title]', 'Quarterly town hall');
  await page.fill('#new-event textarea[name=privacy]', 'We process your name and e-mail to run this event.');
  await page.click('#new-event button[type=submit]');
  await page.waitForURL(/#\/events\/e_/, { timeout: 10_000 });

  await page.fill('#new-stream input[name=name]', 'main');
  await page.click('#new-stream button[type=submit]');
  await page.getByRole('button', { name: 'Get stream key' }).click();
  const rtmp = await page.locator('#rtmp-url').textContent();
  const key = await page.locator('#stream-key-value').textContent();
  assert.match(rtmp, /^rtmp:\/\/127\.0\.0\.1:\d+\//);
  assert.match(key, /^v4\.public\./);
  // The SRT credential beside it: the dev origin's SRT port, a short stream key, a passphrase.
  const srt = await page.locator('#srt-url').textContent();
  assert.match(srt, /^srt:\/\/127\.0\.0\.1:\d+\?streamid=#!::r=live\/s1\.[^,]+,m=publish$/);
  assert.match(await page.locator('#srt-passphrase').textContent(), /^[A-Za-z0-9_-]{32}$/);

  const rows = ['email,name'];
  for (let i = 0; i < 100; i++) rows.push(`person${i}@example.com,Person ${i}`);
  await page.setInputFiles('#csv-file', { name: 'people.csv', mimeType: 'text/csv', buffer: Buffer.from(rows.join('\n') + '\n') });
  await page.click('#import');
  await page.getByText('100 participants imported.').waitFor({ timeout: 15_000 });
  await page.getByText('100 participants', { exact: true }).waitFor({ timeout: 10_000 });

  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#export')]);
  const csv = await (await download.createReadStream()).toArray().then((b) => Buffer.concat(b).toString('utf8'));
  const lines = csv.trim().split(/\r?\n/);
  assert.equal(lines.length, 101, `export has ${lines.length} lines`);
  for (let i = 0; i < 100; i++) assert.ok(csv.includes(`person${i}@example.com`), `person${i} missing from the export`);

  // Invite one more by mail; deactivate one.
  await page.fill('#invite input[name=name]', 'Ina Invited');
  await page.fill('#invite input[name=email]', 'ina@example.com');
  await page.click('#invite button[type=submit]');
  await page.getByText('Invitation sent (a login link).').waitFor({ timeout: 10_000 });
  assert.match(await nextMail(e.outbox, 'ina@example.com', 0), /#token=/);
  await page.getByText('101 participants', { exact: true }).waitFor({ timeout: 10_000 });
  const person0 = page.locator('#participant-table tr', { hasText: 'person0@example.com' });
  await person0.getByRole('button', { name: 'Deactivate' }).click();
  await page.locator('#participant-table tr', { hasText: 'person0@example.com' }).getByRole('button', { name: 'Reactivate' }).waitFor({ timeout: 10_000 });

  // A bad row is reported with its line and nothing is imported.
  await page.setInputFiles('#csv-file', { name: 'bad.csv', mimeType: 'text/csv', buffer: Buffer.from('email,name\nnot-an-address,Someone\n') });
  await page.click('#import');
  await page.getByText(/Nothing imported; fix these rows: line 2/).waitFor({ timeout: 10_000 });
  await page.screenshot({ path: join(artefacts, 'admin-journey.png'), fullPage: true });

  // Staff accounts and roles (owners only).
  await page.click('nav >> text=Staff');
  await page.fill('#new-user input[name=name]', 'Erika Manager');
  await page.fill('#new-user input[name=email]', 'erika@example.com');
  await page.click('#new-user button[type=submit]');
  await page.getByText(/Account created\. Initial password/).waitFor({ timeout: 10_000 });
  await page.click('nav >> text=Events');
  await page.click('nav >> text=Staff');
  const users = await (await page.request.get(`${e.control_plane_url}api/v1/users`)).json();
  const erika = users.find((u) => u.email === 'erika@example.com');
  assert.equal(erika?.role, 'event_manager');
  await page.selectOption(`select[data-user="${erika.id}"]`, 'moderator');
  await page.getByText('Erika Manager is now Moderator.').waitFor({ timeout: 10_000 });
  const after = await (await page.request.get(`${e.control_plane_url}api/v1/users/${erika.id}`)).json();
  assert.equal(after.role, 'moderator');
  await context.close();
});

test('staff: forgotten password → mailed reset link → new password → password login', async () => {
  const e = dev.endpoints;
  const owner = await browser.newContext();
  const admin = await loginByMail(owner, e, e.owner_email);
  const csrf = (await (await admin.request.get(`${e.control_plane_url}api/v1/session`)).json()).csrf;
  const email = 'reset-journey@example.com';
  const created = await admin.request.post(`${e.control_plane_url}api/v1/users`, {
    headers: { 'x-csrf-token': csrf },
    data: { email, name: 'Rita Reset', role: 'moderator' },
  });
  assert.equal(created.status(), 201);
  await owner.close();

  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${e.control_plane_url}login?tenant=${e.tenant}`);
  await page.fill('input[name=email]', email);
  await page.click('#reset');
  await page.getByText(/a mail with a reset link is on its way/).waitFor();
  const link = (await nextMail(e.outbox, email, 0)).match(/https?:\/\/\S+\/reset#token=\S+/)?.[0];
  assert.ok(link, 'no reset link in the mail');
  await page.goto(link);
  // The tenant's policy (letters, digits and specials) is the server's: a weak choice is refused and the link stays usable.
  await page.fill('#new-password input[name=next]', 'onlyletterslong');
  await page.click('#new-password button[type=submit]');
  await page.locator('#new-password .notice.error').waitFor();
  const password = 'Correct-Horse-Battery-9';
  await page.fill('#new-password input[name=next]', password);
  await page.click('#new-password button[type=submit]');
  await page.getByText('Password changed').waitFor();

  await page.goto(`${e.control_plane_url}login?tenant=${e.tenant}`);
  await page.fill('input[name=email]', email);
  await page.fill('input[name=password]', password);
  await page.click('button[type=submit]');
  await page.waitForURL(/\/admin/, { timeout: 10_000 });
  await page.getByText('Demo webcast').waitFor({ timeout: 10_000 });
  await context.close();
});
