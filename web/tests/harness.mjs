// What the browser tests drive for real: `strom dev` (control plane, origin
// and edge on random ports, fresh data dir), ffmpeg pushing RTMP, and
// Debian's headless Chromium through playwright-core.

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, homedir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { before, after } from 'node:test';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const artefacts = join(here, '..', 'test-results');
mkdirSync(artefacts, { recursive: true });

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function strom() {
  if (process.env.STROM_BIN) return process.env.STROM_BIN;
  const target = process.env.CARGO_TARGET_DIR ?? join(homedir(), '.cache', 'strom-target');
  return join(target, 'debug', 'strom');
}

/** `strom dev --random-ports` on a fresh data dir; resolves once endpoints.json is written. */
export async function startDev() {
  const dir = mkdtempSync(join(tmpdir(), 'strom-web-'));
  const log = [];
  const child = spawn(strom(), ['dev', '--random-ports', '--data-dir', dir], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info' },
  });
  child.stdout.on('data', (d) => log.push(String(d)));
  child.stderr.on('data', (d) => log.push(String(d)));
  const file = join(dir, 'endpoints.json');
  for (let i = 0; i < 600 && !existsSync(file); i++) {
    if (child.exitCode !== null) throw new Error(`strom dev exited: ${log.join('')}`);
    await sleep(100);
  }
  if (!existsSync(file)) throw new Error(`strom dev wrote no endpoints.json: ${log.join('')}`);
  const endpoints = JSON.parse(readFileSync(file, 'utf8'));
  return {
    dir,
    endpoints,
    log,
    async stop() {
      child.kill('SIGINT');
      await Promise.race([new Promise((r) => child.once('exit', r)), sleep(5000)]);
      if (child.exitCode === null) child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** ffmpeg pushing a 720p30 test pattern with 1 s GOPs (as the README's example). */
export function push(url, seconds = 120) {
  const child = spawn(
    'ffmpeg',
    ['-hide_banner', '-loglevel', 'error', '-re',
      '-f', 'lavfi', '-i', `testsrc2=size=1280x720:rate=30:duration=${seconds}`,
      '-f', 'lavfi', '-i', `sine=frequency=1000:duration=${seconds}`,
      '-c:v', 'libx264', '-preset', 'veryfast', '-tune', 'zerolatency', '-g', '30', '-keyint_min', '30', '-sc_threshold', '0', '-b:v', '2500k',
      '-c:a', 'aac', '-b:a', '128k', '-ar', '48000', '-f', 'flv', url],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const errors = [];
  child.stderr.on('data', (d) => errors.push(String(d)));
  return { child, errors, stop: () => child.kill('SIGKILL') };
}

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
  });
}

/** Every mail to `to` in the dev outbox, oldest first, decoded (quoted-printable). */
export function mailsTo(outbox, to) {
  const files = existsSync(outbox) ? readdirSync(outbox).sort() : [];
  return files
    .map((f) => readFileSync(join(outbox, f), 'utf8'))
    .filter((text) => text.includes(`To: ${to}`))
    .map((text) => text.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16))));
}

/** Waits for mail number `count + 1` to `to` and returns it. */
export async function nextMail(outbox, to, count, timeoutMs = 10_000) {
  for (let waited = 0; waited < timeoutMs; waited += 100) {
    const all = mailsTo(outbox, to);
    if (all.length > count) return all[all.length - 1];
    await sleep(100);
  }
  throw new Error(`no new mail to ${to}`);
}

export const linkIn = (mail) => mail.match(/https?:\/\/\S+#token=\S+/)?.[0];

/** Polls the page's player until `ok(stats)` holds or `timeoutMs` passes; returns the last stats. */
export async function waitForStats(page, ok, timeoutMs) {
  let last = null;
  const start = Date.now();
  while (Date.now() - start < timeoutMs) {
    last = await page.evaluate(() => {
      const p = window.stromPlayer;
      const v = document.querySelector('video');
      if (!p || !v) return null;
      const q = v.getVideoPlaybackQuality();
      return { ...p.stats(), currentTime: v.currentTime, decoded: q.totalVideoFrames, dropped: q.droppedVideoFrames, paused: v.paused };
    });
    if (last && ok(last)) return last;
    await sleep(250);
  }
  return last;
}

/**
 * Logs a browser context in by magic link as `email` (staff, or a
 * participant of `event`): asks for a link from that browser, takes it from
 * the dev outbox and opens it there. Returns the page, now at its landing.
 */
export async function loginByMail(context, endpoints, email, event) {
  const page = await context.newPage();
  await page.goto(endpoints.control_plane_url + 'login');
  const before = mailsTo(endpoints.outbox, email).length;
  const res = await page.request.post(endpoints.control_plane_url + 'api/v1/auth/magic-link', {
    data: { tenant: endpoints.tenant, email, ...(event ? { event } : {}) },
  });
  if (res.status() !== 202) throw new Error(`magic link: ${res.status()}`);
  const link = linkIn(await nextMail(endpoints.outbox, email, before));
  // As from a mail client: a fresh load, not a fragment change on /login.
  await page.goto('about:blank');
  await page.goto(link);
  await page.waitForURL(event ? /\/e\// : /\/admin/, { timeout: 15_000 });
  return page;
}

// One strom dev for a test file, pushed to for `seconds` by ffmpeg, and one
// Chromium: started before the file's tests, stopped after them. The fields
// of the returned object are set once the tests run.
export function devPushedAndBrowser(seconds = 300) {
  const it = {};
  before(async () => {
    it.dev = await startDev();
    it.pusher = push(it.dev.endpoints.rtmp_publish_url, seconds);
    it.browser = await launch();
  });
  after(async () => {
    await it.browser?.close();
    it.pusher?.stop();
    if (it.dev) keepLog(it.dev.log);
    await it.dev?.stop();
  });
  return it;
}

let logs = 0;
/** Keeps `strom dev`'s log among the artefacts and shows its warnings, so a
 * failure on a CI machine can be read from the test output alone. */
export function keepLog(log) {
  const text = log.join('');
  const file = join(artefacts, `strom-dev-${process.pid}-${logs++}.log`);
  writeFileSync(file, text);
  const warnings = text.split('\n').filter((l) => /\b(WARN|ERROR)\b/.test(l));
  console.log(`strom dev log: ${file}; ${warnings.length} warnings${warnings.length ? ', the last:' : ''}`);
  for (const l of warnings.slice(-30)) console.log(`  ${l.replace(/\x1b\[[0-9;]*m/g, '')}`);
}
