// Two files dropped on the upload page of Debian's headless Chromium, uploaded through tus at a
// throttled 4 MiB/s; prints each file's SHA-256, then `halfway` once both are a quarter in (the
// test restarts the server then: the uploads resume by themselves), and checks that both
// complete and appear in the list.
// Usage: node resume.mjs <base-url> <user> <password> <bytes-per-file> <screenshot.png>
import { launch } from './chromium.mjs';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';

const [base, user, password, size, screenshot] = process.argv.slice(2);
const fail = (message) => { console.error('FAILED: ' + message); process.exit(1); };
const dir = mkdtempSync(join(tmpdir(), 'ps-resume-'));
const files = ['Messreihe A.bin', 'Messreihe B.bin'].map((name) => {
  const path = join(dir, name);
  const bytes = randomBytes(Number(size));
  writeFileSync(path, bytes);
  console.log(`file ${createHash('sha256').update(bytes).digest('hex')} ${name}`);
  return path;
});

const browser = await launch();
try {
  const page = await browser.newPage();
  await page.goto(base + '/login');
  await page.fill('#username', user);
  await page.fill('#password', password);
  await page.click('#login-button');
  await page.waitForURL(base + '/');
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 4 * 1024 * 1024,
  });

  // Drop both files on the drop zone (taken from the file input, as a person's drag would bring them).
  await page.setInputFiles('#file', files);
  await page.evaluate(() => {
    const transfer = new DataTransfer();
    for (const file of document.getElementById('file').files) transfer.items.add(file);
    document.getElementById('drop').dispatchEvent(new DragEvent('drop', { dataTransfer: transfer, bubbles: true }));
  });
  await page.waitForFunction(() => {
    const bars = [...document.querySelectorAll('#uploads progress')];
    return bars.length === 2 && bars.every((bar) => bar.value >= 25);
  }, null, { timeout: 60000, polling: 50 });
  await page.screenshot({ path: screenshot.replace(/\.png$/, '-uploading.png'), fullPage: true });
  console.log('halfway');
  await page.waitForURL(/\/\?uploaded=2%20files$/, { timeout: 120000 });
  for (const name of ['Messreihe A.bin', 'Messreihe B.bin']) {
    if ((await page.locator(`#files a.name:has-text("${name}")`).count()) !== 1) fail(name + ' is listed once');
  }
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log('resume flow: ok');
} finally {
  await browser.close();
}
