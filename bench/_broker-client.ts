/**
 * Client process of bench/broker.ts: an agent asking the broker's real HTTPS
 * token endpoint for task-scoped tokens. Mutual TLS with its X.509-SVID over
 * keep-alive connections (one per request in flight), a non-extractable
 * ES256 DPoP key, and a fresh DPoP proof per request carrying the last server
 * nonce (RFC 9449 §8; a `use_dpop_nonce` answer is retried once with the new
 * nonce and counted apart). Line protocol on stdin/stdout (one JSON object per
 * line): `{round: ms, concurrency}` → `{ok, failed, nonceRetries, ms}`.
 *
 * argv: <token endpoint URL> <CA PEM file> <cert PEM file> <key PEM file> <task id> [txn]
 *
 * With `txn`, the client first gets one DPoP-bound access token as above, then
 * each request asks for a Txn-Token with it as the subject token
 * (`requested_token_type` txn_token, `request_details`, no DPoP proof: a
 * Txn-Token is not key-bound and the client authenticates by mutual TLS).
 */
import https from 'node:https'
import { readFileSync } from 'node:fs'
import { webcrypto } from 'node:crypto'
import { createInterface } from 'node:readline'
import { createDpopProof } from '../src/tokens/dpop.js'

const [url, caPath, certPath, keyPath, taskId, mode] = process.argv.slice(2) as [string, string, string, string, string, string | undefined]
const out = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`)
const ca = readFileSync(caPath, 'utf8')
const cert = readFileSync(certPath, 'utf8')
const key = readFileSync(keyPath, 'utf8')
const dpopKey = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify'])
let body = new URLSearchParams({ grant_type: 'client_credentials', task_id: taskId, scope: 'tools:read' }).toString()
let agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca, cert, key })
let nonce: string | undefined

interface Answer {
  status: number
  nonce: string | undefined
  body: string
}

function post(proof: string | undefined): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      url,
      {
        method: 'POST',
        agent,
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          'content-length': Buffer.byteLength(body),
          ...(proof !== undefined ? { dpop: proof } : {}),
        },
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

/** One token request; returns whether a token came back and whether a nonce retry was needed. */
async function exchangeOnce(): Promise<{ ok: boolean; retried: boolean; detail?: string }> {
  if (txnBody !== undefined) {
    const r = await post(undefined)
    const ok = r.status === 200 && r.body.includes('"issued_token_type":"urn:ietf:params:oauth:token-type:txn_token"')
    return ok ? { ok, retried: false } : { ok, retried: false, detail: `${r.status} ${r.body.slice(0, 200)}` }
  }
  let r = await post(await createDpopProof(dpopKey, { method: 'POST', url, ...(nonce !== undefined ? { nonce } : {}) }))
  if (r.nonce !== undefined) nonce = r.nonce
  let retried = false
  if (r.status === 400 && r.body.includes('use_dpop_nonce')) {
    retried = true
    r = await post(await createDpopProof(dpopKey, { method: 'POST', url, ...(nonce !== undefined ? { nonce } : {}) }))
    if (r.nonce !== undefined) nonce = r.nonce
  }
  const ok = r.status === 200 && r.body.includes('"access_token"')
  return ok ? { ok, retried } : { ok, retried, detail: `${r.status} ${r.body.slice(0, 200)}` }
}

let txnBody: string | undefined
// Warm-up: fetch a nonce and check that a token comes back.
const first = await exchangeOnce()
if (!first.ok) {
  out({ error: first.detail })
  process.exit(1)
}
if (mode === 'txn') {
  const r = await post(await createDpopProof(dpopKey, { method: 'POST', url, ...(nonce !== undefined ? { nonce } : {}) }))
  const at = (JSON.parse(r.body) as { access_token?: string }).access_token
  if (r.status !== 200 || at === undefined) {
    out({ error: `${r.status} ${r.body.slice(0, 200)}` })
    process.exit(1)
  }
  txnBody = new URLSearchParams({
    grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
    requested_token_type: 'urn:ietf:params:oauth:token-type:txn_token',
    subject_token: at,
    subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
    scope: 'tools:read',
    request_details: JSON.stringify({ tool: 'search', purpose: 'bench' }),
  }).toString()
  body = txnBody
  const check = await exchangeOnce()
  if (!check.ok) {
    out({ error: check.detail })
    process.exit(1)
  }
}
out({ ready: true })

const lines = createInterface({ input: process.stdin })
for await (const line of lines) {
  const msg = JSON.parse(line) as { round?: number; concurrency?: number; exit?: boolean }
  if (msg.round) {
    const conc = msg.concurrency ?? 1
    if (agent.maxSockets !== conc) {
      agent.destroy()
      agent = new https.Agent({ keepAlive: true, maxSockets: conc, ca, cert, key })
    }
    let ok = 0
    let failed = 0
    let nonceRetries = 0
    let detail: string | undefined
    const start = performance.now()
    const end = start + msg.round
    const worker = async () => {
      while (performance.now() < end) {
        const r = await exchangeOnce()
        if (r.ok) ok++
        else {
          failed++
          detail ??= r.detail
        }
        if (r.retried) nonceRetries++
      }
    }
    await Promise.all(Array.from({ length: conc }, worker))
    out({ ok, failed, nonceRetries, ms: performance.now() - start, ...(detail ? { detail } : {}) })
  } else if (msg.exit) break
}
agent.destroy()
process.exit(0)
