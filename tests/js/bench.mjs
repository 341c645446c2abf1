#!/usr/bin/env node
// JS <-> JS transfer benchmark on loopback with two child peer.mjs processes.
// The listener holds the feeds; the dialer downloads them. The clock runs from the dialer's
// `connected` line to its last `synced` line (so it includes the Noise handshake and the exchange,
// not the creation of the feeds).
import { parseArgs } from 'node:util'
import { pair, expectedDigest } from './harness.mjs'

const { values } = parseArgs({
  options: {
    feeds: { type: 'string', default: '1' },
    blocks: { type: 'string', default: '10000' },
    'block-size': { type: 'string', default: '1024' },
    'timeout-ms': { type: 'string', default: '600000' }
  }
})
const [feeds, blocks, size, timeout] = [values.feeds, values.blocks, values['block-size'], values['timeout-ms']].map(Number)

const { a, b } = await pair(
  ['--feeds', String(feeds), '--blocks', String(blocks), '--block-size', String(size), '--timeout-ms', String(timeout)],
  ['--timeout-ms', String(timeout)]
)
let code = 0
try {
  const keys = new Map() // key -> feed name
  await a.waitFor((m) => m.type === 'ready', timeout)
  for (const m of a.lines) if (m.type === 'feed_created') keys.set(m.key, m.name)

  await b.waitFor((m) => m.type === 'connected', timeout)
  const start = process.hrtime.bigint()
  for (const [key, name] of keys) {
    const synced = await b.waitFor((m) => m.type === 'synced' && m.key === key && m.length === blocks, timeout)
    if (synced.digest !== expectedDigest(name, blocks, size)) throw new Error(`digest mismatch for ${name}`)
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9
  const bytes = feeds * blocks * size
  console.log(JSON.stringify({
    workload: `${feeds}x${blocks}x${size}`,
    feeds,
    blocks,
    block_size: size,
    bytes,
    seconds: Number(seconds.toFixed(3)),
    mb_per_s: Number((bytes / seconds / 1e6).toFixed(2))
  }))
} catch (err) {
  console.error(err.message)
  code = 1
} finally {
  await b.quit()
  await a.quit()
}
process.exit(code)
