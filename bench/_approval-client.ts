/**
 * Client process of bench/approval.ts: an agent at the broker's real HTTPS
 * token endpoint (mutual TLS with its X.509-SVID over keep-alive connections,
 * a fresh ES256 DPoP proof per request with the last server nonce; a
 * `use_dpop_nonce` answer is retried once and the retry is part of that
 * request's time). Two kinds of request, each timed from send to answer:
 * `plain`, a client_credentials token for a task; `intent`, the same request
 * declaring a `warrant_intent` (one action on one resource, a fresh parameters
 * digest each time) that the broker approves by rule and answers with its
 * action-bound token. Line protocol: `{round: ms, concurrency, mode}` →
 * `{ok, failed, ms, samples: [latency ms...]}`.
 *
 * argv: <token endpoint URL> <CA PEM file> <cert PEM file> <key PEM file> <task id> <resource>
 */
import https from 'node:https'
import { readFileSync } from 'node:fs'
import { createHash, randomBytes, webcrypto } from 'node:crypto'
import { createInterface } from 'node:readline'
import { createDpopProof } from '../src/tokens/dpop.js'

const [url, caPath, certPath, keyPath, taskId, resource] = process.argv.slice(2) as [string, string, string, string, string, string]
const out = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`)
const ca = readFileSync(caPath, 'utf8')
const cert = readFileSync(certPath, 'utf8')
const key = readFileSync(keyPath, 'utf8')
const dpopKey = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify'])
let agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca, cert, key })
let nonce: string | undefined

type Mode = 'plain' | 'intent'

function bodyOf(mode: Mode): string {
  if (mode === 'plain') return new URLSearchParams({ grant_type: 'client_credentials', task_id: taskId, scope: 'tools:read', resource }).toString()
  const detail = {
    type: 'warrant_intent',
    actions: ['tools:read'],
    locations: [`${resource}/search`],
    params_digest: createHash('sha256').update(randomBytes(16)).digest('base64url'),
    declared_risk: 0.1,
  }
  return new URLSearchParams({ grant_type: 'client_credentials', task_id: taskId, authorization_details: JSON.stringify([detail]) }).toString()
}

function post(body: string, proof: string): Promise<{ status: number; nonce: string | undefined; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      url,
      {
        method: 'POST',
        agent,
        headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body), dpop: proof },
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => {
          const n = res.headers['dpop-nonce']
          resolve({ status: res.statusCode ?? 0, nonce: typeof n === 'string' ? n : undefined, body: Buffer.concat(chunks).toString('utf8') })
        })
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    req.end(body)
  })
}

async function once(mode: Mode): Promise<{ ok: boolean; detail?: string }> {
  const body = bodyOf(mode)
  const proof = async () => createDpopProof(dpopKey, { method: 'POST', url, ...(nonce !== undefined ? { nonce } : {}) })
  let r = await post(body, await proof())
  if (r.nonce !== undefined) nonce = r.nonce
  if (r.status === 400 && r.body.includes('use_dpop_nonce')) {
    r = await post(body, await proof())
    if (r.nonce !== undefined) nonce = r.nonce
  }
  const ok = r.status === 200 && r.body.includes('"access_token"') && (mode === 'plain' || r.body.includes('"warrant_intent"'))
  return ok ? { ok } : { ok, detail: `${r.status} ${r.body.slice(0, 200)}` }
}

for (const mode of ['plain', 'intent'] as const) {
  const first = await once(mode)
  if (!first.ok) {
    out({ error: `${mode}: ${first.detail}` })
    process.exit(1)
  }
}
out({ ready: true })

for await (const line of createInterface({ input: process.stdin })) {
  const msg = JSON.parse(line) as { round?: number; concurrency?: number; mode?: Mode; exit?: boolean }
  if (msg.exit) break
  if (!msg.round || !msg.mode) continue
  const conc = msg.concurrency ?? 1
  if (agent.maxSockets !== conc) {
    agent.destroy()
    agent = new https.Agent({ keepAlive: true, maxSockets: conc, ca, cert, key })
  }
  const samples: number[] = []
  let failed = 0
  let detail: string | undefined
  const start = performance.now()
  const end = start + msg.round
  const worker = async () => {
    while (performance.now() < end) {
      const t0 = performance.now()
      const r = await once(msg.mode!)
      if (r.ok) samples.push(performance.now() - t0)
      else {
        failed++
        detail ??= r.detail
      }
    }
  }
  await Promise.all(Array.from({ length: conc }, worker))
  out({ ok: samples.length, failed, ms: performance.now() - start, samples, ...(detail ? { detail } : {}) })
}
agent.destroy()
process.exit(0)
