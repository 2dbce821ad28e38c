// A real OpenID provider for the server's single sign-on tests: oidc-provider (OpenID
// certified) on 127.0.0.1 with one confidential client and its development login pages (any
// password). An account is its login name, which is also its subject (`sub`); its claims come
// from the JSON file ACCOUNTS (name → claims, preferred_username defaulting to the name), and a
// name listed in the file DISABLED (one per line) cannot sign in. Both are read at each lookup.
// For the refusal tests, the file FORGE (read at each token request) makes the next ID tokens
// bad in one way: `aud` (another audience), `exp` (expired), `nonce` (another nonce), each
// signed with the provider's key, or `key` (signed with a key the provider never published);
// `rotate` signs with a second key that the provider publishes from then on (key rotation).
// Prints `issuer <url>` once it listens.
//   node oidc-provider.mjs CLIENT_ID CLIENT_SECRET REDIRECT_URI POST_LOGOUT_URI ACCOUNTS DISABLED FORGE
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as jose from 'jose';
import Provider from 'oidc-provider';

const [clientId, clientSecret, redirect, postLogout, accountsFile, disabledFile, forgeFile] = process.argv.slice(2);
const read = (file) => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8').trim() : '');
const signing = await jose.generateKeyPair('RS256', { extractable: true });
const published = { ...(await jose.exportJWK(signing.privateKey)), kid: 'published', alg: 'RS256', use: 'sig' };
const rogue = await jose.generateKeyPair('RS256');
const rotated = await jose.generateKeyPair('RS256', { extractable: true });
const rotatedPublic = { ...(await jose.exportJWK(rotated.publicKey)), kid: 'rotated', alg: 'RS256', use: 'sig' };

// The token endpoint's answer with its ID token made bad as FORGE says.
async function forge(idToken, mode) {
  const claims = jose.decodeJwt(idToken);
  const now = Math.floor(Date.now() / 1000);
  if (mode === 'aud') claims.aud = 'someone-else';
  if (mode === 'exp') Object.assign(claims, { iat: now - 7200, exp: now - 3600 });
  if (mode === 'nonce') claims.nonce = 'not-the-nonce-of-this-sign-in';
  const [key, kid] = {
    key: [rogue.privateKey, 'unpublished'],
    rotate: [rotated.privateKey, 'rotated'],
  }[mode] ?? [signing.privateKey, 'published'];
  return new jose.SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid }).sign(key);
}
const accounts = () => JSON.parse(fs.readFileSync(accountsFile, 'utf8'));
const disabled = () => read(disabledFile).split('\n');

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [redirect],
      post_logout_redirect_uris: [postLogout],
      grant_types: ['authorization_code'],
      response_types: ['code'],
    }],
    claims: { openid: ['sub'], profile: ['preferred_username', 'name'], groups: ['groups'] },
    scopes: ['openid', 'profile', 'groups', 'offline_access'],
    cookies: { keys: ['private-storage test provider'] },
    jwks: { keys: [published] },
    async findAccount(_ctx, id) {
      const known = accounts();
      if (!(id in known) || disabled().includes(id)) return undefined;
      return { accountId: id, async claims() { return { sub: id, preferred_username: id, ...known[id] }; } };
    },
  });
  const handle = provider.callback();
  server.on('request', (req, res) => {
    const mode = read(forgeFile);
    if (mode === 'rotate' && req.method === 'GET' && req.url.startsWith('/jwks')) {
      const keys = [{ ...published, d: undefined, p: undefined, q: undefined, dp: undefined, dq: undefined, qi: undefined }, rotatedPublic];
      res.setHeader('content-type', 'application/jwk-set+json');
      res.end(JSON.stringify({ keys: keys.map((k) => JSON.parse(JSON.stringify(k))) }));
      return;
    }
    if (mode && req.method === 'POST' && req.url.startsWith('/token')) {
      const end = res.end.bind(res);
      res.end = (body) => {
        const answer = JSON.parse(body);
        forge(answer.id_token, mode).then((token) => {
          const forged = JSON.stringify({ ...answer, id_token: token });
          res.setHeader('content-length', Buffer.byteLength(forged));
          end(forged);
        });
        return res;
      };
    }
    handle(req, res);
  });
  console.log(`issuer ${issuer}`);
});
