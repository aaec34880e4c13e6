/**
 * Raw HTTPS for the quickstart's demos, for what a well-behaved client
 * (src/broker-client) never does: waiting for the broker's metadata,
 * presenting a token the way a thief would (as a bearer token, or with a
 * proof of another key) to show the resource server refusing it, and plain
 * HTTPS calls (with an X.509-SVID as client certificate) through the gateway
 * and between the gateway demo's services.
 */
import { request } from 'node:https'

export interface HttpsReply {
  status: number
  headers: Record<string, string>
  body: string
}

/** One HTTPS request (no keep-alive), the server verified against `ca` (chain and host name); `cert` and `key`: a client certificate (mutual TLS). */
export function httpsCall(
  url: string,
  o: { method: string; ca: string; cert?: string; key?: string; headers?: Record<string, string>; body?: string; timeoutMs?: number },
): Promise<HttpsReply> {
  return new Promise((resolve, reject) => {
    const headers = { ...o.headers, ...(o.body !== undefined ? { 'content-length': String(Buffer.byteLength(o.body)) } : {}) }
    const client = o.cert !== undefined && o.key !== undefined ? { cert: o.cert, key: o.key } : {}
    const req = request(url, { method: o.method, ca: o.ca, ...client, headers, agent: false, timeout: o.timeoutMs ?? 10_000 }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        const h: Record<string, string> = {}
        for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) h[k] = Array.isArray(v) ? v.join(', ') : v
        resolve({ status: res.statusCode ?? 0, headers: h, body: Buffer.concat(chunks).toString('utf8') })
      })
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error(`${o.method} ${url} timed out`)))
    req.on('error', reject)
    if (o.body !== undefined) req.write(o.body)
    req.end()
  })
}

/** The OAuth error code of a refusal: the JSON body's `error`, else the WWW-Authenticate challenge's. */
export function oauthError(r: HttpsReply): string {
  try {
    const e = (JSON.parse(r.body) as { error?: unknown }).error
    if (typeof e === 'string') return e
  } catch {
    // not JSON
  }
  return /error="([^"]+)"/.exec(r.headers['www-authenticate'] ?? '')?.[1] ?? ''
}
