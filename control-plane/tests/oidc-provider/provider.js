// A real OpenID Connect provider for control-plane/tests/oidc.rs: panva's
// oidc-provider (OpenID certified) with one confidential client, PKCE
// required, and the built-in development login/consent pages, which the
// test drives with plain HTTP (any password is accepted for a known login).
//
//   OIDC_PORT           port on 127.0.0.1 (0 or unset: any free port)
//   OIDC_CLIENT_ID      client id
//   OIDC_CLIENT_SECRET  client secret (client_secret_basic or _post)
//   OIDC_REDIRECT_URI   the relying party's callback URL
//   OIDC_ACCOUNTS       JSON {"<login>": {"email": "...", "email_verified": true}}
//   OIDC_CLAIMS_IN      "id_token" (default): e-mail claims inside the ID token;
//                       "userinfo": only from the UserInfo endpoint (the
//                       spec's default for the code flow)
//
// Prints `READY <issuer>` on stdout once it listens.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import * as http from 'node:http';
import process from 'node:process';

import Provider from 'oidc-provider';

function need(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`provider.js: set ${name}`);
    process.exit(2);
  }
  return v;
}

const port = Number(process.argv[2] ?? process.env.OIDC_PORT ?? 0);
const clientId = need('OIDC_CLIENT_ID');
const clientSecret = need('OIDC_CLIENT_SECRET');
const redirectUri = need('OIDC_REDIRECT_URI');
const claimsIn = process.env.OIDC_CLAIMS_IN ?? 'id_token';
const accounts = JSON.parse(process.env.OIDC_ACCOUNTS ?? JSON.stringify({
  alice: { email: 'alice@example.com', email_verified: true },
  mallory: { email: 'mallory@example.com', email_verified: false },
}));

// A fresh signing key per run: the relying party must fetch it from jwks_uri.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: randomBytes(8).toString('hex'), use: 'sig', alg: 'RS256' };

const server = http.createServer();
server.listen(port, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    jwks: { keys: [jwk] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    pkce: { methods: ['S256'], required: () => true },
    claims: { openid: ['sub'], email: ['email', 'email_verified'] },
    conformIdTokenClaims: claimsIn !== 'id_token',
    features: { devInteractions: { enabled: true } },
    async findAccount(ctx, sub) {
      const account = accounts[sub];
      if (!account) return undefined;
      return {
        accountId: sub,
        async claims() {
          return { sub, email: account.email, email_verified: account.email_verified };
        },
      };
    },
  });
  provider.on('server_error', (ctx, err) => console.error('provider server_error', err));
  server.on('request', provider.callback());
  console.log(`READY ${issuer}`);
});

for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
// The test holds our stdin; when it goes away (test ended or crashed) we go too.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
