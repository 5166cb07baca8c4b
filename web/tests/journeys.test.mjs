// Viewer and admin journeys through the real pages: register with consent,
// log in by the mailed link, watch; refused without login. Managers create an
// event and a stream, import 100 participants from CSV and export them.
// Logins: `?next=` stays on this site, a link opened on another device asks
// for the mailed code, an owner enrols an authenticator app and is asked for
// its code at the next login; owners revoke agent credentials.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { join } from 'node:path';
import { devPushedAndBrowser, loginByMail, waitForStats, mailsTo, nextMail, linkIn, sleep, artefacts } from './harness.mjs';

const it = devPushedAndBrowser(300);

test('viewer: refused without login; register → consent → magic link → watch', async () => {
  const e = it.dev.endpoints;
  const context = await it.browser.newContext();
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

  // The embed snippet plays inside an iframe of a page on the same site
  // (the page is made up here: the control plane's own answers forbid
  // framing anything, as they should).
  const host = `${e.control_plane_url}intranet-page-with-the-embed`;
  await page.route(host, (route) =>
    route.fulfill({
      contentType: 'text/html',
      body: `<!doctype html><iframe src="${e.embed_url}" width="640" height="360" allow="autoplay; fullscreen"></iframe>`,
    }),
  );
  await page.goto(host);
  const frame = await (await page.waitForSelector('iframe')).contentFrame();
  await frame.waitForFunction(() => (document.querySelector('video')?.currentTime ?? 0) > 2, null, { timeout: 25_000 });

  // Consent was recorded with the registration (DATA-5).
  const owner = await it.browser.newContext();
  const admin = await loginByMail(owner, e, e.owner_email);
  const people = await admin.request.get(`${e.control_plane_url}api/v1/events/${e.event}/participants`);
  const me = (await people.json()).find((p) => p.email === email);
  assert.ok(me?.consent, `consent not recorded: ${JSON.stringify(me)}`);

  // The event's admin page shows the broadcaster live, its bitrate and the viewers.
  await admin.goto(`${e.control_plane_url}admin#/events/${e.event}`);
  const row = admin.locator('#live tr[data-stream=main]');
  await row
    .locator('.badge.live')
    .waitFor({ timeout: 15_000 })
    .catch(async (err) => {
      const shown = await admin.locator('#live').textContent();
      const answer = await admin.request.get(`${e.control_plane_url}api/v1/events/${e.event}/live`);
      throw new Error(`${err.message}\nthe card shows: ${shown}\n/live answers ${answer.status()}: ${await answer.text()}`);
    });
  await admin.waitForFunction(() => Number(document.querySelector('#viewer-count')?.textContent) >= 1, null, { timeout: 15_000 });
  const ingest = await row.locator('td').nth(2).textContent();
  const mbit = parseFloat(ingest);
  assert.ok(mbit > 1 && mbit < 5, `ingest shown as ${ingest}`);
  await admin.screenshot({ path: join(artefacts, 'admin-live.png'), fullPage: true });
  await owner.close();
  await context.close();
});

test('admin: create an event and a stream, import 100 participants from CSV, export them; staff roles', async () => {
  const e = it.dev.endpoints;
  const context = await it.browser.newContext({ acceptDownloads: true });
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
  const e = it.dev.endpoints;
  const owner = await it.browser.newContext();
  const admin = await loginByMail(owner, e, e.owner_email);
  const csrf = (await (await admin.request.get(`${e.control_plane_url}api/v1/session`)).json()).csrf;
  const email = 'reset-journey@example.com';
  const created = await admin.request.post(`${e.control_plane_url}api/v1/users`, {
    headers: { 'x-csrf-token': csrf },
    data: { email, name: 'Rita Reset', role: 'moderator' },
  });
  assert.equal(created.status(), 201);
  await owner.close();

  const context = await it.browser.newContext();
  const page = await context.newPage();
  await page.goto(`${e.control_plane_url}login?tenant=${e.tenant}`);
  await page.fill('input[name=email]', email);
  await page.click('#reset');
  await page.getByText(/a mail with a reset link is on its way/).waitFor();
  const link = (await nextMail(e.outbox, email, 0)).match(/https?:\/\/\S+\/reset#token=\S+/)?.[0];
  assert.ok(link, 'no reset link in the mail');
  await page.goto(link);
  // The policy is the server's: a common password is refused and the link stays usable.
  await page.fill('#new-password input[name=next]', 'password1234');
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

/** Asks for a login link for `email` from `page`'s browser and returns it (and its code) from the outbox. */
async function askForLink(page, e, email) {
  await page.goto(e.control_plane_url + 'login');
  const before = mailsTo(e.outbox, email).length;
  const res = await page.request.post(e.control_plane_url + 'api/v1/auth/magic-link', { data: { tenant: e.tenant, email } });
  assert.equal(res.status(), 202);
  const mail = await nextMail(e.outbox, email, before);
  return { link: linkIn(mail), code: mail.match(/code instead: (\d{8})/)?.[1] };
}

async function csrfOf(page, e) {
  return (await (await page.request.get(`${e.control_plane_url}api/v1/session`)).json()).csrf;
}

test('login: ?next= never sends the browser to another site (backslash, tab)', async () => {
  const e = it.dev.endpoints;
  const here = new URL(e.control_plane_url).origin;
  for (const next of ['/%5Cexample.org', '/%09/example.org']) {
    const context = await it.browser.newContext();
    // The other site, answered here: a redirect there is seen, not a DNS error.
    await context.route(/^https?:\/\/example\.org\//, (route) => route.fulfill({ status: 200, contentType: 'text/html', body: '<title>elsewhere</title>' }));
    const page = await context.newPage();
    const { link } = await askForLink(page, e, e.owner_email);
    const url = new URL(link);
    await page.goto('about:blank');
    await page.goto(`${url.origin}${url.pathname}?next=${next}${url.hash}`);
    await page.waitForURL((u) => u.hostname === 'example.org' || u.pathname === '/admin', { timeout: 15_000 });
    assert.equal(new URL(page.url()).origin, here, `?next=${next} led to ${page.url()}`);
    await context.close();
  }
});

test('login: while no control-plane replica answers, the page says so and does not hang', async () => {
  const e = it.dev.endpoints;
  const context = await it.browser.newContext();
  const page = await context.newPage();
  const cases = [
    ['connection refused', (route) => route.abort('connectionrefused')],
    ["a load balancer's own 502", (route) => route.fulfill({ status: 502, contentType: 'text/html', body: '<html><body><h1>502 Bad Gateway</h1></body></html>' })],
    // Never answered: the page gives up after 30 s (CALL_TIMEOUT_MS).
    ['no answer at all', () => {}],
  ];
  for (const [what, answer] of cases) {
    await page.unrouteAll({ behavior: 'ignoreErrors' });
    await page.goto(`${e.control_plane_url}login?tenant=${e.tenant}`);
    await page.route('**/api/v1/auth/login', answer);
    await page.fill('input[name=email]', e.owner_email);
    await page.fill('input[name=password]', 'Not-The-Password-1');
    const started = Date.now();
    await page.click('button[type=submit]');
    await page.getByText(/not reachable right now.*already watching keep watching/).waitFor({ timeout: 45_000 });
    const took = Date.now() - started;
    assert.ok(took < 35_000, `${what}: the message came after ${took} ms`);
    assert.equal(new URL(page.url()).pathname, '/login', `${what}: still on the login page`);
  }
  await context.close();
});

test('login: a link opened on another device asks for the code from the mail', async () => {
  const e = it.dev.endpoints;
  const asking = await it.browser.newContext();
  const { link, code } = await askForLink(await asking.newPage(), e, e.owner_email);
  assert.match(code ?? '', /^\d{8}$/, 'no code in the mail');
  await asking.close();

  const other = await it.browser.newContext();
  const page = await other.newPage();
  await page.goto(link);
  await page.locator('#link-code').waitFor({ timeout: 10_000 });
  assert.match(await page.locator('main').textContent(), /opened on another device/);
  await page.fill('#link-code input[name=code]', code);
  await page.click('#link-code button[type=submit]');
  await page.waitForURL(/\/admin/, { timeout: 15_000 });
  await page.getByText('Demo webcast').waitFor({ timeout: 10_000 });
  await other.close();
});

test('owner: issue an agent credential, see it listed, revoke it after confirming', async () => {
  const e = it.dev.endpoints;
  const context = await it.browser.newContext();
  const page = await loginByMail(context, e, e.owner_email);
  await page.click('nav >> text=Agents');
  await page.click('#issue-agent-credential');
  assert.ok((await page.locator('#agent-credential-value').textContent()).length > 20, 'no credential shown');
  const row = page.locator('#agent-credentials tbody tr').first();
  await row.waitFor({ timeout: 10_000 });
  const id = await row.getAttribute('data-credential');
  assert.match(id, /^ag_/);
  const state = () => page.locator(`#agent-credentials tr[data-credential="${id}"] .state`).textContent();
  assert.equal(await state(), 'valid');

  // Cancelled: nothing happens.
  page.once('dialog', (d) => d.dismiss());
  await page.click(`#agent-credentials button[data-credential="${id}"]`);
  await sleep(500);
  assert.equal(await state(), 'valid');

  page.once('dialog', (d) => d.accept());
  await page.click(`#agent-credentials button[data-credential="${id}"]`);
  await page.getByText(`${id} revoked.`).waitFor({ timeout: 10_000 });
  assert.match(await state(), /^revoked /);
  const listed = await (await page.request.get(`${e.control_plane_url}api/v1/agent-credentials`)).json();
  assert.ok(listed.find((c) => c.id === id)?.revoked_at, `not revoked: ${JSON.stringify(listed)}`);
  await context.close();
});

// ---- TOTP (RFC 6238: HMAC-SHA-1, 6 digits, 30 s) ---------------------------

function fromBase32(text) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const out = [];
  let bits = 0;
  let value = 0;
  for (const c of text.replace(/=+$/, '').toUpperCase()) {
    const v = alphabet.indexOf(c);
    if (v < 0) throw new Error(`not base32: ${text}`);
    value = ((value << 5) | v) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((value >> bits) & 0xff);
    }
  }
  return Buffer.from(out);
}

function totp(secret, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = createHmac('sha1', fromBase32(secret)).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  return String((mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000).padStart(6, '0');
}

const stepNow = () => Math.floor(Date.now() / 30_000);

test('totp helper matches RFC 6238', () => {
  // RFC 6238 appendix B, SHA-1 key "12345678901234567890" (base32 below), T = 59 s and
  // 1111111109 s: 94287082 and 07081804 in 8 digits, so these in 6.
  assert.equal(totp('GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ', 1), '287082');
  assert.equal(totp('GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ', Math.floor(1111111109 / 30)), '081804');
});

test('owner required to use TOTP: forced password change, enrols on the Security page, the magic link asks for the code; an owner removes a lost factor', async () => {
  const e = it.dev.endpoints;
  const email = 'otto-owner@example.com';
  const initial = 'Initial-pass-1';
  const password = 'Quartz-Lantern-Secret-7';

  // The dev owner adds Otto (with a password set for him) and makes TOTP required for owners.
  const devOwner = await it.browser.newContext();
  const admin = await loginByMail(devOwner, e, e.owner_email);
  const csrf = await csrfOf(admin, e);
  const created = await admin.request.post(`${e.control_plane_url}api/v1/users`, {
    headers: { 'x-csrf-token': csrf },
    data: { email, name: 'Otto Owner', role: 'owner', password: initial },
  });
  assert.equal(created.status(), 201, await created.text());
  const required = await admin.request.patch(`${e.control_plane_url}api/v1/tenant`, {
    headers: { 'x-csrf-token': csrf },
    data: { totp_required_for_owners: true },
  });
  assert.equal(required.status(), 200, await required.text());
  await devOwner.close();

  const context = await it.browser.newContext();
  try {
    const page = await context.newPage();
    // Password login; the initial password must be changed first.
    await page.goto(`${e.control_plane_url}login?tenant=${e.tenant}`);
    await page.fill('input[name=email]', email);
    await page.fill('input[name=password]', initial);
    await page.click('button[type=submit]');
    await page.getByText('Your password was set by someone else').waitFor({ timeout: 10_000 });
    await page.fill('input[name=current]', initial);
    await page.fill('input[name=next]', password);
    await page.click('button[type=submit]');

    // The admin page holds the session on Security until an authenticator is set up.
    await page.waitForURL(/\/admin#\/security$/, { timeout: 10_000 });
    await page.locator('#due').getByText('requires owners to log in with an authenticator app').waitFor({ timeout: 10_000 });
    assert.equal(await page.locator('nav a', { hasText: 'Events' }).count(), 0, 'Events offered before enrolment');
    await page.fill('#totp-enrol input[name=password]', password);
    await page.click('#totp-enrol button[type=submit]');
    const secret = (await page.locator('#totp-secret').textContent({ timeout: 10_000 })).trim();
    assert.match(secret, /^[A-Z2-7]{16,}=*$/);
    assert.match(await page.locator('#totp-uri').textContent(), /^otpauth:\/\/totp\//);
    const enrolled = stepNow();
    await page.fill('#totp-confirm input[name=code]', totp(secret, enrolled));
    await page.click('#totp-confirm button[type=submit]');
    await page.locator('#done').getByText('Authenticator app set up').waitFor({ timeout: 10_000 });
    await page.locator('nav a', { hasText: 'Events' }).waitFor();
    await page.screenshot({ path: join(artefacts, 'admin-totp-enrolled.png'), fullPage: true });

    await page.click('nav >> text=Log out');
    await page.waitForURL(/\/login$/, { timeout: 10_000 });

    // The magic link now asks for the authenticator code; a wrong one is refused and the link stays usable.
    const { link } = await askForLink(page, e, email);
    await page.goto('about:blank');
    await page.goto(link);
    await page.locator('#link-totp').waitFor({ timeout: 10_000 });
    const valid = new Set([-1, 0, 1].map((d) => totp(secret, stepNow() + d)));
    const wrong = ['000000', '111111', '222222'].find((c) => !valid.has(c));
    await page.fill('#link-totp input[name=totp]', wrong);
    await page.click('#link-totp button[type=submit]');
    await page.locator('#link-totp .notice.error').waitFor({ timeout: 10_000 });
    // A code is good once: wait for the step after the one used to confirm.
    while (stepNow() <= enrolled) await sleep(500);
    await page.fill('#link-totp input[name=totp]', totp(secret, stepNow()));
    await page.click('#link-totp button[type=submit]');
    await page.waitForURL(/\/admin/, { timeout: 15_000 });
    await page.getByText('Demo webcast').waitFor({ timeout: 10_000 });

    // Journeys after this one log the dev owner (no authenticator) in again.
    const lifted = await page.request.patch(`${e.control_plane_url}api/v1/tenant`, {
      headers: { 'x-csrf-token': await csrfOf(page, e) },
      data: { totp_required_for_owners: false },
    });
    assert.equal(lifted.status(), 200, await lifted.text());

    // Otto loses his phone: the dev owner removes his second factor on the
    // Staff page (after confirming), and Otto's sessions end.
    const helping = await it.browser.newContext();
    try {
      const owner = await loginByMail(helping, e, e.owner_email);
      owner.on('dialog', (d) => d.accept());
      await owner.goto(`${e.control_plane_url}admin#/users`);
      await owner.locator('#users tr', { hasText: 'Otto Owner' }).locator('button[data-remove-totp]').click({ timeout: 10_000 });
      await owner.getByText("Otto Owner's second factor is removed.").waitFor({ timeout: 10_000 });
      const gone = await page.request.get(`${e.control_plane_url}api/v1/session`);
      assert.equal(gone.status(), 401, 'his sessions end with the factor');
    } finally {
      await helping.close();
    }
  } finally {
    await context.close();
  }
});
