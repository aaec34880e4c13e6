/**
 * The transmitter's HTTPS to a push receiver (RFC 8935 §2): one SET per
 * POST, `Content-Type: application/secevent+jwt`, the Authorization header
 * the receiver asked for at stream creation, this broker's X.509-SVID as
 * client certificate. The receiver's endpoint must present the X.509-SVID of
 * the SPIFFE ID that owns the stream, verified against the bundle of its own
 * trust domain: a receiver can only have its events pushed to itself, never
 * to another host it names (no SSRF through `endpoint_url`). Answers are
 * capped; failures throw ERR_UNAVAILABLE.
 */
import https from 'node:https'
import type { PeerCertificate } from 'node:tls'
import { IdentityError } from '../../errors/identity-error.js'
import type { X509BundleSource } from '../../spiffe/bundle/sources.js'
import { SpiffeId } from '../../spiffe/spiffe-id.js'
import { peerCertificateChain, verifyPeerChain } from '../../workload-client/tls/verify-peer.js'
import type { SetPushTransport } from '../ssf-transmitter.js'

export interface SsfPushClientOptions {
  /** The client certificate chain and key (PEM), current. */
  readonly identity: () => { certChainPem: string; keyPem: string }
  /** Local and federated bundles, current. */
  readonly bundles: () => X509BundleSource
  /** Per request (default 10 s). */
  readonly timeoutMs?: number
  /** Largest answer read (default 64 KiB). */
  readonly maxBytes?: number
  readonly now?: () => number
}

export function httpsSetPushTransport(o: SsfPushClientOptions): SetPushTransport {
  const timeout = o.timeoutMs ?? 10_000
  const maxBytes = o.maxBytes ?? 64 * 1024
  const now = o.now ?? Date.now
  return {
    push: (url, set, target) =>
      new Promise((resolve, reject) => {
        const fail = (message: string, cause?: unknown) =>
          reject(new IdentityError('ERR_UNAVAILABLE', message, { ...(cause !== undefined ? { cause } : {}), details: { url: url.slice(0, 256) } }))
        let u: URL
        let expected: SpiffeId
        let ca: string
        try {
          u = new URL(url)
          if (u.protocol !== 'https:') throw new Error('push endpoint must be https')
          expected = SpiffeId.fromString(target.receiver)
          ca = o.bundles().getX509BundleForTrustDomain(expected.trustDomain).toPem()
        } catch (err) {
          fail('push endpoint cannot be reached securely', err)
          return
        }
        const id = o.identity()
        const body = Buffer.from(set, 'utf8')
        const req = https.request(
          u,
          {
            method: 'POST',
            cert: id.certChainPem,
            key: id.keyPem,
            ca,
            rejectUnauthorized: true,
            minVersion: 'TLSv1.2',
            agent: false,
            timeout,
            // the endpoint's SVID must be the stream owner's, from the owner's trust domain
            checkServerIdentity: (_host: string, cert: PeerCertificate) => {
              try {
                const peer = verifyPeerChain(peerCertificateChain(cert), o.bundles(), { now: new Date(now()) })
                return peer.id.equals(expected) ? undefined : new Error('push endpoint is not the stream owner')
              } catch (err) {
                return err instanceof Error ? err : new Error('push endpoint certificate refused')
              }
            },
            headers: {
              'content-type': 'application/secevent+jwt',
              accept: 'application/json',
              'content-length': String(body.length),
              ...(target.authorization !== undefined ? { authorization: target.authorization } : {}),
            },
          },
          (res) => {
            const chunks: Buffer[] = []
            let size = 0
            res.on('data', (c: Buffer) => {
              size += c.length
              if (size <= maxBytes) chunks.push(c)
            })
            res.on('end', () => {
              let parsed: unknown
              try {
                const text = Buffer.concat(chunks).toString('utf8')
                parsed = text.length === 0 ? undefined : (JSON.parse(text) as unknown)
              } catch {
                parsed = undefined
              }
              resolve({ status: res.statusCode ?? 0, body: parsed })
            })
            res.on('error', (err) => fail('push answer failed', err))
          },
        )
        req.on('timeout', () => req.destroy(new Error('request timed out')))
        req.on('error', (err) => fail('push receiver unreachable', err))
        req.end(body)
      }),
  }
}
