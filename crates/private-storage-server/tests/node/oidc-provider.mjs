// A real OpenID provider for the server's single sign-on tests: oidc-provider (OpenID
// certified) on 127.0.0.1 with one confidential client and its development login pages (any
// password). An account is its login name, which is also its subject (`sub`); its claims come
// from the JSON file ACCOUNTS (name → claims, preferred_username defaulting to the name), and a
// name listed in the file DISABLED (one per line) cannot sign in. Both are read at each lookup.
// Prints `issuer <url>` once it listens.
//   node oidc-provider.mjs CLIENT_ID CLIENT_SECRET REDIRECT_URI POST_LOGOUT_URI ACCOUNTS DISABLED
import * as fs from 'node:fs';
import * as http from 'node:http';
import Provider from 'oidc-provider';

const [clientId, clientSecret, redirect, postLogout, accountsFile, disabledFile] = process.argv.slice(2);
const accounts = () => JSON.parse(fs.readFileSync(accountsFile, 'utf8'));
const disabled = () => (fs.existsSync(disabledFile) ? fs.readFileSync(disabledFile, 'utf8').split('\n') : []);

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
    async findAccount(_ctx, id) {
      const known = accounts();
      if (!(id in known) || disabled().includes(id)) return undefined;
      return { accountId: id, async claims() { return { sub: id, preferred_username: id, ...known[id] }; } };
    },
  });
  server.on('request', provider.callback());
  console.log(`issuer ${issuer}`);
});
