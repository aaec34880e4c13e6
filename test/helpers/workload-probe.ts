/**
 * A dependency-free Workload API client process (node builtins only, so any
 * uid can run it from a world-readable directory and it starts in tens of
 * milliseconds): opens one FetchX509SVID stream over HTTP/2 on the Unix
 * socket, prints its first message as one JSON line, then exits (`once`) or
 * keeps the stream open until killed (`hold`).
 *
 * Output: `{"ms": <request → first message>, "pid", "svids": [{"spiffe_id",
 * "key_sha256" (of the public key of the served private key), "not_before",
 * "not_after"}]}` or `{"error": "..."}` (exit 2).
 */
import { chmodSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

export const WORKLOAD_PROBE_SOURCE = String.raw`'use strict'
const http2 = require('node:http2')
const net = require('node:net')
const crypto = require('node:crypto')
const [sock, mode] = process.argv.slice(2)
const t0 = performance.now()
const out = (o) => process.stdout.write(JSON.stringify({ pid: process.pid, ...o }) + '\n')
const fail = (m) => { out({ error: m }); process.exit(2) }
function fields(b) {
  const f = []
  let i = 0
  const varint = () => { let v = 0, s = 0, c; do { c = b[i++]; v += (c & 0x7f) * 2 ** s; s += 7 } while (c & 0x80); return v }
  while (i < b.length) {
    const tag = varint(), no = Math.floor(tag / 8), wt = tag & 7
    if (wt === 2) { const n = varint(); f.push([no, b.subarray(i, i + n)]); i += n }
    else if (wt === 0) varint()
    else if (wt === 5) i += 4
    else if (wt === 1) i += 8
    else throw new Error('bad wire type')
  }
  return f
}
function leafOf(der) {
  let len = der[1], hdr = 2
  if (len & 0x80) { const n = len & 0x7f; len = 0; for (let k = 0; k < n; k++) len = len * 256 + der[2 + k]; hdr = 2 + n }
  return new crypto.X509Certificate(der.subarray(0, hdr + len))
}
const s = http2.connect('http://localhost', { createConnection: () => net.connect(sock) })
s.on('error', (e) => fail(e.message))
const req = s.request({ ':method': 'POST', ':path': '/SpiffeWorkloadAPI/FetchX509SVID', 'content-type': 'application/grpc', te: 'trailers', 'workload.spiffe.io': 'true' })
req.end(Buffer.alloc(5))
let buf = Buffer.alloc(0)
let done = false
const status = (h) => { if (h['grpc-status'] !== undefined && h['grpc-status'] !== '0') fail('grpc-status ' + h['grpc-status'] + ': ' + decodeURIComponent(h['grpc-message'] || '')) }
req.on('response', status)
req.on('trailers', (h) => { status(h); if (!done) fail('stream ended without a message') })
req.on('error', (e) => { if (!done) fail(e.message) })
req.on('data', (d) => {
  if (done) return
  buf = Buffer.concat([buf, d])
  if (buf.length < 5 || buf.length < 5 + buf.readUInt32BE(1)) return
  done = true
  const ms = performance.now() - t0
  const svids = fields(buf.subarray(5, 5 + buf.readUInt32BE(1))).filter(([n]) => n === 1).map(([, m]) => {
    const o = {}
    for (const [n, v] of fields(m)) o[n] = v
    const pub = crypto.createPublicKey(crypto.createPrivateKey({ key: o[3], format: 'der', type: 'pkcs8' })).export({ type: 'spki', format: 'der' })
    const leaf = leafOf(o[2])
    return { spiffe_id: o[1].toString(), key_sha256: crypto.createHash('sha256').update(pub).digest('hex'), not_before: leaf.validFrom, not_after: leaf.validTo }
  })
  out({ ms, svids })
  if (mode !== 'hold') { req.close(); s.close(); process.exit(0) }
})
`

/** Writes the probe into `dir` (made world-readable) and returns its path. */
export function writeWorkloadProbe(dir: string): string {
  const path = join(dir, 'workload-probe.cjs')
  writeFileSync(path, WORKLOAD_PROBE_SOURCE)
  chmodSync(path, 0o644)
  return path
}
