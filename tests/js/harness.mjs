// Helpers shared by peer.test.mjs and bench.mjs: run peer.mjs as a child, read its JSON lines.
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import readline from 'node:readline'
import { fileURLToPath } from 'node:url'

const PEER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'peer.mjs')

export function spawnPeer (args, { env = {}, storage = mkdtempSync(path.join(tmpdir(), 'feedscope-peer-')) } = {}) {
  const child = spawn(process.execPath, [PEER, '--storage', storage, ...args], {
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'pipe']
  })
  const lines = []
  const waiters = []
  let stderr = ''
  child.stderr.on('data', (d) => { stderr += d })
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    const msg = JSON.parse(line)
    lines.push(msg)
    for (const w of [...waiters]) if (w.pred(msg)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(msg) }
  })
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)))
  return {
    child,
    lines,
    storage,
    exited,
    get stderr () { return stderr },
    send (cmd) { child.stdin.write(JSON.stringify(cmd) + '\n') },
    // Resolves with the first line (already seen or still to come) matching pred.
    waitFor (pred, ms = 30000, what = pred.toString()) {
      const seen = lines.find(pred)
      if (seen) return Promise.resolve(seen)
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timeout waiting for ${what}\n${lines.map((l) => JSON.stringify(l).slice(0, 300)).join('\n')}\n${stderr}`)), ms)
        waiters.push({ pred, resolve: (m) => { clearTimeout(timer); resolve(m) } })
        exited.then((code) => { clearTimeout(timer); reject(new Error(`peer exited ${code} before ${what}\n${lines.map((l) => JSON.stringify(l)).join('\n')}\n${stderr}`)) })
      })
    },
    async quit () {
      if (child.exitCode === null) child.stdin.end(JSON.stringify({ cmd: 'quit' }) + '\n')
      const code = await exited
      rmSync(storage, { recursive: true, force: true })
      return code
    }
  }
}

// The digest a feed made by peer.mjs --feeds/--blocks/--block-size (plus appended blocks) must have.
export function expectedDigest (name, blocks, size, appended = []) {
  const hash = createHash('sha256')
  for (let j = 0; j < blocks; j++) hash.update(Buffer.alloc(size, `${name}:${j}:`))
  for (const data of appended) hash.update(Buffer.from(data))
  return hash.digest('hex')
}

// Starts a listening peer and a dialing peer; resolves once both are connected.
export async function pair (listenArgs, connectArgs, opts = {}) {
  const a = spawnPeer(['--listen', '0', ...listenArgs], opts.a)
  const { port } = await a.waitFor((m) => m.type === 'listening', 60000, 'listening')
  const b = spawnPeer(['--connect', `127.0.0.1:${port}`, ...connectArgs], opts.b)
  return { a, b, port }
}
