/**
 * Fetches an issuer's JWKS over HTTPS for JwksCache: TLS verified against the
 * given CA (PEM, or a file read once at creation) or the system roots, a
 * timeout, a size cap, and only `200 application/json` (or `jwk-set+json`)
 * is accepted. Plain http is refused: keys fetched without TLS prove nothing.
 */
import { readFileSync } from 'node:fs'
import { request } from 'node:https'

export interface HttpsJwksFetcherOptions {
  /** The JWKS URL (https only). */
  url: string
  /** PEM of the CA(s) that verify the JWKS server; default: the system roots. */
  ca?: string | Buffer
  /** A file holding that PEM (read once, now). */
  caFile?: string
  timeoutMs?: number
  /** Largest JWKS body accepted (default 256 KiB). */
  maxBytes?: number
}

export function httpsJwksFetcher(opts: HttpsJwksFetcherOptions): (signal?: AbortSignal) => Promise<unknown> {
  const url = new URL(opts.url)
  if (url.protocol !== 'https:') throw new TypeError('the JWKS URL must be https')
  const ca = opts.ca ?? (opts.caFile !== undefined ? readFileSync(opts.caFile) : undefined)
  const timeoutMs = opts.timeoutMs ?? 5000
  const maxBytes = opts.maxBytes ?? 256 * 1024
  return (signal?: AbortSignal) =>
    new Promise((resolve, reject) => {
      const req = request(
        url,
        {
          method: 'GET',
          headers: { accept: 'application/json, application/jwk-set+json' },
          timeout: timeoutMs,
          ...(ca === undefined ? {} : { ca }),
          ...(signal === undefined ? {} : { signal }),
        },
        (res) => {
          const type = String(res.headers['content-type'] ?? '')
            .split(';')[0]
            ?.trim()
            .toLowerCase()
          if (res.statusCode !== 200 || (type !== 'application/json' && type !== 'application/jwk-set+json')) {
            res.resume()
            reject(new Error(`JWKS fetch: HTTP ${res.statusCode ?? 0} ${type ?? ''}`))
            return
          }
          const chunks: Buffer[] = []
          let size = 0
          res.on('data', (c: Buffer) => {
            size += c.length
            if (size > maxBytes) {
              req.destroy(new Error('JWKS fetch: body too large'))
              return
            }
            chunks.push(c)
          })
          res.on('end', () => {
            try {
              resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')))
            } catch (err) {
              reject(err)
            }
          })
          res.on('error', reject)
        },
      )
      req.on('timeout', () => req.destroy(new Error('JWKS fetch: timeout')))
      req.on('error', reject)
      req.end()
    })
}
