// A real OpenID provider (panva/oidc-provider, OpenID certified) for kron's identity tests.
//
//   node provider.mjs CONFIG.json     (prints "READY <issuer>" once listening)
//
// CONFIG: {port, audience, keys: [private JWKs with kid and alg; the first signs], roles: {account:
// [role, ...]}, roles_claim, sign_alg}. Access tokens are JWTs for `audience` (resource indicators),
// with the account's roles under `roles_claim`. Tokens without a browser:
// - client_credentials (sub = client id),
// - CIBA poll mode (login_hint = the account; approved at once),
// - the device authorization flow (RFC 8628), approved by POST /test/approve-device
//   {user_code, account} instead of a browser: what a person would do on the verification page.
// Key rotation: restart on the same port with other keys (the in-memory state does not survive).
import http from 'node:http';
import { readFileSync } from 'node:fs';
import Provider, { errors } from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const ISSUER = `http://127.0.0.1:${config.port}`;
const AUD = config.audience;
const ROLES = config.roles || {};
const ROLES_CLAIM = config.roles_claim || 'roles';
const SIGN_ALG = config.sign_alg || config.keys[0].alg || 'RS256';

function addApiGrant(grant) {
  grant.addOIDCScope('openid profile');
  grant.addResourceScope(AUD, 'api');
}

const provider = new Provider(ISSUER, {
  scopes: ['openid', 'profile', 'api'],
  jwks: { keys: config.keys },
  clients: [
    {
      client_id: 'test-client', client_secret: 'test-secret', response_types: [], redirect_uris: [],
      grant_types: ['client_credentials', 'urn:openid:params:grant-type:ciba'],
      backchannel_token_delivery_mode: 'poll', scope: 'openid profile api',
    },
    {
      // The CLI: a public client (no secret), device flow only.
      client_id: 'kron-cli', token_endpoint_auth_method: 'none', response_types: [], redirect_uris: [],
      grant_types: ['urn:ietf:params:oauth:grant-type:device_code'], scope: 'openid profile api',
    },
  ],
  findAccount: async (ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
  extraTokenClaims: async (ctx, token) => {
    const roles = ROLES[token.accountId];
    return roles ? { [ROLES_CLAIM]: roles } : undefined;
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    deviceFlow: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => AUD,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resource) => {
        if (resource !== AUD) throw new errors.InvalidTarget();
        return { scope: 'api', audience: AUD, accessTokenFormat: 'jwt', jwt: { sign: { alg: SIGN_ALG } } };
      },
    },
    ciba: {
      enabled: true,
      deliveryModes: ['poll'],
      processLoginHint: async (ctx, hint) => hint,
      verifyUserCode: async () => {},
      validateBindingMessage: async () => {},
      validateRequestContext: async () => {},
      triggerAuthenticationDevice: async (ctx, request, account, client) => {
        const grant = new provider.Grant({ clientId: client.clientId, accountId: account.accountId });
        addApiGrant(grant);
        await grant.save();
        await provider.backchannelResult(request, grant);
      },
    },
  },
});
provider.on('server_error', (ctx, error) => console.error('server_error', error));

async function approveDevice(body) {
  const { user_code: userCode, account } = body;
  // Stored normalized, as the verification page would (letters only, upper case).
  const code = await provider.DeviceCode.findByUserCode(String(userCode).replace(/[^a-z]/gi, '').toUpperCase());
  if (!code || code.accountId) return 404;
  const grant = new provider.Grant({ clientId: code.clientId, accountId: account });
  addApiGrant(grant);
  code.grantId = await grant.save();
  code.accountId = account;
  // What the device asked for (its authorization request), as an approved consent records it.
  code.scope = code.params.scope;
  code.resource = code.params.resource || AUD;
  code.authTime = Math.floor(Date.now() / 1000);
  await code.save();
  return 204;
}

const handle = provider.callback();
const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/test/approve-device') {
    let raw = '';
    req.on('data', (chunk) => { raw += chunk; });
    req.on('end', () => {
      approveDevice(JSON.parse(raw)).then(
        (status) => { res.statusCode = status; res.end(); },
        (error) => { console.error(error); res.statusCode = 500; res.end(); },
      );
    });
    return;
  }
  handle(req, res);
});
server.listen(config.port, '127.0.0.1', () => console.log(`READY ${ISSUER}`));
