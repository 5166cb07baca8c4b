// Bundles the pages into one directory (default dist/, or the first argument).
// The Rust build (the strom-web crate) runs this and embeds the result.
import * as esbuild from 'esbuild';
import { cpSync, mkdirSync, readdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] ?? join(here, 'dist');
mkdirSync(out, { recursive: true });

await esbuild.build({
  entryPoints: {
    player: join(here, 'src/player/embed.ts'),
    portal: join(here, 'src/pages/portal.ts'),
    login: join(here, 'src/pages/login.ts'),
    admin: join(here, 'src/pages/admin.ts'),
  },
  outdir: out,
  bundle: true,
  format: 'esm',
  splitting: true,
  chunkNames: 'chunk-[hash]',
  target: 'chrome110',
  minify: true,
  sourcemap: false,
  legalComments: 'none',
  logLevel: 'warning',
});
for (const f of readdirSync(join(here, 'static'))) {
  cpSync(join(here, 'static', f), join(out, f));
}
