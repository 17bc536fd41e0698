// What the browser tests share: starting a real abrid (fresh state, its own ports), processes
// that are always stopped, bounded waits, and Debian's Chromium through playwright-core.

import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, '..', '..');
export const ABRID = path.join(ROOT, 'target', 'debug', 'abrid');
export const PROVISION = path.join(ROOT, 'target', 'debug', 'abri-provision');
export const AGENT = path.join(ROOT, 'target', 'debug', 'abri-agent');
export const PYTHON = path.join(ROOT, '.venv', 'bin', 'python');
export const CHROMIUM = '/usr/bin/chromium';
export const SHOTS = path.join(ROOT, 'tests', 'artifacts', 'browser');
export const STEP_TIMEOUT = 20_000;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.setTimeout(1000);
    s.on('connect', () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
    s.on('timeout', () => { s.destroy(); resolve(false); });
  });
}

export function getJson(url, ca) {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ca, timeout: 3000 }, (res) => {
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => {
        try { resolve({ status: res.statusCode, json: JSON.parse(body) }); }
        catch (e) { reject(new Error(`not JSON from ${url}: ${body.slice(0, 200)}`)); }
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

// Everything a test starts, so it can always be stopped.
const procs = [];

export function startProcess(cmd, args, logFile) {
  const log = fs.openSync(logFile, 'a');
  const child = spawn(cmd, args, { stdio: ['ignore', log, log], detached: true });
  fs.closeSync(log);
  procs.push(child);
  return child;
}

export function killAll() {
  for (const p of procs) {
    if (p.exitCode === null && p.signalCode === null) {
      try { process.kill(-p.pid, 'SIGKILL'); } catch { /* already gone */ }
    }
  }
}
process.on('exit', killAll);

export async function waitFor(what, fn, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) { last = e; }
    await sleep(200);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

/// Starts abrid on a fresh state with a factory file made by abri-provision; resolves to
/// { base, dir, state, claimCode, log, ca }.
export async function startBox(dir) {
  for (const f of [ABRID, PROVISION]) {
    assert.ok(fs.existsSync(f), `missing ${f}: run \`make build\` first`);
  }
  const factory = path.join(dir, 'factory.toml');
  const made = JSON.parse(execFileSync(PROVISION, ['factory', '--out', factory, '--json'],
    { encoding: 'utf8', timeout: 60_000 }));
  assert.ok(made.claim_code, 'abri-provision factory --json gave no claim_code');
  const httpsPort = await freePort();
  const httpPort = await freePort();
  const state = path.join(dir, 'state');
  const log = path.join(dir, 'abrid.log');
  const abrid = startProcess(ABRID, ['--state-dir', state, '--https', `127.0.0.1:${httpsPort}`,
    '--http', `127.0.0.1:${httpPort}`, '--factory', factory, '--mac', '52:54:00:12:ab:cd',
    '--dev', '--no-mdns'], log);
  const base = `https://127.0.0.1:${httpsPort}`;
  const caFile = path.join(state, 'tls', 'ca.pem');
  await waitFor('abrid to answer /api/v1/status', async () => {
    if (abrid.exitCode !== null) {
      throw new Error(`abrid exited ${abrid.exitCode}: ${fs.readFileSync(log, 'utf8')}`);
    }
    if (!fs.existsSync(caFile)) return false;
    const r = await getJson(`${base}/api/v1/status`, fs.readFileSync(caFile));
    return r.status === 200;
  }, 30_000).catch((e) => {
    const text = fs.existsSync(log) ? fs.readFileSync(log, 'utf8') : '';
    throw new Error(`${e.message}\nabrid log:\n${text}`);
  });
  return { base, dir, state, claimCode: made.claim_code, log, ca: fs.readFileSync(caFile) };
}

/// Debian's Chromium, headless, with a page that accepts the box's own CA.
export async function launchBrowser() {
  assert.ok(fs.existsSync(CHROMIUM), `missing ${CHROMIUM}: apt-get install chromium (make deps)`);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-proxy-server'],
    timeout: 60_000,
  });
  const context = await browser.newContext({ ignoreHTTPSErrors: true, acceptDownloads: true });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT);
  page.setDefaultNavigationTimeout(STEP_TIMEOUT);
  return { browser, page };
}

/// A numbered full-page screenshot under tests/artifacts/browser.
export function screenshots(page, prefix) {
  fs.mkdirSync(SHOTS, { recursive: true });
  let step = 0;
  return async (name) => {
    step += 1;
    const file = path.join(SHOTS, `${prefix}-${String(step).padStart(2, '0')}-${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
  };
}

export const tmpDir = (name) => fs.mkdtempSync(path.join(os.tmpdir(), `abri-${name}-`));
