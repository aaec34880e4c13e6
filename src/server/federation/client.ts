import { X509Certificate } from 'node:crypto'
import { request as httpRequest, type IncomingMessage } from 'node:http'
import { isIP } from 'node:net'
import { connect as tlsConnect, type PeerCertificate, type TLSSocket } from 'node:tls'
import { IdentityError } from '../../errors/identity-error.js'
import type { X509BundleSource } from '../../spiffe/bundle/sources.js'
import { SpiffeBundle } from '../../spiffe/bundle/spiffe-bundle.js'
import type { SpiffeId } from '../../spiffe/spiffe-id.js'
import type { TrustDomain } from '../../spiffe/trust-domain.js'
import { MAX_CHAIN_LENGTH } from '../../spiffe/x509-svid/svid-rules.js'
import { verifyX509Svid } from '../../spiffe/x509-svid/verify.js'

export const DEFAULT_FETCH_TIMEOUT_MS = 10_000
export const DEFAULT_MAX_BUNDLE_BYTES = 1024 * 1024
export const MAX_REDIRECTS = 3

export type FetchProfile =
  | {
      kind: 'https_spiffe'
      /** The exact SPIFFE ID the endpoint's X.509-SVID must carry. */
      endpointSpiffeId: SpiffeId
      /** Trust for the endpoint's SVID: the last stored bundle of that trust domain (bootstrap bundle first). */
      trustBundle: X509BundleSource
    }
  | {
      kind: 'https_web'
      /** PEM CA text replacing the system roots; default: Node's root store. */
      ca?: string | undefined
    }

export interface FetchBundleOptions {
  trustDomain: TrustDomain
  url: string
  profile: FetchProfile
  /** Total time for the fetch, redirects included. */
  timeoutMs?: number
  maxBytes?: number
  signal?: AbortSignal
  /** Time for SVID validity checks (default: now). */
  now?: () => Date
}

/**
 * Fetches and parses a foreign trust domain's SPIFFE bundle from its bundle
 * endpoint (SPIFFE Federation §5), applying the profile's TLS checks on every
 * connection (redirects included) before any request is sent.
 *
 * Errors: ERR_UNAVAILABLE (network, TLS handshake, HTTP status, timeout,
 * redirects), ERR_X509_SVID_UNTRUSTED (the server's TLS identity does not
 * match the profile), ERR_BUNDLE_INVALID (content type, size, document).
 * ERR_INVALID_ARGUMENT for a URL that is not `https` or carries userinfo.
 */
export async function fetchBundle(o: FetchBundleOptions): Promise<SpiffeBundle> {
  const timeoutMs = o.timeoutMs ?? DEFAULT_FETCH_TIMEOUT_MS
  const maxBytes = o.maxBytes ?? DEFAULT_MAX_BUNDLE_BYTES
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new RangeError('timeoutMs must be positive')
  if (!Number.isSafeInteger(maxBytes) || maxBytes <= 0) throw new RangeError('maxBytes must be a positive integer')
  let url = checkBundleEndpointUrl(o.url)
  const ca = o.profile.kind === 'https_web' ? o.profile.ca : undefined

  const ac = new AbortController()
  const timer = setTimeout(() => ac.abort(unavailable(`bundle endpoint did not answer within ${timeoutMs} ms`)), timeoutMs)
  const onOuterAbort = () => ac.abort(unavailable('bundle fetch cancelled', o.signal?.reason))
  if (o.signal?.aborted) onOuterAbort()
  else o.signal?.addEventListener('abort', onOuterAbort, { once: true })
  try {
    for (let hop = 0; ; hop++) {
      const r = await fetchOnce(url, o, ca, maxBytes, ac.signal)
      if (r.kind === 'body') {
        return parseDocument(o.trustDomain, r.body)
      }
      if (hop >= MAX_REDIRECTS) throw unavailable(`bundle endpoint redirected more than ${MAX_REDIRECTS} times`)
      let next: URL
      try {
        next = new URL(r.location, url)
      } catch (cause) {
        throw unavailable('bundle endpoint sent an invalid redirect location', cause)
      }
      url = checkBundleEndpointUrl(next.toString(), 'redirect')
    }
  } finally {
    clearTimeout(timer)
    o.signal?.removeEventListener('abort', onOuterAbort)
  }
}

/** Validates a bundle endpoint URL: `https`, no userinfo, no fragment. */
export function checkBundleEndpointUrl(s: string, what = 'bundle endpoint URL'): URL {
  let u: URL
  try {
    u = new URL(s)
  } catch {
    throw new IdentityError('ERR_INVALID_ARGUMENT', `${what} is not a valid URL`)
  }
  if (u.protocol !== 'https:') throw new IdentityError('ERR_INVALID_ARGUMENT', `${what} must use https`)
  if (u.username || u.password) throw new IdentityError('ERR_INVALID_ARGUMENT', `${what} must not carry userinfo`)
  if (u.hash) throw new IdentityError('ERR_INVALID_ARGUMENT', `${what} must not carry a fragment`)
  if (!u.hostname) throw new IdentityError('ERR_INVALID_ARGUMENT', `${what} has no host`)
  return u
}

/**
 * Parses a fetched document *as* the relationship's trust domain: it must be
 * a valid SPIFFE bundle with at least one X.509 authority, and no authority may
 * name another trust domain in its SPIFFE URI SAN.
 */
export function parseDocument(td: TrustDomain, body: Uint8Array): SpiffeBundle {
  let text: string
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(body)
  } catch (cause) {
    throw invalid('bundle document is not UTF-8', cause)
  }
  const bundle = SpiffeBundle.parse(td, text)
  if (bundle.x509Authorities.length === 0) throw invalid('bundle document holds no usable X.509 authority')
  for (const der of bundle.x509Authorities) {
    const san = new X509Certificate(der).subjectAltName ?? ''
    for (const m of san.matchAll(/URI:spiffe:\/\/([^/,\s"]+)/gi)) {
      if (m[1]!.toLowerCase() !== td.name) {
        throw invalid(`bundle document holds an authority of trust domain "${m[1]!.slice(0, 255)}", expected "${td.name}"`)
      }
    }
  }
  return bundle
}

type Hop = { kind: 'body'; body: Buffer } | { kind: 'redirect'; location: string }

async function fetchOnce(url: URL, o: FetchBundleOptions, ca: string | undefined, maxBytes: number, signal: AbortSignal): Promise<Hop> {
  const socket = await connectVerified(url, o, ca, signal)
  try {
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = httpRequest({
        host: url.hostname,
        port: url.port || 443,
        path: `${url.pathname}${url.search}`,
        method: 'GET',
        headers: { Accept: 'application/json', Connection: 'close' },
        createConnection: () => socket,
        signal,
      })
      req.once('response', resolve)
      req.once('error', (err) => reject(signal.aborted ? abortReason(signal) : unavailable('bundle endpoint request failed', err)))
      req.end()
    })
    const status = res.statusCode ?? 0
    if ([301, 302, 303, 307, 308].includes(status)) {
      res.resume()
      const loc = res.headers.location
      if (!loc) throw unavailable(`bundle endpoint answered ${status} without a Location`)
      return { kind: 'redirect', location: loc }
    }
    if (status !== 200) {
      res.resume()
      throw unavailable(`bundle endpoint answered HTTP ${status}`, undefined, { status })
    }
    checkContentType(res.headers['content-type'])
    const declared = res.headers['content-length']
    if (declared !== undefined && Number(declared) > maxBytes) {
      res.destroy()
      throw invalid(`bundle document exceeds ${maxBytes} bytes`)
    }
    return { kind: 'body', body: await readCapped(res, maxBytes, signal) }
  } finally {
    socket.destroy()
  }
}

function checkContentType(v: string | undefined): void {
  const [type, ...params] = (v ?? '').split(';').map((s) => s.trim().toLowerCase())
  if (type !== 'application/json') throw invalid(`bundle endpoint sent Content-Type "${(v ?? '').slice(0, 64)}", expected application/json`)
  for (const p of params) {
    const [k, val] = p.split('=').map((s) => s.trim().replace(/^"|"$/g, ''))
    if (k === 'charset' && val !== 'utf-8' && val !== 'utf8') throw invalid('bundle document must be UTF-8')
  }
}

function readCapped(res: IncomingMessage, maxBytes: number, signal: AbortSignal): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    const onAbort = () => {
      done(abortReason(signal))
      res.destroy()
    }
    let finished = false
    const done = (err: IdentityError | undefined, body?: Buffer) => {
      if (finished) return
      finished = true
      signal.removeEventListener('abort', onAbort)
      if (err) reject(err)
      else resolve(body!)
    }
    if (signal.aborted) return onAbort()
    signal.addEventListener('abort', onAbort, { once: true })
    res.on('data', (c: Buffer) => {
      size += c.length
      if (size > maxBytes) {
        done(invalid(`bundle document exceeds ${maxBytes} bytes`))
        res.destroy()
        return
      }
      chunks.push(c)
    })
    res.once('end', () => done(undefined, Buffer.concat(chunks)))
    res.once('error', (err) => done(signal.aborted ? abortReason(signal) : unavailable('bundle endpoint response failed', err)))
    res.once('aborted', () => done(unavailable('bundle endpoint closed the connection')))
  })
}

/** Opens a TLS connection and applies the profile's identity checks before resolving. */
function connectVerified(url: URL, o: FetchBundleOptions, ca: string | undefined, signal: AbortSignal): Promise<TLSSocket> {
  const host = url.hostname.replace(/^\[|\]$/g, '')
  const port = Number(url.port || 443)
  const p = o.profile
  return new Promise<TLSSocket>((resolve, reject) => {
    if (signal.aborted) return reject(abortReason(signal))
    const socket = tlsConnect({
      host,
      port,
      ...(isIP(host) ? {} : { servername: host }),
      minVersion: 'TLSv1.2',
      ALPNProtocols: ['http/1.1'],
      rejectUnauthorized: p.kind === 'https_web',
      ...(ca !== undefined ? { ca } : {}),
    })
    let settled = false
    const fail = (err: unknown) => {
      if (settled) return
      settled = true
      signal.removeEventListener('abort', onAbort)
      socket.destroy()
      reject(err)
    }
    const onAbort = () => fail(abortReason(signal))
    signal.addEventListener('abort', onAbort, { once: true })
    socket.once('error', (err: NodeJS.ErrnoException) => fail(tlsError(err)))
    socket.once('secureConnect', () => {
      const check = p.kind === 'https_spiffe' ? verifyPeerSvid(socket, p.endpointSpiffeId, p.trustBundle, o.now?.() ?? new Date()) : Promise.resolve()
      check.then(() => {
        if (settled) return
        settled = true
        signal.removeEventListener('abort', onAbort)
        resolve(socket)
      }, fail)
    })
  })
}

async function verifyPeerSvid(socket: TLSSocket, expected: SpiffeId, trust: X509BundleSource, now: Date): Promise<void> {
  const chain = peerChain(socket.getPeerCertificate(true))
  if (chain.length === 0) throw untrusted('bundle endpoint presented no certificate')
  let id: SpiffeId
  try {
    id = (await verifyX509Svid(chain, trust, { now })).id
  } catch (cause) {
    const code = cause instanceof IdentityError ? cause.code : 'ERR_INTERNAL'
    throw untrusted(`bundle endpoint certificate is not a valid X.509-SVID (${code})`, cause)
  }
  if (!id.equals(expected)) {
    throw untrusted(`bundle endpoint SPIFFE ID "${id.toString().slice(0, 256)}" is not the configured "${expected.toString()}"`)
  }
}

/** The chain the peer sent, leaf first; stops at a self-issued certificate or a loop. */
function peerChain(leaf: PeerCertificate & { issuerCertificate?: PeerCertificate }): Uint8Array[] {
  const out: Uint8Array[] = []
  const seen = new Set<string>()
  let c: (PeerCertificate & { issuerCertificate?: PeerCertificate }) | undefined = leaf
  while (c && c.raw && out.length < MAX_CHAIN_LENGTH) {
    const fp = c.fingerprint256
    if (seen.has(fp)) break
    seen.add(fp)
    out.push(new Uint8Array(c.raw))
    c = c.issuerCertificate
  }
  return out
}

/** Web PKI rejections become ERR_X509_SVID_UNTRUSTED (a TLS identity mismatch); the rest is unavailability. */
function tlsError(err: NodeJS.ErrnoException): IdentityError {
  const code = err.code ?? ''
  if (code.startsWith('ERR_TLS_CERT_ALTNAME') || /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|DEPTH_ZERO|HOSTNAME/.test(code)) {
    return untrusted(`bundle endpoint TLS certificate rejected (${code})`, err)
  }
  return unavailable(`bundle endpoint connection failed${code ? ` (${code})` : ''}`, err)
}

function abortReason(signal: AbortSignal): IdentityError {
  return signal.reason instanceof IdentityError ? signal.reason : unavailable('bundle fetch aborted', signal.reason)
}

function unavailable(message: string, cause?: unknown, details?: Record<string, unknown>): IdentityError {
  return new IdentityError('ERR_UNAVAILABLE', message, { cause, ...(details ? { details } : {}) })
}

function invalid(message: string, cause?: unknown): IdentityError {
  return new IdentityError('ERR_BUNDLE_INVALID', message, { cause })
}

function untrusted(message: string, cause?: unknown): IdentityError {
  return new IdentityError('ERR_X509_SVID_UNTRUSTED', message, { cause })
}
