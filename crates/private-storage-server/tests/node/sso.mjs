// Single sign-on in Debian's headless Chromium: the login page's "Sign in with …" button, the
// identity provider's own login and consent pages, back on the file list; upload a file and
// download it again; the list shows everyone's files to staff. Prints `sso flow: ok`.
// Usage: node sso.mjs <base-url> <login> <expected-heading> <screenshot.png>
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launch } from './chromium.mjs';

const [base, login, heading, screenshot] = process.argv.slice(2);
const fail = (message) => { console.error('FAILED: ' + message); process.exit(1); };
const dir = mkdtempSync(join(tmpdir(), 'ps-sso-'));
const file = join(dir, 'Protokoll.pdf');
writeFileSync(file, Buffer.concat([Buffer.from('%PDF-1.7\n'), Buffer.alloc(30000, 'p')]));

const browser = await launch();
try {
  const page = await browser.newPage();
  await page.goto(base + '/');
  if (!page.url().startsWith(base + '/login')) fail('anonymous visitors land on the login page, not ' + page.url());
  await page.click('#sign-in-sso', { noWaitAfter: true });
  // The provider's pages (oidc-provider's development login, then consent).
  await page.waitForSelector('input[name="login"]');
  if (page.url().startsWith(base)) fail('the button leads to the provider');
  await page.fill('input[name="login"]', login);
  await page.fill('input[name="password"]', 'any password');
  await page.click('button[type="submit"]', { noWaitAfter: true });
  await page.waitForURL((url) => url.href.startsWith(base) || url.href.includes('/interaction/'), { waitUntil: 'commit' });
  if (!page.url().startsWith(base)) await page.click('button[type="submit"]', { noWaitAfter: true }); // consent
  await page.waitForURL(base + '/');
  const shown = await page.textContent('main h2:nth-of-type(1), section h2');
  if (!(await page.content()).includes(heading)) fail(`the list is headed ${heading}: ${shown}`);

  // Upload through the page and download again, with the session the provider gave.
  await page.setInputFiles('#file', file);
  await page.click('#upload-button');
  await page.waitForSelector('#files a.name:has-text("Protokoll.pdf")', { timeout: 20000 });
  const href = await page.getAttribute('#files tr:has(a.name:has-text("Protokoll.pdf")) a.download', 'href');
  const got = await page.evaluate(async (url) => {
    const r = await fetch(url);
    return { status: r.status, bytes: Array.from(new Uint8Array(await r.arrayBuffer())) };
  }, href);
  if (got.status !== 200 || !Buffer.from(got.bytes).equals(readFileSync(file))) fail('download ' + got.status);
  await page.screenshot({ path: screenshot, fullPage: true });

  // Logging out ends the provider's session too: the provider asks, then sends us back. (Its
  // pages load a web font this machine cannot reach: wait for navigations, not for "load".)
  await page.click('button:has-text("Log out")', { noWaitAfter: true });
  await page.waitForURL(/\/session\/end/, { waitUntil: 'commit' });
  await page.click('button[name="logout"]', { noWaitAfter: true });
  await page.waitForURL(base + '/login', { waitUntil: 'commit' });
  const after = await page.evaluate(async (url) => (await fetch(url)).status, href);
  if (after !== 403) fail('after logout the download is denied, got ' + after);
  console.log('sso flow: ok');
} finally {
  await browser.close();
}
