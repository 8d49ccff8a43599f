// A real OpenID Connect provider for kubegate's tests and sandbox: panva/oidc-provider
// (OpenID Certified) with two demo users, kubegate's public client, and a login page
// of our own (the library's dev interactions accept any password).
//
// Usage: node server.mjs --port P --cert F --key F --state DIR [--keys a,b] [--id-token-ttl S]
//        [--refresh-token-ttl S] [--clock-skew S] [--console-redirect URI]...
//   --keys: the published signing keys, in order; the first one signs. Each is the RSA
//   key DIR/<name>.pem (created on first use, reused after) with `kid` <name>. Default
//   `signing-key`. Tests restart the provider with another list to rotate keys, and
//   read a key to forge tokens only the issuer could sign (to test refusal paths).
//   --clock-skew: run the provider's clock S seconds ahead of the machine's (negative:
//   behind), to test how clients cope with a clock that disagrees with the provider's.
//   --console-redirect URI: also let the `kubegate` client redirect to URI (kubegate's
//   web console, `https://<gateway>/kubegate/console/callback`); repeatable. A claimed
//   https URI, so its host must not be a loopback name or address (the library refuses
//   those for a native client): tests reach the gateway under a test host name.
//   Prints "ready <issuer>" on stdout once listening.

import { createServer } from 'node:https';
import { readFileSync, writeFileSync, existsSync, mkdirSync } from 'node:fs';
import { generateKeyPairSync, createPrivateKey } from 'node:crypto';
import { parseArgs } from 'node:util';
import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    cert: { type: 'string' },
    key: { type: 'string' },
    state: { type: 'string' },
    'id-token-ttl': { type: 'string', default: '3600' },
    'refresh-token-ttl': { type: 'string', default: '86400' },
    'clock-skew': { type: 'string', default: '0' },
    keys: { type: 'string', default: 'signing-key' },
    'console-redirect': { type: 'string', multiple: true, default: [] },
  },
});

const ACCOUNTS = {
  'alice@example.com': { password: 'alice-demo', groups: ['engineering'], sub: 'b3f1a8c2-alice' },
  'bob@example.com': { password: 'bob-demo', groups: [], sub: 'c9d2e7f4-bob' },
  'carol@example.com': { password: 'carol-demo', groups: ['leads'], sub: 'd4e8f1a9-carol' },
};

function signingKey(stateDir, name) {
  mkdirSync(stateDir, { recursive: true });
  const pemPath = `${stateDir}/${name}.pem`;
  if (!existsSync(pemPath)) {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    writeFileSync(pemPath, privateKey.export({ type: 'pkcs1', format: 'pem' }), { mode: 0o600 });
  }
  const jwk = createPrivateKey(readFileSync(pemPath)).export({ format: 'jwk' });
  return { ...jwk, kid: name, use: 'sig', alg: 'RS256' };
}

// oidc-provider reads time only through Date.now (its epochTime helper).
const clockSkewMs = Number(args['clock-skew']) * 1000;
if (clockSkewMs !== 0) {
  const realNow = Date.now;
  Date.now = () => realNow() + clockSkewMs;
}

const port = Number(args.port);
const issuer = `https://127.0.0.1:${port}`;
const requestCounts = {};

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'kubegate',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1/callback', 'http://localhost/callback', ...args['console-redirect']],
    },
    {
      // A bot (CI deployer): client credentials, JWT access tokens for `kubegate-bots`.
      client_id: 'ci-deployer',
      client_secret: 'ci-deployer-secret',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    {
      // Another application of the same organisation: its tokens must not open the gateway.
      client_id: 'other-app',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1/callback'],
    },
  ],
  jwks: { keys: args.keys.split(',').map((name) => signingKey(args.state, name)) },
  scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], groups: ['groups'] },
  // Put the requested claims in the ID token, which is the token kubectl presents.
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: false },
    deviceFlow: { enabled: true },
    revocation: { enabled: true },
    clientCredentials: { enabled: true },
    // Only bots get a resource (and so a JWT access token); people keep ID tokens.
    resourceIndicators: {
      enabled: true,
      defaultResource: (_ctx, client) => (client?.clientId === 'ci-deployer' ? 'urn:kubegate:bots' : undefined),
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'kubernetes',
        audience: 'kubegate-bots',
        accessTokenFormat: 'jwt',
        accessTokenTTL: 600,
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  pkce: { required: () => true },
  ttl: { IdToken: Number(args['id-token-ttl']), AccessToken: 3600, RefreshToken: Number(args['refresh-token-ttl']), Session: 86400, Grant: 86400, Interaction: 600, DeviceCode: 600 },
  async findAccount(_ctx, id) {
    const account = ACCOUNTS[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: id, email_verified: true, groups: account.groups };
      },
    };
  },
  // First-party client: no consent screen; grant what kubegate asks for.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid email profile groups offline_access');
    grant.addOIDCClaims(['email', 'email_verified', 'groups']);
    await grant.save();
    return grant;
  },
  async issueRefreshToken(_ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = `<h1>${escape(out.error)}</h1><p>${escape(out.error_description || '')}</p>`;
  },
});

function escape(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function loginPage(uid, message) {
  return `<!doctype html><html><head><title>kubegate demo login</title></head><body>
<h1>Sign in to the kubegate sandbox</h1>
${message ? `<p style="color:#b00">${escape(message)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login">
<label>Email <input name="login" autofocus></label>
<label>Password <input name="password" type="password"></label>
<button type="submit">Sign in</button>
</form>
<p>Demo users: alice@example.com / alice-demo, bob@example.com / bob-demo, carol@example.com / carol-demo</p>
</body></html>`;
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 64 * 1024) throw new Error('form too large');
  }
  return Object.fromEntries(new URLSearchParams(body));
}

async function interaction(req, res) {
  const match = req.url.match(/^\/interaction\/([^/?]+)(\/login)?/);
  const details = await provider.interactionDetails(req, res);
  if (details.prompt.name === 'consent') {
    // oidc-provider asks native clients for consent every time (their redirect could
    // be intercepted); kubegate is first-party here, so approve what it asked for.
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    const missing = details.prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  if (details.prompt.name !== 'login') {
    console.error('unexpected interaction prompt', JSON.stringify(details.prompt));
    res.writeHead(500, { 'content-type': 'text/plain' });
    return res.end(`unexpected interaction prompt ${details.prompt.name}`);
  }
  if (req.method === 'POST' && match[2]) {
    const form = await readForm(req);
    const account = ACCOUNTS[form.login];
    if (account && account.password === form.password) {
      return provider.interactionFinished(req, res, { login: { accountId: form.login } }, { mergeWithLastSubmission: false });
    }
    res.writeHead(200, { 'content-type': 'text/html' });
    return res.end(loginPage(details.uid, 'Wrong email or password.'));
  }
  res.writeHead(200, { 'content-type': 'text/html' });
  res.end(loginPage(details.uid));
}

const callback = provider.callback();
const server = createServer({ key: readFileSync(args.key), cert: readFileSync(args.cert) }, async (req, res) => {
  const path = req.url.split('?')[0];
  requestCounts[path] = (requestCounts[path] || 0) + 1;
  try {
    if (path === '/test/request-counts') {
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(JSON.stringify(requestCounts));
    }
    if (path.startsWith('/interaction/')) return await interaction(req, res);
    return callback(req, res);
  } catch (err) {
    res.writeHead(400, { 'content-type': 'text/plain' });
    res.end(`error: ${err.message}`);
  }
});

server.listen(port, '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});
