#!/usr/bin/env node
// Extracts the byte vectors of mqtt-packet's test suite into mqtt-packet.json.
//
// Source: npm package `mqtt-packet` version 9.0.2 (https://github.com/mqttjs/mqtt-packet),
// file `test.js`, by the MQTT.js authors, MIT license (see README.md in this directory).
// The vectors are used by crates/mqtt-codec/tests/mqtt_packet_vectors.rs; that test reads
// the committed JSON and never needs node.
//
// Regenerate:
//   mkdir -p /tmp/mp && cd /tmp/mp && npm pack mqtt-packet@9.0.2 && tar xzf mqtt-packet-9.0.2.tgz
//   node crates/mqtt-codec/tests/vectors/extract-mqtt-packet.js /tmp/mp/package/test.js
//
// How: test.js is not run. Its source is read, its test helpers (testParseGenerate,
// testParseOnly, testParseError, ...) are renamed out of the way and replaced by recorders,
// and the result is evaluated with a stub `require` (`tape`, `readable-stream` and
// mqtt-packet itself are stubs, so no dependency has to be installed). Each helper call is
// recorded with its arguments; ad-hoc `test(...)` blocks are listed on stderr and skipped.
//
// Output: a JSON array of
//   { id, kind, helper, name, line, protocolVersion, opts, hex, trailingZeros?, object?, error? }
// kind: parse_generate | parse_only | generate_only | parse_error | generate_error |
//       write_to_stream_error.
// protocolVersion: opts.protocolVersion, or 4 (mqtt-packet's default) when not given.
// hex: the packet bytes; trailingZeros: that many 0x00 bytes follow `hex` (used for buffers
// over 64 KiB, so the 256 MiB vector stays small).
// In `object`, a Buffer is {"$buffer": "<hex>"} (plus "$zeros": n for compressed trailing
// zeros, as above); strings stay strings.

'use strict'

const fs = require('fs')
const path = require('path')
const vm = require('vm')

const testJs = process.argv[2] || '/tmp/mp/package/test.js'
const outFile = process.argv[3] || path.join(__dirname, 'mqtt-packet.json')

const BIG = 64 * 1024

function trailingZeroSplit (buf) {
  if (buf.length <= BIG) return { prefix: buf, zeros: 0 }
  let end = buf.length
  while (end > 0 && buf[end - 1] === 0) end--
  const zeros = buf.length - end
  if (zeros <= BIG) return { prefix: buf, zeros: 0 }
  return { prefix: buf.subarray(0, end), zeros }
}

function toJson (value, where) {
  if (Buffer.isBuffer(value)) {
    const { prefix, zeros } = trailingZeroSplit(value)
    const out = { $buffer: prefix.toString('hex') }
    if (zeros) out.$zeros = zeros
    return out
  }
  if (value === null) return null
  if (Array.isArray(value)) return value.map((v, i) => toJson(v, `${where}[${i}]`))
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return value
    case 'number':
      if (!Number.isFinite(value)) throw new Error(`${where}: non-finite number`)
      return value
    case 'object': {
      const out = {}
      for (const key of Object.keys(value)) {
        if (value[key] === undefined) throw new Error(`${where}.${key}: undefined`)
        out[key] = toJson(value[key], `${where}.${key}`)
      }
      return out
    }
    default:
      throw new Error(`${where}: cannot serialise ${typeof value}`)
  }
}

function wire (buf) {
  if (!Buffer.isBuffer(buf)) throw new Error('fixture is not a Buffer')
  const { prefix, zeros } = trailingZeroSplit(buf)
  const out = { hex: prefix.toString('hex') }
  if (zeros) out.trailingZeros = zeros
  return out
}

// The line of test.js that called the helper.
function callerLine () {
  const stack = new Error().stack.split('\n')
  for (const frame of stack) {
    const m = frame.match(/mqtt-packet-test\.js:(\d+):\d+/)
    if (m) return Number(m[1])
  }
  return null
}

const vectors = []
const skipped = []

function record (kind, helper, name, opts, fields) {
  const o = opts || {}
  const protocolVersion = o.protocolVersion === undefined ? 4 : o.protocolVersion
  vectors.push({
    kind,
    helper,
    name,
    line: callerLine(),
    protocolVersion,
    opts: toJson(o, 'opts'),
    ...fields
  })
}

const recorders = {
  testParseGenerate (name, object, buffer, opts) {
    record('parse_generate', 'testParseGenerate', name, opts, {
      ...wire(buffer),
      object: toJson(object, 'object')
    })
  },
  testGenerateOnly (name, object, buffer, opts) {
    record('generate_only', 'testGenerateOnly', name, opts, {
      ...wire(buffer),
      object: toJson(object, 'object')
    })
  },
  testParseOnly (name, object, buffer, opts) {
    record('parse_only', 'testParseOnly', name, opts, {
      ...wire(buffer),
      object: toJson(object, 'object')
    })
  },
  testParseError (expected, fixture, opts) {
    record('parse_error', 'testParseError', expected, opts, {
      ...wire(fixture),
      error: expected
    })
  },
  testGenerateError (expected, fixture, opts, name) {
    record('generate_error', 'testGenerateError', name || expected, opts, {
      object: toJson(fixture, 'object'),
      error: expected
    })
  },
  testGenerateErrorMultipleCmds (cmds, expected, fixture, opts) {
    for (const cmd of cmds) {
      const object = Object.assign({}, fixture, { cmd })
      record('generate_error', 'testGenerateErrorMultipleCmds', `${expected} on ${cmd}`, opts, {
        object: toJson(object, 'object'),
        error: expected
      })
    }
  },
  testParseGenerateDefaults (name, object, buffer, generated, opts) {
    // As in test.js: the parse result is `generated`, the generator input is `object`.
    record('parse_only', 'testParseGenerateDefaults', `${name} parse`, opts, {
      ...wire(buffer),
      object: toJson(generated, 'object')
    })
    record('generate_only', 'testParseGenerateDefaults', `${name} generate`, opts, {
      ...wire(buffer),
      object: toJson(object, 'object')
    })
  },
  testParseAndGenerate (name, object, buffer, opts) {
    record('parse_only', 'testParseAndGenerate', `${name} parse`, opts, {
      ...wire(buffer),
      object: toJson(object, 'object')
    })
    record('generate_only', 'testParseAndGenerate', `${name} generate`, opts, {
      ...wire(buffer),
      object: toJson(object, 'object')
    })
  },
  testWriteToStreamError (expected, fixture) {
    record('write_to_stream_error', 'testWriteToStreamError', expected, undefined, {
      object: toJson(fixture, 'object'),
      error: expected
    })
  }
}

const helperNames = Object.keys(recorders)
let source = fs.readFileSync(testJs, 'utf8')
for (const helper of helperNames) {
  const declaration = new RegExp(`^function ${helper} \\(`, 'm')
  if (!declaration.test(source)) {
    throw new Error(`helper ${helper} not found in ${testJs}: has test.js changed?`)
  }
  source = source.replace(declaration, `function __original_${helper} (`)
}
if (/^function test[A-Z]\w* \(/m.test(source)) {
  const unknown = source.match(/^function (test[A-Z]\w*) \(/m)[1]
  throw new Error(`test.js defines a helper this script does not know: ${unknown}`)
}

function stubTest (name) {
  skipped.push(name)
}
const stubMqtt = new Proxy({}, {
  get () {
    throw new Error('test.js used mqtt-packet at load time; the recorders cannot stand in for it')
  }
})
function stubRequire (id) {
  switch (id) {
    case 'tape': return stubTest
    case './': return stubMqtt
    case 'readable-stream': return { Writable: function Writable () {} }
    case 'util': return require('util')
    default: throw new Error(`test.js requires ${id}, which this script does not stub`)
  }
}

// The prelude is on the wrapper's first line, so test.js line numbers are kept.
const wrapped = '(function (require, __recorders) { const { ' + helperNames.join(', ') +
  ' } = __recorders;\n' + source + '\n})'
const fn = vm.runInThisContext(wrapped, { filename: 'mqtt-packet-test.js', lineOffset: -1 })
fn(stubRequire, recorders)

// A stable, unique id per vector: the name, its protocol version, and a counter for repeats.
const seen = new Map()
for (const v of vectors) {
  const base = `${v.kind}: ${v.name} [v${v.protocolVersion}]`
  const n = (seen.get(base) || 0) + 1
  seen.set(base, n)
  v.id = n === 1 ? base : `${base} #${n}`
}
const ordered = vectors.map(v => ({ id: v.id, ...v }))

fs.writeFileSync(outFile, JSON.stringify(ordered, null, 1) + '\n')

const counts = {}
for (const v of vectors) counts[v.kind] = (counts[v.kind] || 0) + 1
process.stderr.write(`wrote ${vectors.length} vectors to ${outFile}: ${JSON.stringify(counts)}\n`)
process.stderr.write(`skipped ${skipped.length} ad-hoc test() blocks (not helper vectors):\n`)
for (const name of skipped) process.stderr.write(`  - ${name}\n`)
