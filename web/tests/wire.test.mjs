// Unit tests of the player's byte-level code (vi64, prft, catalog), bundled
// from the TypeScript sources with esbuild and run in node.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';

const src = (f) => fileURLToPath(new URL(`../src/player/${f}`, import.meta.url));

async function load(file) {
  const out = await build({ entryPoints: [src(file)], bundle: true, format: 'esm', write: false, platform: 'neutral' });
  return import('data:text/javascript;base64,' + Buffer.from(out.outputFiles[0].text).toString('base64'));
}

const { encodeVi, decodeVi, ProtocolError } = await load('wire.ts');
const { parsePrft, latencyMs } = await load('prft.ts');
const { parseCatalog } = await load('catalog.ts');

const hex = (b) => Buffer.from(b).toString('hex');

test('vi64 matches moq-transport 0.17 on known values', () => {
  assert.equal(hex(encodeVi(0)), '00');
  assert.equal(hex(encodeVi(127)), '7f');
  assert.equal(hex(encodeVi(128)), '8080');
  assert.equal(hex(encodeVi(310)), '8136');
  assert.equal(hex(encodeVi(0x2f00)), 'af00');
  assert.equal(hex(encodeVi(0x3fff)), 'bfff');
  assert.equal(hex(encodeVi(0x4000)), 'c04000');
  assert.deepEqual(decodeVi(Uint8Array.from([0xff, 0, 0, 0, 0, 0, 0, 1, 0]), 0), [256, 9]);
});

test('vi64 round-trips every length and rejects truncation', () => {
  const values = [0, 1, 127, 128, 0x3fff, 0x4000, 0x1fffff, 0x200000, 0x0fffffff, 0x10000000, 2 ** 35 - 1, 2 ** 35, 2 ** 42, 2 ** 49, Number.MAX_SAFE_INTEGER];
  for (let i = 0; i < 2000; i++) values.push(Math.floor(Math.random() * 2 ** Math.floor(Math.random() * 53)));
  for (const v of values) {
    const b = encodeVi(v);
    assert.deepEqual(decodeVi(b, 0), [v, b.length], `value ${v}`);
    if (b.length > 1) assert.throws(() => decodeVi(b.subarray(0, b.length - 1), 0), ProtocolError);
  }
  assert.throws(() => encodeVi(-1), RangeError);
  // Beyond 2^53 cannot be a JavaScript number: refused, not rounded.
  assert.throws(() => decodeVi(Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), 0), ProtocolError);
});

test('prft gives the origin wall clock of a fragment, and latency from it', () => {
  const b = new Uint8Array(32);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, 32);
  b.set([0x70, 0x72, 0x66, 0x74], 4); // 'prft'
  b[8] = 1; // version 1
  dv.setUint32(12, 1); // reference track
  const unixSec = 1_796_184_000;
  dv.setUint32(16, unixSec + 2_208_988_800);
  dv.setUint32(20, 2 ** 31); // .5 s
  dv.setBigUint64(24, 900_000n); // 10 s at 90 kHz
  const ref = parsePrft(b, 90_000);
  assert.equal(ref.wallMs, unixSec * 1000 + 500);
  assert.equal(ref.mediaSec, 10);
  // The frame at media time 10.2 s shown 700 ms after the fragment's ingest: 500 ms behind.
  assert.equal(Math.round(latencyMs(ref, 10.2, unixSec * 1000 + 1200)), 500);
  b[5] = 0; // not a prft box
  assert.equal(parsePrft(b, 90_000), null);
  assert.equal(parsePrft(b.subarray(0, 20), 90_000), null);
});

test('catalog: tracks with codecs and init data; refuses what it cannot play', () => {
  const init = Buffer.from('init').toString('base64');
  const cat = parseCatalog(new TextEncoder().encode(JSON.stringify({
    version: 1, generatedAt: 5,
    tracks: [
      { name: 'video', packaging: 'cmaf', role: 'video', codec: 'avc1.42c015', timescale: 90000, initData: init },
      { name: 'audio', packaging: 'cmaf', role: 'audio', codec: 'mp4a.40.2', timescale: 48000, initData: init },
    ],
  })));
  assert.deepEqual(cat.tracks.map((t) => [t.name, t.codec, t.timescale]), [['video', 'avc1.42c015', 90000], ['audio', 'mp4a.40.2', 48000]]);
  assert.equal(Buffer.from(cat.tracks[0].initData).toString(), 'init');
  assert.throws(() => parseCatalog(new TextEncoder().encode('{"version":"draft-01","tracks":[]}')));
  assert.throws(() => parseCatalog(new TextEncoder().encode('{"version":1,"tracks":[{"role":"video","packaging":"cmaf"}]}')));
  assert.throws(() => parseCatalog(new TextEncoder().encode('not json')));
});
