import type { AuditSink } from '../../../src/audit/sink.js'
import { createHash, randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { createLocalJWKSet, jwtVerify, type JWTPayload } from 'jose'
import { boundsCeilingSource, type BrokerDeps } from '../../../src/broker/ports.js'
import { createBrokerService, type BrokerServiceImpl, type BrokerServiceOptions } from '../../../src/broker/service.js'
import type { AuthenticatedClient, KeyBinding, TokenRequest } from '../../../src/broker/contract.js'
import type { KeyManager } from '../../../src/keymanager/key-manager.js'
import { MemoryKeyManager } from '../../../src/keymanager/memory/index.js'
import { BoundsSet } from '../../../src/spiffe/bounds/bounds-set.js'
import { JwtBundle } from '../../../src/spiffe/bundle/jwt-bundle.js'
import { mintJwtSvid } from '../../../src/spiffe/jwt-svid/mint-jwt-svid.js'
import { generateKeyPair, KeyObjectSigner } from '../../../src/spiffe/key-signer.js'
import { SpiffeId } from '../../../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../../../src/spiffe/trust-domain.js'
import { GRANT_TYPE, TOKEN_TYPE } from '../../../src/tokens/claims.js'
import { captureLogger } from '../../helpers/capture-logger.js'
import { FakeClock } from '../../helpers/fake-clock.js'
import { tempDir } from '../../helpers/temp.js'

export const ISSUER = 'https://broker.corp.example'
export const td = TrustDomain.fromString('corp.example')
export const API = 'https://api.corp.example'
export const LEDGER = 'https://ledger.corp.example'
export const OTHER = 'https://other.corp.example'

export const A = 'spiffe://corp.example/agents/a'
export const B = 'spiffe://corp.example/agents/b'
export const C = 'spiffe://corp.example/agents/c'
export const OUTSIDER = 'spiffe://corp.example/tools/x'
export const ORCH = 'spiffe://corp.example/orch/o1'
export const RS = 'spiffe://corp.example/rs/api'
export const ADMIN = 'spiffe://corp.example/admin/ops'

export const BOUNDS = {
  '/agents': {
    scopes: ['read', 'write', 'admin'],
    resources: [API, LEDGER, OTHER],
    max_token_ttl: 600,
    max_renewals: 3,
    max_delegation_depth: 2,
    may_delegate_to: ['spiffe://corp.example/agents/'],
  },
  '/agents/c': { scopes: ['read'] },
  '/open': { scopes: ['read'], resources: [API], allow_bearer: true },
}

export const client = (spiffeId: string, extra: Partial<AuthenticatedClient> = {}): AuthenticatedClient => ({ spiffeId, method: 'jwt-spiffe', ...extra })
export const dpop = (seed = randomBytes(8).toString('hex')): KeyBinding & { kind: 'dpop' } => ({
  kind: 'dpop',
  jkt: createHash('sha256').update(seed).digest('base64url'),
})
export const bearer: KeyBinding = { kind: 'bearer' }

export const cc = (taskId: string | undefined, extra: Partial<TokenRequest> = {}): TokenRequest => ({
  grantType: GRANT_TYPE.clientCredentials,
  resources: [],
  audiences: [],
  ...(taskId !== undefined ? { taskId } : {}),
  ...extra,
})

export const exchange = (subjectToken: string, extra: Partial<TokenRequest> = {}): TokenRequest => ({
  grantType: GRANT_TYPE.tokenExchange,
  subjectToken,
  subjectTokenType: TOKEN_TYPE.accessToken,
  resources: [],
  audiences: [],
  ...extra,
})

export interface Fixture {
  svc: BrokerServiceImpl
  /** Closes the service and opens a new one on the same store (a restart); `svc` becomes the new one. */
  reopen(): Promise<BrokerServiceImpl>
  clock: FakeClock
  log: ReturnType<typeof captureLogger>
  km: KeyManager
  dir: string
  /** Replace the bounds (as an operator would). */
  setBounds(raw: unknown): void
  /** A JWT-SVID for `id` signed by the trust domain's JWT authority. */
  jwtSvid(id: string, audience?: string[], ttlSeconds?: number): Promise<string>
  /** Verifies a broker token with jose against the broker's JWKS. */
  verify(token: string, typ?: string): Promise<JWTPayload>
  task(
    extra?: Partial<{ taskId: string; agent: string; scopes: string[]; resources: string[]; ttlSeconds: number; maxRenewals: number; orchestrationId: string }>,
  ): Promise<string>
  cleanup(): Promise<void>
}

export async function fixture(
  opts: Partial<BrokerServiceOptions> & { km?: KeyManager; audit?: AuditSink; userTokens?: BrokerDeps['userTokens']; stepUps?: BrokerDeps['stepUps'] } = {},
): Promise<Fixture> {
  const { dir, cleanup } = tempDir('wb-')
  const clock = new FakeClock(Date.UTC(2026, 0, 1, 12))
  const log = captureLogger()
  let set = BoundsSet.parse(td, BOUNDS)
  const { privateKey } = generateKeyPair('ec-p256')
  const svidSigner = new KeyObjectSigner(privateKey)
  const bundle = new JwtBundle(td, new Map([['td-jwt-1', svidSigner.publicKey.export({ format: 'jwk' })]]))
  const km = opts.km ?? new MemoryKeyManager()
  const { km: _km, audit, userTokens, stepUps, ...rest } = opts
  const open = () =>
    createBrokerService(
      {
        keyManager: km,
        ceilings: boundsCeilingSource(() => set),
        jwtBundles: { getJwtBundleForTrustDomain: () => bundle },
        clock,
        log,
        ...(audit ? { audit } : {}),
        ...(userTokens ? { userTokens } : {}),
        ...(stepUps ? { stepUps } : {}),
      },
      {
        issuer: ISSUER,
        storePath: join(dir, 'broker.db'),
        orchestrators: [ORCH],
        introspectors: ['spiffe://corp.example/rs/'],
        revocationAdmins: [ADMIN],
        ...rest,
      },
    )
  const svc = await open()
  let n = 0
  const fx: Fixture = {
    svc,
    reopen: async () => {
      await fx.svc.close()
      fx.svc = await open()
      return fx.svc
    },
    clock,
    log,
    km,
    dir,
    setBounds: (raw) => {
      set = BoundsSet.parse(td, raw)
    },
    jwtSvid: (id, audience = [ISSUER], ttl = 120) =>
      mintJwtSvid({
        spiffeId: SpiffeId.fromString(id),
        audience,
        issuedAt: new Date(clock.now()),
        expiresAt: new Date(clock.now() + ttl * 1000),
        signer: svidSigner,
        kid: 'td-jwt-1',
      }),
    verify: async (token, typ = 'at+jwt') => {
      const jwks = createLocalJWKSet(await svc.jwks())
      return (await jwtVerify(token, jwks, { issuer: ISSUER, typ, currentDate: new Date(clock.now()) })).payload
    },
    task: async (extra = {}) => {
      const t = await svc.createTask(
        {
          taskId: extra.taskId ?? `t${++n}`,
          agent: extra.agent ?? A,
          scopes: extra.scopes ?? ['read', 'write'],
          resources: extra.resources ?? [API, LEDGER],
          ttlSeconds: extra.ttlSeconds ?? 3600,
          maxRenewals: extra.maxRenewals ?? 2,
          ...(extra.orchestrationId ? { orchestrationId: extra.orchestrationId } : {}),
        },
        'admin',
      )
      return t.taskId
    },
    cleanup: async () => {
      await fx.svc.close()
      cleanup()
    },
  }
  return fx
}

/** Runs `fn`, expects an IdentityError with `code`, returns it. */
export async function refused(fn: () => Promise<unknown>, code: string): Promise<Error & { code: string }> {
  try {
    await fn()
  } catch (err) {
    if ((err as { code?: string }).code !== code) throw err
    return err as Error & { code: string }
  }
  throw new Error(`expected ${code}, but the call succeeded`)
}
