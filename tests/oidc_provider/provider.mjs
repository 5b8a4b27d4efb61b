// The OpenID provider of the browser tests: panva's `oidc-provider` (an OpenID Certified
// implementation), not a hand-rolled fake.  One public client (no secret, PKCE S256
// required, CORS allowed from its redirect URIs' origins), the development login and
// consent pages (any login name is accepted), and access tokens issued as JWTs
// (RFC 9068) for one resource server, the archive, whose `aud` is AUDIENCE and whose
// `scope` carries the archive's permission words.
//
// A second, confidential client (UPLOADER_ID, UPLOADER_SECRET) gets tokens for the same
// resource server with the client credentials grant, for a test's own DICOMweb calls.
//
// Settings from the environment: PORT, CLIENT_ID, REDIRECT_URIS (comma separated),
// POST_LOGOUT_REDIRECT_URIS, AUDIENCE, RESOURCE_SCOPES (space separated),
// ACCESS_TOKEN_TTL (seconds), UPLOADER_ID, UPLOADER_SECRET.  It prints
// `listening <issuer>` once it accepts requests.
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT || 0);
const issuer = `http://127.0.0.1:${port}`;
const audience = process.env.AUDIENCE || 'urn:dicomcloud';
const resourceScopes = process.env.RESOURCE_SCOPES || 'dicom:read dicom:write';
const list = (value) => (value || '').split(',').map((item) => item.trim()).filter(Boolean);

// RS256: what oidc-client (the OHIF viewer's library) can verify an ID token with.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'test-rs256', use: 'sig', alg: 'RS256' };

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: process.env.CLIENT_ID || 'dicomcloud-browser',
      token_endpoint_auth_method: 'none',
      application_type: 'web',
      grant_types: ['authorization_code'],
      response_types: ['code'],
      redirect_uris: list(process.env.REDIRECT_URIS),
      post_logout_redirect_uris: list(process.env.POST_LOGOUT_REDIRECT_URIS),
    },
    {
      client_id: process.env.UPLOADER_ID || 'uploader',
      client_secret: process.env.UPLOADER_SECRET || 'uploader-secret',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
    },
  ],
  jwks: { keys: [jwk] },
  pkce: { required: () => true },
  scopes: ['openid', 'profile', 'offline_access', ...resourceScopes.split(' ')],
  ttl: { AccessToken: Number(process.env.ACCESS_TOKEN_TTL || 3600) },
  features: {
    clientCredentials: { enabled: true },
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // A client that names no resource (a plain OIDC client such as the viewer's)
      // gets tokens for the archive.
      defaultResource: async (ctx, client, oneOf) => oneOf || audience,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resource) => {
        if (resource !== audience) throw new Error(`unknown resource ${resource}`);
        return { audience, scope: resourceScopes, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } };
      },
    },
  },
});
// The development pages import a web font from another host: not on a machine without
// outside network, and not in tests that fail on any outside request.
provider.use(async (ctx, next) => {
  if (ctx.path === '/favicon.ico') {
    ctx.status = 204; // the browser asks; nothing to show
    return;
  }
  await next();
  if (typeof ctx.body === 'string' && ctx.type.startsWith('text/html')) {
    ctx.body = ctx.body.replace(/@import url\(https?:[^)]*\);/g, '');
  }
});
provider.on('server_error', (ctx, error) => console.error('server_error', error));

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`listening ${issuer}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
