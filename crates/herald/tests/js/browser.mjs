#!/usr/bin/env node
// MQTT.js in headless Chromium against an MQTT-over-WebSocket broker: the browser side of
// herald's ws/wss interop tests. Run `npm ci` in this directory first. Uses the system
// Chromium (/usr/bin/chromium, Debian package `chromium`, or the path in $CHROMIUM) through
// playwright-core; it never downloads a browser.
//
//   node browser.mjs <url> [--insecure] [--protocol-version 4|5] [--timeout SECS]
//       In a page: connects with the browser bundle of MQTT.js, subscribes to a fresh topic
//       tree, publishes QoS 0, 1 and 2 messages, a 200 KiB payload and a burst of small ones,
//       checks each arrives once, intact, at its QoS, in order; then a retained message round
//       trip and a clean DISCONNECT. Prints one JSON line {"ok":true,"received":N,...}.
//   node browser.mjs <url> ... --subscribe-only TOPIC [--expect N] [--qos Q]
//       Subscribes in the page, prints `ready` once the SUBACK is in, then one JSON line per
//       message ({"topic":..,"payload":<utf8>,"len":..,"qos":..,"retain":..}) until N
//       (default 1) have come, then {"ok":true,"received":N}.
//
// <url> is ws://HOST:PORT/PATH or wss://HOST:PORT/PATH. For wss with a certificate the
// browser does not trust (self-signed), pass --insecure: the page then ignores certificate
// errors. Exit status 0 on success. On any failure: one JSON line
// {"ok":false,"stage":..,"error":..} on stdout, the same in words on stderr (with the
// browser console's errors, which name failed WebSocket handshakes), exit status 1. The whole
// run stops by itself after --timeout seconds (default 30, browser start included).

import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = dirname(fileURLToPath(import.meta.url));
const BUNDLE = join(HERE, 'node_modules', 'mqtt', 'dist', 'mqtt.min.js');
const USAGE =
  'usage: node browser.mjs <ws[s]://host:port/path> [--insecure] [--protocol-version 4|5] ' +
  '[--timeout SECS] [--subscribe-only TOPIC [--expect N] [--qos 0|1|2]]';

let stage = 'arguments';
let browser = null;
let failed = false;
const consoleErrors = [];

async function fail(error) {
  if (failed) return;
  failed = true;
  const message = error instanceof Error ? error.message || String(error) : String(error);
  const detail = consoleErrors.length ? ` [browser console: ${consoleErrors.slice(-3).join(' | ')}]` : '';
  process.stdout.write(JSON.stringify({ ok: false, stage, error: message + detail }) + '\n');
  process.stderr.write(`browser.mjs: FAILED during ${stage}: ${message}${detail}\n`);
  const closing = browser?.close().catch(() => {});
  await Promise.race([closing, new Promise((r) => setTimeout(r, 2000))]);
  process.exit(1);
}

function parseArgs(argv) {
  const args = {
    url: null,
    insecure: false,
    protocolVersion: 4,
    timeout: 30,
    mode: 'roundtrip',
    topic: null,
    expect: 1,
    qos: 1,
  };
  const value = (i, name) => {
    if (i >= argv.length) throw new Error(`${name} needs a value\n${USAGE}`);
    return argv[i];
  };
  const int = (s, name, allowed) => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < 0 || (allowed && !allowed.includes(n))) {
      throw new Error(`bad ${name}: ${s}\n${USAGE}`);
    }
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    switch (a) {
      case '--insecure': args.insecure = true; break;
      case '--protocol-version': args.protocolVersion = int(value(++i, a), a, [4, 5]); break;
      case '--timeout': args.timeout = Number(value(++i, a)); break;
      case '--subscribe-only': args.mode = 'subscribe'; args.topic = value(++i, a); break;
      case '--expect': args.expect = int(value(++i, a), a); break;
      case '--qos': args.qos = int(value(++i, a), a, [0, 1, 2]); break;
      case '-h':
      case '--help':
        process.stdout.write(USAGE + '\n');
        process.exit(0);
        break;
      default:
        if (a.startsWith('-') || args.url) throw new Error(`unexpected argument ${a}\n${USAGE}`);
        args.url = a;
    }
  }
  if (!args.url) throw new Error(`missing url\n${USAGE}`);
  if (!/^wss?:\/\//.test(args.url)) throw new Error(`url must be ws:// or wss://: ${args.url}`);
  if (!(args.timeout > 0)) throw new Error(`bad --timeout\n${USAGE}`);
  return args;
}

// ---- Runs inside the page (serialised by playwright: no closures over Node variables). ----
// Reports through window.__herald = {stage, result} and, for streamed lines, window.__emit.
function inPage(cfg) {
  const state = (window.__herald = { stage: 'connect', result: null });
  const done = (result) => {
    if (!state.result) state.result = result;
  };
  const fail = (e) => done({ ok: false, stage: state.stage, error: String((e && e.message) || e) });
  const enc = new TextEncoder();
  const dec = new TextDecoder();
  const hex = (n) => Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) => b.toString(16).padStart(2, '0')).join('');
  const randomBytes = (n) => {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, Math.min(n, i + 65536)));
    return out;
  };
  const equal = (a, b) => {
    if (a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
    return true;
  };

  let socket = null;
  let ending = false;
  const client = mqtt.connect(cfg.url, {
    protocolVersion: cfg.protocolVersion,
    clientId: `herald-browser-${hex(6)}`,
    clean: true,
    keepalive: 30,
    reconnectPeriod: 0,
    connectTimeout: cfg.connectTimeout,
    // MQTT.js would build the same WebSocket; keeping it lets the run check the subprotocol
    // and report the close code of a failed handshake.
    createWebsocket: (url, protocols) => {
      socket = new WebSocket(url, protocols);
      socket.addEventListener('close', (ev) => {
        if (!ending) fail(new Error(`WebSocket closed (code ${ev.code}${ev.reason ? `, ${ev.reason}` : ''})`));
      });
      return socket;
    },
  });
  client.on('error', fail);
  client.on('close', () => {
    if (!ending) fail(new Error(state.stage === 'connect' ? 'connection closed before CONNACK' : 'connection closed unexpectedly'));
  });
  client.on('disconnect', (p) => fail(new Error(`server sent DISCONNECT (reason code ${p && p.reasonCode})`)));

  const inbox = new Map();
  let total = 0;
  let waiters = [];
  client.on('message', (topic, payload, packet) => {
    const list = inbox.get(topic) || [];
    list.push({ payload: new Uint8Array(payload), qos: packet.qos, retain: packet.retain });
    inbox.set(topic, list);
    total++;
    if (cfg.mode === 'subscribe' && total <= cfg.expect) {
      window.__emit(JSON.stringify({ topic, payload: dec.decode(payload), len: payload.length, qos: packet.qos, retain: packet.retain }));
    }
    waiters = waiters.filter((w) => !w());
  });
  const wait = (topic, count) =>
    new Promise((resolve) => {
      const check = () => {
        const got = inbox.get(topic) || [];
        if (got.length >= count) {
          resolve(got);
          return true;
        }
        return false;
      };
      if (!check()) waiters.push(check);
    });
  const subscribe = async (filter, qos) => {
    const granted = await client.subscribeAsync(filter, { qos });
    const g = granted.find((x) => x.topic === filter) || granted[0];
    if (!g) throw new Error(`no SUBACK entry for ${filter}`);
    if (g.qos !== qos) throw new Error(`SUBACK for ${filter} granted ${g.qos} (asked for QoS ${qos})`);
  };
  const check = (what, got, sent, qos) => {
    if (got.length !== sent.length) throw new Error(`${what}: expected ${sent.length} messages, got ${got.length}`);
    for (let i = 0; i < sent.length; i++) {
      if (!equal(got[i].payload, sent[i])) {
        const at = sent.findIndex((s) => equal(s, got[i].payload));
        if (at >= 0) throw new Error(`${what}: out of order: message ${i} received carries the payload sent as ${at}`);
        throw new Error(`${what}: message ${i} damaged: sent ${sent[i].length} bytes, received ${got[i].payload.length}`);
      }
      if (got[i].qos !== qos) throw new Error(`${what}: message ${i} delivered at QoS ${got[i].qos}, sent at QoS ${qos}`);
      if (got[i].retain) throw new Error(`${what}: message ${i} has the RETAIN flag on a live delivery`);
    }
  };

  const run = async () => {
    const started = Date.now();
    await new Promise((resolve) => client.once('connect', resolve));
    if (socket.protocol !== 'mqtt') {
      throw new Error(`server chose WebSocket subprotocol ${JSON.stringify(socket.protocol)}, not "mqtt"`);
    }
    if (cfg.mode === 'subscribe') {
      state.stage = 'subscribe';
      await subscribe(cfg.topic, cfg.qos);
      window.__emit('ready');
      state.stage = `waiting for ${cfg.expect} message(s) on ${cfg.topic}`;
      if (cfg.expect > 0) await wait(cfg.topic, cfg.expect);
      state.stage = 'disconnect';
      ending = true;
      await client.endAsync();
      return { ok: true, received: cfg.expect };
    }

    const base = `herald-browser/${hex(8)}`;
    const result = { ok: true, mode: 'roundtrip', url: cfg.url, protocolVersion: cfg.protocolVersion, userAgent: navigator.userAgent };
    state.stage = 'subscribe';
    await subscribe(`${base}/#`, 2);
    const group = async (name, qos, payloads) => {
      state.stage = `${name} (QoS ${qos})`;
      const topic = `${base}/${name}`;
      const arrived = wait(topic, payloads.length);
      await Promise.all(payloads.map((p) => client.publishAsync(topic, p, { qos })));
      check(state.stage, await arrived, payloads, qos);
      return payloads.length;
    };
    const small = (prefix, n) => Array.from({ length: n }, (_, i) => enc.encode(`${prefix}-${i}`));
    result.qos0 = await group('qos0', 0, small('q0', 5));
    result.qos1 = await group('qos1', 1, small('q1', 5));
    result.qos2 = await group('qos2', 2, small('q2', 5));
    const large = randomBytes(200 * 1024);
    await group('large', 1, [large]);
    result.largeBytes = large.length;
    result.burst = await group('burst', 1, small('burst', 50));

    state.stage = 'no extra messages';
    const expected = result.qos0 + result.qos1 + result.qos2 + 1 + result.burst;
    await new Promise((r) => setTimeout(r, 150));
    if (total !== expected) throw new Error(`expected ${expected} messages in all, got ${total}`);

    state.stage = 'retained';
    const rtopic = `${base}-retained`;
    const rpayload = enc.encode(`retained-${hex(4)}`);
    await client.publishAsync(rtopic, rpayload, { qos: 1, retain: true });
    const rArrived = wait(rtopic, 1);
    await subscribe(rtopic, 1);
    const [r] = await rArrived;
    if (!equal(r.payload, rpayload)) throw new Error(`retained payload differs: ${JSON.stringify(dec.decode(r.payload))}`);
    if (!r.retain) throw new Error('retained message delivered on SUBSCRIBE without the RETAIN flag');
    if (r.qos !== 1) throw new Error(`retained message delivered at QoS ${r.qos}, expected 1`);
    await client.publishAsync(rtopic, new Uint8Array(0), { qos: 1, retain: true });
    result.retained = true;

    state.stage = 'disconnect';
    ending = true;
    await client.endAsync();
    result.received = total;
    result.ms = Date.now() - started;
    return result;
  };
  run().then(done, fail);
}
// ---- end of page code ----

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const deadline = Date.now() + args.timeout * 1000;
  const left = () => Math.max(1, deadline - Date.now());
  const timer = setTimeout(() => fail(new Error(`timed out after ${args.timeout} s`)), args.timeout * 1000);

  stage = 'launch chromium';
  const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
  if (!existsSync(executablePath)) throw new Error(`no Chromium at ${executablePath} (install Debian package chromium or set CHROMIUM)`);
  if (!existsSync(BUNDLE)) throw new Error(`no MQTT.js browser bundle at ${BUNDLE} (run npm ci in ${HERE})`);
  const flags = ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'];
  if (args.insecure) flags.push('--ignore-certificate-errors');
  browser = await chromium.launch({ executablePath, headless: true, args: flags, timeout: left() });
  const context = await browser.newContext({ ignoreHTTPSErrors: args.insecure });
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => consoleErrors.push(`page error: ${e.message}`));
  page.on('crash', () => fail(new Error('the page crashed')));
  await page.exposeFunction('__emit', (line) => process.stdout.write(line + '\n'));

  stage = 'load page';
  await page.setContent('<!doctype html><html><head><title>herald ws test</title></head><body></body></html>');
  await page.addScriptTag({ path: BUNDLE });
  if (!(await page.evaluate(() => typeof mqtt === 'object' && typeof mqtt.connect === 'function'))) {
    throw new Error('the MQTT.js bundle did not define mqtt.connect');
  }

  stage = 'in page';
  await page.evaluate(inPage, {
    url: args.url,
    protocolVersion: args.protocolVersion,
    mode: args.mode,
    topic: args.topic,
    expect: args.expect,
    qos: args.qos,
    connectTimeout: Math.max(1000, Math.min(10_000, args.timeout * 400)),
  });
  let result;
  try {
    const handle = await page.waitForFunction(() => window.__herald && window.__herald.result, null, {
      // Ends just before the hard timer, so that the page's stage can still be read.
      timeout: Math.max(1, left() - 750),
      polling: 50,
    });
    result = await handle.jsonValue();
  } catch (e) {
    const pageStage = await page.evaluate(() => window.__herald && window.__herald.stage).catch(() => null);
    if (pageStage) stage = `in page: ${pageStage}`;
    throw new Error(/Timeout/i.test(e.message) ? `timed out after ${args.timeout} s` : e.message);
  }
  if (!result.ok) {
    stage = `in page: ${result.stage}`;
    throw new Error(result.error);
  }
  clearTimeout(timer);
  await browser.close();
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}

process.on('unhandledRejection', (e) => fail(e));
process.on('uncaughtException', (e) => fail(e));
main().catch(fail);
