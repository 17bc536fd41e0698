// File-mode backups in a real browser: a token made in the console enrols a real abri-agent,
// which backs up a directory; the machine page shows the backup, and a file downloaded from
// the console's snapshot browser is byte-for-byte the original.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { AGENT, PROVISION, killAll, launchBrowser, screenshots, startBox, tmpDir } from './support.mjs';

const env = { browser: null, dir: null };
let box;
let page;
let shot;
let data;

before(async () => {
  assert.ok(fs.existsSync(AGENT), `missing ${AGENT}: run \`make build\` first`);
  env.dir = tmpDir('browser-files');
  box = await startBox(env.dir);
  // The tree the machine protects: a text file, a binary file, a nested folder.
  data = path.join(env.dir, 'data');
  fs.mkdirSync(path.join(data, 'docs', 'deep'), { recursive: true });
  fs.writeFileSync(path.join(data, 'docs', 'report.txt'), 'quarterly report\n'.repeat(1000));
  fs.writeFileSync(path.join(data, 'docs', 'deep', 'photo.bin'), crypto.randomBytes(3 * 1024 * 1024 + 17));
  fs.writeFileSync(path.join(data, 'notes.md'), '# notes\n');
  ({ browser: env.browser, page } = await launchBrowser());
  shot = screenshots(page, 'files');
});

after(async () => {
  try {
    if (env.browser) await env.browser.close();
  } finally {
    killAll();
    if (env.dir && process.env.ABRI_KEEP_TMP !== '1') fs.rmSync(env.dir, { recursive: true, force: true });
  }
});

function run(cmd, args) {
  return execFileSync(cmd, args, { encoding: 'utf8', timeout: 120_000 });
}

test('a machine backed up and a file downloaded from the console', async (t) => {
  let fingerprint;
  let token;

  await t.test('activate and log in', async () => {
    const out = JSON.parse(run(PROVISION, ['--json', 'activate', box.base, '--fingerprint', caFingerprint(),
      '--claim-code', box.claimCode]));
    await page.goto(`${box.base}/login?lang=en`);
    await page.locator('#login-form [name="password"]').fill(out.password);
    await page.click('#login-submit');
    await page.locator('#nav-machines').waitFor();
  });

  await t.test('the console makes an enrolment token and shows the command', async () => {
    await page.click('#nav-machines');
    await page.click('#enrol-link');
    await page.locator('#token-form [name="name"]').fill('browser test');
    await page.click('#token-create');
    const command = (await page.locator('#enrol-command').textContent()) || '';
    await shot('token');
    fingerprint = /--fingerprint (\w+)/.exec(command)?.[1];
    token = /--token (\S+)/.exec(command)?.[1];
    assert.ok(fingerprint && token, `no fingerprint/token in: ${command}`);
    assert.equal(fingerprint, caFingerprint());
  });

  await t.test('the files plan is pointed at the test tree', async () => {
    await page.click('#nav-plans');
    await page.click('#plan-link-files');
    await page.locator('#plan-form [name="selections"]').fill(data);
    await page.locator('#plan-form [name="excludes"]').fill('');
    await page.click('#plan-save');
    await page.locator('#flash.ok').waitFor();
  });

  await t.test('the agent enrols and backs up', async () => {
    const config = path.join(env.dir, 'agent.toml');
    run(AGENT, ['--config', config, 'enroll', '--box', box.base, '--fingerprint', fingerprint, '--token', token,
      '--state-dir', path.join(env.dir, 'agent-state')]);
    const result = JSON.parse(run(AGENT, ['--config', config, '--json', 'backup', '--now']));
    assert.equal(result.snapshot.stats.files, 3);
  });

  await t.test('the machine page shows the backup', async () => {
    await page.click('#nav-machines');
    await page.locator('.machine-row a').first().click();
    await page.locator('#snapshot-list .snapshot-row').first().waitFor();
    assert.equal(await page.locator('#snapshot-list .snapshot-row').count(), 1);
    const files = (await page.locator('#snapshot-list .snapshot-row td:nth-child(3)').first().textContent()) || '';
    assert.equal(files.trim(), '3', 'the backup counts 3 files');
    const plan = (await page.locator('#snapshot-list .snapshot-row td:nth-child(2)').first().textContent()) || '';
    assert.match(plan, /full/, 'a first backup is a full one');
    const stored = (await page.locator('#machine-stored').textContent()) || '';
    assert.match(stored.trim(), /^[1-9][0-9.]* (KiB|MiB)$/, `stored size of a 3 MiB random file: ${stored}`);
    await shot('machine');
  });

  await t.test('a file downloads from the snapshot browser and matches', async () => {
    await page.locator('#snapshot-list .snapshot-row a').first().click();
    // Walk down the folders to docs/deep, as a user would.
    const parts = path.join(data, 'docs', 'deep').split('/').filter(Boolean);
    for (const part of parts) {
      await page.locator('a.folder', { hasText: `${part}/` }).first().click();
    }
    await shot('browse');
    const row = page.locator('.item-row', { hasText: 'photo.bin' });
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      row.locator('a.download').click(),
    ]);
    const saved = path.join(env.dir, 'downloaded.bin');
    await download.saveAs(saved);
    const original = fs.readFileSync(path.join(data, 'docs', 'deep', 'photo.bin'));
    assert.ok(fs.readFileSync(saved).equals(original), 'the downloaded file differs from the original');
  });

  await t.test('an image backup of a disk image is listed, and a file inside it downloads', async () => {
    // A small ext4 disk image holding the same tree, made by Debian's mke2fs.
    const disk = path.join(env.dir, 'disk.img');
    run('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', data, disk, '16M']);
    await page.click('#nav-plans');
    await page.click('#plan-link-image');
    await page.locator('#plan-form [name="selections"]').fill(disk);
    assert.ok(await page.locator('#plan-form #enabled').isChecked(), 'the image plan runs on schedule');
    await page.click('#plan-save');
    await page.locator('#flash.ok').waitFor();
    const config = path.join(env.dir, 'agent.toml');
    const result = JSON.parse(run(AGENT, ['--config', config, '--json', 'backup', '--now', '--plan', 'image']));
    assert.equal(result.snapshot.kind, 'image');
    await page.click('#nav-machines');
    await page.locator('.machine-row a').first().click();
    const row = page.locator('#snapshot-list .snapshot-row', { hasText: 'disk.img' });
    await row.waitFor();
    await row.locator('a').first().click();
    await page.locator('.image-card[data-image="disk.img"]').waitFor();
    assert.match((await page.locator('.volume-row').first().textContent()) || '', /ext4/);
    await shot('image');
    await page.locator('.volume-row a.browse').first().click();
    for (const part of ['docs', 'deep']) {
      await page.locator('a.folder', { hasText: `${part}/` }).first().click();
    }
    const item = page.locator('.item-row', { hasText: 'photo.bin' });
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      item.locator('a.download').click(),
    ]);
    const saved = path.join(env.dir, 'from-image.bin');
    await download.saveAs(saved);
    const original = fs.readFileSync(path.join(data, 'docs', 'deep', 'photo.bin'));
    assert.ok(fs.readFileSync(saved).equals(original), 'the file read from the image differs from the original');
    await shot('image-volume');
  });

  await t.test('"back up now" queues a backup for the agent', async () => {
    await page.click('#nav-machines');
    await page.locator('.machine-row a').first().click();
    await page.click('#backup-now');
    await page.locator('#flash.ok').waitFor();
    assert.ok(await page.locator('details.job.queued').count() >= 1, 'a queued job is listed');
    await shot('queued');
  });
});

function caFingerprint() {
  const pem = fs.readFileSync(path.join(box.state, 'tls', 'ca.pem'), 'utf8');
  const der = Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
  return crypto.createHash('sha256').update(der).digest('hex');
}
