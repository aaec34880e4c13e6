/**
 * A dependency-free hostile HTTP/2 client process (node builtins only, so any
 * uid can run it from a world-readable directory). It opens `count`
 * connections (at most `concurrency` at a time) to a Unix socket or a TCP
 * port (optionally TLS, ALPN h2), plays one hostile sequence on each and
 * prints one JSON line: `{"opened", "serverClosed", "maxOpenMs", "errors"}`.
 *
 * Kinds:
 * - `oversized`: client preface, empty SETTINGS, then a frame header
 *   announcing a 16 MiB frame (the server answers GOAWAY FRAME_SIZE_ERROR);
 *   the client closes once the GOAWAY arrived (or after 1 s).
 * - `stream-oversized`: preface, SETTINGS, a FetchX509SVID call (HEADERS
 *   and its request message); once the server answers (its stream stays
 *   open), the oversized frame header; closes after the GOAWAY.
 * - `hpack`: preface, SETTINGS, a HEADERS frame of garbage HPACK (GOAWAY
 *   COMPRESSION_ERROR); closes as above.
 * - `badpreface`: an HTTP/1.1 request instead of the preface.
 * - `slowpreface`: the client preface one byte every `interval` ms; waits for
 *   the server to close.
 * - `halfopen`: connects (TCP, no TLS handshake even when `tls` is set) and
 *   sends nothing; waits for the server to close.
 * - `trickle`: preface and SETTINGS, then a frame header one byte every
 *   `interval` ms (never a whole frame, never a stream); waits for the server.
 * - `hold`: preface and SETTINGS, answers PINGs, holds the connection until
 *   the server closes it or the process gets SIGTERM (the flood).
 *
 * Kinds that wait for the server give up after `waitMs` (then `serverClosed`
 * does not count them).
 */
import { chmodSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { spawn } from 'node:child_process'

export type HostileKind = 'oversized' | 'stream-oversized' | 'hpack' | 'badpreface' | 'slowpreface' | 'halfopen' | 'trickle' | 'hold'

export const HOSTILE_KINDS_CLOSING: readonly HostileKind[] = ['oversized', 'hpack', 'badpreface']

export const HOSTILE_CLIENT_SOURCE = String.raw`'use strict'
const net = require('node:net')
const tls = require('node:tls')
const cfg = JSON.parse(process.argv[2])
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n')
const SETTINGS = Buffer.from('000000040000000000', 'hex')
const OVERSIZED = Buffer.from('ffffff000000000001', 'hex')
// HEADERS, END_HEADERS|END_STREAM, stream 1, 4 bytes of HPACK that index far beyond any table.
const BAD_HPACK = Buffer.from('000004010500000001ffffffff', 'hex')
// A FetchX509SVID call: HEADERS (HPACK literals without indexing), then an empty request message ending the stream.
const lit = (n, v) => Buffer.concat([Buffer.from([0, n.length]), Buffer.from(n), Buffer.from([v.length]), Buffer.from(v)])
const HPACK_CALL = Buffer.concat([[':method', 'POST'], [':scheme', 'http'], [':path', '/SpiffeWorkloadAPI/FetchX509SVID'], [':authority', 'localhost'], ['content-type', 'application/grpc'], ['te', 'trailers'], ['workload.spiffe.io', 'true']].map(([n, v]) => lit(n, v)))
const frame = (type, flags, stream, payload) => { const h = Buffer.alloc(9); h.writeUIntBE(payload.length, 0, 3); h[3] = type; h[4] = flags; h.writeUInt32BE(stream, 5); return Buffer.concat([h, payload]) }
const CALL = Buffer.concat([frame(1, 4, 1, HPACK_CALL), frame(0, 1, 1, Buffer.alloc(5))])
const stats = { opened: 0, serverClosed: 0, maxOpenMs: 0, errors: 0, settled: 0 }
const sockets = new Set()
function connect() {
  if (cfg.path) return net.connect(cfg.path)
  const local = cfg.localAddress ? { localAddress: cfg.localAddress } : {}
  if (cfg.tls && cfg.kind !== 'halfopen') return tls.connect({ host: cfg.host, port: cfg.port, ALPNProtocols: ['h2'], rejectUnauthorized: false, servername: 'localhost', ...local })
  return net.connect({ host: cfg.host, port: cfg.port, ...local })
}
function one() {
  return new Promise((resolve) => {
    const t0 = performance.now()
    const s = connect()
    sockets.add(s)
    let timers = []
    let byClient = false
    let done = false
    let settled = false
    const settle = () => { if (!settled) { settled = true; stats.settled++ } }
    const finish = () => {
      if (done) return
      done = true
      for (const t of timers) clearTimeout(t), clearInterval(t)
      sockets.delete(s)
      if (!byClient) { stats.serverClosed++; stats.maxOpenMs = Math.max(stats.maxOpenMs, performance.now() - t0) }
      resolve()
    }
    const clientClose = () => { byClient = true; s.destroy() }
    s.on('error', () => { stats.errors++ })
    // Read everything, so that the server's close is seen (a socket nobody reads never notices the peer's FIN).
    s.resume()
    s.on('close', () => { settle(); finish() })
    s.once(cfg.tls && cfg.kind !== 'halfopen' ? 'secureConnect' : 'connect', () => {
      settle()
      stats.opened++
      const k = cfg.kind
      if (k === 'stream-oversized') {
        // A call the server answers (its stream stays open), then the oversized frame header.
        s.write(Buffer.concat([PREFACE, SETTINGS, CALL]))
        let got = Buffer.alloc(0)
        let sent = false
        s.on('data', (d) => {
          got = Buffer.concat([got, d])
          for (let i = 0; i + 9 <= got.length; ) {
            const len = got.readUIntBE(i, 3), type = got[i + 3], sid = got.readUInt32BE(i + 5) & 0x7fffffff
            if (!sent && type === 1 && sid === 1) { sent = true; s.write(OVERSIZED) }
            if (type === 7) { s.end(); timers.push(setTimeout(clientClose, 200)); return }
            i += 9 + len
          }
        })
        timers.push(setTimeout(clientClose, 3000))
      } else if (k === 'oversized' || k === 'hpack') {
        s.write(Buffer.concat([PREFACE, SETTINGS, k === 'oversized' ? OVERSIZED : BAD_HPACK]))
        let got = Buffer.alloc(0)
        s.on('data', (d) => {
          got = Buffer.concat([got, d])
          // A GOAWAY frame header: type 7 on stream 0.
          for (let i = 0; i + 9 <= got.length; ) {
            const len = got.readUIntBE(i, 3)
            if (got[i + 3] === 7) { s.end(); timers.push(setTimeout(clientClose, 200)); return }
            i += 9 + len
          }
        })
        timers.push(setTimeout(clientClose, 1000))
      } else if (k === 'badpreface') {
        s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n')
        timers.push(setTimeout(clientClose, 1000))
      } else if (k === 'slowpreface') {
        let i = 0
        timers.push(setInterval(() => { if (i < PREFACE.length) s.write(PREFACE.subarray(i, ++i)) }, cfg.interval))
        timers.push(setTimeout(clientClose, cfg.waitMs))
      } else if (k === 'halfopen') {
        timers.push(setTimeout(clientClose, cfg.waitMs))
      } else if (k === 'trickle') {
        s.write(Buffer.concat([PREFACE, SETTINGS]))
        const hdr = Buffer.from('000010010400000001', 'hex')
        let i = 0
        timers.push(setInterval(() => { if (i < hdr.length) s.write(hdr.subarray(i, ++i)) }, cfg.interval))
        timers.push(setTimeout(clientClose, cfg.waitMs))
      } else if (k === 'hold') {
        s.write(Buffer.concat([PREFACE, SETTINGS]))
        let got = Buffer.alloc(0)
        s.on('data', (d) => {
          got = Buffer.concat([got, d])
          while (got.length >= 9 && got.length >= 9 + got.readUIntBE(0, 3)) {
            const len = got.readUIntBE(0, 3), type = got[3], flags = got[4]
            if (type === 6 && !(flags & 1)) s.write(Buffer.concat([Buffer.from([0, 0, 8, 6, 1, 0, 0, 0, 0]), got.subarray(9, 17)]))
            if (type === 4 && !(flags & 1)) s.write(Buffer.from('000000040100000000', 'hex'))
            got = got.subarray(9 + len)
          }
        })
        timers.push(setTimeout(clientClose, cfg.waitMs))
      }
    })
  })
}
async function main() {
  let next = 0
  const worker = async () => { while (next < cfg.count) { next++; await one() } }
  await Promise.all(Array.from({ length: Math.min(cfg.concurrency, cfg.count) }, worker))
  process.stdout.write(JSON.stringify(stats) + '\n')
  process.exit(0)
}
process.on('SIGTERM', () => { for (const s of sockets) s.destroy(); process.stdout.write(JSON.stringify(stats) + '\n'); process.exit(0) })
if (cfg.kind === 'hold') {
  // Report once every connection is up (or refused), then keep them.
  let reported = false
  const ready = () => { if (!reported) { reported = true; clearInterval(tick); process.stdout.write(JSON.stringify({ ready: true, ...stats }) + '\n') } }
  const tick = setInterval(() => { if (stats.settled >= cfg.count) ready() }, 20)
  Promise.all(Array.from({ length: cfg.count }, one)).then(() => {
    ready()
    process.stdout.write(JSON.stringify(stats) + '\n')
    process.exit(0)
  })
} else main()
`

export interface HostileOptions {
  kind: HostileKind
  count: number
  /** Unix socket, or host and port. */
  path?: string
  host?: string
  port?: number
  tls?: boolean
  /** Source address of the TCP connections (e.g. 127.0.0.2 on loopback). */
  localAddress?: string
  concurrency?: number
  /** Byte interval of `slowpreface` and `trickle`. */
  interval?: number
  /** How long waiting kinds wait for the server to close. */
  waitMs?: number
}

export interface HostileStats {
  /** Connections that were set up (TCP/Unix connect, or TLS handshake done). */
  opened: number
  /** Connections that either opened or were closed before that (refused). */
  settled: number
  serverClosed: number
  maxOpenMs: number
  errors: number
}

/** Writes the client into `dir` (world-readable) and returns its path. */
export function writeHostileClient(dir: string): string {
  const path = join(dir, 'hostile-h2.cjs')
  writeFileSync(path, HOSTILE_CLIENT_SOURCE)
  chmodSync(path, 0o644)
  return path
}

function config(o: HostileOptions): string {
  return JSON.stringify({ concurrency: 50, interval: 1000, waitMs: 30_000, ...o })
}

/** Runs the client to completion (optionally as another uid) and returns its stats. */
export function runHostile(script: string, o: HostileOptions, ids?: { uid: number; gid: number }): Promise<HostileStats> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, config(o)], { stdio: ['ignore', 'pipe', 'pipe'], ...(ids ?? {}) })
    let out = ''
    let err = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (err += d.toString()))
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`hostile client exited ${code}: ${err}`))
      try {
        resolve(JSON.parse(out.trim().split('\n').pop()!) as HostileStats)
      } catch (e) {
        reject(new Error(`hostile client output: ${out} ${err}`, { cause: e }))
      }
    })
  })
}

/**
 * Starts a `hold` flood (optionally as another uid): resolves once every
 * connection is open or refused, with its stats and a `stop()` that ends it.
 */
export function startFlood(
  script: string,
  o: Omit<HostileOptions, 'kind'>,
  ids?: { uid: number; gid: number },
): Promise<{ stats: HostileStats; stop: () => Promise<HostileStats> }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, config({ ...o, kind: 'hold' })], { stdio: ['ignore', 'pipe', 'pipe'], ...(ids ?? {}) })
    let out = ''
    let err = ''
    let ready = false
    const lines = () =>
      out
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as HostileStats & { ready?: boolean })
    child.stderr.on('data', (d: Buffer) => (err += d.toString()))
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString()
      const first = lines()[0]
      if (!ready && first?.ready) {
        ready = true
        resolve({
          stats: first,
          stop: () =>
            new Promise((res) => {
              if (child.exitCode !== null) return res(lines().pop()!)
              child.once('exit', () => res(lines().pop()!))
              child.kill('SIGTERM')
            }),
        })
      }
    })
    child.on('exit', (code) => {
      if (!ready) reject(new Error(`flood exited ${code} before it was ready: ${err}`))
    })
  })
}
