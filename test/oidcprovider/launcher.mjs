// Starts node-oidc-provider (an OpenID-certified authorization server that
// nobody on this project wrote) on loopback for the test tier. Go's
// test/oidcprovider package runs it as:
//
//   OIDC_PROVIDER_MODULE=<cache>/node_modules/oidc-provider/lib/index.js \
//     node launcher.mjs <config.json>
//
// config.json:
//   {
//     "scopes": ["ci:read", ...],           // every scope the server knows
//     "access_token_ttl": 600,              // seconds (client_credentials)
//     "strict_assertion_audience": false,   // RFC 7523 only: aud must be the
//                                           // token endpoint or the issuer
//     "clients": [{"client_id": "...", "jwks": {"keys": [...]},
//                  "scope": "ci:read ci:write", "dpop": false}]
//   }
//
// It listens on 127.0.0.1 (random port), prints one line
// `READY <issuer>` on stdout once it accepts requests, and logs on stderr
// one line per request (method, path, status), per issued and per revoked
// token, and per OAuth error with the server's own detail (never a token). It stops on SIGTERM or when stdin closes, so a test
// process that dies does not leave it behind.

import { createServer } from 'node:http';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const modulePath = process.env.OIDC_PROVIDER_MODULE;
if (!modulePath || process.argv.length < 3) {
  console.error('usage: OIDC_PROVIDER_MODULE=<path to oidc-provider/lib/index.js> node launcher.mjs <config.json>');
  process.exit(2);
}
const { default: Provider, errors } = await import(pathToFileURL(modulePath).href);
const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));

const server = createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: config.clients.map((c) => ({
    client_id: c.client_id,
    token_endpoint_auth_method: 'private_key_jwt',
    jwks: c.jwks,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: c.scope,
    dpop_bound_access_tokens: !!c.dpop,
  })),
  scopes: config.scopes,
  // Opaque access tokens: node-oidc-provider cannot revoke or introspect
  // the JWT ones, and this tier exists to check both.
  features: {
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    devInteractions: { enabled: false },
    dPoP: {
      enabled: true,
      nonceSecret: randomBytes(32),
      // Every DPoP proof must carry a server nonce, as Okta requires.
      requireNonce: () => true,
    },
  },
  ttl: { ClientCredentials: config.access_token_ttl || 600 },
  clientAuthMethods: ['private_key_jwt'],
  async assertJwtClientAuthClaimsAndHeader(ctx, claims) {
    if (!config.strict_assertion_audience) return;
    // What Ory Hydra and other RFC 7523 servers accept: the token
    // endpoint or the issuer, never the URL of revoke or introspect.
    const accepted = [`${issuer}/token`, issuer];
    const auds = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    if (!auds.some((a) => accepted.includes(a))) {
      throw new errors.InvalidClientAuth(`aud must be the token endpoint or the issuer, not ${auds.join(' ')}`);
    }
  },
});
provider.proxy = false;

for (const event of ['grant.error', 'revocation.error', 'introspection.error', 'server_error']) {
  provider.on(event, (ctx, err) => {
    const client = ctx?.oidc?.client?.clientId || '-';
    console.error(`${event} path=${ctx?.path} client=${client} error=${err.error || err.name} description=${err.error_description || err.message} detail=${err.error_detail || ''}`);
  });
}
provider.on('grant.success', (ctx) => console.error(`grant.success path=${ctx.path} client=${ctx.oidc?.client?.clientId || '-'}`));
// The server's own record that a token is gone (revoked).
provider.on('client_credentials.destroyed', (token) => console.error(`client_credentials.destroyed client=${token.clientId}`));

// One line per request, so tests can count what reached which endpoint.
server.on('request', (req, res) => {
  res.on('finish', () => console.error(`request ${req.method} ${req.url.split('?')[0]} ${res.statusCode}`));
});
server.on('request', provider.callback());

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.resume();

console.log(`READY ${issuer}`);
