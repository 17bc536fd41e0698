// The console in a real browser: Debian's Chromium driven by playwright-core, against a real
// abrid (fresh state, its own ports) and a real SMTP server (aiosmtpd from the repo's .venv).
// The page ids come from docs/api.md ("Console pages").

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  PYTHON, canConnect, freePort, killAll, launchBrowser, screenshots, startBox, startProcess, tmpDir, waitFor,
} from './support.mjs';

const HOSTNAME = 'backup-abcd';
const SENDER = 'backups@customer.example';
const RECIPIENT = 'it@customer.example';

const env = { browser: null };
let box; // { base, dir, maildir, claimCode, smtpPort, log }
let page;
let shot;

before(async () => {
  assert.ok(fs.existsSync(PYTHON), `missing ${PYTHON}: run \`make deps\` first`);
  const dir = tmpDir('browser');
  const smtpPort = await freePort();
  const maildir = path.join(dir, 'maildir');
  startProcess(PYTHON, ['-m', 'aiosmtpd', '-n', '-l', `127.0.0.1:${smtpPort}`,
    '-c', 'aiosmtpd.handlers.Mailbox', maildir], path.join(dir, 'smtp.log'));
  await waitFor('the SMTP server', () => canConnect(smtpPort), 20_000);
  const started = await startBox(dir);
  box = { ...started, maildir, smtpPort };
  ({ browser: env.browser, page } = await launchBrowser());
  shot = screenshots(page, 'console');
});

after(async () => {
  try {
    if (env.browser) await env.browser.close();
  } finally {
    killAll();
    if (box && process.env.ABRI_KEEP_TMP !== '1') {
      fs.rmSync(box.dir, { recursive: true, force: true });
    }
  }
});

async function htmlLang() {
  return page.evaluate(() => document.documentElement.lang);
}

async function flashOk(what) {
  const flash = page.locator('#flash');
  await flash.waitFor({ state: 'visible' });
  const cls = (await flash.getAttribute('class')) || '';
  const text = (await flash.textContent()) || '';
  assert.ok(cls.split(/\s+/).includes('ok'), `${what}: #flash is "${cls}": ${text.trim()}`);
}

test('the console, from activation to a test mail', async (t) => {
  let password;

  await t.test('/ lands on the activation page', async () => {
    await page.goto(`${box.base}/`);
    await shot('root');
    assert.match(new URL(page.url()).pathname, /^\/activate\/?$/);
    await page.locator('#activate-form').waitFor({ state: 'visible' });
    assert.match(await htmlLang(), /^(fr|en)$/);
  });

  await t.test('activation shows the password once', async () => {
    await page.locator('#activate-form [name="claim_code"]').fill(box.claimCode);
    await page.locator('#activate-submit').click();
    const issued = page.locator('#issued-password');
    await issued.waitFor({ state: 'visible' });
    await shot('activated');
    password = ((await issued.textContent()) || (await issued.inputValue().catch(() => ''))).trim();
    assert.ok(password.length >= 12, `issued password too short: "${password}"`);
  });

  await t.test('login leads to the dashboard', async () => {
    assert.ok(password, 'no password from the activation step');
    await page.goto(`${box.base}/`);
    assert.match(new URL(page.url()).pathname, /^\/login\/?$/, 'after activation / goes to /login');
    await page.locator('#login-form [name="user"]').fill('admin');
    await page.locator('#login-form [name="password"]').fill(password);
    await page.locator('#login-submit').click();
    await page.waitForURL((u) => u.pathname.startsWith('/dashboard'));
    await shot('dashboard');
    assert.equal((await page.locator('#box-hostname').textContent()).trim(), HOSTNAME);
    const fp = (await page.locator('#box-fingerprint').textContent()).replace(/[:\s]/g, '').toLowerCase();
    assert.match(fp, /^[0-9a-f]{64}$/, `#box-fingerprint: ${fp}`);
  });

  await t.test('switching the language changes <html lang> and back', async () => {
    const first = await htmlLang();
    const other = first === 'fr' ? 'en' : 'fr';
    for (const want of [other, first]) {
      await page.locator('#language-form select[name="language"]').selectOption(want);
      await page.locator('#language-submit').click();
      await page.waitForFunction((l) => document.documentElement.lang === l, want);
      await page.waitForLoadState('load');
      await shot(`language-${want}`);
      assert.equal(await htmlLang(), want);
    }
  });

  await t.test('editing the files plan', async () => {
    await page.locator('#nav-plans').click();
    await page.locator('#plan-link-files').click();
    await page.locator('#plan-form').waitFor({ state: 'visible' });
    assert.equal(await page.locator('#plan-form [name="interval_hours"]').inputValue(), '5');
    await page.locator('#plan-form [name="interval_hours"]').fill('6');
    await shot('plan-edit');
    await page.locator('#plan-save').click();
    await page.waitForLoadState('load');
    await flashOk('saving the plan');
    await shot('plan-saved');
    await page.reload();
    assert.equal(await page.locator('#plan-form [name="interval_hours"]').inputValue(), '6');
    const r = await page.request.get(`${box.base}/api/v1/plans/files`);
    assert.equal(r.status(), 200);
    assert.equal((await r.json()).interval_hours, 6);
  });

  await t.test('mail settings and a test mail that really arrives', async () => {
    await page.locator('#nav-mail').click();
    const form = page.locator('#mail-form');
    await form.waitFor({ state: 'visible' });
    await form.locator('[name="host"]').fill('127.0.0.1');
    await form.locator('[name="port"]').fill(String(box.smtpPort));
    const security = form.locator('[name="security"]');
    const tag = await security.first().evaluate((el) => el.tagName.toLowerCase());
    if (tag === 'select') await security.selectOption('none');
    else await form.locator('[name="security"][value="none"]').check();
    await form.locator('[name="sender"]').fill(SENDER);
    await form.locator('[name="recipients"]').fill(RECIPIENT);
    await shot('mail-form');
    await page.locator('#mail-save').click();
    await page.waitForLoadState('load');
    await flashOk('saving the mail settings');
    await shot('mail-saved');

    await page.locator('#mail-test').click();
    await page.waitForLoadState('load');
    await flashOk('sending the test mail');
    await shot('mail-test');

    const newDir = path.join(box.maildir, 'new');
    const file = await waitFor('a mail in the maildir', () => {
      if (!fs.existsSync(newDir)) return null;
      const files = fs.readdirSync(newDir);
      return files.length ? path.join(newDir, files[0]) : null;
    }, 20_000);
    const mail = fs.readFileSync(file, 'utf8');
    assert.ok(mail.includes(HOSTNAME), `the test mail does not name the box:\n${mail}`);
    assert.ok(mail.includes(RECIPIENT), 'the test mail is not addressed to the recipient');
  });

  await t.test('logging out leads back to the login page', async () => {
    await page.locator('#logout').click();
    await page.waitForURL((u) => u.pathname.startsWith('/login'));
    await shot('logged-out');
    await page.goto(`${box.base}/settings/plans`);
    assert.match(new URL(page.url()).pathname, /^\/login\/?$/, 'a logged-out browser still sees the plans');
  });
});
