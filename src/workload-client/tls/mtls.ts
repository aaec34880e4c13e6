import { Agent as HttpsAgent, createServer as createHttpsServer, type Server as HttpsServer } from 'node:https'
import type { IncomingMessage, ServerResponse } from 'node:http'
import * as tls from 'node:tls'
import { nullLogger, type Logger } from '../../common/log/logger.js'
import { IdentityError } from '../../errors/identity-error.js'
import type { X509Source } from '../x509-source.js'
import type { X509Context } from '../x509-context.js'
import type { Authorizer } from './authorizer.js'
import { peerCertificateChain, verifyPeerChain, type VerifiedPeer } from './verify-peer.js'

/** TLS 1.2 at least, as the SPIFFE federation and RFC 8705 profiles expect. */
const MIN_VERSION: tls.SecureVersion = 'TLSv1.2'

interface Material {
  cert: string
  key: string
  ca: string[]
  secureContext: tls.SecureContext
}

/** PEM material and one SecureContext per X.509 context (built once, shared by every connection on it). */
const materials = new WeakMap<X509Context, Material>()
function material(source: X509Source): Material {
  const ctx = source.context
  let m = materials.get(ctx)
  if (!m) {
    const svid = source.getX509Svid()
    const cert = svid.certificatesPem()
    const key = svid.privateKeyPem()
    // Every trusted authority, local and federated: OpenSSL's first pass. The per-trust-domain check follows.
    const ca = ctx.bundles.trustDomains().flatMap((td) => {
      const pem = ctx.bundles.getX509BundleForTrustDomain(td).toPem()
      return pem === '' ? [] : [pem]
    })
    m = { cert, key, ca, secureContext: tls.createSecureContext({ cert, key, ca, minVersion: MIN_VERSION }) }
    materials.set(ctx, m)
  }
  return m
}

/** The verified peer of each authenticated connection. */
const peers = new WeakMap<tls.TLSSocket, VerifiedPeer>()

/** The peer a connection was authenticated as (set before the connection reaches the application), or undefined. */
export function peerOf(socket: tls.TLSSocket): VerifiedPeer | undefined {
  return peers.get(socket)
}

/** Verifies the peer of a finished handshake against `source` and runs `authorizer`; throws the typed refusal. */
function checkPeer(socket: tls.TLSSocket, source: X509Source, authorizer: Authorizer, now: () => Date): VerifiedPeer {
  if (!socket.authorized) {
    throw new IdentityError('ERR_X509_SVID_UNTRUSTED', 'tlsconfig: peer certificate was not verified by TLS', {
      details: { reason: String(socket.authorizationError ?? 'no certificate') },
    })
  }
  const peer = verifyPeerChain(peerCertificateChain(socket.getPeerCertificate(true)), source, { now: now() })
  authorizer(peer)
  return peer
}

/**
 * Server TLS options from the source's current SVID: our chain and key,
 * every trusted authority as `ca`, client certificates requested and
 * required (`rejectUnauthorized`), TLS 1.2+. These alone only require a
 * chain to *some* trusted authority: `serveMtls` (or `createMtlsServer` /
 * `createMtlsHttpsServer`) adds the SPIFFE verification, the authorizer and
 * rotation. Node's TLS server has no in-handshake hook for client
 * certificates, so the check runs first on 'secureConnection'.
 */
export function mtlsServerOptions(source: X509Source): tls.TlsOptions {
  const m = material(source)
  return { cert: m.cert, key: m.key, ca: m.ca, requestCert: true, rejectUnauthorized: true, minVersion: MIN_VERSION }
}

/** Server TLS without client certificates (our SVID only), e.g. for an endpoint that authenticates callers otherwise. */
export function tlsServerOptions(source: X509Source): tls.TlsOptions {
  const m = material(source)
  return { cert: m.cert, key: m.key, requestCert: false, minVersion: MIN_VERSION }
}

export interface MtlsClientOptionsExtra {
  /** Time for certificate validity checks (tests). Default: now. */
  now?: () => Date
  /** Receives the verified server peer once the handshake passed. */
  onPeer?: (peer: VerifiedPeer) => void
}

/**
 * Client TLS options (`tls.connect`, `https.request`) from the source's
 * current SVID: our chain and key, every trusted authority, and a
 * `checkServerIdentity` that fails the handshake unless the server's chain
 * verifies against the bundle of its own trust domain and `authorizer`
 * allows its ID (the socket is destroyed with the IdentityError before
 * 'secureConnect'; no data moves). Build fresh options per connection to use
 * the rotated SVID (`mtlsAgent` does). Do not pass a `session`: a resumed
 * session skips checkServerIdentity.
 */
export function mtlsClientOptions(source: X509Source, authorizer: Authorizer, extra: MtlsClientOptionsExtra = {}): tls.ConnectionOptions {
  if (typeof authorizer !== 'function') throw new TypeError('authorizer must be a function')
  const now = extra.now ?? (() => new Date())
  const m = material(source)
  return {
    secureContext: m.secureContext,
    rejectUnauthorized: true,
    minVersion: MIN_VERSION,
    checkServerIdentity: (_host, cert) => {
      try {
        const peer = verifyPeerChain(peerCertificateChain(cert), source, { now: now() })
        authorizer(peer)
        extra.onPeer?.(peer)
        return undefined
      } catch (err) {
        return err instanceof Error ? err : new IdentityError('ERR_INTERNAL', 'tlsconfig: peer check failed')
      }
    },
  }
}

/**
 * Opens a mutual-TLS connection: resolves once the server is verified and
 * authorized (`peerOf(socket)` names it), rejects with the refusal otherwise.
 */
export function connectMtls(source: X509Source, authorizer: Authorizer, opts: tls.ConnectionOptions & MtlsClientOptionsExtra): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    let peer: VerifiedPeer | undefined
    const { now, onPeer, ...connect } = opts
    const socket = tls.connect({
      ...connect,
      ...mtlsClientOptions(source, authorizer, {
        ...(now ? { now } : {}),
        onPeer: (p) => {
          peer = p
          onPeer?.(p)
        },
      }),
    })
    socket.once('secureConnect', () => {
      socket.off('error', reject)
      peers.set(socket, peer!)
      resolve(socket)
    })
    socket.once('error', reject)
  })
}

/**
 * An https.Agent whose every new connection uses the source's current SVID
 * and verifies and authorizes the server (TLS session caching off, since a
 * resumed session would skip the check). Keep-alive connections keep the SVID
 * they were opened with.
 */
export function mtlsAgent(
  source: X509Source,
  authorizer: Authorizer,
  agentOptions: Omit<import('node:https').AgentOptions, 'maxCachedSessions'> = {},
): HttpsAgent {
  const agent = new HttpsAgent({ ...agentOptions, maxCachedSessions: 0 })
  const createConnection = (options: tls.ConnectionOptions, cb?: () => void): tls.TLSSocket => {
    let peer: VerifiedPeer | undefined
    const { session: _session, ...rest } = options
    const socket = tls.connect({ ...rest, ...mtlsClientOptions(source, authorizer, { onPeer: (p) => (peer = p) }) }, cb)
    socket.once('secureConnect', () => {
      if (peer) peers.set(socket, peer)
    })
    return socket
  }
  ;(agent as unknown as { createConnection: typeof createConnection }).createConnection = createConnection
  return agent
}

export interface ServeMtlsOptions {
  log?: Logger
  /** Called with each refusal (after it is logged), e.g. for metrics. */
  onRefused?: (err: unknown, socket: tls.TLSSocket) => void
  /** Time for certificate validity checks (tests). Default: now. */
  now?: () => Date
}

export interface MtlsBinding {
  /** Stops following rotation (the server keeps its current context). The peer check stays for the server's life: it fails closed. */
  close(): void
}

/**
 * Makes `server` (a tls.Server or https.Server created with
 * `mtlsServerOptions`) a SPIFFE mutual-TLS server: every connection's client
 * chain must verify against the bundle of the client's own trust domain and
 * `authorizer` must allow its ID, checked synchronously before any
 * 'secureConnection' listener (an https.Server's HTTP parser included) sees
 * it (the server's `emit` is wrapped, so no listener receives a refused socket); a refused connection is destroyed at once and the reason logged (the
 * peer learns nothing). On every source update the server's secure context
 * moves to the new SVID and bundles (`setSecureContext`).
 */
export function serveMtls(server: tls.Server, source: X509Source, authorizer: Authorizer, opts: ServeMtlsOptions = {}): MtlsBinding {
  if (typeof authorizer !== 'function') throw new TypeError('authorizer must be a function')
  const log = (opts.log ?? nullLogger).child({ subsystem: 'mtls_server' })
  const now = opts.now ?? (() => new Date())
  const admit = (socket: tls.TLSSocket): boolean => {
    try {
      peers.set(socket, checkPeer(socket, source, authorizer, now))
      return true
    } catch (err) {
      const code = err instanceof IdentityError ? err.code : 'ERR_INTERNAL'
      log.warn(
        { error_code: code, err: err instanceof Error ? err.message : String(err), peer: `${socket.remoteAddress ?? ''}:${socket.remotePort ?? ''}` },
        'Mutual TLS peer refused',
      )
      socket.destroy()
      try {
        opts.onRefused?.(err, socket)
      } catch {
        // a failing observer must not let the connection through (it is already destroyed)
      }
      return false
    }
  }
  const onUpdate = () => {
    const m = material(source)
    server.setSecureContext({ cert: m.cert, key: m.key, ca: m.ca, minVersion: MIN_VERSION })
    log.debug({ spiffe_id: source.getX509Svid().id.toString() }, 'Server TLS context rotated')
  }
  // 'secureConnection' reaches no listener (an https.Server's HTTP parser, fastify, the application) unless admitted.
  const emit = server.emit
  server.emit = function (this: tls.Server, event: string | symbol, ...args: unknown[]): boolean {
    if (event === 'secureConnection' && !admit(args[0] as tls.TLSSocket)) return false
    return (emit as (this: tls.Server, e: string | symbol, ...a: unknown[]) => boolean).call(this, event, ...args)
  } as typeof server.emit
  source.on('update', onUpdate)
  return {
    close() {
      source.off('update', onUpdate)
    },
  }
}

/** A tls.Server serving mutual TLS on the source's SVID (see `serveMtls`); the binding ends when the server closes. */
export function createMtlsServer(
  source: X509Source,
  authorizer: Authorizer,
  listener?: (socket: tls.TLSSocket) => void,
  opts: ServeMtlsOptions = {},
): tls.Server {
  const server = tls.createServer(mtlsServerOptions(source))
  const binding = serveMtls(server, source, authorizer, opts)
  if (listener) server.on('secureConnection', listener)
  server.once('close', () => binding.close())
  return server
}

/** An https.Server serving mutual TLS on the source's SVID (see `serveMtls`); `peerOf(req.socket)` names the client. */
export function createMtlsHttpsServer(
  source: X509Source,
  authorizer: Authorizer,
  requestListener?: (req: IncomingMessage, res: ServerResponse) => void,
  opts: ServeMtlsOptions = {},
): HttpsServer {
  const server = createHttpsServer(mtlsServerOptions(source), requestListener)
  const binding = serveMtls(server, source, authorizer, opts)
  server.once('close', () => binding.close())
  return server
}
