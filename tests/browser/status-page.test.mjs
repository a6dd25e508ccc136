// GET /status in a real browser: Debian's chromium (headless), driven by puppeteer-core.
// The page renders the configured routes with the breaker closed (green); while faults are
// injected on route A's upstream the page, without a reload, shows A's breaker open (red) and
// the failover with its reason; healed, it shows it closed again. Screenshots are kept under
// $TRESOR_BUILD_DIR/artifacts/ (the paths are printed). Without the admin key: 401.
// Needs `npm ci` here and the chromium package (scripts/setup.sh); a missing chromium fails.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { accessSync, constants, mkdirSync } from 'node:fs';
import path from 'node:path';
import puppeteer from 'puppeteer-core';
import { BUILD_DIR, stopAll } from '../integration/harness.mjs';
import { A, B, chatA, drive, startStatusStack } from '../integration/status-support.mjs';

const CHROMIUM = process.env.TRESOR_CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = path.join(BUILD_DIR, 'artifacts');
const UI_TIMEOUT_MS = 20_000; // bounded waits on DOM conditions (2 loaded cores)

let s;
let browser;
before(async () => {
  try {
    accessSync(CHROMIUM, constants.X_OK);
  } catch {
    throw new Error(`chromium not found at ${CHROMIUM}: install it (scripts/setup.sh, apt-get install -y chromium) ` +
      'or point TRESOR_CHROMIUM at a Chromium binary');
  }
  s = await startStatusStack();
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    // --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--window-size=1400,900'],
  });
});
after(async () => {
  if (browser) await browser.close();
  await stopAll();
});

const badge = (route, state) => `tr[data-route="${route}"] .badge[data-state="${state}"]`;

// Answers the browser's login prompt like a person: with `password` once (null: none),
// then Cancel. Through CDP's Fetch domain (puppeteer's authenticate() cannot cancel).
async function loginPrompt(page, password) {
  const cdp = await page.createCDPSession();
  const tried = new Set();
  cdp.on('Fetch.requestPaused', (e) => cdp.send('Fetch.continueRequest', { requestId: e.requestId }).catch(() => {}));
  cdp.on('Fetch.authRequired', (e) => {
    const first = password !== null && !tried.has(e.requestId);
    tried.add(e.requestId);
    const authChallengeResponse = first ? { response: 'ProvideCredentials', username: 'admin', password }
      : { response: 'CancelAuth' };
    cdp.send('Fetch.continueWithAuth', { requestId: e.requestId, authChallengeResponse }).catch(() => {});
  });
  await cdp.send('Fetch.enable', { handleAuthRequests: true, patterns: [{ urlPattern: '*' }] });
}

test('without the admin key the browser gets 401 and no page', { timeout: 60_000 }, async () => {
  for (const password of [null, `${s.adminKey}-wrong`]) {
    const context = await browser.createBrowserContext(); // no cached credentials
    try {
      const page = await context.newPage();
      await loginPrompt(page, password);
      const res = await page.goto(s.gw.url('/status'));
      assert.equal(res.status(), 401, `password ${password === null ? 'none' : 'wrong'}`);
      assert.match(res.headers()['www-authenticate'] || '', /^Basic /);
      assert.equal(await page.$('#routes'), null, 'no status page without the key');
      assert.match(await page.evaluate(() => document.body.textContent), /admin_key/);
      const data = await page.evaluate(async () => (await fetch('/status/data', { cache: 'no-store' })).status);
      assert.equal(data, 401);
    } finally {
      await context.close();
    }
  }
});

test('the page shows the breaker open while faults are injected and closed after, live', { timeout: 120_000 }, async () => {
  const page = await browser.newPage();
  await page.setViewport({ width: 1400, height: 900 });
  const problems = [];
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  let navigations = 0;
  page.on('framenavigated', (f) => { if (f === page.mainFrame()) navigations++; });
  await page.authenticate({ username: 'admin', password: s.adminKey }); // HTTP Basic, as a person would log in

  // Some healthy traffic first, so that the rates, percentiles and sparklines have data.
  for (let i = 0; i < 3; i++) assert.equal((await chatA(s, { stream: i === 0 })).status, 200);
  const res = await page.goto(s.gw.url('/status'));
  assert.equal(res.status(), 200);
  await page.waitForSelector(badge(A, 'closed'), { timeout: UI_TIMEOUT_MS });
  await page.waitForSelector(badge(B, 'closed'), { timeout: UI_TIMEOUT_MS });
  await page.waitForFunction(() => document.querySelector('#conn')?.dataset.state === 'ok', { timeout: UI_TIMEOUT_MS });
  const green = await page.$eval(badge(A, 'closed'), (e) => getComputedStyle(e).backgroundColor);
  assert.equal(green, 'rgb(26, 127, 55)', 'closed is green');
  assert.deepEqual(await page.$$eval('#routes tr', (rows) => rows.map((r) => r.dataset.route)), [A, B]);
  assert.equal(await page.$$eval(`tr[data-route="${A}"] svg.spark polyline`, (p) => p.length), 2, 'sparkline drawn');

  // Faults on A's upstream: every attempt 503; requests fail over to B until A's breaker opens.
  await s.fakes.prova.behaviour({ status: 503 });
  const load = drive(s);
  let results;
  try {
    await page.waitForSelector(badge(A, 'open'), { timeout: UI_TIMEOUT_MS });
    const red = await page.$eval(badge(A, 'open'), (e) => getComputedStyle(e).backgroundColor);
    assert.equal(red, 'rgb(207, 34, 46)', 'open is red');
    await page.waitForFunction((a) => [...document.querySelectorAll('#events tr[data-kind="failover"]')]
      .some((tr) => tr.textContent.includes(a) && tr.textContent.includes('503')), { timeout: UI_TIMEOUT_MS }, A);
    mkdirSync(ARTIFACTS, { recursive: true });
    const openShot = path.join(ARTIFACTS, 'status-page-breaker-open.png');
    await page.screenshot({ path: openShot, fullPage: true });
    console.log(`screenshot (breaker open): ${openShot}`);

    // Healed: the half-open probe succeeds and the page shows the breaker closed again.
    await s.fakes.prova.behaviour({});
    await page.waitForSelector(badge(A, 'closed'), { timeout: UI_TIMEOUT_MS });
  } finally {
    results = await load.stop(); // also when a wait failed: no request left running
  }
  assert.ok(results.every((r) => r.status === 200), 'B served every request while A was down');
  const shot = path.join(ARTIFACTS, 'status-page.png');
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot (breaker closed again): ${shot}`);
  assert.equal(navigations, 1, 'the page updated itself: no reload');
  assert.deepEqual(problems, [], 'no script error and no Content-Security-Policy violation');
  await page.close();
});
