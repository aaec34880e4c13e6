import net from 'node:net'
import { webcrypto } from 'node:crypto'
import { join } from 'node:path'
import { decodeJwt, exportJWK } from 'jose'
import { expect } from 'vitest'
import { startBrokerHttpServer, type BrokerHttpServer } from '../../src/broker/http/broker-http-server.js'
import { boundsCeilingSource } from '../../src/broker/ports.js'
import { createBrokerService, type BrokerServiceImpl } from '../../src/broker/service.js'
import { MemoryKeyManager } from '../../src/keymanager/memory/index.js'
import { BoundsSet } from '../../src/spiffe/bounds/bounds-set.js'
import { TrustDomain } from '../../src/spiffe/trust-domain.js'
import { createDpopProof, jwkThumbprint } from '../../src/tokens/dpop.js'
import { captureLogger } from './capture-logger.js'
import { bundlesOf, form, httpConfig, jwtSvid, makeCa, makeSvid, pem, request, type Ca, type Res, type Svid } from './broker-http-fixtures.js'
import { tempDir } from './temp.js'

/**
 * The real broker (domain, SQLite store, memory signing key) behind its real
 * HTTPS wire, and clients that authenticate by X.509-SVID over mutual TLS and
 * prove DPoP keys (answering `use_dpop_nonce`): for wire tests of exchange,
 * delegation, introspection and revocation.
 */

export const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange'
export const AT = 'urn:ietf:params:oauth:token-type:access_token'
export const JWT = 'urn:ietf:params:oauth:token-type:jwt'
export const JWT_SVID = 'urn:ietf:params:oauth:token-type:jwt-svid'
export const API = 'https://api.example.org'
export const A = 'spiffe://example.org/agents/a'
export const B = 'spiffe://example.org/agents/b'
export const C = 'spiffe://example.org/agents/c'
export const D = 'spiffe://example.org/agents/d'
export const TOOL = 'spiffe://example.org/tools/x'
export const RS = 'spiffe://example.org/rs'
export const BOUNDS = {
  '/agents': {
    scopes: ['read', 'write'],
    resources: [API],
    max_token_ttl: 600,
    max_renewals: 3,
    max_delegation_depth: 2,
    may_delegate_to: ['spiffe://example.org/agents/'],
  },
  '/tools': { scopes: ['read'], resources: [API] },
}
const TD = TrustDomain.fromString('example.org')
const FORM = { 'content-type': 'application/x-www-form-urlencoded' }

export type KeyPair = webcrypto.CryptoKeyPair
export const newKey = async (): Promise<KeyPair> => await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify'])
export const jktOf = async (k: KeyPair): Promise<string> => jwkThumbprint(await exportJWK(k.publicKey))

async function freePort(): Promise<number> {
  const s = net.createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))
  const port = (s.address() as net.AddressInfo).port
  await new Promise<void>((r) => s.close(() => r()))
  return port
}

export interface BrokerWire {
  readonly ca: Ca
  readonly issuer: string
  readonly svc: BrokerServiceImpl
  readonly svids: Record<string, Svid>
  /** Replaces the bounds the ceilings come from (undefined: BOUNDS). */
  setBounds(raw?: unknown): void
  /** POST to an endpoint path as `client` (mutual TLS), with a DPoP proof of `key` when given. */
  post(path: '/token' | '/introspect' | '/revoke', client: string, params: Record<string, string>, key?: KeyPair): Promise<Res>
  /** A JWT-SVID of `id` for the broker (or `audience`). */
  jwtSvid(id: string, opts?: { audience?: string[]; ttlSec?: number; iatOffsetSec?: number }): Promise<string>
  /** A task for `agent` (default: every agent under /agents/), and `client`'s DPoP-bound client_credentials token for it. */
  rootToken(key: KeyPair, opts?: { client?: string; agent?: string; scope?: string; ttlSeconds?: number }): Promise<string>
  /** The holder of `subject` (proving `key`) asks for a one-time grant naming `to`. */
  grantFor(holder: string, subject: string, key: KeyPair, to: string, extra?: Record<string, string>): Promise<string>
  close(): Promise<void>
}

/** Expects a 200 and returns the JSON body. */
export function ok(res: Res): Record<string, unknown> {
  expect({ status: res.status, body: res.status === 200 ? 'ok' : res.body }).toEqual({ status: 200, body: 'ok' })
  return res.json()
}

/** The RFC 8693 request redeeming `grant` with an actor token. */
export const redeem = (grant: string, actorToken: string, actorTokenType = JWT, extra: Record<string, string> = {}): Record<string, string> => ({
  grant_type: TOKEN_EXCHANGE,
  subject_token: grant,
  subject_token_type: JWT,
  actor_token: actorToken,
  actor_token_type: actorTokenType,
  ...extra,
})

export async function startBrokerWire(): Promise<BrokerWire> {
  const tmp = tempDir('wbw-')
  const ca = await makeCa('example.org')
  const bundles = bundlesOf([ca])
  let bounds = BoundsSet.parse(TD, BOUNDS)
  const svids: Record<string, Svid> = {}
  for (const id of [A, B, C, D, TOOL, RS]) svids[id] = await makeSvid(ca, id)
  const serverSvid = await makeSvid(ca, 'spiffe://example.org/warrant/broker', { dnsNames: ['localhost'] })
  const caPem = pem(ca.certificate)
  const port = await freePort()
  const issuer = `https://localhost:${port}`
  const svc = await createBrokerService(
    { keyManager: new MemoryKeyManager(), ceilings: boundsCeilingSource(() => bounds), jwtBundles: bundles, log: captureLogger() },
    { issuer, storePath: join(tmp.dir, 'broker.db'), introspectors: [RS], revocationAdmins: [TOOL] },
  )
  let broker: BrokerHttpServer
  try {
    broker = await startBrokerHttpServer({
      service: svc,
      config: httpConfig({ issuer, bindAddress: { host: '127.0.0.1', port }, introspectors: { ids: [RS], prefixes: [] } }),
      trust: { localTrustDomain: () => TD, bundles: () => bundles, version: () => bundles },
      identity: { current: () => ({ certChainPem: serverSvid.certPem, keyPem: serverSvid.keyPem }), onChange: () => () => undefined },
      log: captureLogger(),
    })
  } catch (err) {
    await svc.close()
    tmp.cleanup()
    throw err
  }
  let nonce: string | undefined
  let taskN = 0
  const post: BrokerWire['post'] = async (path, client, params, key) => {
    const url = `${issuer}${path}`
    const send = async () => {
      const headers: Record<string, string> = { ...FORM }
      if (key) headers.dpop = await createDpopProof(key, { method: 'POST', url, ...(nonce !== undefined ? { nonce } : {}) })
      const res = await request(url, { method: 'POST', headers, body: form(params), client: svids[client]!, ca: caPem })
      const n = res.headers['dpop-nonce']
      if (typeof n === 'string') nonce = n
      return res
    }
    const res = await send()
    return key && res.status === 400 && res.json().error === 'use_dpop_nonce' ? send() : res
  }
  const wire: BrokerWire = {
    ca,
    issuer,
    svc,
    svids,
    setBounds: (raw = BOUNDS) => {
      bounds = BoundsSet.parse(TD, raw)
    },
    post,
    jwtSvid: (id, opts = {}) =>
      jwtSvid(ca, id, opts.audience ?? [issuer], {
        ...(opts.ttlSec !== undefined ? { ttlSec: opts.ttlSec } : {}),
        ...(opts.iatOffsetSec !== undefined ? { iatOffsetSec: opts.iatOffsetSec } : {}),
      }),
    rootToken: async (key, opts = {}) => {
      const t = await svc.createTask(
        {
          taskId: `t${++taskN}`,
          agent: opts.agent ?? 'spiffe://example.org/agents/',
          scopes: ['read', 'write'],
          resources: [API],
          ttlSeconds: opts.ttlSeconds ?? 3600,
          maxRenewals: 3,
        },
        'admin',
      )
      return ok(await post('/token', opts.client ?? A, { grant_type: 'client_credentials', task_id: t.taskId, scope: opts.scope ?? 'read write' }, key))
        .access_token as string
    },
    grantFor: async (holder, subject, key, to, extra = {}) => {
      const r = ok(await post('/token', holder, { grant_type: TOKEN_EXCHANGE, subject_token: subject, subject_token_type: AT, may_act: to, ...extra }, key))
      expect(r).toMatchObject({ issued_token_type: JWT, token_type: 'N_A' })
      expect(decodeJwt(r.access_token as string).may_act).toEqual({ sub: to })
      return r.access_token as string
    },
    close: async () => {
      await broker.close()
      await svc.close()
      tmp.cleanup()
    },
  }
  return wire
}
