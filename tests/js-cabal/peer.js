// A real multifeed 6 peer (hypercore 9 on hypercore-protocol 8: Cabal's wire), for feedscope's
// interoperability tests. One connection, JSON lines on stdout:
//   {"type":"listening","port":N}      with --listen
//   {"type":"connected"}               the TCP connection is up (either side)
//   {"type":"feed","key":HEX,"length":N} our writer, once its blocks are appended
//   {"type":"peer-id","id":HEX}            a cabal peer's name for itself (with --cabal)
//   {"type":"synced","key":HEX,"length":N,"blocks":[...]}  a remote feed, read back block by block
//   {"type":"synced","key":HEX,"length":N,"digest":HEX}   the same with --digest: the SHA-256 of
//                                      its blocks in order, hashed as they arrive (for benchmarks)
//   {"type":"appended","length":N}     after --append-after-sync
//   {"type":"end"}                     the replication stream ended
//   {"type":"error","message":...}     and exit 3
// With --cabal KEY it is a cabal-core 16 peer of that cabal instead, which posts each --post
// TEXT as a chat message in channel "default" before it connects.
// With --block-size S each of the --blocks is S bytes: "LABEL:INDEX:" repeated (as feedscope's
// kit makes blocks), instead of "LABEL:INDEX".
'use strict'
const crypto = require('crypto')
const net = require('net')
const multifeed = require('multifeed')
const ram = require('random-access-memory')

function parse (argv) {
  const o = { cabal: null, posts: [], key: null, listen: null, connect: null, blocks: 0, blockSize: 0, digest: false, live: false, expect: [], appendAfterSync: 0, timeoutMs: 60000, label: 'js' }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const next = () => argv[++i]
    if (a === '--key') o.key = next()
    else if (a === '--cabal') o.cabal = next()
    else if (a === '--post') o.posts.push(next())
    else if (a === '--listen') o.listen = Number(next())
    else if (a === '--connect') o.connect = next()
    else if (a === '--blocks') o.blocks = Number(next())
    else if (a === '--block-size') o.blockSize = Number(next())
    else if (a === '--digest') o.digest = true
    else if (a === '--label') o.label = next()
    else if (a === '--live') o.live = true
    else if (a === '--expect') { const [k, n] = next().split(':'); o.expect.push({ key: k, length: Number(n) }) }
    else if (a === '--append-after-sync') o.appendAfterSync = Number(next())
    else if (a === '--timeout-ms') o.timeoutMs = Number(next())
    else throw new Error('unknown option ' + a)
  }
  return o
}

const opts = parse(process.argv.slice(2))
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n')
const fail = (message) => { say({ type: 'error', message: String(message) }); process.exit(3) }
setTimeout(() => fail('timed out after ' + opts.timeoutMs + ' ms'), opts.timeoutMs).unref()

if (opts.cabal) {
  runCabal()
} else {
  runMultifeed()
}

function runCabal () {
  const Cabal = require('cabal-core')
  const cabal = Cabal(ram, opts.cabal)
  cabal.ready(() => {
    let i = 0
    const post = () => {
      if (i === opts.posts.length) {
        return cabal.getLocalKey((err, key) => {
          if (err) return fail(err)
          say({ type: 'feed', key, length: opts.posts.length })
          listenOrDial((socket, initiator) => {
            const stream = cabal.replicate(initiator, { live: opts.live })
            // As cabal-core/swarm.js does: each side names itself by its writer key.
            const ext = stream.registerExtension('peer-id', {
              encoding: 'json',
              onmessage (message) { say({ type: 'peer-id', id: message.id }) }
            })
            ext.send({ id: key })
            pipe(socket, stream)
          })
        })
      }
      cabal.publish({ type: 'chat/text', content: { text: opts.posts[i++], channel: 'default' } }, (err) => {
        if (err) return fail(err)
        post()
      })
    }
    post()
  })
}

function pipe (socket, stream) {
  stream.on('error', (e) => fail(e.message))
  stream.on('end', () => say({ type: 'end' }))
  socket.on('error', (e) => { if (!/ECONNRESET|EPIPE/.test(e.message)) fail(e.message) })
  socket.on('close', () => say({ type: 'end' }))
  say({ type: 'connected' })
  socket.pipe(stream).pipe(socket)
}

function listenOrDial (connect) {
  if (opts.listen !== null) {
    const server = net.createServer((socket) => connect(socket, false))
    server.listen(opts.listen, '127.0.0.1', () => say({ type: 'listening', port: server.address().port }))
  } else if (opts.connect) {
    const [host, port] = opts.connect.split(':')
    const socket = net.connect(Number(port), host, () => connect(socket, true))
    socket.on('error', (e) => fail(e.message))
  }
}

function runMultifeed () {
  const multi = multifeed(ram, Object.assign({ valueEncoding: 'utf-8' }, opts.key ? { encryptionKey: opts.key } : {}))
  const reported = new Set()
  let writer = null

  function check (feed) {
    const key = feed.key.toString('hex')
    const want = opts.expect.find((e) => e.key === key)
    if (!want || reported.has(key + ':' + feed.length) || feed.length < want.length) return
    // hypercore 9 counts the downloaded blocks of a range.
    if (feed.downloaded(0, feed.length) !== feed.length) return
    reported.add(key + ':' + feed.length)
    const blocks = []
    let i = 0
    const next = () => {
      if (i === feed.length) {
        say({ type: 'synced', key, length: feed.length, blocks })
        return afterSync()
      }
      feed.get(i++, { wait: false }, (err, b) => { if (err) return fail(err); blocks.push(b); next() })
    }
    next()
  }

  let appended = false
  function afterSync () {
    if (!opts.appendAfterSync || appended || !writer) return
    appended = true
    const more = []
    for (let j = 0; j < opts.appendAfterSync; j++) more.push(opts.label + ':live:' + j)
    writer.append(more, (err) => { if (err) return fail(err); say({ type: 'appended', length: writer.length }) })
  }

  // --digest: each expected feed's blocks hashed in order as they arrive; early ones wait.
  function hashing (feed) {
    const key = feed.key.toString('hex')
    const want = opts.expect.find((e) => e.key === key)
    if (!want) return
    const state = { hash: crypto.createHash('sha256'), next: 0, early: new Map() }
    feed.on('download', (index, data) => {
      state.early.set(index, data)
      while (state.early.has(state.next)) {
        state.hash.update(state.early.get(state.next))
        state.early.delete(state.next++)
      }
      if (state.next === want.length && !reported.has(key)) {
        reported.add(key)
        say({ type: 'synced', key, length: want.length, digest: state.hash.digest('hex') })
      }
    })
  }

  function watch (feed) {
    if (opts.digest) return hashing(feed)
    feed.on('download', () => check(feed))
    feed.on('append', () => check(feed))
    feed.on('sync', () => check(feed))
    check(feed)
  }

  function connect (socket, initiator) {
    pipe(socket, multi.replicate(initiator, { live: opts.live }))
  }

  multi.ready(() => {
    multi.on('feed', watch)
    multi.feeds().forEach(watch)
    const start = () => listenOrDial(connect)
    if (!opts.blocks) return start()
    multi.writer('local', (err, w) => {
      if (err) return fail(err)
      writer = w
      const lines = []
      for (let j = 0; j < opts.blocks; j++) {
        lines.push(opts.blockSize ? Buffer.alloc(opts.blockSize, opts.label + ':' + j + ':').toString() : opts.label + ':' + j)
      }
      w.append(lines, (err) => {
        if (err) return fail(err)
        say({ type: 'feed', key: w.key.toString('hex'), length: w.length })
        start()
      })
    })
  })
}
