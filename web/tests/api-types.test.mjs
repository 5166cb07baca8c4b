// The browser's API types are generated from the committed OpenAPI document
// (web/openapi.json, itself held equal to the API by the control plane's
// `openapi` test): this fails when src/api/types.ts was not regenerated, so
// the pages' type check (`npm run check`) always runs against the real API.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { generate, typesFile } from '../api-types.mjs';

test('src/api/types.ts is what openapi.json generates', async () => {
  const committed = readFileSync(typesFile, 'utf8');
  assert.ok(committed === (await generate()), 'src/api/types.ts is stale: run `npm run api-types` in web/');
});
