import { createServer, type Server } from 'node:https'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { createSecureContext, type SecureContext } from 'node:tls'
import { F, type Logger } from '../../common/log/logger.js'
import { IdentityError } from '../../errors/identity-error.js'
import type { SpiffeBundle } from '../../spiffe/bundle/spiffe-bundle.js'

/**
 * Mozilla "intermediate" (v5.7): TLS 1.3 suites, then ECDHE with AEAD for TLS 1.2.
 * DHE suites are left out: Node has no DH parameters configured by default.
 */
export const MOZILLA_INTERMEDIATE_CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':')

/** The refresh hint served when neither the bundle nor the options carry one (SPIRE: 5 min). */
export const DEFAULT_REFRESH_HINT_SECONDS = 300

export interface ServerCredentials {
  /** Leaf first, then intermediates. */
  certChainPem: string
  keyPem: string
}

export type BundleEndpointProfile =
  | { kind: 'https_spiffe'; getServerSvid: () => ServerCredentials }
  /**
   * Web PKI certificate and key, loaded per new connection (the composition
   * root reads the configured files, so a replaced file is picked up at once).
   */
  | { kind: 'https_web'; loadCredentials: () => ServerCredentials }

export interface BundleEndpointOptions {
  /** `host:port`, `[v6]:port` or `:port` (all IPv4 interfaces); port 0 picks a free port. */
  address: string
  profile: BundleEndpointProfile
  /** The current local bundle (called per request). */
  getBundle: () => SpiffeBundle | Promise<SpiffeBundle>
  log: Logger
  /** Overrides the bundle's `spiffe_refresh_hint`; default: the bundle's, else 300 s. */
  refreshHintSeconds?: number
}

export interface BundleEndpoint {
  readonly port: number
  readonly host: string
  close(): Promise<void>
}

export function parseAddress(address: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(address)
  const port = m ? Number(m[3]) : NaN
  if (!m || port > 65535) throw new IdentityError('ERR_CONFIG_INVALID', `bundle endpoint address "${address}" must be host:port`)
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port }
}

const TLS_OPTIONS = {
  minVersion: 'TLSv1.2',
  ciphers: MOZILLA_INTERMEDIATE_CIPHERS,
  honorCipherOrder: false,
  requestCert: false,
  rejectUnauthorized: false,
} as const

/**
 * Serves the local SPIFFE bundle (SPIFFE Federation §4/§5) over HTTPS: `GET /`
 * only, `application/json`, TLS 1.2+, no client authentication. The server
 * credentials are looked up for every new connection (a rotated server SVID or
 * replaced certificate files are used without a restart).
 */
export async function startBundleEndpoint(o: BundleEndpointOptions): Promise<BundleEndpoint> {
  const { host, port } = parseAddress(o.address)
  const log = o.log.child({ [F.SUBSYSTEM]: 'bundle_endpoint' })
  if (o.refreshHintSeconds !== undefined && (!Number.isSafeInteger(o.refreshHintSeconds) || o.refreshHintSeconds <= 0)) {
    throw new RangeError('refreshHintSeconds must be a positive integer')
  }
  const creds = credentialSource(o.profile)
  let current = creds.load()

  const server: Server = createServer(
    {
      ...TLS_OPTIONS,
      cert: current.material.certChainPem,
      key: current.material.keyPem,
      SNICallback: (_name, cb) => {
        try {
          cb(null, refresh().context)
        } catch (err) {
          cb(err as Error)
        }
      },
    },
    (req, res) => void handle(req, res),
  )
  server.requestTimeout = 10_000
  server.headersTimeout = 5_000
  server.keepAliveTimeout = 5_000

  function refresh(): Loaded {
    try {
      const next = creds.load(current)
      if (next !== current) {
        current = next
        server.setSecureContext({ ...TLS_OPTIONS, cert: next.material.certChainPem, key: next.material.keyPem })
        log.info({}, 'Bundle endpoint credentials reloaded')
      }
    } catch (err) {
      log.error({ [F.ERR]: describe(err) }, 'Bundle endpoint credentials cannot be loaded; keeping the previous ones')
    }
    return current
  }
  // Before the TLS layer's own 'connection' listener: new connections get fresh credentials.
  server.prependListener('connection', () => {
    refresh()
  })

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    req.resume()
    if (req.method !== 'GET') {
      res.writeHead(405, { Allow: 'GET', 'Content-Type': 'text/plain; charset=utf-8' }).end('method is not allowed\n')
      return
    }
    const path = (req.url ?? '').split('?')[0]
    if (path !== '/') {
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' }).end('not found\n')
      return
    }
    try {
      let bundle = await o.getBundle()
      const hint = o.refreshHintSeconds ?? bundle.refreshHintSeconds ?? DEFAULT_REFRESH_HINT_SECONDS
      if (bundle.refreshHintSeconds !== hint) bundle = bundle.withRefreshHint(hint)
      const body = Buffer.from(bundle.marshal({ indent: 4 }), 'utf8')
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': body.length, 'Cache-Control': 'no-store' }).end(body)
      log.debug({ [F.PEER]: req.socket.remoteAddress, sequence: bundle.sequenceNumber }, 'Bundle served')
    } catch (err) {
      log.error({ [F.ERR]: describe(err) }, 'Bundle cannot be served')
      if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' }).end('internal error\n')
    }
  }

  const sockets = new Set<Socket>()
  server.on('connection', (s: Socket) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  server.on('tlsClientError', (err) => log.debug({ [F.ERR]: describe(err) }, 'Bundle endpoint TLS handshake failed'))

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const addr = server.address()
  const boundPort = typeof addr === 'object' && addr ? addr.port : port
  log.info({ [F.ADDRESS]: `${host}:${boundPort}`, profile: o.profile.kind }, 'Bundle endpoint listening')
  let closed: Promise<void> | undefined
  return {
    port: boundPort,
    host,
    close() {
      closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve())
        for (const s of sockets) s.destroy()
        server.closeAllConnections()
      })
      return closed
    },
  }
}

interface Loaded {
  material: ServerCredentials
  context: SecureContext
  /** Change detector: the PEM text. */
  stamp: string
}

interface CredentialSource {
  /** Returns `prev` itself when nothing changed. */
  load(prev?: Loaded): Loaded
}

function credentialSource(p: BundleEndpointProfile): CredentialSource {
  const build = (material: ServerCredentials, stamp: string): Loaded => ({
    material,
    stamp,
    context: createSecureContext({ ...TLS_OPTIONS, cert: material.certChainPem, key: material.keyPem }),
  })
  switch (p.kind) {
    case 'https_spiffe':
      return {
        load(prev) {
          const m = p.getServerSvid()
          const stamp = `${m.certChainPem}\n${m.keyPem}`
          return prev && prev.stamp === stamp ? prev : build(m, stamp)
        },
      }
    case 'https_web':
      return {
        load(prev) {
          const material = p.loadCredentials()
          const stamp = `${material.certChainPem}\n${material.keyPem}`
          return prev && prev.stamp === stamp ? prev : build(material, stamp)
        },
      }
    default:
      throw new TypeError(`unknown bundle endpoint profile ${String((p as { kind: unknown }).kind)}`)
  }
}

function describe(err: unknown): Record<string, unknown> | string {
  if (err instanceof IdentityError) return { code: err.code, message: err.message }
  if (err instanceof Error) return { type: err.name, message: err.message }
  return String(err)
}
