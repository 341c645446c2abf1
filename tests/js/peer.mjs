#!/usr/bin/env node
// Test peer for feedscope: multifeed's feed exchange (four JSON extensions on a root core)
// carried on JavaScript hypercore 10. One JSON object per line on stdout; commands on stdin.
import net from 'node:net'
import path from 'node:path'
import readline from 'node:readline'
import crypto from 'node:crypto'
import { existsSync } from 'node:fs'
import { parseArgs } from 'node:util'
import Hypercore from 'hypercore'
import c from 'compact-encoding'

const DEFAULT_KEY = 'bee80ff3a4ee5e727dc44197cb9d25bf8f19d50b0f3ad2984cfe5b7d14e75de7'
const EXT = {
  handshake: 'MULTIFEED_HANDSHAKE',
  manifest: 'MULTIFEED_MANIFEST',
  request: 'MULTIFEED_REQUEST_FEEDS',
  replicate: 'MULTIFEED_REPLICATE_FEEDS'
}
const MANIFEST_CHUNK = 100000 // keys per message: ~6.7 MB, under the 16 MiB frame limit
const HEX64 = /^[0-9a-f]{64}$/

const { values: opt } = parseArgs({
  options: {
    storage: { type: 'string' },
    key: { type: 'string', default: DEFAULT_KEY },
    listen: { type: 'string' },
    connect: { type: 'string' },
    feeds: { type: 'string', default: '0' },
    blocks: { type: 'string', default: '0' },
    'block-size': { type: 'string', default: '1024' },
    'timeout-ms': { type: 'string', default: '60000' },
    'noise-initiator': { type: 'boolean', default: false },
    'noise-responder': { type: 'boolean', default: false },
    client: { type: 'string', default: 'MULTIFEED' },
    version: { type: 'string', default: '5.0.0' },
    garbage: { type: 'boolean', default: false },
    'non-hex-keys': { type: 'boolean', default: false },
    'huge-manifest': { type: 'string' },
    'request-unoffered': { type: 'boolean', default: false },
    accept: { type: 'string', default: 'all' }
  }
})

const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const warn = (message) => out({ type: 'warning', message })
const TIMEOUT = Number(opt['timeout-ms'])
const WIRE_DEBUG = !!process.env.FEEDSCOPE_PEER_DEBUG

// stdout writes to files and pipes are synchronous on Linux, so nothing is lost by exiting at once.
function fatal (message, code = 1) {
  out({ type: 'error', message })
  process.exit(code)
}
process.on('uncaughtException', (err) => fatal(`uncaught: ${err.stack || err}`))
process.on('unhandledRejection', (err) => fatal(`unhandled: ${err.stack || err}`))

if (!opt.storage) fatal('--storage DIR is required', 2)
if (!!opt.listen === !!opt.connect) fatal('exactly one of --listen PORT or --connect HOST:PORT', 2)
if (!HEX64.test(opt.key)) fatal('--key must be 64 lowercase hex characters', 2)
if (!['all', 'none'].includes(opt.accept)) fatal('--accept all|none', 2)

// Bounded network waits: expect(label) arms a deadline, met(label) clears it.
const waits = new Map()
const expect = (label) => { if (!waits.has(label)) waits.set(label, Date.now() + TIMEOUT) }
const met = (label) => waits.delete(label)
setInterval(() => {
  for (const [label, deadline] of waits) {
    if (Date.now() > deadline) fatal(`timeout after ${TIMEOUT} ms waiting for ${label}`, 3)
  }
}, 200).unref()

// JSON exactly as registerExtension(name, { encoding: 'json' }) puts it on the wire (raw UTF-8, no
// length prefix), but a payload that is not JSON decodes to { invalid } instead of throwing: stock
// hypercore rethrows the SyntaxError as an uncaught exception and the process dies.
const tolerantJson = {
  preencode: c.raw.json.preencode,
  encode: c.raw.json.encode,
  decode (state) {
    const bytes = state.buffer.subarray(state.start, state.end)
    state.start = state.end
    const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    try { return JSON.parse(buf.toString('utf8')) } catch { return { invalid: buf.toString('hex') } }
  }
}

// ---------- storage: the root core, local writable feeds, remote feeds ----------

const storage = opt.storage
const root = new Hypercore(path.join(storage, 'root'), Buffer.from(opt.key, 'hex'))
await root.ready()

const cores = new Map() // hex key -> { core, name, writable } (+ ready and digest state for remote feeds)
const byName = new Map() // local name -> hex key

function blockFor (name, j, size) {
  return Buffer.alloc(size, `${name}:${j}:`) // the pattern repeated and truncated to size bytes
}

async function createLocalFeed (name, blocks, size) {
  const core = new Hypercore(path.join(storage, 'local', name))
  await core.ready()
  const batchBlocks = Math.max(1, Math.min(1000, Math.floor(16 * 1024 * 1024 / Math.max(1, size))))
  for (let j = core.length; j < blocks; j += batchBlocks) {
    const batch = []
    for (let k = j; k < Math.min(blocks, j + batchBlocks); k++) batch.push(blockFor(name, k, size))
    await core.append(batch)
  }
  const key = core.key.toString('hex')
  cores.set(key, { core, name, writable: true })
  byName.set(name, key)
  out({ type: 'feed_created', name, key, length: core.length })
  return key
}

// A remote feed: open (or reuse) the core and download everything, live.
function remoteCore (key) {
  let entry = cores.get(key)
  if (entry) return entry
  const core = new Hypercore(path.join(storage, 'remote', key), Buffer.from(key, 'hex'))
  entry = { core, name: null, writable: false, ready: core.ready(), hash: crypto.createHash('sha256'), hashed: 0, syncedLength: 0 }
  cores.set(key, entry)
  // One check at a time per feed (the running hash is shared); events during a check coalesce.
  let running = false
  let again = false
  const check = async () => {
    if (running) { again = true; return }
    running = true
    try {
      do { again = false; await checkSynced(key, entry) } while (again)
    } catch (err) { warn(`digest ${key}: ${err.message}`) } finally { running = false }
  }
  core.on('append', check)
  core.on('download', check)
  core.on('peer-add', check)
  core.download({ start: 0, end: -1 }) // end -1: a live range, follows the remote length
  return entry
}

function remoteLength (core) {
  let len = core.length
  for (const peer of core.peers) len = Math.max(len, peer.remoteLength)
  return len
}

async function checkSynced (key, entry) {
  const { core } = entry
  const len = remoteLength(core)
  if (len <= entry.syncedLength || core.contiguousLength < len) return
  while (entry.hashed < len) entry.hash.update(await core.get(entry.hashed++))
  entry.syncedLength = len
  met(`sync of ${key}`)
  out({ type: 'synced', key, length: len, digest: entry.hash.copy().digest('hex') })
}

async function digestOf (core) {
  const hash = crypto.createHash('sha256')
  const len = core.contiguousLength
  for (let i = 0; i < len; i++) hash.update(await core.get(i))
  return { length: len, digest: hash.digest('hex') }
}

const localKeys = () => [...cores.values()].filter((e) => e.writable).map((e) => e.core.key.toString('hex'))

async function metaOf (keys) {
  const meta = {}
  for (const key of keys) {
    const { core, name } = cores.get(key)
    const { byteLength } = await core.info()
    meta[key] = { name, length: core.length, byte_length: byteLength }
  }
  return meta
}

// ---------- the exchange, per connection ----------

const sessions = new Set()

const extensions = {
  handshake: root.registerExtension(EXT.handshake, { encoding: tolerantJson, onmessage: (m, peer) => withSession(peer, (s) => s.onHandshake(m)) }),
  manifest: root.registerExtension(EXT.manifest, { encoding: tolerantJson, onmessage: (m, peer) => withSession(peer, (s) => s.onManifest(m)) }),
  request: root.registerExtension(EXT.request, { encoding: tolerantJson, onmessage: (m, peer) => withSession(peer, (s) => s.onRequest(m)) }),
  replicate: root.registerExtension(EXT.replicate, { encoding: tolerantJson, onmessage: (m, peer) => withSession(peer, (s) => s.onReplicate(m)) })
}

function withSession (peer, fn) {
  for (const s of sessions) {
    if (s.mux === peer.protomux) return Promise.resolve(fn(s)).catch((err) => s.fail(err.message))
  }
}

root.on('peer-add', (peer) => withSession(peer, (s) => s.onRootOpen(peer)))

// Key lists in output lines: at most the first 1000 keys, and the full count.
const listed = (keys) => ({ keys: keys.slice(0, 1000), count: keys.length })
const randomKey = () => crypto.randomBytes(32).toString('hex')

function validKeys (what, list) {
  if (!Array.isArray(list)) { warn(`${what}: not an array`); return [] }
  const bad = list.filter((k) => typeof k !== 'string' || !HEX64.test(k))
  if (bad.length) warn(`${what}: dropped ${bad.length} invalid keys, e.g. ${JSON.stringify(bad[0])}`)
  return [...new Set(list.filter((k) => typeof k === 'string' && HEX64.test(k)))]
}

class Session {
  constructor (socket, isInitiator) {
    this.socket = socket
    this.peer = null // the root core's replication peer, once the root channel is open
    this.compatible = false
    this.localOffer = new Set() // keys we offered and can serve
    this.remoteOffer = new Set()
    this.requested = new Set()
    this.active = new Set() // keys replicated on this stream
    this.attaching = []
    this.stream = Hypercore.createProtocolStream(isInitiator, { ondiscoverykey: (dk) => this.onDiscoveryKey(dk) })
    this.mux = this.stream.noiseStream.userData
    if (WIRE_DEBUG) tapPlaintext(this.stream.noiseStream)
    socket.pipe(this.stream).pipe(socket)
    const onclose = () => this.close()
    socket.on('error', (err) => this.fail(`socket: ${err.message}`))
    this.stream.on('error', (err) => this.fail(`stream: ${err.message}`))
    socket.on('close', onclose)
    this.stream.on('close', onclose)
    sessions.add(this)
    expect(this.label('root channel open'))
    root.replicate(this.stream)
  }

  label (what) { return `${what} (${this.socket.remoteAddress}:${this.socket.remotePort})` }

  // A remote channel open we have no channel for: pair it if it is a feed being attached on this
  // stream; otherwise protomux rejects it once this returns.
  async onDiscoveryKey (dk) {
    if (!this.peer && !dk.equals(root.discoveryKey)) {
      this.fail('remote opened a channel for an unknown core before the root channel opened: different multifeed key?')
      return
    }
    await Promise.all(this.attaching)
  }

  onRootOpen (peer) {
    this.peer = peer
    met(this.label('root channel open'))
    expect(this.label('handshake'))
    const hs = { client: opt.client, version: opt.version }
    extensions.handshake.send(hs, peer)
  }

  async onHandshake (m) {
    met(this.label('handshake'))
    m = m || {}
    out({ type: 'handshake_received', client: m.client, version: m.version })
    const major = (v) => String(v).split('.')[0]
    if (m.client !== 'MULTIFEED' || typeof m.version !== 'string' || major(m.version) !== major('5.0.0')) {
      this.fail(`incompatible handshake: ${JSON.stringify(m)}`)
      return
    }
    this.compatible = true
    await this.sendManifest(localKeys())
  }

  async sendManifest (keys) {
    if (!this.peer || !this.compatible) return
    for (const k of keys) this.localOffer.add(k)
    if (opt.garbage) {
      this.peer.extension(EXT.manifest, Buffer.from([0xff, 0xfe, 0x7b, 0x6e, 0x6f, 0x74, 0x20, 0x4a, 0x53, 0x4f, 0x4e]))
      out({ type: 'offer_sent', keys: [], garbage: true })
      return
    }
    let offered = keys
    if (opt['non-hex-keys']) offered = ['not-a-key', 'ab'.repeat(31), 'zz'.repeat(32), 42, null, ...keys]
    if (opt['huge-manifest']) {
      // bait: random keys nobody holds, never served
      offered = Array.from({ length: Number(opt['huge-manifest']) }, randomKey).concat(keys)
    }
    const meta = await metaOf(keys)
    for (let i = 0; i < Math.max(1, offered.length); i += MANIFEST_CHUNK) {
      const chunk = offered.slice(i, i + MANIFEST_CHUNK)
      const chunkMeta = Object.fromEntries(chunk.filter((k) => meta[k]).map((k) => [k, meta[k]]))
      extensions.manifest.send({ keys: chunk, meta: chunkMeta }, this.peer)
    }
    out({ type: 'offer_sent', ...listed(offered) })
  }

  sendChunked (ext, keys) {
    for (let i = 0; i < Math.max(1, keys.length); i += MANIFEST_CHUNK) ext.send(keys.slice(i, i + MANIFEST_CHUNK), this.peer)
  }

  onManifest (m) {
    if (m && m.invalid !== undefined) { warn(`MANIFEST is not JSON: ${m.invalid.slice(0, 64)}`); return }
    const keys = validKeys('MANIFEST', m && m.keys)
    out({ type: 'offer_received', ...listed(keys), meta: m && m.meta })
    for (const k of keys) this.remoteOffer.add(k)
    if (opt.accept === 'none') return
    const want = keys.filter((k) => !this.requested.has(k))
    if (opt['request-unoffered']) want.push(randomKey())
    if (!want.length) return
    for (const k of want) this.requested.add(k)
    this.sendChunked(extensions.request, want)
    out({ type: 'request_sent', ...listed(want) })
  }

  onRequest (m) {
    const keys = validKeys('REQUEST_FEEDS', m)
    out({ type: 'request_received', ...listed(keys) })
    const refused = keys.filter((k) => !this.localOffer.has(k))
    if (refused.length) warn(`request for keys never offered, refused: ${refused.join(',')}`)
    const agreed = keys.filter((k) => this.localOffer.has(k))
    this.sendChunked(extensions.replicate, agreed)
    out({ type: 'replicate_sent', ...listed(agreed) })
    for (const k of agreed) this.replicateFeed(k)
  }

  onReplicate (m) {
    const keys = validKeys('REPLICATE_FEEDS', m)
    out({ type: 'replicate_received', ...listed(keys) })
    const unrequested = keys.filter((k) => !this.requested.has(k))
    if (unrequested.length) warn(`REPLICATE_FEEDS with keys never requested, ignored: ${unrequested.join(',')}`)
    for (const k of keys.filter((k) => this.requested.has(k))) this.replicateFeed(k)
  }

  replicateFeed (key) {
    if (this.active.has(key)) return
    this.active.add(key)
    const entry = cores.get(key) || remoteCore(key)
    if (!entry.writable) expect(`sync of ${key}`)
    // Must be registered synchronously: the remote's channel open may be the next message.
    const p = (entry.ready || entry.core.ready()).then(() => { entry.core.replicate(this.stream) })
    this.attaching.push(p)
    p.catch((err) => this.fail(`replicate ${key}: ${err.message}`))
  }

  fail (message) {
    out({ type: 'error', message })
    this.stream.destroy()
    this.socket.destroy()
  }

  close () {
    if (!sessions.delete(this)) return
    for (const label of [...waits.keys()]) if (label.endsWith(this.label(''))) met(label)
    out({ type: 'closed' })
  }
}

// FEEDSCOPE_PEER_DEBUG=1: every plaintext protomux message in and out, as hex, on stderr.
function tapPlaintext (noise) {
  const write = noise.write.bind(noise)
  noise.write = (buf, ...rest) => {
    process.stderr.write(JSON.stringify({ dir: 'out', hex: Buffer.from(buf).toString('hex') }) + '\n')
    return write(buf, ...rest)
  }
  noise.on('data', (buf) => process.stderr.write(JSON.stringify({ dir: 'in', hex: Buffer.from(buf).toString('hex') }) + '\n'))
}

// ---------- startup ----------

for (let i = 0; i < Number(opt.feeds); i++) await createLocalFeed(`f${i}`, Number(opt.blocks), Number(opt['block-size']))
out({ type: 'ready' })

const noiseInitiator = (dialer) => opt['noise-initiator'] ? true : opt['noise-responder'] ? false : dialer

function onSocket (socket, dialer) {
  socket.setNoDelay(true)
  out({ type: 'connected', remote: `${socket.remoteAddress}:${socket.remotePort}`, initiator: noiseInitiator(dialer) })
  return new Session(socket, noiseInitiator(dialer))
}

if (opt.listen !== undefined) {
  expect('an incoming connection')
  const server = net.createServer((socket) => { met('an incoming connection'); onSocket(socket, false) })
  server.on('error', (err) => fatal(`listen: ${err.message}`))
  server.listen(Number(opt.listen), '127.0.0.1', () => out({ type: 'listening', port: server.address().port }))
} else {
  const [host, port] = [opt.connect.slice(0, opt.connect.lastIndexOf(':')), Number(opt.connect.slice(opt.connect.lastIndexOf(':') + 1))]
  expect('the TCP connection')
  const socket = net.connect({ host, port })
  socket.once('connect', () => { met('the TCP connection'); onSocket(socket, true) })
  socket.once('error', (err) => { if (socket.connecting) fatal(`connect: ${err.message}`) })
}

// ---------- stdin commands ----------

const rl = readline.createInterface({ input: process.stdin })
let queue = Promise.resolve() // commands run one at a time, in order
rl.on('line', (line) => { if (line.trim()) queue = queue.then(() => command(line)).catch((err) => out({ type: 'error', message: err.message })) })
rl.on('close', () => { queue = queue.then(quit) })

async function command (line) {
  let cmd
  try { cmd = JSON.parse(line) } catch { out({ type: 'error', message: `bad command: ${line}` }); return }
  switch (cmd.cmd) {
    case 'append': {
      const entry = cores.get(byName.get(cmd.feed))
      if (!entry) throw new Error(`no local feed named ${cmd.feed}`)
      await entry.core.append(Buffer.from(String(cmd.data)))
      out({ type: 'appended', feed: cmd.feed, key: entry.core.key.toString('hex'), length: entry.core.length })
      break
    }
    case 'truncate': {
      const entry = cores.get(byName.get(cmd.feed))
      if (!entry) throw new Error(`no local feed named ${cmd.feed}`)
      await entry.core.truncate(Number(cmd.length))
      out({ type: 'truncated', feed: cmd.feed, length: entry.core.length, fork: entry.core.fork })
      break
    }
    case 'add_feed': {
      const key = await createLocalFeed(cmd.name, Number(cmd.blocks || 0), Number(cmd.block_size || 1024))
      for (const s of sessions) await s.sendManifest([key])
      break
    }
    case 'digest': {
      const stored = HEX64.test(cmd.key) && existsSync(path.join(storage, 'remote', cmd.key))
      const entry = cores.get(cmd.key) || (stored && remoteCore(cmd.key))
      if (!entry) throw new Error(`no core with key ${cmd.key}`)
      await (entry.ready || entry.core.ready())
      out({ type: 'digest', key: cmd.key, ...(await digestOf(entry.core)) })
      break
    }
    case 'quit':
      await quit()
      break
    default:
      throw new Error(`unknown command: ${cmd.cmd}`)
  }
}

async function quit () {
  for (const s of sessions) { s.stream.destroy(); s.socket.destroy() }
  process.exit(0)
}
