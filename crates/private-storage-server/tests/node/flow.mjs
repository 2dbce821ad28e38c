// The server's pages in Debian's headless Chromium: log in, upload and see the file appear,
// get the size-limit message, download and compare bytes, log out, be denied afterwards.
// Usage: node flow.mjs <base-url> <user> <password> <max-file-bytes> <screenshot.png>
import { launch } from './chromium.mjs';
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [base, user, password, maxBytes, screenshot] = process.argv.slice(2);
const fail = (message) => { console.error('FAILED: ' + message); process.exit(1); };
const dir = mkdtempSync(join(tmpdir(), 'ps-browser-'));
const small = join(dir, 'Quartalsbericht März.pdf');
const pdf = Buffer.concat([Buffer.from('%PDF-1.7\n'), Buffer.alloc(20000, 'x')]);
writeFileSync(small, pdf);
const big = join(dir, 'too-big.pdf');
writeFileSync(big, Buffer.concat([Buffer.from('%PDF-1.7\n'), Buffer.alloc(Number(maxBytes) + 1000, 'y')]));

const browser = await launch();
try {
  const page = await browser.newPage();
  await page.goto(base + '/');
  if (!page.url().endsWith('/login')) fail('anonymous visitors land on the login page, not ' + page.url());
  await page.fill('#username', user);
  await page.fill('#password', 'wrong password');
  await page.click('#login-button');
  if (!(await page.textContent('#login-error')).includes('Wrong user name or password')) fail('a wrong password is said so');
  await page.fill('#password', password);
  await page.click('#login-button');
  await page.waitForURL(base + '/');

  // Upload through the form (the page's script posts it with a progress bar): the file appears.
  await page.setInputFiles('#file', small);
  await page.click('#upload-button');
  await page.waitForSelector('#files a.name:has-text("Quartalsbericht März.pdf")', { timeout: 10000 });

  // Too big: the message appears next to the form, the list does not change.
  await page.setInputFiles('#file', big);
  await page.click('#upload-button');
  await page.waitForSelector('#upload-error:not([hidden])', { timeout: 10000 });
  const message = await page.textContent('#upload-error');
  if (!message.includes('The file may not be larger than')) fail('size-limit message, got: ' + message);
  if ((await page.locator('#files tbody tr').count()) !== 1) fail('the refused file is not listed');
  await page.screenshot({ path: screenshot, fullPage: true });

  // Download with the session and compare the bytes.
  const href = await page.getAttribute('#files a.download', 'href');
  const got = await page.evaluate(async (url) => {
    const r = await fetch(url);
    return { status: r.status, bytes: Array.from(new Uint8Array(await r.arrayBuffer())) };
  }, href);
  if (got.status !== 200) fail('download status ' + got.status);
  if (!Buffer.from(got.bytes).equals(readFileSync(small))) fail('downloaded bytes differ');

  // Log out; the same link is denied.
  await page.click('button:has-text("Log out")');
  await page.waitForURL(base + '/login');
  const after = await page.evaluate(async (url) => (await fetch(url)).status, href);
  if (after !== 403) fail('after logout the download is denied, got ' + after);
  console.log('browser flow: ok');
} finally {
  await browser.close();
}
