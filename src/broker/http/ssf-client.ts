/**
 * The receiver's HTTPS to a transmitter (`SsfTransport`): JSON over
 * node:https with this broker's current X.509-SVID as client certificate
 * (read at every request, so rotation needs nothing), the transmitter's CA
 * bundle when configured, a deadline per request and a cap on the answer's
 * size. Non-2xx GETs and network failures throw ERR_UNAVAILABLE.
 */
import https from 'node:https'
import { IdentityError } from '../../errors/identity-error.js'
import type { SsfTransport } from '../ssf-receiver.js'

export interface SsfClientOptions {
  /** The client certificate chain and key (PEM), current. */
  readonly identity: () => { certChainPem: string; keyPem: string }
  /** PEM that verifies the transmitter (default: the system's CAs). */
  readonly caPem?: string
  /** Per request, including a long poll's wait (default 60 s). */
  readonly timeoutMs?: number
  /** Largest answer accepted (default 4 MiB). */
  readonly maxBytes?: number
}

export function httpsSsfTransport(o: SsfClientOptions): SsfTransport {
  const timeout = o.timeoutMs ?? 60_000
  const maxBytes = o.maxBytes ?? 4 * 1024 * 1024
  const send = (method: 'GET' | 'POST', url: string, body: unknown, signal: AbortSignal | undefined): Promise<{ status: number; body: unknown }> =>
    new Promise((resolve, reject) => {
      const u = new URL(url)
      if (u.protocol !== 'https:') {
        reject(new IdentityError('ERR_UNAVAILABLE', 'transmitter URL must be https', { details: { url: url.slice(0, 256) } }))
        return
      }
      const id = o.identity()
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body), 'utf8')
      const req = https.request(
        u,
        {
          method,
          cert: id.certChainPem,
          key: id.keyPem,
          ...(o.caPem !== undefined ? { ca: o.caPem } : {}),
          minVersion: 'TLSv1.2',
          agent: false,
          timeout,
          headers: { accept: 'application/json', ...(payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}) },
          ...(signal ? { signal } : {}),
        },
        (res) => {
          const chunks: Buffer[] = []
          let size = 0
          res.on('data', (c: Buffer) => {
            size += c.length
            if (size > maxBytes) {
              req.destroy(new Error('answer too large'))
              return
            }
            chunks.push(c)
          })
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8')
            let parsed: unknown
            try {
              parsed = text.length === 0 ? undefined : (JSON.parse(text) as unknown)
            } catch {
              parsed = undefined
            }
            resolve({ status: res.statusCode ?? 0, body: parsed })
          })
          res.on('error', reject)
        },
      )
      req.on('timeout', () => req.destroy(new Error('request timed out')))
      req.on('error', (err) => reject(new IdentityError('ERR_UNAVAILABLE', 'transmitter unreachable', { cause: err, details: { url: url.slice(0, 256) } })))
      req.end(payload)
    })
  return {
    async getJson(url, opts = {}) {
      const r = await send('GET', url, undefined, opts.signal)
      if (r.status < 200 || r.status >= 300) throw new IdentityError('ERR_UNAVAILABLE', 'transmitter answered an error', { details: { status: r.status } })
      return r.body
    },
    postJson: (url, body, opts = {}) => send('POST', url, body, opts.signal),
    getJsonStatus: (url, opts = {}) => send('GET', url, undefined, opts.signal),
  }
}
