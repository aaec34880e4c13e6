/**
 * HTTPS for the broker client: the agent's current X.509-SVID as the client
 * certificate (mutual TLS, RFC 8705 `tls_client_auth`), the server verified
 * against `ca` (the PEM of WARRANT_BROKER_CA), else the trust bundles of the
 * SVID source, else the system roots, with the usual host-name check.
 * Keep-alive connections per SVID: when the source hands out another SVID
 * (rotation) or other bundles, new requests go over new connections.
 * Bodies are capped, requests have a deadline, redirects are not followed.
 */
import http from 'node:http'
import https from 'node:https'
import type { IncomingHttpHeaders } from 'node:http'
import { IdentityError } from '../errors/identity-error.js'
import type { X509Svid } from '../spiffe/x509-svid/x509-svid.js'
import type { BundleSet } from '../spiffe/bundle/bundle-set.js'

/** Where the client's X.509-SVID comes from: an `X509Source` of the Workload API, or anything with the same getter. */
export interface X509SvidSource {
  getX509Svid(): X509Svid
  /** The trust bundles (an X509Source has them): verify the broker when no `ca` is given. */
  getBundles?(): BundleSet
}

export interface HttpRequest {
  method: string
  headers: Record<string, string>
  body?: string | Uint8Array
  signal?: AbortSignal
}

export interface HttpResponse {
  status: number
  headers: IncomingHttpHeaders
  body: Buffer
}

/** One HTTP exchange; the client's only I/O (tests substitute it). */
export type Transport = (url: string, req: HttpRequest) => Promise<HttpResponse>

export interface HttpsTransportOptions {
  source?: X509SvidSource
  /** PEM of the CA(s) that verify servers. */
  ca?: string
  timeoutMs?: number
  /** Largest response body (default 1 MiB). */
  maxBytes?: number
}

export interface HttpsTransport {
  readonly request: Transport
  close(): void
}

function bundlePem(b: BundleSet): string | undefined {
  const pem = b
    .trustDomains()
    .map((td) => b.getX509BundleForTrustDomain(td).toPem())
    .join('')
  return pem === '' ? undefined : pem
}

export function httpsTransport(o: HttpsTransportOptions = {}): HttpsTransport {
  const timeoutMs = o.timeoutMs ?? 10_000
  const maxBytes = o.maxBytes ?? 1024 * 1024
  let current: { svid: X509Svid | undefined; bundles: BundleSet | undefined; agent: https.Agent } | undefined
  const retired: https.Agent[] = []

  const agentFor = (): https.Agent => {
    const svid = o.source?.getX509Svid()
    const bundles = o.ca === undefined ? o.source?.getBundles?.() : undefined
    if (current && current.svid === svid && current.bundles === bundles) return current.agent
    // A rotated SVID (or new bundles): new connections, and the old agent's idle sockets are closed (busy ones finish).
    if (current) {
      retired.push(current.agent)
      for (const s of Object.values(current.agent.freeSockets).flat()) s?.destroy()
    }
    const ca = o.ca ?? (bundles ? bundlePem(bundles) : undefined)
    const agent = new https.Agent({
      keepAlive: true,
      maxCachedSessions: 0,
      minVersion: 'TLSv1.2',
      ...(ca !== undefined ? { ca } : {}),
      ...(svid ? { cert: svid.certificatesPem(), key: svid.privateKeyPem() } : {}),
    })
    current = { svid, bundles, agent }
    return agent
  }

  const request: Transport = (url, req) =>
    new Promise((resolve, reject) => {
      let u: URL
      try {
        u = new URL(url)
      } catch {
        reject(new TypeError('broker-client: not an absolute URL'))
        return
      }
      if (u.protocol !== 'https:' && u.protocol !== 'http:') {
        reject(new TypeError('broker-client: only http(s) URLs'))
        return
      }
      const body = req.body === undefined ? undefined : typeof req.body === 'string' ? Buffer.from(req.body, 'utf8') : Buffer.from(req.body)
      const headers = { ...req.headers, ...(body !== undefined ? { 'content-length': String(body.length) } : {}) }
      const opts = { method: req.method, headers, timeout: timeoutMs, ...(req.signal ? { signal: req.signal } : {}) }
      let settled = false
      const fail = (err: unknown): void => {
        if (settled) return
        settled = true
        if (err instanceof IdentityError) reject(err)
        else reject(new IdentityError('ERR_UNAVAILABLE', `broker-client: ${u.host} unreachable: ${(err as Error)?.message ?? String(err)}`, { cause: err }))
      }
      const onRes = (res: http.IncomingMessage) => {
        const chunks: Buffer[] = []
        let size = 0
        res.on('data', (c: Buffer) => {
          size += c.length
          if (size > maxBytes) {
            fail(new IdentityError('ERR_REQUEST_MALFORMED', 'broker-client: response body too large'))
            r.destroy()
            return
          }
          chunks.push(c)
        })
        res.on('end', () => {
          if (settled) return
          settled = true
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) })
        })
        res.on('error', fail)
      }
      const r = u.protocol === 'https:' ? https.request(u, { ...opts, agent: agentFor() }, onRes) : http.request(u, opts, onRes)
      r.on('timeout', () => r.destroy(new Error('timed out')))
      r.on('error', fail)
      r.end(body)
    })

  return {
    request,
    close() {
      current?.agent.destroy()
      for (const a of retired.splice(0)) a.destroy()
      current = undefined
    },
  }
}
