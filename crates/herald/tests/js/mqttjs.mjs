#!/usr/bin/env node
// MQTT.js (Node) against an MQTT-over-WebSocket broker: the client side of herald's ws/wss
// interop tests. Run `npm ci` in this directory first.
//
//   node mqttjs.mjs <url> [--ca FILE | --insecure] [--protocol-version 4|5] [--timeout SECS]
//                         [--client-id ID] [--username U] [--password P]
//       Round trip: subscribes to a fresh topic tree and publishes QoS 0, 1 and 2 messages,
//       a 200 KiB payload (many WebSocket frames' worth), bursts of small messages (many MQTT
//       packets per frame), and checks that each arrives once, intact, at its QoS, in order.
//       Then a retained message round trip, then a clean DISCONNECT.
//       Prints one JSON line {"ok":true,"received":N,...}.
//   node mqttjs.mjs <url> ... --subscribe-only TOPIC [--expect N] [--qos Q]
//       Subscribes, prints `ready` once the SUBACK is in, then one JSON line per message
//       ({"topic":..,"payload":<utf8>,"len":..,"qos":..,"retain":..}) until N (default 1)
//       have come, then {"ok":true,"received":N}.
//   node mqttjs.mjs <url> ... --publish-only TOPIC PAYLOAD [--qos Q] [--retain]
//       Publishes one message (QoS 1 unless --qos), waits for its acknowledgement,
//       disconnects and prints {"ok":true,"published":1}.
//
// <url> is ws://HOST:PORT/PATH or wss://HOST:PORT/PATH. wss verifies the server certificate
// against the system roots, or against --ca FILE; --insecure skips verification.
// Exit status 0 on success. On any failure: one JSON line {"ok":false,"stage":..,"error":..}
// on stdout, the same in words on stderr, exit status 1. The whole run stops by itself after
// --timeout seconds (default 20) and then fails naming the stage it was in.

import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import mqtt from 'mqtt';
import WebSocket from 'ws';

const USAGE =
  'usage: node mqttjs.mjs <ws[s]://host:port/path> [--ca FILE | --insecure] ' +
  '[--protocol-version 4|5] [--timeout SECS] [--client-id ID] [--username U] [--password P] ' +
  '[--subscribe-only TOPIC [--expect N] | --publish-only TOPIC PAYLOAD [--retain]] [--qos 0|1|2]';

let stage = 'arguments';
let client = null;
let ending = false;

function fail(error) {
  const message = error instanceof Error ? error.message || String(error) : String(error);
  process.stdout.write(JSON.stringify({ ok: false, stage, error: message }) + '\n');
  process.stderr.write(`mqttjs.mjs: FAILED during ${stage}: ${message}\n`);
  try {
    client?.end(true);
  } catch {
    // already gone
  }
  process.exit(1);
}

function parseArgs(argv) {
  const args = {
    url: null,
    ca: null,
    insecure: false,
    protocolVersion: 4,
    timeout: 20,
    clientId: null,
    username: undefined,
    password: undefined,
    mode: 'roundtrip',
    topic: null,
    payload: null,
    expect: 1,
    qos: null,
    retain: false,
  };
  const value = (i, name) => {
    if (i >= argv.length) throw new Error(`${name} needs a value\n${USAGE}`);
    return argv[i];
  };
  const int = (s, name, allowed) => {
    const n = Number(s);
    if (!Number.isInteger(n) || (allowed && !allowed.includes(n)) || n < 0) {
      throw new Error(`bad ${name}: ${s}\n${USAGE}`);
    }
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    switch (a) {
      case '--ca': args.ca = value(++i, a); break;
      case '--insecure': args.insecure = true; break;
      case '--protocol-version': args.protocolVersion = int(value(++i, a), a, [4, 5]); break;
      case '--timeout': args.timeout = Number(value(++i, a)); break;
      case '--client-id': args.clientId = value(++i, a); break;
      case '--username': args.username = value(++i, a); break;
      case '--password': args.password = value(++i, a); break;
      case '--subscribe-only': args.mode = 'subscribe'; args.topic = value(++i, a); break;
      case '--publish-only':
        args.mode = 'publish';
        args.topic = value(++i, a);
        args.payload = value(++i, a);
        break;
      case '--expect': args.expect = int(value(++i, a), a); break;
      case '--qos': args.qos = int(value(++i, a), a, [0, 1, 2]); break;
      case '--retain': args.retain = true; break;
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
  if (args.ca && args.insecure) throw new Error(`--ca and --insecure exclude each other`);
  return args;
}

// Connects without any retry: the first error, close or timeout fails the run.
function connect(args) {
  const opts = {
    protocolVersion: args.protocolVersion,
    clientId: args.clientId ?? `herald-js-${randomBytes(6).toString('hex')}`,
    clean: true,
    keepalive: 30,
    reconnectPeriod: 0,
    connectTimeout: Math.max(1000, Math.min(10_000, args.timeout * 500)),
    username: args.username,
    password: args.password,
  };
  if (args.url.startsWith('wss:')) {
    if (args.ca) opts.ca = readFileSync(args.ca);
    if (args.insecure) opts.rejectUnauthorized = false;
  }
  // MQTT.js builds the same WebSocket itself; building it here lets the run name a failed
  // handshake (HTTP status, missing "mqtt" subprotocol, TLS) instead of just "closed".
  let socket = null;
  let socketError = null;
  let opened = false;
  opts.createWebsocket = (url, protocols, o) => {
    socket = new WebSocket(url, protocols, o.wsOptions);
    socket.on('error', (e) => (socketError ??= e));
    socket.on('open', () => (opened = true));
    return socket;
  };
  const why = (e) => {
    const ws = socketError
      ? `WebSocket: ${socketError.message.trim()}`
      : opened
        ? 'after the WebSocket handshake'
        : 'WebSocket handshake not completed';
    if (!e) return ws;
    const m = e.message.trim();
    return socketError && socketError.message.trim() === m ? ws : `${m} (${ws})`;
  };
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(args.url, opts);
    client = c;
    const done = (f) => (x) => {
      c.removeAllListeners('connect');
      c.removeAllListeners('error');
      c.removeAllListeners('close');
      f(x);
    };
    c.once('connect', done((connack) => {
      if (socket.protocol !== 'mqtt') {
        reject(new Error(`server chose WebSocket subprotocol ${JSON.stringify(socket.protocol)}, not "mqtt"`));
      } else {
        resolve({ client: c, connack });
      }
    }));
    c.once('error', done((e) => reject(new Error(why(e)))));
    c.once('close', done(() => reject(new Error(`connection closed before CONNACK (${why()})`))));
  });
}

// Everything after CONNACK: an error, a server DISCONNECT or a close fails the run.
function watch(c) {
  c.on('error', (e) => fail(e));
  c.on('disconnect', (packet) =>
    fail(new Error(`server sent DISCONNECT (reason code ${packet?.reasonCode ?? '?'})`)),
  );
  c.on('close', () => {
    if (!ending) fail(new Error('connection closed unexpectedly'));
  });
  c.on('offline', () => {
    if (!ending) fail(new Error('client went offline'));
  });
}

// Messages as they arrive, and promises that resolve once a topic has `count` of them.
class Inbox {
  constructor(c) {
    this.byTopic = new Map();
    this.total = 0;
    this.waiters = [];
    c.on('message', (topic, payload, packet) => {
      const list = this.byTopic.get(topic) ?? [];
      list.push({ payload: Buffer.from(payload), qos: packet.qos, retain: packet.retain, dup: packet.dup });
      this.byTopic.set(topic, list);
      this.total++;
      this.waiters = this.waiters.filter((w) => !w());
    });
  }
  get(topic) {
    return this.byTopic.get(topic) ?? [];
  }
  wait(topic, count) {
    return new Promise((resolve) => {
      const check = () => {
        if (this.get(topic).length >= count) {
          resolve(this.get(topic));
          return true;
        }
        return false;
      };
      if (!check()) this.waiters.push(check);
    });
  }
}

function checkReceived(what, got, sent, qos) {
  if (got.length !== sent.length) {
    throw new Error(`${what}: expected ${sent.length} messages, got ${got.length}`);
  }
  for (let i = 0; i < sent.length; i++) {
    const g = got[i];
    if (!g.payload.equals(sent[i])) {
      // Out of order, or damaged?
      const at = sent.findIndex((s) => s.equals(g.payload));
      if (at >= 0) {
        throw new Error(`${what}: out of order: message ${i} received carries the payload sent as ${at}`);
      }
      throw new Error(
        `${what}: message ${i} damaged: sent ${sent[i].length} bytes, received ${g.payload.length} bytes` +
          (g.payload.length < 80 ? ` (${JSON.stringify(g.payload.toString())})` : ''),
      );
    }
    if (g.qos !== qos) throw new Error(`${what}: message ${i} delivered at QoS ${g.qos}, sent at QoS ${qos}`);
    if (g.retain) throw new Error(`${what}: message ${i} has the RETAIN flag on a live delivery`);
  }
}

async function subscribe(c, filter, qos) {
  const granted = await c.subscribeAsync(filter, { qos });
  const g = granted.find((x) => x.topic === filter) ?? granted[0];
  if (!g) throw new Error(`no SUBACK entry for ${filter}`);
  if (g.qos !== qos) throw new Error(`SUBACK for ${filter} granted ${g.qos} (asked for QoS ${qos})`);
}

async function roundtrip(args) {
  const started = Date.now();
  stage = 'connect';
  const { client: c, connack } = await connect(args);
  watch(c);
  const inbox = new Inbox(c);
  const base = `herald-js/${randomBytes(8).toString('hex')}`;
  const result = { ok: true, mode: 'roundtrip', url: args.url, protocolVersion: args.protocolVersion };
  if (connack.sessionPresent) throw new Error('CONNACK says session present for a clean session');

  stage = 'subscribe';
  await subscribe(c, `${base}/#`, 2);

  // A group of messages at one QoS on one topic, published back to back (each publish call is
  // made without waiting for the previous one), then all checked.
  const group = async (name, qos, payloads) => {
    stage = `${name} (QoS ${qos})`;
    const topic = `${base}/${name}`;
    const arrived = inbox.wait(topic, payloads.length);
    await Promise.all(payloads.map((p) => c.publishAsync(topic, p, { qos })));
    const got = await arrived;
    checkReceived(stage, got, payloads, qos);
    return payloads.length;
  };
  const small = (prefix, n) => Array.from({ length: n }, (_, i) => Buffer.from(`${prefix}-${i}`));

  result.qos0 = await group('qos0', 0, small('q0', 10));
  result.qos1 = await group('qos1', 1, small('q1', 10));
  result.qos2 = await group('qos2', 2, small('q2', 10));

  const large = randomBytes(200 * 1024);
  await group('large', 1, [large]);
  result.largeBytes = large.length;
  const large2 = randomBytes(70 * 1024);
  await group('large2', 2, [large2, Buffer.from('after-large')]);

  // Bursts: many small packets written in one go, on three topics at once, so that they travel
  // (both ways) several to a WebSocket frame / TCP segment.
  stage = 'burst';
  const bursts = [0, 1, 2].map((qos) => ({ qos, payloads: small(`burst${qos}`, qos === 2 ? 50 : 100) }));
  const counts = await Promise.all(bursts.map((b) => group(`burst${b.qos}`, b.qos, b.payloads)));
  result.burst = counts.reduce((a, b) => a + b, 0);

  // Nothing more than what was sent arrives (no duplicates, nothing from elsewhere).
  stage = 'no extra messages';
  const expected = result.qos0 + result.qos1 + result.qos2 + 1 + 2 + result.burst;
  await new Promise((r) => setTimeout(r, 150));
  if (inbox.total !== expected) throw new Error(`expected ${expected} messages in all, got ${inbox.total}`);

  stage = 'retained';
  const rtopic = `${base}-retained`;
  const rpayload = Buffer.from(`retained-${randomBytes(4).toString('hex')}`);
  await c.publishAsync(rtopic, rpayload, { qos: 1, retain: true });
  const rArrived = inbox.wait(rtopic, 1);
  await subscribe(c, rtopic, 1);
  const [r] = await rArrived;
  if (!r.payload.equals(rpayload)) throw new Error(`retained payload differs: ${JSON.stringify(r.payload.toString())}`);
  if (!r.retain) throw new Error('retained message delivered on SUBSCRIBE without the RETAIN flag');
  if (r.qos !== 1) throw new Error(`retained message delivered at QoS ${r.qos}, expected 1`);
  // Clear it again so brokers are left as found.
  await c.publishAsync(rtopic, Buffer.alloc(0), { qos: 1, retain: true });
  result.retained = true;

  stage = 'disconnect';
  ending = true;
  await c.endAsync();
  result.received = inbox.total;
  result.ms = Date.now() - started;
  return result;
}

function messageJson(topic, payload, packet) {
  return JSON.stringify({
    topic,
    payload: payload.toString('utf8'),
    len: payload.length,
    qos: packet.qos,
    retain: packet.retain,
  });
}

async function subscribeOnly(args) {
  stage = 'connect';
  const { client: c } = await connect(args);
  watch(c);
  let received = 0;
  let finish;
  const finished = new Promise((r) => (finish = r));
  c.on('message', (topic, payload, packet) => {
    if (received >= args.expect) return; // extra messages after the last expected one
    received++;
    process.stdout.write(messageJson(topic, payload, packet) + '\n');
    if (received === args.expect) finish();
  });
  stage = 'subscribe';
  await subscribe(c, args.topic, args.qos ?? 1);
  process.stdout.write('ready\n');
  stage = `waiting for ${args.expect} message(s) on ${args.topic}`;
  if (args.expect > 0) await finished;
  stage = 'disconnect';
  ending = true;
  await c.endAsync();
  return { ok: true, received };
}

async function publishOnly(args) {
  stage = 'connect';
  const { client: c } = await connect(args);
  watch(c);
  stage = 'publish';
  await c.publishAsync(args.topic, args.payload, { qos: args.qos ?? 1, retain: args.retain });
  stage = 'disconnect';
  ending = true;
  await c.endAsync();
  return { ok: true, published: 1 };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const timer = setTimeout(
    () => fail(new Error(`timed out after ${args.timeout} s`)),
    args.timeout * 1000,
  );
  const run = { roundtrip, subscribe: subscribeOnly, publish: publishOnly }[args.mode];
  const result = await run(args);
  clearTimeout(timer);
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}

process.on('unhandledRejection', (e) => fail(e));
process.on('uncaughtException', (e) => fail(e));
main().catch(fail);
