/**
 * Client process of bench/gateway.ts: an agent calling a tool, through the
 * gateway or directly, with the same client: mutual TLS with its X.509-SVID,
 * keep-alive connections (one per request in flight, one pool per target
 * URL, kept across rounds), the same POST body. Each call's latency is taken
 * from the request to the last byte of the answer. Line protocol on
 * stdin/stdout (one JSON object per line): `{round: ms, concurrency, url}` →
 * `{ok, failed, ms, lat: [ms, ...]}` (`lat` to the microsecond).
 *
 * argv: <CA PEM file> <cert PEM file> <key PEM file> <request body bytes>
 */
import https from 'node:https'
import { readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'

const [caPath, certPath, keyPath, bodyBytes] = process.argv.slice(2) as [string, string, string, string]
const out = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`)
const ca = readFileSync(caPath, 'utf8')
const cert = readFileSync(certPath, 'utf8')
const key = readFileSync(keyPath, 'utf8')
const body = JSON.stringify({ query: 'q'.repeat(Math.max(0, Number(bodyBytes) - 12)) })
const agents = new Map<string, https.Agent>()

function agentFor(url: string, concurrency: number): https.Agent {
  const k = `${url}|${concurrency}`
  let a = agents.get(k)
  if (!a) {
    a = new https.Agent({ keepAlive: true, maxSockets: concurrency, ca, cert, key })
    agents.set(k, a)
  }
  return a
}

function call(url: string, agent: https.Agent): Promise<{ status: number; bytes: number }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      url,
      { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
      (res) => {
        let bytes = 0
        res.on('data', (c: Buffer) => (bytes += c.length))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes }))
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    req.end(body)
  })
}

out({ ready: true })

const lines = createInterface({ input: process.stdin })
for await (const line of lines) {
  const msg = JSON.parse(line) as { round?: number; concurrency?: number; url?: string; exit?: boolean }
  if (msg.round && msg.url) {
    const url = msg.url
    const agent = agentFor(url, msg.concurrency ?? 1)
    let ok = 0
    let failed = 0
    let detail: string | undefined
    let bytes = 0
    const lat: number[] = []
    const start = performance.now()
    const end = start + msg.round
    const worker = async () => {
      while (performance.now() < end) {
        const t0 = performance.now()
        try {
          const r = await call(url, agent)
          if (r.status === 200) {
            ok++
            bytes = r.bytes
            lat.push(Math.round((performance.now() - t0) * 1000) / 1000)
          } else {
            failed++
            detail ??= `HTTP ${r.status}`
          }
        } catch (err) {
          failed++
          detail ??= String(err)
        }
      }
    }
    await Promise.all(Array.from({ length: msg.concurrency ?? 1 }, worker))
    out({ ok, failed, ms: performance.now() - start, bytes, lat, ...(detail ? { detail } : {}) })
  } else if (msg.exit) break
}
for (const a of agents.values()) a.destroy()
process.exit(0)
