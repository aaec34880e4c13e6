import { delegationChainHash, type AuditEventInput, type AuditEventType } from '../audit/event.js'
import { createHash, randomUUID } from 'node:crypto'
import { compactVerify, decodeProtectedHeader } from 'jose'
import { systemClock, type Clock } from '../common/clock.js'
import { F, nullLogger, type Logger } from '../common/log/logger.js'
import type { ErrorCode } from '../errors/codes.js'
import { IdentityError } from '../errors/identity-error.js'
import { resourceProblem } from '../spiffe/bounds/bounds.js'
import { checkCeiling, describeCeilingFailure, type Ceiling } from '../spiffe/bounds/ceiling.js'
import { validateJwtSvid } from '../spiffe/jwt-svid/validate-jwt-svid.js'
import { SpiffeId } from '../spiffe/spiffe-id.js'
import { ACCESS_TOKEN_TYP, GRANT_TYPE, TOKEN_TYPE, type ActClaim, type AuthorizationDetail } from '../tokens/claims.js'
import type {
  AuthenticatedClient,
  BrokerService,
  IntrospectionResponse,
  KeyBinding,
  RevocationOperator,
  Task,
  TaskSpec,
  TokenRequest,
  TokenResponse,
} from './contract.js'
import { SigningKeys, type SigningKeysOptions } from './keys.js'
import { signJwt } from './mint.js'
import type { BrokerDeps } from './ports.js'
import { BrokerStore, type Durability, type StoredRevocation, type TokenRecord } from './store/broker-store.js'
import { BrokerRevocations, type RevocationRequest } from './revocations.js'
import { TxnTokenIssuer, type Refuse, type TxnTokenHost } from './txn-tokens.js'
import { REVOCATION_LIST_TYP, revocationEntryToWire } from '../tokens/revocation.js'
import { INTENT_DETAIL_TYPE, isActionBound } from './intents/intent.js'

/** How long a signed revocation list is good for: an offline verifier fetches a fresh one before then. */
const REVOCATION_LIST_TTL_SECONDS = 300

/** JOSE `typ` of a one-time delegation grant: not an access token, so no resource server accepts it. */
export const DELEGATION_GRANT_TYP = 'warrant-delegation-grant+jwt'

export interface BrokerServiceOptions {
  /** The issuer URL: `iss` of every token, the audience a JWT-SVID subject token must name. */
  issuer: string
  /** The SQLite file (':memory:' for tests). */
  storePath: string
  /** Token lifetime unless a ceiling, the task or the chain caps it. Default 300 s. */
  defaultTokenTtlSeconds?: number
  /** Hard cap on any token lifetime. Default 3600 s. */
  maxTokenTtlSeconds?: number
  /** Lifetime of a one-time delegation grant. Default 60 s. */
  grantTtlSeconds?: number
  /** Longest task. Default 7 days. */
  maxTaskTtlSeconds?: number
  /** Who may create tasks: SPIFFE IDs, or prefixes ending in `/`. */
  orchestrators?: readonly string[]
  /** Resource servers that may introspect: SPIFFE IDs or prefixes. */
  introspectors?: readonly string[]
  /** Who may revoke any token (besides each token's own client): SPIFFE IDs or prefixes. */
  revocationAdmins?: readonly string[]
  /** client_credentials and JWT-SVID exchanges need a task_id (default true); without one the ceiling alone bounds the token. */
  requireTask?: boolean
  /** RFC 9396 `type`s a client may ask for (default none); derived tokens only keep or drop entries. */
  authorizationDetailsTypes?: readonly string[]
  /** Clock-skew leeway for JWT-SVID subject tokens. Default 30 s. */
  leewaySeconds?: number
  signing?: Omit<SigningKeysOptions, 'maxTokenLifetimeSeconds'>
  /** The trust domain (`spiffe://<td>`): `aud` of Txn-Tokens. Without it the broker issues no Txn-Tokens. */
  trustDomain?: string
  /** Lifetime of a Txn-Token. Default 60 s. */
  txnTokenTtlSeconds?: number
  /** Workloads (IDs or prefixes) that may ask for a Txn-Token for another workload (gateways): see txn-tokens.ts. */
  txnTokenRequesters?: readonly string[]
}

const MAX_TOKEN_LENGTH = 16 * 1024
const MAX_LIST = 256
const NAME = /^[A-Za-z0-9._-]{1,128}$/
const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/
const MAX_RENEWALS_LIMIT = 100_000
/**
 * RFC 8693 §2.1 `actor_token_type`s accepted: the actor's JWT-SVID (`...:jwt`, or SPIFFE's `...:jwt-svid`), or
 * a broker access token of the actor's own (`...:access_token`, or `...:jwt` with JOSE `typ` at+jwt).
 */
const ACTOR_TOKEN_TYPES: ReadonlySet<string> = new Set([TOKEN_TYPE.jwt, TOKEN_TYPE.jwtSvid, TOKEN_TYPE.accessToken])

/** Matches a SPIFFE ID against a list of IDs and prefixes ending in `/`. */
function matchesList(list: readonly string[], id: string): boolean {
  return list.some((p) => p === id || (p.endsWith('/') && id.startsWith(p)))
}

/** Does a task's agent (an ID, or a prefix ending in `/`) cover `id`? */
function taskCovers(agent: string, id: string): boolean {
  return agent === id || (agent.endsWith('/') && id.startsWith(agent))
}

function canon(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canon).join(',')}]`
  if (v !== null && typeof v === 'object') {
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canon((v as Record<string, unknown>)[k])}`)
      .join(',')}}`
  }
  return JSON.stringify(v)
}

function nestAct(actors: readonly string[]): ActClaim | undefined {
  let act: ActClaim | undefined
  for (let i = actors.length - 1; i >= 0; i--) act = act ? { sub: actors[i]!, act } : { sub: actors[i]! }
  return act
}

/** What a stepped-up agent is told (`error_description` of `interaction_required`): stable, and never which signal. */
export const STEP_UP_DESCRIPTION =
  'step-up required: declare this request as an intent at the backchannel authentication endpoint (/bc-authorize) for a human to approve'

const uniq = (l: readonly string[]): string[] => [...new Set(l)]
const intersect = (a: readonly string[], ...rest: (readonly string[])[]): string[] => a.filter((x) => rest.every((r) => r.includes(x)))

/** The intent an action-bound token was issued for, as an audit attribute. */
function intentAttribute(details: readonly AuthorizationDetail[] | undefined): { intent_id?: string } {
  const id = details?.find((d) => d.type === INTENT_DETAIL_TYPE)?.intent_id
  return typeof id === 'string' ? { intent_id: id } : {}
}

/** An action-bound token to issue for an approved intent (src/broker/intents). */
export interface ActionTokenRequest {
  /** The agent: `sub`, and the client that must ask. */
  readonly sub: string
  readonly taskId?: string
  /** `aud`: the allowed resource covering the intent's location. */
  readonly audience: string
  readonly scopes: readonly string[]
  /** The token's one `authorization_details` entry. */
  readonly detail: AuthorizationDetail
  readonly ttlSeconds: number
  /** The grant type asked with (for the log). */
  readonly grantType: string
  /** Runs inside the store transaction that stores the token: records it as the intent's one token, or throws. */
  readonly claim: (jti: string, exp: number) => void
  /**
   * `process` for an intent declared in the same request (its row is stored with the token: a lost write loses both and
   * fails closed, like a fresh token); `disk` when the token is claimed from a stored approval (a lost claim could mint twice).
   */
  readonly durability: Durability
  /** Audit events made durable with the issuance's, in its batch (the intent's decision). */
  readonly audit?: readonly AuditEventInput[]
}

/** Thrown inside a store transaction when a re-check fails; carries the refusal out. */
class Refusal extends Error {
  readonly code: ErrorCode
  readonly publicMessage: string
  readonly reason: string
  constructor(code: ErrorCode, publicMessage: string, reason: string) {
    super(reason)
    this.code = code
    this.publicMessage = publicMessage
    this.reason = reason
  }
}

interface Ctx {
  log: Logger
  client: AuthenticatedClient
  grantType: string
}

interface VerifiedToken {
  record: TokenRecord
  payload: Record<string, unknown>
  typ: string
}

/**
 * The broker's domain (see contract.ts): tasks, ceilings, the client
 * credentials / exchange / renewal / delegation rules, minting and the token
 * store. Every refusal throws IdentityError with a stable code and a short
 * message, logs everything (never a token), and writes nothing.
 */
export class BrokerServiceImpl implements BrokerService {
  readonly issuer: string
  readonly store: BrokerStore
  readonly keys: SigningKeys
  readonly revocations: BrokerRevocations
  readonly #deps: BrokerDeps
  readonly #log: Logger
  readonly #clock: Clock
  readonly #txn: TxnTokenIssuer | undefined
  readonly #o: Required<Omit<BrokerServiceOptions, 'signing' | 'storePath' | 'issuer' | 'trustDomain' | 'txnTokenTtlSeconds' | 'txnTokenRequesters'>>

  constructor(deps: BrokerDeps, opts: BrokerServiceOptions, store: BrokerStore, keys: SigningKeys) {
    this.#deps = deps
    this.issuer = opts.issuer
    this.store = store
    this.keys = keys
    this.#log = (deps.log ?? nullLogger).child({ [F.SUBSYSTEM]: 'broker' })
    this.#clock = deps.clock ?? systemClock
    this.#o = {
      defaultTokenTtlSeconds: opts.defaultTokenTtlSeconds ?? 300,
      maxTokenTtlSeconds: opts.maxTokenTtlSeconds ?? 3600,
      grantTtlSeconds: opts.grantTtlSeconds ?? 60,
      maxTaskTtlSeconds: opts.maxTaskTtlSeconds ?? 7 * 86_400,
      orchestrators: opts.orchestrators ?? [],
      introspectors: opts.introspectors ?? [],
      revocationAdmins: opts.revocationAdmins ?? [],
      requireTask: opts.requireTask ?? true,
      authorizationDetailsTypes: opts.authorizationDetailsTypes ?? [],
      leewaySeconds: opts.leewaySeconds ?? 30,
    }
    this.#txn = opts.trustDomain === undefined ? undefined : this.#txnIssuer(opts)
    this.revocations = new BrokerRevocations(store, {
      maxTokenTtlSeconds: this.#o.maxTokenTtlSeconds,
      now: () => this.#now(),
      log: this.#log.child({ [F.SUBSYSTEM]: 'broker_revocation' }),
    })
  }

  #txnIssuer(opts: BrokerServiceOptions): TxnTokenIssuer {
    const host: TxnTokenHost = {
      issuer: this.issuer,
      keys: this.keys,
      now: () => this.#now(),
      verifyAccessToken: async (token) => {
        const now = this.#now()
        const v = await this.#verifyOwn(token, now, true)
        if (!v) return undefined
        const task = v.record.taskId !== undefined ? this.store.getTask(v.record.taskId) : undefined
        if (v.record.taskId !== undefined && (!task || task.endedAt !== undefined || task.expiresAt <= now)) return undefined
        return { record: v.record, ...(task?.orchestrationId !== undefined ? { orchestrationId: task.orchestrationId } : {}) }
      },
      jwtSvidId: async (token, refuse) => {
        try {
          const svid = await validateJwtSvid(token, this.#deps.jwtBundles, {
            audience: this.issuer,
            now: new Date(this.#clock.now()),
            leewaySeconds: this.#o.leewaySeconds,
          })
          return svid.id.toString()
        } catch (err) {
          if (!(err instanceof IdentityError)) throw err
          return refuse('ERR_GRANT_INVALID', 'invalid subject_token', `JWT-SVID subject token: ${err.code}: ${err.message}`)
        }
      },
      ceiling: (id) => this.#ceiling(id),
      ...(this.#deps.userTokens ? { verifyUserToken: this.#deps.userTokens } : {}),
      covering: (c) => this.revocations.set.covering(c, this.#now()),
      ...(this.#deps.audit
        ? {
            audit: (e: AuditEventInput) =>
              this.#deps.audit!.append(e).then(
                () => true,
                (err: unknown) => {
                  this.#log.error({ [F.ERR]: err instanceof Error ? err.message : String(err) }, 'Audit append failed')
                  return false
                },
              ),
          }
        : {}),
    }
    return new TxnTokenIssuer(host, {
      trustDomain: opts.trustDomain!,
      ...(opts.txnTokenTtlSeconds !== undefined ? { ttlSeconds: opts.txnTokenTtlSeconds } : {}),
      ...(opts.txnTokenRequesters !== undefined ? { trustedRequesters: opts.txnTokenRequesters } : {}),
    })
  }

  #now(): number {
    return Math.floor(this.#clock.now() / 1000)
  }

  /** Logs the refusal with everything, throws with little. */
  #refuse(ctx: Ctx | { log: Logger }, code: ErrorCode, publicMessage: string, reason: string, fields: Record<string, unknown> = {}): never {
    ctx.log.warn({ [F.ERROR_CODE]: code, [F.REASON]: reason, ...fields }, 'Broker request refused')
    throw new IdentityError(code, publicMessage)
  }

  /** The SPIFFE ID of a JWT-SVID presented as the subject or actor token (audience: this issuer); invalid_grant otherwise. */
  async #jwtSvidId(ctx: Ctx, token: string, role: 'subject' | 'actor'): Promise<string> {
    try {
      const svid = await validateJwtSvid(token, this.#deps.jwtBundles, {
        audience: this.issuer,
        now: new Date(this.#clock.now()),
        leewaySeconds: this.#o.leewaySeconds,
      })
      return svid.id.toString()
    } catch (err) {
      if (!(err instanceof IdentityError)) throw err
      return this.#refuse(ctx, 'ERR_GRANT_INVALID', `invalid ${role}_token`, `JWT-SVID ${role} token: ${err.code}: ${err.message}`)
    }
  }

  // ---------------------------------------------------------------- token

  async token(req: TokenRequest, client: AuthenticatedClient, binding: KeyBinding): Promise<TokenResponse> {
    const ctx: Ctx = { log: this.#log.child({ client_id: client.spiffeId, grant_type: req.grantType }), client, grantType: req.grantType }
    if (!SpiffeId.isValid(client.spiffeId)) this.#refuse(ctx, 'ERR_CLIENT_UNAUTHORIZED', 'client not authorized', 'client ID is not a SPIFFE ID')
    // intents (the way through a step-up) never come here: the wire sends them to the intent service
    this.#notSteppedUp(ctx, [client.spiffeId])
    this.#checkShape(ctx, req)
    if ((req.requestDetails !== undefined || req.requestContext !== undefined) && req.requestedTokenType !== TOKEN_TYPE.txnToken)
      this.#refuse(ctx, 'ERR_TOKEN_REQUEST_INVALID', 'unexpected parameters', 'request_details or request_context without requested_token_type txn_token')
    if (req.grantType === GRANT_TYPE.clientCredentials) {
      if (req.subjectToken !== undefined || req.actorToken !== undefined)
        this.#refuse(ctx, 'ERR_TOKEN_REQUEST_INVALID', 'unexpected parameters', 'subject or actor token on client_credentials')
      if (req.requestedTokenType !== undefined && req.requestedTokenType !== TOKEN_TYPE.accessToken) {
        this.#refuse(ctx, 'ERR_TOKEN_REQUEST_INVALID', 'unsupported requested_token_type', 'requested_token_type on client_credentials')
      }
      if (req.mayAct !== undefined) this.#refuse(ctx, 'ERR_DELEGATION_INVALID', 'delegation needs a broker token', 'may_act on client_credentials')
      return this.#issueDirect(ctx, client.spiffeId, req, binding)
    }
    if (req.grantType === GRANT_TYPE.tokenExchange) return this.#exchange(ctx, req, binding)
    return this.#refuse(ctx, 'ERR_GRANT_TYPE_UNSUPPORTED', 'unsupported grant_type', 'unsupported grant type')
  }

  #checkShape(ctx: Ctx, req: TokenRequest): void {
    const lists: [string, readonly unknown[] | undefined][] = [
      ['resource', req.resources],
      ['audience', req.audiences],
      ['scope', req.scopes],
    ]
    for (const [name, l] of lists) {
      if (l === undefined) continue
      if (!Array.isArray(l) || l.length > MAX_LIST || l.some((x) => typeof x !== 'string' || x.length === 0 || x.length > 2048)) {
        this.#refuse(ctx, name === 'scope' ? 'ERR_SCOPE_INVALID' : 'ERR_TOKEN_REQUEST_INVALID', `invalid ${name}`, `malformed ${name} list`)
      }
    }
    for (const s of req.scopes ?? []) if (!SCOPE_TOKEN.test(s)) this.#refuse(ctx, 'ERR_SCOPE_INVALID', 'invalid scope', 'malformed scope token')
    for (const r of req.resources) {
      const p = resourceProblem(r)
      if (p) this.#refuse(ctx, 'ERR_TARGET_INVALID', 'invalid resource', p)
    }
    if (req.authorizationDetails !== undefined) {
      if (!Array.isArray(req.authorizationDetails) || req.authorizationDetails.length > MAX_LIST)
        this.#refuse(ctx, 'ERR_TOKEN_REQUEST_INVALID', 'invalid authorization_details', 'authorization_details not a list')
      for (const d of req.authorizationDetails) {
        if (d === null || typeof d !== 'object' || Array.isArray(d) || typeof (d as { type?: unknown }).type !== 'string') {
          this.#refuse(ctx, 'ERR_TOKEN_REQUEST_INVALID', 'invalid authorization_details', 'authorization_details entry without a type')
        }
      }
    }
    if (req.taskId !== undefined && (typeof req.taskId !== 'string' || !NAME.test(req.taskId)))
      this.#refuse(ctx, 'ERR_TOKEN_REQUEST_INVALID', 'invalid task_id', 'malformed task_id')
  }

  async #exchange(ctx: Ctx, req: TokenRequest, binding: KeyBinding): Promise<TokenResponse> {
    if (!req.subjectToken || !req.subjectTokenType)
      this.#refuse(ctx, 'ERR_TOKEN_REQUEST_INVALID', 'subject_token and subject_token_type are required', 'missing subject token')
    if (req.actorToken !== undefined && req.actorTokenType === undefined)
      this.#refuse(ctx, 'ERR_TOKEN_REQUEST_INVALID', 'actor_token_type is required with actor_token', 'actor token without type')
    if (req.actorToken === undefined && req.actorTokenType !== undefined)
      this.#refuse(ctx, 'ERR_TOKEN_REQUEST_INVALID', 'actor_token_type without actor_token', 'actor token type without token')
    if (req.actorToken !== undefined) {
      if (!ACTOR_TOKEN_TYPES.has(req.actorTokenType!))
        this.#refuse(ctx, 'ERR_TOKEN_REQUEST_INVALID', 'unsupported actor_token_type', `actor_token_type ${String(req.actorTokenType).slice(0, 100)}`)
      if (req.actorToken.length > MAX_TOKEN_LENGTH) this.#refuse(ctx, 'ERR_GRANT_INVALID', 'invalid actor_token', 'actor token too large')
    }
    if (req.requestedTokenType === TOKEN_TYPE.txnToken) {
      if (!this.#txn) return this.#refuse(ctx, 'ERR_TOKEN_REQUEST_INVALID', 'unsupported requested_token_type', 'Txn-Tokens are not enabled (no trust domain)')
      const refuse: Refuse = (code, msg, reason, fields) => this.#refuse(ctx, code, msg, reason, fields)
      const r = await this.#txn.issue(req, ctx.client, refuse)
      ctx.log.info({ scope: r.scope, exp_in: r.expires_in }, 'Txn-Token issued')
      return r
    }
    if (req.subjectToken.length > MAX_TOKEN_LENGTH) this.#refuse(ctx, 'ERR_GRANT_INVALID', 'invalid subject_token', 'subject token too large')
    const type = req.subjectTokenType
    let own: boolean
    if (type === TOKEN_TYPE.jwtSvid) own = false
    else if (type === TOKEN_TYPE.accessToken) own = true
    else if (type === TOKEN_TYPE.jwt) {
      let typ: unknown
      try {
        typ = decodeProtectedHeader(req.subjectToken).typ
      } catch {
        this.#refuse(ctx, 'ERR_GRANT_INVALID', 'invalid subject_token', 'subject token header is not JOSE')
      }
      own = typ === ACCESS_TOKEN_TYP || typ === DELEGATION_GRANT_TYP
    } else return this.#refuse(ctx, 'ERR_TOKEN_REQUEST_INVALID', 'unsupported subject_token_type', `subject_token_type ${type.slice(0, 100)}`)

    if (!own) {
      if (req.requestedTokenType !== undefined && req.requestedTokenType !== TOKEN_TYPE.accessToken) {
        this.#refuse(ctx, 'ERR_TOKEN_REQUEST_INVALID', 'unsupported requested_token_type', 'requested_token_type for a JWT-SVID exchange')
      }
      if (req.mayAct !== undefined) this.#refuse(ctx, 'ERR_DELEGATION_INVALID', 'delegation needs a broker token', 'may_act with a JWT-SVID subject token')
      if (req.actorToken !== undefined)
        this.#refuse(ctx, 'ERR_DELEGATION_INVALID', 'delegation needs a broker token', 'actor_token with a JWT-SVID subject token')
      const svidId = await this.#jwtSvidId(ctx, req.subjectToken, 'subject')
      if (svidId !== ctx.client.spiffeId)
        this.#refuse(ctx, 'ERR_GRANT_INVALID', 'invalid subject_token', 'JWT-SVID subject is not the authenticated client', { subject: svidId })
      return this.#issueDirect(ctx, svidId, req, binding)
    }

    const now = this.#now()
    const v = await this.#verifyOwn(req.subjectToken, now, true)
    if (!v) return this.#refuse(ctx, 'ERR_GRANT_INVALID', 'invalid subject_token', 'subject token is not a live broker token')
    const rec = v.record
    const log = ctx.log.child({ [F.JTI]: rec.jti, ...(rec.taskId ? { task_id: rec.taskId } : {}) })
    const c: Ctx = { ...ctx, log }
    if (rec.revokedAt !== undefined) this.#refuse(c, 'ERR_GRANT_INVALID', 'invalid subject_token', 'subject token is revoked')
    // an action-bound token (an approved intent) is good for one action, once: nothing is derived from it
    if (isActionBound(rec.authorizationDetails)) this.#refuse(c, 'ERR_GRANT_INVALID', 'invalid subject_token', 'subject token is action-bound (an intent)')
    const task = rec.taskId !== undefined ? this.#liveTask(c, rec.taskId, now) : undefined
    if (rec.kind === 'grant') return this.#redeemGrant(c, req, binding, rec, task, now)
    if (req.actorToken !== undefined) {
      // RFC 8693 delegation straight from an access token would let anyone who copied a key-bound token (but not
      // its key) turn it into a token bound to their own key: the holder delegates by a may_act grant instead,
      // proving its key, and the actor presents that grant (which names it in may_act) with its actor_token.
      this.#refuse(
        c,
        'ERR_DELEGATION_INVALID',
        'delegation not allowed',
        'actor_token with an access token as subject_token: the subject token must be a may_act delegation grant',
      )
    }
    if (req.mayAct !== undefined) return this.#delegationGrant(c, req, binding, rec, task, now)
    return this.#renew(c, req, binding, rec, task, now)
  }

  /** A broker token this broker signed (signature, `typ`, `iss`, times) and its stored record. Undefined when anything is off. */
  async #verifyOwn(token: string, now: number, checkTimes: boolean): Promise<VerifiedToken | undefined> {
    if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TOKEN_LENGTH) return undefined
    let header: ReturnType<typeof decodeProtectedHeader>
    try {
      header = decodeProtectedHeader(token)
    } catch {
      return undefined
    }
    if (typeof header.kid !== 'string' || (header.typ !== ACCESS_TOKEN_TYP && header.typ !== DELEGATION_GRANT_TYP)) return undefined
    const k = this.keys.publicKeyFor(header.kid)
    if (!k || header.alg !== k.alg) return undefined
    let payload: Record<string, unknown>
    try {
      const r = await compactVerify(token, k.key, { algorithms: [k.alg] })
      payload = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(r.payload)) as Record<string, unknown>
    } catch {
      return undefined
    }
    if (payload === null || typeof payload !== 'object' || payload.iss !== this.issuer || typeof payload.jti !== 'string') return undefined
    if (checkTimes) {
      if (typeof payload.exp !== 'number' || payload.exp <= now) return undefined
      if (typeof payload.nbf === 'number' && payload.nbf > now) return undefined
    }
    const record = this.store.getToken(payload.jti)
    if (!record || record.kid !== header.kid) return undefined
    if ((record.kind === 'grant') !== (header.typ === DELEGATION_GRANT_TYP)) return undefined
    return { record, payload, typ: header.typ }
  }

  #liveTask(ctx: Ctx | { log: Logger }, taskId: string, now: number): Task {
    const task = this.store.getTask(taskId)
    if (!task) return this.#refuse(ctx, 'ERR_TASK_NOT_FOUND', 'unknown task', 'task not found', { task_id: taskId })
    if (task.endedAt !== undefined) this.#refuse(ctx, 'ERR_TASK_ENDED', 'task ended', 'task was ended', { task_id: taskId })
    if (task.expiresAt <= now) this.#refuse(ctx, 'ERR_TASK_ENDED', 'task ended', 'task expired', { task_id: taskId })
    return task
  }

  async #ceiling(id: string): Promise<Ceiling> {
    return this.#deps.ceilings.ceilingFor(SpiffeId.fromString(id))
  }

  /** The scopes to grant: the request (each allowed) or everything allowed; never empty. */
  #scopes(ctx: Ctx, requested: readonly string[] | undefined, allowed: readonly string[]): string[] {
    if (requested === undefined) {
      if (allowed.length === 0) this.#refuse(ctx, 'ERR_SCOPE_INVALID', 'no scope can be granted', 'nothing allowed by task, ceiling and chain')
      return [...allowed]
    }
    const want = uniq(requested)
    if (want.length === 0) this.#refuse(ctx, 'ERR_SCOPE_INVALID', 'no scope requested', 'empty scope')
    const bad = want.filter((s) => !allowed.includes(s))
    if (bad.length > 0) this.#refuse(ctx, 'ERR_SCOPE_INVALID', 'requested scope not allowed', 'scope above task, ceiling or chain', { scopes: bad, allowed })
    return want
  }

  /** The audiences: the requested resources and audiences (each allowed) or everything allowed; never empty. */
  #targets(ctx: Ctx, req: TokenRequest, allowed: readonly string[]): string[] {
    const want = uniq([...req.resources, ...req.audiences])
    if (want.length === 0) {
      if (allowed.length === 0) this.#refuse(ctx, 'ERR_TARGET_INVALID', 'no resource can be granted', 'no resources allowed by task, ceiling and chain')
      return [...allowed]
    }
    const bad = want.filter((r) => !allowed.includes(r))
    if (bad.length > 0)
      this.#refuse(ctx, 'ERR_TARGET_INVALID', 'requested resource not allowed', 'resource above task, ceiling or chain', { resources: bad, allowed })
    return want
  }

  /** RFC 9396 details: a fresh request may name the configured types; a derived token keeps or drops its parent's entries. */
  #details(
    ctx: Ctx,
    requested: readonly AuthorizationDetail[] | undefined,
    parent: readonly AuthorizationDetail[] | undefined | 'fresh',
  ): AuthorizationDetail[] | undefined {
    if (parent === 'fresh') {
      if (requested === undefined || requested.length === 0) return undefined
      const bad = requested.find((d) => d.type === INTENT_DETAIL_TYPE || !this.#o.authorizationDetailsTypes.includes(d.type))
      if (bad)
        this.#refuse(ctx, 'ERR_TOKEN_REQUEST_INVALID', 'authorization_details type not supported', 'authorization_details type not configured', {
          type: bad.type.slice(0, 100),
        })
      return requested.map((d) => ({ ...d }))
    }
    if (requested === undefined) return parent ? [...parent] : undefined
    if (requested.length === 0) return undefined
    const have = new Set((parent ?? []).map(canon))
    if (requested.some((d) => !have.has(canon(d))))
      this.#refuse(ctx, 'ERR_TOKEN_REQUEST_INVALID', 'authorization_details wider than the subject token', 'authorization_details not in the parent token')
    return requested.map((d) => ({ ...d }))
  }

  /** The confirmation claim for the proved key; bearer only when every ceiling allows it. */
  #cnf(ctx: Ctx, binding: KeyBinding, ceilings: readonly Ceiling[]): { jkt?: string; x5t?: string } {
    if (binding.kind === 'dpop') {
      if (typeof binding.jkt !== 'string' || !/^[A-Za-z0-9_-]{43}$/.test(binding.jkt))
        this.#refuse(ctx, 'ERR_DPOP_PROOF_INVALID', 'invalid DPoP proof', 'jkt is not a SHA-256 thumbprint')
      return { jkt: binding.jkt }
    }
    if (binding.kind === 'mtls') {
      const cert = ctx.client.certDer
      if (!cert || ctx.client.method !== 'tls_client_auth')
        this.#refuse(
          ctx,
          'ERR_TOKEN_REQUEST_INVALID',
          'certificate binding needs mutual TLS client authentication',
          'mtls binding without a client certificate',
        )
      const x5t = createHash('sha256').update(cert).digest('base64url')
      if (x5t !== binding.x5tS256) this.#refuse(ctx, 'ERR_TOKEN_REQUEST_INVALID', 'certificate binding mismatch', 'x5t#S256 is not the client certificate')
      return { x5t }
    }
    if (binding.kind === 'bearer') {
      for (const c of ceilings) {
        const f = checkCeiling(c, { bearer: true })
        if (f)
          this.#refuse(ctx, 'ERR_TOKEN_REQUEST_INVALID', 'a DPoP proof or a mutual-TLS client certificate is required', describeCeilingFailure(f), {
            prefixes: c.prefixes,
          })
      }
      return {}
    }
    return this.#refuse(ctx, 'ERR_TOKEN_REQUEST_INVALID', 'invalid key binding', 'unknown binding kind')
  }

  /** Same key as the token's `cnf` (renewal and grant requests: proof of possession by the holder). */
  #sameKey(ctx: Ctx, binding: KeyBinding, rec: TokenRecord, what: 'subject_token' | 'actor_token' = 'subject_token'): void {
    const ok =
      rec.cnfJkt !== undefined
        ? binding.kind === 'dpop' && binding.jkt === rec.cnfJkt
        : rec.cnfX5t !== undefined
          ? binding.kind === 'mtls' &&
            binding.x5tS256 === rec.cnfX5t &&
            ctx.client.certDer !== undefined &&
            createHash('sha256').update(ctx.client.certDer).digest('base64url') === rec.cnfX5t
          : binding.kind === 'bearer'
    if (!ok)
      this.#refuse(ctx, 'ERR_GRANT_INVALID', `invalid ${what}`, `proof is not of the key the ${what.replace('_', ' ')} is bound to`, { binding: binding.kind })
  }

  #expiry(ctx: Ctx, now: number, ceilings: readonly Ceiling[], cap: number, ttl = this.#o.defaultTokenTtlSeconds): number {
    let t = Math.min(ttl, this.#o.maxTokenTtlSeconds)
    for (const c of ceilings) if (c.maxTokenTtlSeconds !== undefined) t = Math.min(t, c.maxTokenTtlSeconds)
    const exp = Math.min(now + t, cap)
    if (exp <= now) this.#refuse(ctx, 'ERR_GRANT_INVALID', 'nothing left to issue', 'the chain or task ends now', { cap })
    return exp
  }

  async #issueDirect(ctx: Ctx, sub: string, req: TokenRequest, binding: KeyBinding): Promise<TokenResponse> {
    const now = this.#now()
    const ceiling = await this.#ceiling(sub)
    let task: Task | undefined
    if (req.taskId !== undefined) {
      task = this.#liveTask(ctx, req.taskId, now)
      if (!taskCovers(task.agent, sub))
        this.#refuse(ctx, 'ERR_CLIENT_UNAUTHORIZED', 'client not authorized for this task', 'task is for another agent', {
          task_id: task.taskId,
          task_agent: task.agent,
        })
    } else if (this.#o.requireTask) this.#refuse(ctx, 'ERR_TOKEN_REQUEST_INVALID', 'task_id is required', 'no task_id')
    const log = task ? ctx.log.child({ task_id: task.taskId }) : ctx.log
    const c: Ctx = { ...ctx, log }
    const scopes = this.#scopes(c, req.scopes, task ? intersect(task.scopes, ceiling.scopes) : ceiling.scopes)
    const targets = this.#targets(c, req, task ? intersect(task.resources, ceiling.resources) : ceiling.resources)
    const details = this.#details(c, req.authorizationDetails, 'fresh')
    const cnf = this.#cnf(c, binding, [ceiling])
    const maxExp = task ? task.expiresAt : now + this.#o.maxTokenTtlSeconds
    const exp = this.#expiry(c, now, [ceiling], maxExp)
    const jti = randomUUID()
    const rec: TokenRecord = {
      jti,
      kind: 'access',
      sub,
      clientId: ctx.client.spiffeId,
      taskId: task?.taskId,
      parentJti: undefined,
      rootJti: jti,
      actors: [],
      depth: 0,
      scopes,
      resources: targets,
      audiences: targets,
      authorizationDetails: details,
      cnfJkt: cnf.jkt,
      cnfX5t: cnf.x5t,
      mayAct: undefined,
      kid: '',
      iat: now,
      exp,
      maxExp,
      renewals: 0,
      renewedBy: undefined,
      revokedAt: undefined,
    }
    return this.#mintAndStore(c, rec, task, 'process', 'token.exchanged', () => {
      if (task) this.#recheckTask(task.taskId, now)
    })
  }

  /**
   * The token of an approved intent: `authorization_details` with exactly that action on that resource, `aud` the resource
   * that covers it, short-lived, bound like every broker token, never renewed or delegated. `claim` records it as the
   * intent's one token in the same transaction (see `durability`).
   */
  async issueActionToken(
    a: ActionTokenRequest,
    client: AuthenticatedClient,
    binding: KeyBinding,
  ): Promise<TokenResponse & { authorization_details: AuthorizationDetail[] }> {
    const ctx: Ctx = { log: this.#log.child({ client_id: client.spiffeId, grant_type: a.grantType }), client, grantType: a.grantType }
    if (client.spiffeId !== a.sub) this.#refuse(ctx, 'ERR_GRANT_INVALID', 'invalid grant', 'intent of another client')
    const now = this.#now()
    const ceiling = await this.#ceiling(a.sub)
    const task = a.taskId !== undefined ? this.#liveTask(ctx, a.taskId, now) : undefined
    const cnf = this.#cnf(ctx, binding, [ceiling])
    const exp = this.#expiry(ctx, now, [ceiling], task?.expiresAt ?? Infinity, a.ttlSeconds)
    const jti = randomUUID()
    const rec: TokenRecord = {
      jti,
      kind: 'access',
      sub: a.sub,
      clientId: client.spiffeId,
      taskId: task?.taskId,
      parentJti: undefined,
      rootJti: jti,
      actors: [],
      depth: 0,
      scopes: [...a.scopes],
      resources: [a.audience],
      audiences: [a.audience],
      authorizationDetails: [a.detail],
      cnfJkt: cnf.jkt,
      cnfX5t: cnf.x5t,
      mayAct: undefined,
      kid: '',
      iat: now,
      exp,
      maxExp: exp,
      renewals: 0,
      renewedBy: undefined,
      revokedAt: undefined,
    }
    const res = await this.#mintAndStore(
      ctx,
      rec,
      task,
      a.durability,
      'token.exchanged',
      () => {
        if (task) this.#recheckTask(task.taskId, now)
        a.claim(jti, exp)
      },
      undefined,
      a.audit,
    )
    return { ...res, authorization_details: [a.detail] }
  }

  #recheckTask(taskId: string, now: number): void {
    const t = this.store.getTask(taskId)
    if (!t || t.endedAt !== undefined || t.expiresAt <= now) throw new Refusal('ERR_TASK_ENDED', 'task ended', 'task ended while the token was minted')
  }

  #recheckLive(jti: string, what: string): TokenRecord {
    const r = this.store.getToken(jti)
    if (!r || r.revokedAt !== undefined) throw new Refusal('ERR_GRANT_INVALID', 'invalid subject_token', `${what} was revoked while the token was minted`)
    return r
  }

  async #renew(ctx: Ctx, req: TokenRequest, binding: KeyBinding, rec: TokenRecord, task: Task | undefined, now: number): Promise<TokenResponse> {
    if (req.requestedTokenType !== undefined && req.requestedTokenType !== TOKEN_TYPE.accessToken) {
      this.#refuse(ctx, 'ERR_TOKEN_REQUEST_INVALID', 'unsupported requested_token_type', 'requested_token_type on a renewal')
    }
    if (req.taskId !== undefined && req.taskId !== rec.taskId)
      this.#refuse(ctx, 'ERR_TOKEN_REQUEST_INVALID', 'task_id does not match the subject token', 'task_id differs on renewal')
    if (rec.clientId !== ctx.client.spiffeId)
      this.#refuse(ctx, 'ERR_GRANT_INVALID', 'invalid subject_token', 'renewal by another client', { token_client: rec.clientId })
    this.#sameKey(ctx, binding, rec)
    if (rec.renewedBy !== undefined) this.#refuse(ctx, 'ERR_GRANT_INVALID', 'invalid subject_token', 'token was already renewed', { renewed_by: rec.renewedBy })
    const ceilings = [await this.#ceiling(rec.sub), ...(rec.actors[0] !== undefined ? [await this.#ceiling(rec.actors[0])] : [])]
    const renewals = rec.renewals + 1
    const limits = [...(task ? [task.maxRenewals] : []), ...ceilings.map((c) => c.maxRenewals).filter((x): x is number => x !== undefined)]
    const limit = limits.length > 0 ? Math.min(...limits) : Infinity
    if (renewals > limit) this.#refuse(ctx, 'ERR_GRANT_INVALID', 'renewal limit reached', 'max_renewals reached', { renewals: rec.renewals, limit })
    const allowedScopes = intersect(rec.scopes, ...(task ? [task.scopes] : []), ...ceilings.map((c) => c.scopes))
    const allowedTargets = intersect(rec.audiences, ...(task ? [task.resources] : []), ...ceilings.map((c) => c.resources))
    const scopes = this.#scopes(ctx, req.scopes, allowedScopes)
    const targets = this.#targets(ctx, req, allowedTargets)
    const details = this.#details(ctx, req.authorizationDetails, rec.authorizationDetails)
    if (binding.kind === 'bearer') this.#cnf(ctx, binding, ceilings) // bearer must still be allowed
    const exp = this.#expiry(ctx, now, ceilings, Math.min(rec.maxExp, task?.expiresAt ?? Infinity))
    const jti = randomUUID()
    const next: TokenRecord = {
      ...rec,
      jti,
      parentJti: rec.jti,
      scopes,
      resources: targets,
      audiences: targets,
      authorizationDetails: details,
      iat: now,
      exp,
      renewals,
      renewedBy: undefined,
      revokedAt: undefined,
      kid: '',
    }
    return this.#mintAndStore(ctx, next, task, 'disk', 'token.renewed', () => {
      this.#recheckLive(rec.jti, 'subject token')
      if (task) this.#recheckTask(task.taskId, now)
      if (!this.store.markRenewed(rec.jti, jti)) throw new Refusal('ERR_GRANT_INVALID', 'invalid subject_token', 'token was renewed concurrently')
    })
  }

  async #delegationGrant(ctx: Ctx, req: TokenRequest, binding: KeyBinding, rec: TokenRecord, task: Task | undefined, now: number): Promise<TokenResponse> {
    if (req.requestedTokenType !== undefined && req.requestedTokenType !== TOKEN_TYPE.jwt) {
      this.#refuse(
        ctx,
        'ERR_TOKEN_REQUEST_INVALID',
        'a delegation grant is issued as urn:ietf:params:oauth:token-type:jwt',
        'requested_token_type on a grant request',
      )
    }
    const mayAct = req.mayAct!
    const log = ctx.log.child({ may_act: mayAct })
    const c: Ctx = { ...ctx, log }
    if (!SpiffeId.isValid(mayAct)) this.#refuse(c, 'ERR_DELEGATION_INVALID', 'may_act must be a SPIFFE ID', 'may_act is not a SPIFFE ID')
    if (rec.clientId !== ctx.client.spiffeId)
      this.#refuse(c, 'ERR_GRANT_INVALID', 'invalid subject_token', 'grant request by another client', { token_client: rec.clientId })
    this.#sameKey(c, binding, rec)
    const ceilings = await this.#checkDelegation(c, rec, mayAct)
    const scopes = this.#scopes(c, req.scopes, intersect(rec.scopes, ...(task ? [task.scopes] : []), ...ceilings.map((x) => x.scopes)))
    const targets = this.#targets(c, req, intersect(rec.audiences, ...(task ? [task.resources] : []), ...ceilings.map((x) => x.resources)))
    const details = this.#details(c, req.authorizationDetails, rec.authorizationDetails)
    const exp = this.#expiry(c, now, [], rec.exp, this.#o.grantTtlSeconds)
    const jti = randomUUID()
    const grant: TokenRecord = {
      jti,
      kind: 'grant',
      sub: rec.sub,
      clientId: ctx.client.spiffeId,
      taskId: rec.taskId,
      parentJti: rec.jti,
      rootJti: rec.rootJti,
      actors: rec.actors,
      depth: rec.depth,
      scopes,
      resources: targets,
      audiences: [this.issuer],
      authorizationDetails: details,
      cnfJkt: undefined,
      cnfX5t: undefined,
      mayAct,
      kid: '',
      iat: now,
      exp,
      maxExp: rec.exp,
      renewals: 0,
      renewedBy: undefined,
      revokedAt: undefined,
    }
    return this.#mintAndStore(c, grant, task, 'process', 'token.delegated', () => {
      this.#recheckLive(rec.jti, 'subject token')
      if (task) this.#recheckTask(task.taskId, now)
    })
  }

  /**
   * May the holder of a token with this chain delegate to `actor` (not already in the chain, depth within the
   * subject's and the holder's `max_delegation_depth`, `actor` under their `may_delegate_to`)? Checked when a
   * grant is issued and again, against the ceilings of the moment, when it is redeemed. Returns those ceilings.
   */
  async #checkDelegation(c: Ctx, chain: Pick<TokenRecord, 'sub' | 'actors' | 'depth'>, actor: string): Promise<Ceiling[]> {
    if (actor === chain.sub || chain.actors.includes(actor))
      this.#refuse(c, 'ERR_DELEGATION_INVALID', 'delegation not allowed', 'may_act is already in the chain')
    const holder = chain.actors[0] ?? chain.sub
    const subCeiling = await this.#ceiling(chain.sub)
    const ceilings = holder === chain.sub ? [subCeiling] : [subCeiling, await this.#ceiling(holder)]
    const depth = chain.depth + 1
    for (const ceil of ceilings) {
      const f = checkCeiling(ceil, { delegationDepth: depth, delegateTo: actor })
      if (f) this.#refuse(c, 'ERR_DELEGATION_INVALID', 'delegation not allowed', describeCeilingFailure(f), { depth, prefixes: ceil.prefixes })
    }
    return ceilings
  }

  /**
   * RFC 8693 §2.1 `actor_token`: a token of the actor's own, whose subject must be the authenticated client
   * (so the client shows it holds it): its JWT-SVID for this broker, or a live broker access token issued to it
   * directly (not delegated) and bound to the key this request proves.
   */
  async #checkActorToken(ctx: Ctx, req: TokenRequest, binding: KeyBinding, now: number): Promise<void> {
    const token = req.actorToken!
    let type = req.actorTokenType!
    if (type === TOKEN_TYPE.jwt) {
      let typ: unknown
      try {
        typ = decodeProtectedHeader(token).typ
      } catch {
        this.#refuse(ctx, 'ERR_GRANT_INVALID', 'invalid actor_token', 'actor token header is not JOSE')
      }
      type = typ === ACCESS_TOKEN_TYP ? TOKEN_TYPE.accessToken : TOKEN_TYPE.jwtSvid
    }
    let actor: string
    if (type === TOKEN_TYPE.accessToken) {
      const v = await this.#verifyOwn(token, now, true)
      if (!v || v.record.kind !== 'access' || v.record.revokedAt !== undefined)
        return this.#refuse(ctx, 'ERR_GRANT_INVALID', 'invalid actor_token', 'actor token is not a live broker access token')
      if (v.record.actors.length > 0)
        this.#refuse(ctx, 'ERR_GRANT_INVALID', 'invalid actor_token', 'actor token is a delegated token', { actor_jti: v.record.jti })
      this.#sameKey(ctx, binding, v.record, 'actor_token')
      actor = v.record.sub
    } else {
      actor = await this.#jwtSvidId(ctx, token, 'actor')
    }
    if (actor !== ctx.client.spiffeId)
      this.#refuse(ctx, 'ERR_GRANT_INVALID', 'invalid actor_token', 'actor token subject is not the authenticated client', { actor })
  }

  async #redeemGrant(ctx: Ctx, req: TokenRequest, binding: KeyBinding, grant: TokenRecord, task: Task | undefined, now: number): Promise<TokenResponse> {
    if (req.requestedTokenType !== undefined && req.requestedTokenType !== TOKEN_TYPE.accessToken) {
      this.#refuse(ctx, 'ERR_TOKEN_REQUEST_INVALID', 'unsupported requested_token_type', 'requested_token_type on grant redemption')
    }
    if (req.mayAct !== undefined) this.#refuse(ctx, 'ERR_DELEGATION_INVALID', 'a grant is exchanged for an access token first', 'may_act with a grant')
    if (req.taskId !== undefined && req.taskId !== grant.taskId)
      this.#refuse(ctx, 'ERR_TOKEN_REQUEST_INVALID', 'task_id does not match the subject token', 'task_id differs on redemption')
    if (grant.mayAct !== ctx.client.spiffeId)
      this.#refuse(ctx, 'ERR_DELEGATION_INVALID', 'delegation not allowed', 'client is not may_act.sub of the grant', { may_act: grant.mayAct })
    if (req.actorToken !== undefined) await this.#checkActorToken(ctx, req, binding, now)
    const used = this.store.grantUse(grant.jti)
    if (used) this.#refuse(ctx, 'ERR_GRANT_INVALID', 'invalid subject_token', 'grant already used', { used_by: used.usedBy, issued_jti: used.issuedJti })
    const parent = grant.parentJti !== undefined ? this.store.getToken(grant.parentJti) : undefined
    if (!parent || parent.revokedAt !== undefined) this.#refuse(ctx, 'ERR_GRANT_INVALID', 'invalid subject_token', 'delegating token is revoked or gone')
    const actor = ctx.client.spiffeId
    const [subCeiling] = await this.#checkDelegation(ctx, grant, actor)
    const ceilings = [subCeiling!, await this.#ceiling(actor)]
    const actors = [actor, ...grant.actors]
    const depth = grant.depth + 1
    const scopes = this.#scopes(ctx, req.scopes, intersect(grant.scopes, ...(task ? [task.scopes] : []), ...ceilings.map((x) => x.scopes)))
    const targets = this.#targets(ctx, req, intersect(grant.resources, ...(task ? [task.resources] : []), ...ceilings.map((x) => x.resources)))
    const details = this.#details(ctx, req.authorizationDetails, grant.authorizationDetails)
    const cnf = this.#cnf(ctx, binding, ceilings)
    const exp = this.#expiry(ctx, now, ceilings, Math.min(grant.maxExp, task?.expiresAt ?? Infinity))
    const jti = randomUUID()
    const rec: TokenRecord = {
      jti,
      kind: 'access',
      sub: grant.sub,
      clientId: actor,
      taskId: grant.taskId,
      parentJti: grant.jti,
      rootJti: grant.rootJti,
      actors,
      depth,
      scopes,
      resources: targets,
      audiences: targets,
      authorizationDetails: details,
      cnfJkt: cnf.jkt,
      cnfX5t: cnf.x5t,
      mayAct: undefined,
      kid: '',
      iat: now,
      exp,
      maxExp: grant.maxExp,
      renewals: 0,
      renewedBy: undefined,
      revokedAt: undefined,
    }
    return this.#mintAndStore(
      ctx,
      rec,
      task,
      'disk',
      'token.delegated',
      () => {
        this.#recheckLive(grant.jti, 'grant')
        this.#recheckLive(parent.jti, 'delegating token')
        if (task) this.#recheckTask(task.taskId, now)
      },
      () => {
        if (!this.store.useGrant(grant.jti, actor, now, jti)) throw new Refusal('ERR_GRANT_INVALID', 'invalid subject_token', 'grant used concurrently')
      },
    )
  }

  /**
   * Starts appending the issuance's audit event; the promise says whether it became durable (a failure is logged
   * here). Undefined without an audit sink.
   */
  #auditIssuance(
    rec: TokenRecord,
    type: AuditEventType,
    kid: string,
    orchestrationId: string | undefined,
    before: readonly AuditEventInput[] = [],
  ): Promise<boolean> | undefined {
    const sink = this.#deps.audit
    if (sink === undefined) return undefined
    // events that must be durable with this one (an intent's decision) go in the same turn: one batch, one sync
    const first = before.map((e) => sink.append(e))
    const issued = sink.append({
      type,
      outcome: 'success',
      actor: { spiffe_id: rec.clientId },
      subject: rec.sub,
      ...(rec.taskId !== undefined ? { task_id: rec.taskId } : {}),
      ...(orchestrationId !== undefined ? { orchestration_id: orchestrationId } : {}),
      resource: [...rec.audiences],
      scope: [...rec.scopes],
      delegation_depth: rec.depth,
      ...(rec.actors.length > 0 ? { act_chain_hash: delegationChainHash(rec.actors) } : {}),
      token_id: rec.jti,
      key_id: kid,
      attributes: {
        kind: rec.kind,
        ...(rec.parentJti !== undefined ? { parent_token_id: rec.parentJti } : {}),
        ...intentAttribute(rec.authorizationDetails),
      },
    })
    return Promise.all([...first, issued]).then(
      () => true,
      (err: unknown) => {
        this.#log.error({ [F.JTI]: rec.jti, [F.ERR]: err instanceof Error ? err.message : String(err) }, 'Audit append failed')
        return false
      },
    )
  }

  /** Audits what is not a token release (revocations, tasks, tool credentials): logged, never blocking the operation it records. */
  auditQuietly(e: AuditEventInput): void {
    this.#auditQuietly(e)
  }

  /** Audits what is not a credential release (revocations, tasks): logged, never blocking the operation it records. */
  #auditQuietly(e: AuditEventInput): void {
    const sink = this.#deps.audit
    if (sink === undefined) return
    sink.append(e).catch((err: unknown) => this.#log.error({ [F.ERR]: err instanceof Error ? err.message : String(err), type: e.type }, 'Audit event lost'))
  }

  /**
   * Refuses a plain token while a step-up stands for one of `ids` (a Shared Signal's `step_up`, src/broker/step-ups.ts):
   * the agent must declare an intent at /bc-authorize, which a human approves. The agent is told where, never which signal.
   */
  #notSteppedUp(ctx: Ctx, ids: readonly string[]): void {
    const s = this.#deps.stepUps?.covering(ids)
    if (s === undefined) return
    ctx.log.warn(
      { [F.ERROR_CODE]: 'ERR_STEP_UP_REQUIRED', [F.REASON]: s.reason, step_up: s.id, target: s.target, value: s.value },
      'Broker request refused: a step-up stands',
    )
    throw new IdentityError('ERR_STEP_UP_REQUIRED', STEP_UP_DESCRIPTION)
  }

  /** Refuses a token whose subject, client, task or actors (or its own lineage) a revocation covers. */
  #notRevoked(ctx: Ctx, rec: TokenRecord): void {
    const r = this.revocations.covering(rec)
    if (r) this.#refuse(ctx, 'ERR_REVOKED', 'revoked', 'a revocation covers the token to be issued', { seq: r.seq, revocation: r.kind, value: r.value })
  }

  /**
   * Signs `rec` and stores it in one (group-committed) transaction with `before` (re-checks) and `after` (writes that reference it).
   * `durability` (see BrokerStore.txQueued): `process` only for a fresh token or grant, whose lost record fails closed (introspection,
   * renewal and delegation refuse what the store does not know); `disk` whenever the write counts a renewal or uses a grant, which a
   * power cut must not undo once the token is released (or the same token could be renewed, or the same grant redeemed, twice).
   */
  async #mintAndStore(
    ctx: Ctx,
    rec: TokenRecord,
    task: Task | undefined,
    durability: Durability,
    event: 'token.exchanged' | 'token.renewed' | 'token.delegated',
    before: () => void,
    after?: () => void,
    auditFirst?: readonly AuditEventInput[],
  ): Promise<TokenResponse> {
    this.#notRevoked(ctx, rec)
    // its subject and actors too (a delegated token of a stepped-up agent is its permissions anew); an intent's token is the way through
    if (!isActionBound(rec.authorizationDetails)) this.#notSteppedUp(ctx, [rec.clientId, rec.sub, ...rec.actors])
    await this.keys.maintain(rec.iat)
    const { key, kid, alg } = this.keys.active()
    const act = nestAct(rec.actors)
    const cnf = rec.cnfJkt !== undefined ? { jkt: rec.cnfJkt } : rec.cnfX5t !== undefined ? { 'x5t#S256': rec.cnfX5t } : undefined
    // The claims of tokens/claims.ts AccessTokenClaims (a grant adds may_act, has no cnf).
    const claims: Record<string, unknown> = {
      iss: this.issuer,
      sub: rec.sub,
      aud: rec.audiences.length === 1 ? rec.audiences[0] : [...rec.audiences],
      exp: rec.exp,
      iat: rec.iat,
      nbf: rec.iat,
      jti: rec.jti,
      scope: rec.scopes.join(' '),
      client_id: rec.clientId,
      ...(rec.taskId !== undefined ? { task_id: rec.taskId } : {}),
      ...(task?.orchestrationId !== undefined ? { orchestration_id: task.orchestrationId } : {}),
      ...(rec.authorizationDetails !== undefined ? { authorization_details: rec.authorizationDetails } : {}),
      ...(act ? { act } : {}),
      ...(rec.kind === 'grant' ? { may_act: { sub: rec.mayAct } } : {}),
      ...(cnf ? { cnf } : {}),
    }
    // The audit event is appended while the token is signed and stored (its durable write overlaps theirs); the token is
    // released only when all three are done. If signing or storing then fails, an `error` event for the same token follows.
    const audit = this.#auditIssuance(rec, event, kid, task?.orchestrationId, auditFirst)
    const stored: TokenRecord = { ...rec, kid }
    let token: string
    try {
      token = await signJwt(claims, { signer: key, kid, alg, typ: rec.kind === 'grant' ? DELEGATION_GRANT_TYP : ACCESS_TOKEN_TYP })
      await this.store.txQueued(() => {
        before()
        // again inside the transaction: a revocation recorded while the token was signed covers it too
        const r = this.revocations.covering(rec)
        if (r) throw new Refusal('ERR_REVOKED', 'revoked', `revoked while the token was minted: ${r.kind} ${r.value}`)
        this.store.insertToken(stored)
        after?.()
      }, durability)
    } catch (err) {
      if (audit)
        void audit.then((ok) => {
          if (ok)
            this.#auditQuietly({
              type: event,
              outcome: 'error',
              reason: err instanceof Refusal ? err.code : 'withheld',
              actor: { spiffe_id: rec.clientId },
              subject: rec.sub,
              token_id: rec.jti,
            })
        })
      if (err instanceof Refusal) this.#refuse(ctx, err.code, err.publicMessage, err.reason)
      throw err
    }
    if (audit && !(await audit)) {
      try {
        this.store.markRevoked([rec.jti], this.#now())
      } catch {
        // the record is unreleased either way
      }
      ctx.log.error({ [F.JTI]: rec.jti }, 'Audit log unavailable; token withheld')
      throw new IdentityError('ERR_AUDIT_UNAVAILABLE', 'temporarily unavailable')
    }
    ctx.log.info(
      {
        [F.JTI]: rec.jti,
        kind: rec.kind,
        sub: rec.sub,
        [F.KID]: kid,
        parent_jti: rec.parentJti,
        depth: rec.actors.length,
        scope: claims.scope,
        aud: rec.audiences,
        exp: rec.exp,
        renewals: rec.renewals,
        bound: cnf ? Object.keys(cnf)[0] : 'bearer',
      },
      rec.kind === 'grant' ? 'Delegation grant issued' : 'Access token issued',
    )
    return {
      access_token: token,
      issued_token_type: rec.kind === 'grant' ? TOKEN_TYPE.jwt : TOKEN_TYPE.accessToken,
      token_type: rec.kind === 'grant' ? 'N_A' : rec.cnfJkt !== undefined ? 'DPoP' : 'Bearer',
      expires_in: rec.exp - rec.iat,
      scope: rec.scopes.join(' '),
    }
  }

  // ---------------------------------------------------------- introspection

  async introspect(token: string, caller: AuthenticatedClient): Promise<IntrospectionResponse> {
    const log = this.#log.child({ client_id: caller.spiffeId, [F.METHOD]: 'introspect' })
    if (!matchesList(this.#o.introspectors, caller.spiffeId)) {
      log.warn({ [F.REASON]: 'caller is not an allowed introspector' }, 'Introspection refused')
      return { active: false }
    }
    const now = this.#now()
    const v = await this.#verifyOwn(token, now, true)
    if (!v || v.record.kind !== 'access') {
      log.debug({ [F.REASON]: 'not a live broker access token' }, 'Token inactive')
      return { active: false }
    }
    const rec = v.record
    const covered = this.revocations.covering(rec)
    if (covered) {
      log.debug({ [F.JTI]: rec.jti, [F.REASON]: 'revoked', seq: covered.seq }, 'Token inactive')
      return { active: false }
    }
    if (rec.revokedAt !== undefined) {
      log.debug({ [F.JTI]: rec.jti, [F.REASON]: 'revoked' }, 'Token inactive')
      return { active: false }
    }
    if (rec.taskId !== undefined) {
      const t = this.store.getTask(rec.taskId)
      if (!t || t.endedAt !== undefined || t.expiresAt <= now) {
        log.debug({ [F.JTI]: rec.jti, [F.REASON]: 'task ended' }, 'Token inactive')
        return { active: false }
      }
    }
    return { ...v.payload, active: true, token_type: rec.cnfJkt !== undefined ? 'DPoP' : 'Bearer' }
  }

  // ------------------------------------------------------------- revocation

  async revoke(token: string, caller: AuthenticatedClient): Promise<void> {
    const log = this.#log.child({ client_id: caller.spiffeId, [F.METHOD]: 'revoke' })
    const v = await this.#verifyOwn(token, this.#now(), false)
    if (!v) {
      log.info({ [F.REASON]: 'not a broker token' }, 'Revocation of an unknown token ignored')
      return
    }
    const rec = v.record
    if (rec.clientId !== caller.spiffeId && !matchesList(this.#o.revocationAdmins, caller.spiffeId)) {
      this.#refuse(
        { log: log.child({ [F.JTI]: rec.jti }) },
        'ERR_CLIENT_UNAUTHORIZED',
        'not authorized to revoke this token',
        'caller is neither the token client nor a revocation admin',
        { token_client: rec.clientId },
      )
    }
    const { tokens, entry, created } = this.revocations.revoke({ kind: 'token', value: rec.jti }, caller.spiffeId)
    if (created) this.#auditRevocation(entry)
    log.info({ [F.JTI]: rec.jti, [F.COUNT]: tokens }, 'Token and the tokens derived from it revoked')
  }

  async jwks(): Promise<{ keys: Record<string, unknown>[] }> {
    await this.keys.maintain(this.#now())
    return this.keys.jwks()
  }

  // ------------------------------------------------------------------ tasks

  #taskRefuse(log: Logger, code: ErrorCode, msg: string, fields: Record<string, unknown> = {}): never {
    return this.#refuse({ log }, code, msg, msg, fields)
  }

  async createTask(spec: TaskSpec, creator: AuthenticatedClient | 'admin'): Promise<Task> {
    const by = creator === 'admin' ? 'admin' : creator.spiffeId
    const log = this.#log.child({ created_by: by, [F.METHOD]: 'createTask' })
    if (creator !== 'admin' && !matchesList(this.#o.orchestrators, creator.spiffeId))
      this.#taskRefuse(log, 'ERR_CLIENT_UNAUTHORIZED', 'not authorized to create tasks')
    if (spec === null || typeof spec !== 'object') this.#taskRefuse(log, 'ERR_TASK_INVALID', 'task spec must be an object')
    const issues: string[] = []
    const taskId = spec.taskId ?? `task-${randomUUID()}`
    if (typeof taskId !== 'string' || !NAME.test(taskId)) issues.push('task_id must match [A-Za-z0-9._-]{1,128}')
    if (spec.orchestrationId !== undefined && (typeof spec.orchestrationId !== 'string' || !NAME.test(spec.orchestrationId)))
      issues.push('orchestration_id must match [A-Za-z0-9._-]{1,128}')
    const agent = spec.agent
    let agentId: SpiffeId | undefined
    if (typeof agent === 'string') {
      const body = agent.endsWith('/') ? agent.slice(0, -1) : agent
      try {
        agentId = SpiffeId.fromString(body)
        if (agentId.path === '') issues.push('agent must name a path')
      } catch {
        issues.push('agent must be a SPIFFE ID or an ID prefix ending in "/"')
      }
    } else issues.push('agent is required')
    const strList = (name: string, l: unknown, check: (s: string) => string | undefined): string[] => {
      if (!Array.isArray(l) || l.length > MAX_LIST) {
        issues.push(`${name} must be a list of at most ${MAX_LIST}`)
        return []
      }
      for (const s of l) {
        const p = typeof s === 'string' && s.length > 0 && s.length <= 2048 ? check(s) : 'must be a non-empty string'
        if (p) issues.push(`${name}: ${p}`)
      }
      return uniq(l as string[]).sort()
    }
    const scopes = strList('scopes', spec.scopes, (s) => (SCOPE_TOKEN.test(s) ? undefined : `"${s.slice(0, 80)}" is not a scope token`))
    const resources = strList('resources', spec.resources, resourceProblem)
    if (!Number.isSafeInteger(spec.ttlSeconds) || spec.ttlSeconds < 1 || spec.ttlSeconds > this.#o.maxTaskTtlSeconds)
      issues.push(`ttl must be between 1 and ${this.#o.maxTaskTtlSeconds} seconds`)
    if (!Number.isSafeInteger(spec.maxRenewals) || spec.maxRenewals < 0 || spec.maxRenewals > MAX_RENEWALS_LIMIT)
      issues.push(`max_renewals must be between 0 and ${MAX_RENEWALS_LIMIT}`)
    if (issues.length > 0) {
      log.warn({ [F.ERROR_CODE]: 'ERR_TASK_INVALID', issues }, 'Broker request refused')
      throw new IdentityError('ERR_TASK_INVALID', `invalid task: ${issues.join('; ')}`, { details: { issues } })
    }
    const ceiling = await this.#deps.ceilings.ceilingFor(agentId!)
    const f = checkCeiling(ceiling, { scopes, resources, maxRenewals: spec.maxRenewals })
    if (f) {
      log.warn({ [F.ERROR_CODE]: 'ERR_TASK_INVALID', [F.REASON]: describeCeilingFailure(f), agent, prefixes: ceiling.prefixes }, 'Broker request refused')
      throw new IdentityError('ERR_TASK_INVALID', `task ${describeCeilingFailure(f)} of its agent`, { details: { bound: f.bound } })
    }
    const now = this.#now()
    const task: Task = {
      taskId,
      ...(spec.orchestrationId !== undefined ? { orchestrationId: spec.orchestrationId } : {}),
      agent,
      scopes,
      resources,
      ttlSeconds: spec.ttlSeconds,
      maxRenewals: spec.maxRenewals,
      createdBy: by,
      createdAt: now,
      expiresAt: now + spec.ttlSeconds,
    }
    this.store.tx(() => {
      if (this.store.getTask(taskId)) throw new IdentityError('ERR_ALREADY_EXISTS', 'task already exists')
      this.store.insertTask(task)
    })
    log.info({ task_id: taskId, agent, scopes, resources, ttl: spec.ttlSeconds, max_renewals: spec.maxRenewals }, 'Task created')
    return this.store.getTask(taskId)!
  }

  async getTask(taskId: string): Promise<Task> {
    const t = typeof taskId === 'string' ? this.store.getTask(taskId) : undefined
    if (!t) throw new IdentityError('ERR_TASK_NOT_FOUND', 'task not found')
    return t
  }

  async listTasks(filter: { agent?: string; orchestrationId?: string; includeEnded?: boolean } = {}): Promise<Task[]> {
    return this.store.listTasks(filter)
  }

  async endTask(taskId: string, by: AuthenticatedClient | 'admin'): Promise<Task> {
    const who = by === 'admin' ? 'admin' : by.spiffeId
    const log = this.#log.child({ [F.METHOD]: 'endTask', by: who, task_id: taskId })
    const t = typeof taskId === 'string' ? this.store.getTask(taskId) : undefined
    if (!t) this.#taskRefuse(log, 'ERR_TASK_NOT_FOUND', 'task not found')
    if (by !== 'admin' && t.createdBy !== by.spiffeId)
      this.#taskRefuse(log, 'ERR_CLIENT_UNAUTHORIZED', 'not authorized to end this task', { created_by: t.createdBy })
    if (this.store.tx(() => this.store.endTask(taskId, this.#now()))) log.info({}, 'Task ended')
    return this.store.getTask(taskId)!
  }

  // ------------------------------------------------------------ revocations

  async revokeAt(
    req: RevocationRequest,
    by: AuthenticatedClient | 'admin',
    operator?: RevocationOperator,
  ): Promise<{ entry: StoredRevocation; created: boolean; tokens: number }> {
    const who = by === 'admin' ? 'admin' : by.spiffeId
    if (by !== 'admin' && !matchesList(this.#o.revocationAdmins, by.spiffeId)) {
      this.#refuse(
        { log: this.#log.child({ [F.METHOD]: 'revokeAt', by: who }) },
        'ERR_CLIENT_UNAUTHORIZED',
        'not authorized to revoke',
        'not a revocation admin',
      )
    }
    const r = this.revocations.revoke(req, who)
    if (r.created) this.#auditRevocation(r.entry, by === 'admin' ? operator : undefined)
    return r
  }

  #auditRevocation(e: StoredRevocation, operator?: RevocationOperator): void {
    const byId = e.createdBy.startsWith('spiffe://') ? { actor: { spiffe_id: e.createdBy } } : {}
    const target =
      e.kind === 'task'
        ? { task_id: e.value }
        : e.kind === 'token' || (e.kind === 'chain' && !e.value.startsWith('spiffe://'))
          ? { token_id: e.value }
          : { subject: e.value }
    this.#auditQuietly({
      type: 'token.revoked',
      outcome: 'success',
      ...byId,
      ...target,
      attributes: {
        level: e.kind,
        seq: e.seq,
        tokens: e.jtis?.length ?? 0,
        by: operator ? 'operator' : e.createdBy === 'admin' ? 'admin' : 'client',
        ...(operator ? { operator: operator.id.slice(0, 256), method: operator.method.slice(0, 64) } : {}),
      },
    })
  }

  async listRevocations(sinceSeq = 0, includeExpired = false): Promise<StoredRevocation[]> {
    return this.revocations.list(sinceSeq, includeExpired)
  }

  async signedRevocationList(): Promise<string> {
    const now = this.#now()
    await this.keys.maintain(now)
    const { key, kid, alg } = this.keys.active()
    const entries = this.revocations.list(0)
    const claims = {
      iss: this.issuer,
      iat: now,
      exp: now + REVOCATION_LIST_TTL_SECONDS,
      seq: this.revocations.lastSeq,
      revocations: entries.map(revocationEntryToWire),
    }
    return signJwt(claims, { signer: key, kid, alg, typ: REVOCATION_LIST_TYP })
  }

  onRevocation(fn: (e: StoredRevocation) => void): () => void {
    return this.revocations.onRevocation(fn)
  }

  async close(): Promise<void> {
    this.store.close()
  }
}

/**
 * Opens the store, loads (or generates) the signing keys and returns the
 * broker's domain. The composition root supplies the ports (`deps`).
 */
export async function createBrokerService(deps: BrokerDeps, options: BrokerServiceOptions): Promise<BrokerServiceImpl> {
  if (!deps || !deps.keyManager || !deps.ceilings || !deps.jwtBundles) throw new TypeError('deps need keyManager, ceilings and jwtBundles')
  let issuer: URL
  try {
    issuer = new URL(options.issuer)
  } catch {
    throw new TypeError('issuer must be an absolute URL')
  }
  if (issuer.search !== '' || issuer.hash !== '') throw new TypeError('issuer must have no query or fragment')
  const log = deps.log ?? nullLogger
  const clock = deps.clock ?? systemClock
  const store = BrokerStore.open({ path: options.storePath, log })
  try {
    const keys = await SigningKeys.open(deps.keyManager, store, log, Math.floor(clock.now() / 1000), {
      ...options.signing,
      maxTokenLifetimeSeconds: options.maxTokenTtlSeconds ?? 3600,
    })
    return new BrokerServiceImpl(deps, options, store, keys)
  } catch (err) {
    store.close()
    throw err
  }
}
