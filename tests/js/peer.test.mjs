// JS <-> JS checks of peer.mjs on loopback: node --test tests/js/
import test from 'node:test'
import assert from 'node:assert/strict'
import { pair, spawnPeer, expectedDigest } from './harness.mjs'

const is = (type, extra = () => true) => (m) => m.type === type && extra(m)
const keyOf = (peer, name) => peer.lines.find((m) => m.type === 'feed_created' && m.name === name).key

test('both directions sync with the right digests, live appends and added feeds follow', async () => {
  const { a, b } = await pair(['--feeds', '2', '--blocks', '1000', '--block-size', '1024'], ['--feeds', '1', '--blocks', '1000', '--block-size', '1024'])
  try {
    await b.waitFor(is('ready'))
    const [af0, af1, bf0] = [keyOf(a, 'f0'), keyOf(a, 'f1'), keyOf(b, 'f0')]
    const d = (name) => expectedDigest(name, 1000, 1024)
    assert.equal((await b.waitFor(is('synced', (m) => m.key === af0))).digest, d('f0'))
    assert.equal((await b.waitFor(is('synced', (m) => m.key === af1))).digest, d('f1'))
    assert.equal((await a.waitFor(is('synced', (m) => m.key === bf0))).digest, d('f0'))

    a.send({ cmd: 'append', feed: 'f1', data: 'live from a' })
    b.send({ cmd: 'append', feed: 'f0', data: 'live from b' })
    const fromA = await b.waitFor(is('synced', (m) => m.key === af1 && m.length === 1001))
    assert.equal(fromA.digest, expectedDigest('f1', 1000, 1024, ['live from a']))
    const fromB = await a.waitFor(is('synced', (m) => m.key === bf0 && m.length === 1001))
    assert.equal(fromB.digest, expectedDigest('f0', 1000, 1024, ['live from b']))

    b.send({ cmd: 'add_feed', name: 'g', blocks: 50, block_size: 100 })
    const g = (await b.waitFor(is('feed_created', (m) => m.name === 'g'))).key
    assert.deepEqual((await a.waitFor(is('offer_received', (m) => m.keys.includes(g)))).keys, [g])
    assert.equal((await a.waitFor(is('synced', (m) => m.key === g))).digest, expectedDigest('g', 50, 100))

    b.send({ cmd: 'digest', key: af1 })
    assert.equal((await b.waitFor(is('digest', (m) => m.key === af1))).digest, fromA.digest)
  } finally {
    assert.equal(await b.quit(), 0)
    assert.equal(await a.quit(), 0)
  }
})

test('1 MiB blocks', async () => {
  const args = ['--feeds', '1', '--blocks', '16', '--block-size', String(1 << 20)]
  const { a, b } = await pair(args, args)
  try {
    await b.waitFor(is('ready'))
    const digest = expectedDigest('f0', 16, 1 << 20)
    assert.equal((await b.waitFor(is('synced', (m) => m.key === keyOf(a, 'f0')), 60000)).digest, digest)
    assert.equal((await a.waitFor(is('synced', (m) => m.key === keyOf(b, 'f0')), 60000)).digest, digest)
  } finally {
    await b.quit()
    await a.quit()
  }
})

test('incompatible handshake ends the session on the other side', async () => {
  const { a, b } = await pair([], ['--client', 'NOT_MULTIFEED', '--version', '9.0.0'])
  try {
    assert.deepEqual(await a.waitFor(is('handshake_received')), { type: 'handshake_received', client: 'NOT_MULTIFEED', version: '9.0.0' })
    assert.match((await a.waitFor(is('error'))).message, /incompatible handshake/)
    await a.waitFor(is('closed'))
    await b.waitFor(is('closed'))
  } finally {
    await b.quit()
    await a.quit()
  }
})

test('a non-JSON MANIFEST gets a warning, not a crash; the other direction still syncs', async () => {
  const { a, b } = await pair(['--garbage'], ['--feeds', '1', '--blocks', '10'])
  try {
    await b.waitFor(is('warning', (m) => /MANIFEST is not JSON/.test(m.message)))
    await a.waitFor(is('synced', (m) => m.key === keyOf(b, 'f0')))
    assert.equal(b.child.exitCode, null)
  } finally {
    await b.quit()
    await a.quit()
  }
})

test('non-hex keys are dropped, unoffered requests refused, real feeds still sync', async () => {
  const { a, b } = await pair(['--feeds', '1', '--blocks', '10', '--non-hex-keys'], ['--request-unoffered'])
  try {
    await b.waitFor(is('warning', (m) => /dropped 5 invalid keys/.test(m.message)))
    await a.waitFor(is('warning', (m) => /never offered, refused/.test(m.message)))
    const synced = await b.waitFor(is('synced', (m) => m.key === keyOf(a, 'f0')))
    assert.equal(synced.digest, expectedDigest('f0', 10, 1024))
  } finally {
    await b.quit()
    await a.quit()
  }
})

test('huge manifest is split into several messages; accept none never requests', async () => {
  const { a, b } = await pair(['--huge-manifest', '250000', '--feeds', '1', '--blocks', '1'], ['--accept', 'none'])
  try {
    const offers = []
    for (let i = 0; i < 3; i++) offers.push(await b.waitFor((m) => m.type === 'offer_received' && !offers.includes(m)))
    assert.deepEqual(offers.map((m) => m.count), [100000, 100000, 50001])
    await new Promise((resolve) => setTimeout(resolve, 300))
    assert.equal(b.lines.some((m) => m.type === 'request_sent'), false)
  } finally {
    await b.quit()
    await a.quit()
  }
})

test('a different multifeed key is reported on both sides', async () => {
  const { a, b } = await pair([], ['--key', '11'.repeat(32)])
  try {
    assert.match((await a.waitFor(is('error'), 5000)).message, /different multifeed key/)
    assert.match((await b.waitFor(is('error'), 5000)).message, /different multifeed key/)
  } finally {
    await b.quit()
    await a.quit()
  }
})

test('network waits are bounded: exit 3 with an error line', async () => {
  const a = spawnPeer(['--listen', '0', '--timeout-ms', '300'])
  assert.equal(await a.exited, 3)
  assert.match(a.lines.at(-1).message, /timeout after 300 ms waiting for an incoming connection/)
  await a.quit()
})
