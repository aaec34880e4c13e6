import 'reflect-metadata'
import https from 'node:https'
import type { IncomingHttpHeaders } from 'node:http'
import { toPemBlock } from '../../src/common/crypto/pem.js'
import { IdentityError } from '../../src/errors/identity-error.js'
import { BundleSet } from '../../src/spiffe/bundle/bundle-set.js'
import { JwtBundle } from '../../src/spiffe/bundle/jwt-bundle.js'
import { SpiffeBundle } from '../../src/spiffe/bundle/spiffe-bundle.js'
import { generateKeyPair, KeyObjectSigner } from '../../src/spiffe/key-signer.js'
import { mintJwtSvid } from '../../src/spiffe/jwt-svid/mint-jwt-svid.js'
import { SpiffeId } from '../../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../../src/spiffe/trust-domain.js'
import { createCaCertificate, createX509Svid } from '../../src/spiffe/x509-svid/index.js'
import type { AuthenticatedClient, BrokerService, KeyBinding, Task, TaskSpec, TokenRequest } from '../../src/broker/contract.js'
import type { BrokerHttpConfig } from '../../src/broker/http/broker-http-server.js'
import type { StoredRevocation } from '../../src/broker/store/broker-store.js'
import type { RevocationRequest } from '../../src/broker/revocations.js'

/** Test PKI and a recording fake BrokerService for the broker's wire tests (unit and integration). */

const HOUR = 3_600_000

export interface Ca {
  td: TrustDomain
  certificate: Uint8Array
  signer: KeyObjectSigner
  /** The trust domain's JWT-SVID signing key. */
  jwt: { signer: KeyObjectSigner; kid: string; jwk: import('node:crypto').JsonWebKey }
}

export function pem(der: Uint8Array): string {
  return toPemBlock('CERTIFICATE', der)
}

export async function makeCa(td: string): Promise<Ca> {
  const kp = generateKeyPair('ec-p256')
  const signer = new KeyObjectSigner(kp.privateKey)
  const certificate = await createCaCertificate({
    trustDomain: TrustDomain.fromString(td),
    publicKey: kp.publicKey,
    signer,
    notBefore: new Date(Date.now() - HOUR),
    notAfter: new Date(Date.now() + 24 * HOUR),
  })
  const jkp = generateKeyPair('ec-p256')
  const jwk = jkp.publicKey.export({ format: 'jwk' })
  return { td: TrustDomain.fromString(td), certificate, signer, jwt: { signer: new KeyObjectSigner(jkp.privateKey), kid: `${td}-jwt-1`, jwk } }
}

export interface Svid {
  id: string
  certDer: Uint8Array
  certPem: string
  keyPem: string
}

export async function makeSvid(ca: Ca, id: string, opts: { dnsNames?: string[]; notAfter?: Date } = {}): Promise<Svid> {
  const kp = generateKeyPair('ec-p256')
  const certDer = await createX509Svid({
    spiffeId: SpiffeId.fromString(id),
    publicKey: kp.publicKey,
    signer: ca.signer,
    issuer: { certificate: ca.certificate },
    notAfter: opts.notAfter ?? new Date(Date.now() + HOUR),
    ...(opts.dnsNames ? { dnsNames: opts.dnsNames } : {}),
  })
  return { id, certDer, certPem: pem(certDer), keyPem: kp.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string }
}

export async function jwtSvid(
  ca: Ca,
  id: string,
  audience: string[],
  opts: { ttlSec?: number; iatOffsetSec?: number; jti?: string; signer?: KeyObjectSigner } = {},
): Promise<string> {
  const now = Date.now()
  const iat = new Date(now + (opts.iatOffsetSec ?? 0) * 1000)
  return mintJwtSvid({
    spiffeId: SpiffeId.fromString(id),
    audience,
    issuedAt: iat,
    expiresAt: new Date(iat.getTime() + (opts.ttlSec ?? 120) * 1000),
    signer: opts.signer ?? ca.jwt.signer,
    kid: ca.jwt.kid,
    ...(opts.jti !== undefined ? { extraClaims: { jti: opts.jti } } : {}),
  })
}

export function bundlesOf(cas: Ca[]): BundleSet {
  return new BundleSet(
    cas.map((c) => SpiffeBundle.from({ trustDomain: c.td, x509Authorities: [c.certificate], jwtAuthorities: new Map([[c.jwt.kid, c.jwt.jwk]]) })),
  )
}

export function jwtBundle(ca: Ca): JwtBundle {
  return new JwtBundle(ca.td, [[ca.jwt.kid, ca.jwt.jwk]])
}

export function httpConfig(o: Partial<BrokerHttpConfig> = {}): BrokerHttpConfig {
  return {
    issuer: 'https://localhost:0',
    bindAddress: { host: '127.0.0.1', port: 0 },
    introspectors: { ids: ['spiffe://example.org/rs'], prefixes: [] },
    orchestrators: { ids: [], prefixes: ['spiffe://example.org/orch/'] },
    federatedTrustDomains: [],
    maxAssertionLifetimeSeconds: 300,
    dpop: { nonceRequired: true, iatWindowSeconds: 60, algorithms: ['ES256', 'EdDSA', 'Ed25519'], nonceTtlSeconds: 300 },
    limits: { bodyBytes: 16 * 1024, headerBytes: 8 * 1024, maxConnectionsPerAddress: 64, requestTimeoutMs: 10_000 },
    ...o,
  }
}

export interface Call {
  method: string
  args: unknown[]
}

/** A BrokerService that records what the wire handed it; `fail` makes the next token call throw. */
export function fakeService(issuer = 'https://localhost:0'): BrokerService & { calls: Call[]; fail: Error | undefined; tasks: Map<string, Task> } {
  const calls: Call[] = []
  const tasks = new Map<string, Task>()
  let n = 0
  const revocations: StoredRevocation[] = []
  const revListeners = new Set<(e: StoredRevocation) => void>()
  let revSeq = 0
  const svc = {
    issuer,
    calls,
    fail: undefined as Error | undefined,
    tasks,
    async token(req: TokenRequest, client: AuthenticatedClient, binding: KeyBinding) {
      calls.push({ method: 'token', args: [req, client, binding] })
      if (svc.fail) {
        const f = svc.fail
        svc.fail = undefined
        throw f
      }
      return {
        access_token: `at-${++n}`,
        issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
        token_type: binding.kind === 'dpop' ? ('DPoP' as const) : ('Bearer' as const),
        expires_in: 300,
        scope: (req.scopes ?? []).join(' '),
      }
    },
    async introspect(token: string, caller: AuthenticatedClient) {
      calls.push({ method: 'introspect', args: [token, caller] })
      return token.startsWith('at-') ? { active: true as const, sub: 'spiffe://example.org/agent', scope: 'read' } : { active: false as const }
    },
    async revoke(token: string, caller: AuthenticatedClient) {
      calls.push({ method: 'revoke', args: [token, caller] })
    },
    async jwks() {
      return { keys: [{ kty: 'EC', crv: 'P-256', x: 'x', y: 'y', kid: 'k1', use: 'sig', alg: 'ES256' }] }
    },
    async createTask(spec: TaskSpec, creator: AuthenticatedClient | 'admin') {
      calls.push({ method: 'createTask', args: [spec, creator] })
      // The domain keeps task times in seconds, like the tokens' iat and exp.
      const now = Math.floor(Date.now() / 1000)
      const t: Task = {
        taskId: spec.taskId ?? `task-${++n}`,
        ...(spec.orchestrationId ? { orchestrationId: spec.orchestrationId } : {}),
        agent: spec.agent,
        scopes: spec.scopes,
        resources: spec.resources,
        ttlSeconds: spec.ttlSeconds,
        maxRenewals: spec.maxRenewals,
        createdBy: creator === 'admin' ? 'admin' : creator.spiffeId,
        createdAt: now,
        expiresAt: now + spec.ttlSeconds,
      }
      if (tasks.has(t.taskId)) throw new IdentityError('ERR_ALREADY_EXISTS', 'task exists')
      tasks.set(t.taskId, t)
      return t
    },
    async getTask(id: string) {
      const t = tasks.get(id)
      if (!t) throw new IdentityError('ERR_TASK_NOT_FOUND', 'task not found')
      return t
    },
    async listTasks(filter?: { agent?: string; orchestrationId?: string; includeEnded?: boolean }) {
      calls.push({ method: 'listTasks', args: [filter] })
      return [...tasks.values()].filter((t) => (filter?.includeEnded ? true : t.endedAt === undefined))
    },
    async endTask(id: string, by: AuthenticatedClient | 'admin') {
      calls.push({ method: 'endTask', args: [id, by] })
      const t = tasks.get(id)
      if (!t) throw new IdentityError('ERR_TASK_NOT_FOUND', 'task not found')
      if (t.endedAt !== undefined) throw new IdentityError('ERR_TASK_ENDED', 'task ended')
      const e = { ...t, endedAt: Date.now() }
      tasks.set(id, e)
      return e
    },
    async revokeAt(req: RevocationRequest, by: AuthenticatedClient | 'admin') {
      calls.push({ method: 'revokeAt', args: [req, by] })
      if (svc.fail) throw svc.fail
      const entry = { seq: ++revSeq, kind: req.kind, value: req.value, createdBy: by === 'admin' ? 'admin' : by.spiffeId, createdAt: 1, expiresAt: 2 ** 31 }
      revocations.push(entry)
      for (const fn of revListeners) fn(entry)
      return { entry, created: true, tokens: 0 }
    },
    async listRevocations(since = 0) {
      calls.push({ method: 'listRevocations', args: [since] })
      return revocations.filter((e) => e.seq > since)
    },
    async signedRevocationList() {
      return 'unsigned.list.fake'
    },
    onRevocation(fn: (e: StoredRevocation) => void) {
      revListeners.add(fn)
      return () => revListeners.delete(fn)
    },
    async close() {},
  }
  return svc
}

export interface Res {
  status: number
  headers: IncomingHttpHeaders
  body: string
  json(): Record<string, unknown>
}

/** One HTTPS request on a fresh connection, optionally with a client certificate. */
export function request(
  url: string,
  o: {
    method?: string
    headers?: Record<string, string | string[]>
    body?: string
    client?: Svid
    ca: string
    minVersion?: 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3'
    maxVersion?: 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3'
  },
): Promise<Res> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      url,
      {
        method: o.method ?? 'GET',
        headers: o.headers ?? {},
        ca: o.ca,
        agent: false,
        ...(o.client ? { cert: o.client.certPem, key: o.client.keyPem } : {}),
        ...(o.minVersion ? { minVersion: o.minVersion } : {}),
        ...(o.maxVersion ? { maxVersion: o.maxVersion } : {}),
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => {
          const body = Buffer.concat(chunks).toString('utf8')
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json: () => JSON.parse(body) as Record<string, unknown> })
        })
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    if (o.body !== undefined) req.write(o.body)
    req.end()
  })
}

export function form(params: Record<string, string | string[]>): string {
  const p = new URLSearchParams()
  for (const [k, v] of Object.entries(params)) for (const x of Array.isArray(v) ? v : [v]) p.append(k, x)
  return p.toString()
}
