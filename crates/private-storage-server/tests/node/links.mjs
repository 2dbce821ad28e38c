// Share links and file requests in Debian's headless Chromium: open a password link, give a
// wrong then the right password, see the preview, download and compare the bytes; a fresh
// browser with the copied byte URL is refused; an uploader sends a file through a file request.
// Usage: node links.mjs <base-url> <link-path> <password> <expected-file> <request-path> <upload-file> <screenshot-dir>
import { launch } from './chromium.mjs';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const [base, linkPath, password, expectedFile, requestPath, uploadFile, shots] = process.argv.slice(2);
const fail = (message) => { console.error('FAILED: ' + message); process.exit(1); };
const expected = readFileSync(expectedFile);

const browser = await launch();
try {
  const owner = await browser.newContext({ acceptDownloads: true });
  const page = await owner.newPage();
  const first = await page.goto(base + linkPath);
  if (first.status() !== 401) fail('a password link opens on its form, with 401, got ' + first.status());
  if ((await page.content()).includes('dot.png')) fail('the locked page names nothing');
  await page.screenshot({ path: join(shots, 'link-locked.png'), fullPage: true });
  await page.fill('#password', 'not the password');
  await page.click('#unlock button');
  if (!(await page.textContent('[role=alert]')).includes('Wrong password')) fail('a wrong password is said so');
  await page.fill('#password', password);
  await page.click('#unlock button');
  await page.waitForSelector('#file-name');
  if ((await page.textContent('#file-name')).trim() !== 'dot.png') fail('the page names the file');
  await page.waitForFunction(() => { const img = document.querySelector('#preview'); return img && img.complete && img.naturalWidth > 0; }, null, { timeout: 10000 });
  await page.screenshot({ path: join(shots, 'link-page.png'), fullPage: true });

  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
  const saved = join(shots, 'link-download.bin');
  await download.saveAs(saved);
  if (!readFileSync(saved).equals(expected)) fail('the downloaded bytes differ');
  if (download.suggestedFilename() !== 'dot.png') fail('downloaded as ' + download.suggestedFilename());

  // The byte URL, copied into a browser that never gave the password: refused, no byte.
  const byteUrl = new URL(await page.getAttribute('#download', 'href'), base).href;
  const stranger = await browser.newContext();
  const other = await stranger.newPage();
  const refused = await other.goto(byteUrl);
  if (refused.status() !== 401) fail('a fresh browser with the byte URL is refused, got ' + refused.status());
  const body = await refused.body();
  if (body.includes(expected.subarray(0, 16))) fail('the fresh browser got bytes of the file');
  const preview = await stranger.request.get(new URL(await page.getAttribute('#preview', 'src'), base).href);
  if (preview.status() !== 401) fail('the preview URL is refused too, got ' + preview.status());

  // A file request, as the uploader sees it.
  const uploader = await (await browser.newContext()).newPage();
  await uploader.goto(base + requestPath);
  await uploader.screenshot({ path: join(shots, 'request-page.png'), fullPage: true });
  await uploader.fill('#uploader-name', 'Grace Hopper');
  await uploader.fill('#uploader-email', 'grace@example.org');
  await uploader.setInputFiles('#request-file', uploadFile);
  await uploader.click('#send');
  await uploader.waitForSelector('#received');
  if (!(await uploader.textContent('#received')).includes('Received: receipt.pdf')) fail('the uploader is told it was received');
  await uploader.screenshot({ path: join(shots, 'request-sent.png'), fullPage: true });
  console.log('links flow: ok');
} finally {
  await browser.close();
}
