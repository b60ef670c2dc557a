#!/usr/bin/env node
// Herald's web dashboard in headless Chromium, with MQTT.js clients in Node making the
// figures move: the browser side of tests/dashboard.rs. Run `npm ci` in this directory first.
// Uses the system Chromium (/usr/bin/chromium, or $CHROMIUM) through playwright-core.
//
//   node dashboard.mjs <http://host:port> <mqtt://host:port> [--key KEY] [--screenshots DIR]
//       [--timeout SECS]
//
// Opens every page and checks: no console error, no page error, no failed request; the
// overview's connection count and message rate follow clients that connect and publish, and
// its charts draw; the clients page finds a client by id prefix and disconnects one from its
// detail page (the MQTT.js client sees the connection close) and discards another's session;
// the topics page shows the busiest topic and the subscriptions; the retained page deletes a
// retained message; the publish form publishes to a subscriber; the tenants and cluster pages
// load; at phone width (390 px) the overview has no horizontal scrolling. With --key, the page
// first asks for a key: a wrong one is refused in the dialog, the right one signs in.
// With --sign-in-only, stops once the overview's figures are live. With --tenant NAME (and
// that tenant's --key), checks the pages a tenant's key sees instead.
// With --screenshots, a PNG of each page goes to DIR. Prints one JSON line {"ok":true,...};
// on failure {"ok":false,"stage":..,"error":..} and exit status 1. Stops by itself after
// --timeout seconds (default 120).

import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import mqtt from 'mqtt';

let stage = 'arguments';
let browser = null;
const clients = [];
const problems = [];
let expectUnauthorized = false;

function parseArgs(argv) {
  const args = { http: null, mqtt: null, key: null, screenshots: null, timeout: 120, signInOnly: false, tenant: null };
  const rest = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--key') args.key = argv[++i];
    else if (a === '--screenshots') args.screenshots = argv[++i];
    else if (a === '--timeout') args.timeout = Number(argv[++i]);
    else if (a === '--sign-in-only') args.signInOnly = true;
    else if (a === '--tenant') args.tenant = argv[++i];
    else rest.push(a);
  }
  [args.http, args.mqtt] = rest;
  if (!args.http || !args.mqtt) throw new Error('usage: node dashboard.mjs <http://host:port> <mqtt://host:port> [--key KEY] [--screenshots DIR]');
  return args;
}

async function fail(error) {
  const message = error instanceof Error ? error.message : String(error);
  const detail = problems.length ? ` [problems: ${problems.slice(-5).join(' | ')}]` : '';
  process.stdout.write(JSON.stringify({ ok: false, stage, error: message + detail }) + '\n');
  process.stderr.write(`dashboard.mjs: FAILED during ${stage}: ${message}${detail}\n`);
  for (const c of clients) c.end(true);
  await Promise.race([browser?.close().catch(() => {}), new Promise((r) => setTimeout(r, 2000))]);
  process.exit(1);
}

function connect(url, id, opts = {}) {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(url, { clientId: id, reconnectPeriod: 0, protocolVersion: 5, connectTimeout: 5000, ...opts });
    clients.push(c);
    c.once('connect', () => resolve(c));
    c.once('error', reject);
  });
}

// Polls `check` (which returns a truthy value when done) until it is, or fails naming `what`.
async function until(what, check, ms = 20000) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e.message;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${what}: not within ${ms / 1000} s (last: ${JSON.stringify(last)})`);
}

const cardValue = (page, label) => page.locator(`[data-card="${label}"] .value`).innerText();

async function main() {
  const args = parseArgs(process.argv.slice(2));
  let flow = null;
  const got = [];
  setTimeout(() => fail(new Error(`timed out after ${args.timeout} s`)), args.timeout * 1000);
  const shot = async (page, name) => {
    if (!args.screenshots) return;
    mkdirSync(args.screenshots, { recursive: true });
    await page.screenshot({ path: join(args.screenshots, name + '.png'), fullPage: true });
  };

  stage = 'launch chromium';
  const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
  if (!existsSync(executablePath)) throw new Error(`no Chromium at ${executablePath} (install Debian package chromium or set CHROMIUM)`);
  browser = await chromium.launch({ executablePath, headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'] });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    // A refused key is answered 401, which Chromium logs as a failed resource.
    if (expectUnauthorized && m.text().includes('401')) return;
    problems.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('response', (r) => {
    if (r.status() >= 400 && !(expectUnauthorized && r.status() === 401)) problems.push(`HTTP ${r.status()} for ${r.request().method()} ${r.url()}`);
  });
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  page.on('dialog', (d) => d.accept());
  const clean = (where) => {
    if (problems.length) throw new Error(`${where}: ${problems.join(' | ')}`);
  };

  stage = 'open the overview';
  if (args.key) {
    expectUnauthorized = true;
    await page.goto(args.http + '/');
    await page.locator('#signin[open]').waitFor({ timeout: 10000 });
    await shot(page, 'sign-in');
    await page.fill('#key', 'not-the-key-0123456789');
    await page.click('#signin-form button[type=submit]');
    await until('a wrong key is refused in the dialog', async () => (await page.locator('#signin-error').isVisible()) && (await page.locator('#signin-error').innerText()).includes('refused'));
    await page.fill('#key', args.key);
    await page.click('#signin-form button[type=submit]');
    await page.locator('[data-card="Connections"]').waitFor({ timeout: 10000 });
    expectUnauthorized = false;
  } else {
    await page.goto(args.http + '/');
  }
  const before = Number(await until('the connections card', () => cardValue(page, 'Connections')));
  clean('overview');
  if (args.tenant) return tenantPages();

  stage = 'connect MQTT clients';
  const sub = await connect(args.mqtt, 'dash-sub');
  sub.on('message', (topic, payload) => got.push([topic, payload.toString()]));
  await sub.subscribeAsync('dash/#', { qos: 1 });
  const kicked = await connect(args.mqtt, 'dash-kick');
  let kickedClosed = false;
  kicked.on('close', () => (kickedClosed = true));
  await connect(args.mqtt, 'dash-discard', { clean: false, properties: { sessionExpiryInterval: 3600 } }).then((c) => c.subscribeAsync('keep/#', { qos: 1 }));
  const pub = await connect(args.mqtt, 'dash-pub');
  await pub.publishAsync('dash/retained/a b', 'kept', { qos: 1, retain: true });
  flow = setInterval(() => pub.publish('dash/temperature', String(20 + Math.random()), { qos: 0 }), 50);

  stage = 'live figures';
  await until('connections rise by 4 on the overview', async () => Number(await cardValue(page, 'Connections')) >= before + 4);
  await until('the message rate shows', async () => !/^0(\/s)?$/.test(await cardValue(page, 'Messages in')) && (await cardValue(page, 'Messages in')) !== '0/s', 30000);
  await until('the charts draw', async () => (await page.locator('[data-chart="Connections"] polyline').count()) > 0, 20000);
  await until('the messages chart has a line', async () => (await page.locator('[data-chart="Messages a second"] polyline').count()) > 0, 20000);
  const listener = await page.locator('.panel', { hasText: 'Connections by listener' }).innerText();
  if (!/mqtt\s+\d/.test(listener)) throw new Error(`connections by listener: ${listener}`);
  await shot(page, 'overview');
  clean('overview, live');
  if (args.signInOnly) return done();

  stage = 'clients page';
  await page.goto(args.http + '/#/clients');
  await until('the clients list shows dash-kick', async () => (await page.locator('#client-results').innerText()).includes('dash-kick'));
  await page.fill('#client-search input[name=prefix]', 'dash-k');
  await page.click('#client-search button[type=submit]');
  await until('the search narrows to dash-kick', async () => {
    const text = await page.locator('#client-results').innerText();
    return text.includes('dash-kick') && !text.includes('dash-sub');
  });
  await shot(page, 'clients');
  await page.click('#client-results a:text("dash-kick")');
  await until('the detail page', async () => (await page.locator('main h1').innerText()).includes('dash-kick'));
  await page.locator('#disconnect').waitFor();
  await shot(page, 'client');
  await page.click('#disconnect');
  await until('the page says it disconnected', async () => (await page.locator('#client-status').innerText()).includes('Disconnected'));
  await until('the MQTT client saw its connection close', () => kickedClosed, 10000);
  await page.goto(args.http + '/#/client?id=dash-discard');
  await page.locator('#discard').waitFor();
  await page.click('#discard');
  await until('the page says the session was discarded', async () => (await page.locator('#client-status').innerText()).includes('discarded'));
  clean('clients');

  stage = 'topics page';
  await page.goto(args.http + '/#/topics');
  await until('the busiest topics show dash/temperature', async () => (await page.locator('#busiest').innerText()).includes('dash/temperature'), 20000);
  await until('the subscriptions show dash/#', async () => (await page.locator('#subscriptions').innerText()).includes('dash/#'));
  await shot(page, 'topics');
  clean('topics');

  stage = 'retained page';
  await page.goto(args.http + '/#/retained');
  await until('the retained message shows', async () => (await page.locator('#retained-list').innerText()).includes('dash/retained/a b'));
  await shot(page, 'retained');
  await page.click('[data-delete="dash/retained/a b"]');
  await until('it is gone from the list', async () => !(await page.locator('#retained-list').innerText()).includes('dash/retained/a b'));
  clean('retained');

  stage = 'publish page';
  await page.goto(args.http + '/#/publish');
  await page.fill('#publish-form input[name=topic]', 'dash/from-page');
  await page.fill('#publish-form textarea[name=payload]', 'hello from the page');
  await page.selectOption('#publish-form select[name=qos]', '1');
  await page.click('#publish-form button[type=submit]');
  await until('the page reports the publication', async () => (await page.locator('#publish-result').innerText()).includes('1 subscriber matched'));
  await until('the subscriber got it', () => got.some(([t, p]) => t === 'dash/from-page' && p === 'hello from the page'), 5000);
  await shot(page, 'publish');
  clean('publish');

  stage = 'tenants page';
  await page.goto(args.http + '/#/tenants');
  await until('the tenants table', async () => (await page.locator('#tenant-list').innerText()).includes('(default)'));
  await shot(page, 'tenants');
  clean('tenants');

  stage = 'cluster page';
  await page.goto(args.http + '/#/cluster');
  await until('the cluster page', async () => (await page.locator('#cluster-view').innerText()).includes('on its own'));
  await shot(page, 'cluster');
  clean('cluster');

  stage = 'phone width';
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(args.http + '/#/');
  await page.locator('[data-card="Connections"]').waitFor();
  await until('the charts draw at phone width', async () => (await page.locator('[data-chart="Connections"] polyline').count()) > 0);
  const widths = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  if (widths[0] > widths[1] + 1) throw new Error(`the page scrolls sideways at phone width: ${widths[0]} > ${widths[1]}`);
  await shot(page, 'phone');
  clean('phone');

  return done();

  // A tenant's key: its own tenant's pages, and no node-wide ones.
  async function tenantPages() {
    stage = 'a tenant key';
    const heading = await page.locator('main h1').innerText();
    if (!heading.includes(`Tenant "${args.tenant}"`)) throw new Error(`the overview's heading: ${heading}`);
    await until('the tenant note instead of the node history', async () => (await page.locator('#charts').innerText()).includes('node-wide key'));
    await page.goto(args.http + '/#/clients');
    await until('the clients page', async () => (await page.locator('#client-results').innerText()).includes('No client matches'));
    await page.goto(args.http + '/#/tenants');
    await until("the tenant's own row", async () => (await page.locator('#tenant-list').innerText()).includes(args.tenant));
    await page.goto(args.http + '/#/cluster');
    await until('the cluster page says it needs a node-wide key', async () => (await page.locator('#cluster-view').innerText()).includes('node-wide'));
    await page.goto(args.http + '/#/topics');
    await until('the topics page', async () => (await page.locator('#busiest').innerText()).includes('Nothing published'));
    clean('tenant pages');
    return done();
  }

  async function done() {
    if (flow) clearInterval(flow);
    for (const c of clients) c.end(true);
    await browser.close();
    process.stdout.write(JSON.stringify({ ok: true, connections_before: before, received: got.length }) + '\n');
    process.exit(0);
  }
}

main().catch(fail);
