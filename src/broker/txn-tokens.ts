/**
 * The broker as a Transaction Token Service (draft-ietf-oauth-transaction-tokens,
 * editor's copy after -08): a token exchange with `requested_token_type`
 * `...:txn_token` returns a Txn-Token (`typ` txntoken+jwt, `token_type` N_A,
 * no refresh) for the authenticated requesting workload.
 *
 * Subject tokens:
 * - a broker access token: the transaction is for its `sub`, acted by its
 *   actor chain, within its scope and task, never outliving it. Only its own
 *   client, or a trusted requester (a gateway), may present it.
 * - a JWT-SVID (`aud` = the issuer): the transaction is for the SVID's
 *   workload, within its ceiling. Same rule for who may present it.
 * - `unsigned_json` (`{"sub": "spiffe://..."}`): only from a trusted
 *   requester, which vouches that it authenticated that workload (the
 *   gateway after mTLS); within that workload's ceiling.
 * - a user's access token from a trusted issuer (on-behalf-of): the
 *   transaction is the user's (`sub`, `tctx.principal_issuer`), the requesting
 *   agent is `act`, within the user's scopes ∩ the agent's ceiling.
 * - a Txn-Token this broker issued: a replacement. `txn`, `sub`, `aud`,
 *   `tctx` and `act` are kept, `scope` can only narrow, `exp` never moves
 *   later, and the requesting workload is appended to `txn_path`.
 * Txn-Tokens are not stored: they are short-lived and every revocation
 * applies to them by their claims (task, subject, agents, path).
 */
import { randomUUID } from 'node:crypto'
import { compactVerify, decodeProtectedHeader } from 'jose'
import type { AuditEventInput } from '../audit/event.js'
import { IdentityError } from '../errors/identity-error.js'
import type { ErrorCode } from '../errors/codes.js'
import type { Ceiling } from '../spiffe/bounds/ceiling.js'
import { SpiffeId } from '../spiffe/spiffe-id.js'
import { TOKEN_TYPE, type ActClaim } from '../tokens/claims.js'
import type { RevocableClaims, RevocationEntry } from '../tokens/revocation.js'
import {
  checkTxnClaims,
  MAX_TXN_PATH,
  TXN_TOKEN_TYP,
  txnRevocableClaims,
  txnScopes,
  UNSIGNED_JSON_TOKEN_TYPE,
  type AgenticContext,
  type TransactionContext,
  type TxnPathHop,
  type TxnTokenClaims,
} from '../tokens/txn-token.js'
import type { UserToken } from '../tokens/user-token.js'
import type { AuthenticatedClient, TokenRequest, TokenResponse } from './contract.js'
import type { SigningKeys } from './keys.js'
import { signJwt } from './mint.js'
import type { TokenRecord } from './store/broker-store.js'

/** Subject token types a Txn-Token request accepts. */
export const TXN_SUBJECT_TOKEN_TYPES: readonly string[] = [
  TOKEN_TYPE.accessToken,
  TOKEN_TYPE.jwt,
  TOKEN_TYPE.jwtSvid,
  UNSIGNED_JSON_TOKEN_TYPE,
  TOKEN_TYPE.txnToken,
]

const MAX_TOKEN_LENGTH = 32 * 1024
const MAX_CTX_STRING = 2048
/** Members of request_details the broker sets itself and never takes from the request. */
const RESERVED_TCTX = new Set(['task_id', 'orchestration_id', 'authorization_details', 'agentic', 'principal_issuer', 'source_jti'])
const AGENT_DECLARED = ['agent_type', 'agent_version', 'intent'] as const

/** A refusal: code, what the caller is told, what the log is told. */
export type Refuse = (code: ErrorCode, publicMessage: string, reason: string, fields?: Record<string, unknown>) => never

/** What the issuer needs from the broker service. */
export interface TxnTokenHost {
  readonly issuer: string
  readonly keys: SigningKeys
  now(): number
  /** A live broker access token this broker issued (signature, times, record), or undefined. */
  verifyAccessToken(token: string): Promise<{ record: TokenRecord; orchestrationId?: string } | undefined>
  /** The SPIFFE ID of a valid JWT-SVID with `aud` = the issuer; refuses otherwise. */
  jwtSvidId(token: string, refuse: Refuse): Promise<string>
  ceiling(id: string): Promise<Ceiling>
  /** A user's access token from a trusted issuer (on-behalf-of); undefined when the token's `iss` is not one. Throws ERR_GRANT_INVALID when it is one and the token fails. */
  verifyUserToken?(token: string): Promise<UserToken | undefined>
  covering(c: RevocableClaims): RevocationEntry | undefined
  /** Appends the issuance event; resolves false when the audit log is unavailable. Undefined without an audit log. */
  audit?(e: AuditEventInput): Promise<boolean>
}

export interface TxnTokenOptions {
  /** `aud` of every Txn-Token: the trust domain, `spiffe://<td>`. */
  trustDomain: string
  /** Lifetime of a fresh Txn-Token (default 60 s); never beyond its subject token. */
  ttlSeconds?: number
  /** Workloads (IDs or prefixes ending in `/`) that may present another workload's subject token or an `unsigned_json` one. */
  trustedRequesters?: readonly string[]
}

function matches(list: readonly string[], id: string): boolean {
  return list.some((p) => (p.endsWith('/') ? id.startsWith(p) && id.length > p.length : id === p))
}

function nest(actors: readonly string[]): ActClaim | undefined {
  let act: ActClaim | undefined
  for (let i = actors.length - 1; i >= 0; i--) act = act ? { sub: actors[i]!, act } : { sub: actors[i]! }
  return act
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

interface Subject {
  sub: string
  /** Acting agents, current first. */
  actors: string[]
  /** What the transaction may have at most. */
  scopes: readonly string[]
  exp: number
  taskId?: string
  orchestrationId?: string
  authn: string
  /** On-behalf-of: the user's issuer. */
  principalIssuer?: string
  /** The broker access token the transaction starts from (its jti): a revocation of that token covers the transaction. */
  sourceJti?: string
  /** Replacement only. */
  previous?: TxnTokenClaims
}

export class TxnTokenIssuer {
  readonly #host: TxnTokenHost
  readonly #trustDomain: string
  readonly #ttl: number
  readonly #trusted: readonly string[]

  constructor(host: TxnTokenHost, opts: TxnTokenOptions) {
    if (!opts.trustDomain.startsWith('spiffe://')) throw new TypeError('trustDomain must be spiffe://<td>')
    this.#host = host
    this.#trustDomain = opts.trustDomain
    this.#ttl = opts.ttlSeconds ?? 60
    if (!Number.isInteger(this.#ttl) || this.#ttl < 1 || this.#ttl > 3600) throw new RangeError('txn token ttl must be 1..3600 s')
    this.#trusted = opts.trustedRequesters ?? []
  }

  get trustDomain(): string {
    return this.#trustDomain
  }

  /** Issues a Txn-Token for `req` from `client`; refuses (and writes nothing) otherwise. */
  async issue(req: TokenRequest, client: AuthenticatedClient, refuse: Refuse): Promise<TokenResponse> {
    if (req.actorToken !== undefined || req.mayAct !== undefined)
      refuse('ERR_TOKEN_REQUEST_INVALID', 'unexpected parameters', 'actor_token or may_act on a txn_token request')
    if (req.resources.length > 0) refuse('ERR_TARGET_INVALID', 'invalid resource', 'resource on a txn_token request (aud is the trust domain)')
    if (req.audiences.length > 1 || (req.audiences.length === 1 && req.audiences[0] !== this.#trustDomain))
      refuse('ERR_TARGET_INVALID', 'invalid audience', 'txn_token audience is not this trust domain', { audience: req.audiences.slice(0, 2) })
    const token = req.subjectToken!
    const type = req.subjectTokenType!
    if (!TXN_SUBJECT_TOKEN_TYPES.includes(type))
      refuse('ERR_TOKEN_REQUEST_INVALID', 'unsupported subject_token_type', `txn subject_token_type ${type.slice(0, 100)}`)
    if (token.length > MAX_TOKEN_LENGTH) refuse('ERR_GRANT_INVALID', 'invalid subject_token', 'subject token too large')
    const now = this.#host.now()
    const trusted = matches(this.#trusted, client.spiffeId)
    const subject = await this.#subject(type, token, client, trusted, now, refuse)

    // scope: the requested scopes, all within what the subject has (default: all of it)
    const allowed = new Set(subject.scopes)
    const scopes = req.scopes ?? subject.scopes
    const wider = scopes.filter((s) => !allowed.has(s))
    if (wider.length > 0) refuse('ERR_SCOPE_INVALID', 'invalid scope', 'txn_token scope wider than the subject token', { scope: wider.slice(0, 8) })

    const prev = subject.previous
    const exp = Math.min(now + this.#ttl, subject.exp)
    if (exp <= now) refuse('ERR_GRANT_INVALID', 'invalid subject_token', 'subject token expires now')
    const hop: TxnPathHop = { wl: client.spiffeId, iat: now, scope: scopes.join(' ') }
    let claims: TxnTokenClaims
    if (prev) {
      if (req.requestDetails !== undefined) refuse('ERR_TOKEN_REQUEST_INVALID', 'request_details not allowed on replacement', 'tctx is immutable')
      if (prev.txn_path.length >= MAX_TXN_PATH) refuse('ERR_GRANT_INVALID', 'invalid subject_token', 'txn_path at its limit')
      // a workload already on the path would make a loop (draft-araut-oauth-transaction-tokens-for-agents)
      if (prev.txn_path.some((h) => h.wl === client.spiffeId)) refuse('ERR_GRANT_INVALID', 'invalid subject_token', 'requesting workload already on txn_path')
      claims = {
        iss: this.#host.issuer,
        aud: this.#trustDomain,
        iat: now,
        exp,
        jti: randomUUID(),
        txn: prev.txn,
        sub: prev.sub,
        scope: hop.scope,
        req_wl: client.spiffeId,
        tctx: prev.tctx,
        ...(prev.rctx ? { rctx: prev.rctx } : {}),
        ...(prev.act ? { act: prev.act } : {}),
        txn_path: [...prev.txn_path, hop],
      }
    } else {
      const tctx = this.#tctx(req.requestDetails, subject, refuse)
      const rctx = this.#rctx(req.requestContext, subject.authn, refuse)
      const act = nest(subject.actors)
      claims = {
        iss: this.#host.issuer,
        aud: this.#trustDomain,
        iat: now,
        exp,
        jti: randomUUID(),
        txn: randomUUID(),
        sub: subject.sub,
        scope: hop.scope,
        req_wl: client.spiffeId,
        tctx,
        rctx,
        ...(act ? { act } : {}),
        txn_path: [hop],
      }
    }
    const hit = this.#host.covering(txnRevocableClaims(claims))
    if (hit) refuse('ERR_REVOKED', 'revoked', 'a revocation covers the transaction', { seq: hit.seq, revocation: hit.kind })

    await this.#host.keys.maintain(now)
    const { key, kid, alg } = this.#host.keys.active()
    const audited = this.#host.audit?.({
      type: 'txn_token.issued',
      outcome: 'success',
      actor: { spiffe_id: client.spiffeId },
      subject: claims.sub,
      ...(claims.tctx.task_id !== undefined ? { task_id: claims.tctx.task_id } : {}),
      ...(claims.tctx.orchestration_id !== undefined ? { orchestration_id: claims.tctx.orchestration_id } : {}),
      resource: [this.#trustDomain],
      scope: scopes.slice(),
      delegation_depth: subject.actors.length > 0 ? subject.actors.length - 1 : 0,
      token_id: claims.jti,
      key_id: kid,
      attributes: { txn: claims.txn, hops: claims.txn_path.length, replacement: prev !== undefined, authn: subject.authn },
    })
    const jwt = await signJwt(claims as unknown as Record<string, unknown>, { signer: key, kid, alg, typ: TXN_TOKEN_TYP })
    if (audited && !(await audited)) throw new IdentityError('ERR_AUDIT_UNAVAILABLE', 'temporarily unavailable')
    return { access_token: jwt, issued_token_type: TOKEN_TYPE.txnToken, token_type: 'N_A', expires_in: exp - now, scope: hop.scope }
  }

  async #subject(type: string, token: string, client: AuthenticatedClient, trusted: boolean, now: number, refuse: Refuse): Promise<Subject> {
    const mayPresent = (holder: string, what: string): void => {
      if (holder !== client.spiffeId && !trusted)
        refuse('ERR_GRANT_INVALID', 'invalid subject_token', `${what} of another workload from an untrusted requester`)
    }
    if (type === UNSIGNED_JSON_TOKEN_TYPE) {
      if (!trusted) refuse('ERR_GRANT_INVALID', 'invalid subject_token', 'unsigned_json subject token from an untrusted requester')
      let o: unknown
      try {
        o = JSON.parse(token)
      } catch {
        refuse('ERR_GRANT_INVALID', 'invalid subject_token', 'unsigned_json is not JSON')
      }
      const sub = isRecord(o) ? o['sub'] : undefined
      if (typeof sub !== 'string' || !SpiffeId.isValid(sub)) return refuse('ERR_GRANT_INVALID', 'invalid subject_token', 'unsigned_json sub is not a SPIFFE ID')
      return this.#fromCeiling(sub, now, 'gateway')
    }
    if (type === TOKEN_TYPE.jwtSvid) {
      const id = await this.#host.jwtSvidId(token, refuse)
      mayPresent(id, 'JWT-SVID')
      return this.#fromCeiling(id, now, 'jwt-svid')
    }
    let typ: unknown
    try {
      typ = decodeProtectedHeader(token).typ
    } catch {
      refuse('ERR_GRANT_INVALID', 'invalid subject_token', 'subject token header is not JOSE')
    }
    if (type === TOKEN_TYPE.txnToken || (type === TOKEN_TYPE.jwt && typ === TXN_TOKEN_TYP)) {
      const prev = await this.#verifyOwnTxn(token, now)
      if (!prev) return refuse('ERR_GRANT_INVALID', 'invalid subject_token', 'subject token is not a live Txn-Token of this broker')
      // the current holder is whoever it was issued to; anyone downstream holds it legitimately (it travels in a header), so
      // replacement is open to any authenticated workload of the trust domain: it can only narrow and is recorded in the path
      if (SpiffeId.fromString(client.spiffeId).trustDomain.idString() !== this.#trustDomain)
        refuse('ERR_GRANT_INVALID', 'invalid subject_token', 'a workload of another trust domain replacing a Txn-Token')
      const actors = [] as string[]
      return { sub: prev.sub, actors, scopes: txnScopes(prev.scope), exp: prev.exp, authn: 'txn_token', previous: prev }
    }
    if (type === TOKEN_TYPE.jwt && typ !== 'at+jwt') {
      const id = await this.#host.jwtSvidId(token, refuse)
      mayPresent(id, 'JWT-SVID')
      return this.#fromCeiling(id, now, 'jwt-svid')
    }
    const user = await this.#userToken(token, refuse)
    if (user) {
      // on behalf of a user: the transaction is the user's, the requesting agent acts, within the agent's own ceiling
      const c = await this.#host.ceiling(client.spiffeId)
      const mine = new Set(c.scopes)
      return {
        sub: user.sub,
        actors: [client.spiffeId],
        scopes: user.scopes.filter((s) => mine.has(s)),
        exp: user.exp,
        authn: 'user_token',
        principalIssuer: user.iss,
      }
    }
    const v = await this.#host.verifyAccessToken(token)
    if (!v || v.record.kind !== 'access') return refuse('ERR_GRANT_INVALID', 'invalid subject_token', 'subject token is not a live broker access token')
    const rec = v.record
    if (rec.revokedAt !== undefined) refuse('ERR_GRANT_INVALID', 'invalid subject_token', 'subject token is revoked')
    mayPresent(rec.clientId, 'access token')
    const actors = rec.actors.length > 0 ? [...rec.actors] : [rec.sub]
    return {
      sub: rec.sub,
      actors,
      scopes: rec.scopes,
      exp: rec.exp,
      ...(rec.taskId !== undefined ? { taskId: rec.taskId } : {}),
      ...(v.orchestrationId !== undefined ? { orchestrationId: v.orchestrationId } : {}),
      sourceJti: rec.jti,
      authn: 'access_token',
    }
  }

  async #userToken(token: string, refuse: Refuse): Promise<UserToken | undefined> {
    if (!this.#host.verifyUserToken) return undefined
    try {
      return await this.#host.verifyUserToken(token)
    } catch (err) {
      if (!(err instanceof IdentityError)) throw err
      return refuse(
        'ERR_GRANT_INVALID',
        'invalid subject_token',
        `user token: ${typeof err.details?.['reason'] === 'string' ? err.details['reason'] : err.code}`,
      )
    }
  }

  async #fromCeiling(id: string, now: number, authn: string): Promise<Subject> {
    const c = await this.#host.ceiling(id)
    return { sub: id, actors: [id], scopes: c.scopes, exp: now + this.#ttl, authn }
  }

  /** A Txn-Token this broker signed and that is still valid, or undefined. */
  async #verifyOwnTxn(token: string, now: number): Promise<TxnTokenClaims | undefined> {
    let header: ReturnType<typeof decodeProtectedHeader>
    try {
      header = decodeProtectedHeader(token)
    } catch {
      return undefined
    }
    if (header.typ !== TXN_TOKEN_TYP || typeof header.kid !== 'string') return undefined
    const k = this.#host.keys.publicKeyFor(header.kid)
    if (!k || header.alg !== k.alg) return undefined
    try {
      const r = await compactVerify(token, k.key, { algorithms: [k.alg] })
      const payload = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(r.payload)) as unknown
      if (!isRecord(payload)) return undefined
      const c = checkTxnClaims(payload, this.#host.issuer, this.#trustDomain, now, 0)
      if (c.exp <= now) return undefined
      return c
    } catch {
      return undefined
    }
  }

  /** `tctx`: the request_details the agent gave (strings, numbers, booleans; `purpose`; declared agentic members), plus what the broker knows. */
  #tctx(details: Readonly<Record<string, unknown>> | undefined, s: Subject, refuse: Refuse): TransactionContext {
    const out: Record<string, unknown> = {}
    const declared: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(details ?? {})) {
      if (RESERVED_TCTX.has(k)) {
        if (k === 'agentic' && isRecord(v)) {
          for (const [ak, av] of Object.entries(v)) {
            if ((AGENT_DECLARED as readonly string[]).includes(ak)) {
              if (typeof av !== 'string' || av.length > MAX_CTX_STRING)
                refuse('ERR_TOKEN_REQUEST_INVALID', 'invalid request_details', `agentic.${ak} must be a string`)
              declared[ak] = av
            } else if (ak === 'allowed_actions') {
              if (!Array.isArray(av) || av.length > 64 || !av.every((a) => typeof a === 'string' && a.length > 0 && a.length <= 256))
                refuse('ERR_TOKEN_REQUEST_INVALID', 'invalid request_details', 'agentic.allowed_actions must be a list of strings')
              declared[ak] = av
            } else if (ak === 'environment') {
              if (!isRecord(av) || Object.keys(av).length > 32 || !Object.values(av).every((x) => typeof x === 'string' && x.length <= 256))
                refuse('ERR_TOKEN_REQUEST_INVALID', 'invalid request_details', 'agentic.environment must map names to strings')
              declared[ak] = av
            } else refuse('ERR_TOKEN_REQUEST_INVALID', 'invalid request_details', `agentic.${ak.slice(0, 64)} is not declarable`)
          }
          continue
        }
        refuse('ERR_TOKEN_REQUEST_INVALID', 'invalid request_details', `request_details.${k} is set by the broker`)
      }
      if (!(typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') || (typeof v === 'string' && v.length > MAX_CTX_STRING))
        refuse('ERR_TOKEN_REQUEST_INVALID', 'invalid request_details', `request_details.${k.slice(0, 64)} must be a string, number or boolean`)
      out[k] = v
    }
    if (s.taskId !== undefined) out['task_id'] = s.taskId
    if (s.orchestrationId !== undefined) out['orchestration_id'] = s.orchestrationId
    if (s.principalIssuer !== undefined) out['principal_issuer'] = s.principalIssuer
    if (s.sourceJti !== undefined) out['source_jti'] = s.sourceJti
    const agentic: AgenticContext = {
      agent_id: s.actors[0] ?? s.sub,
      ...(s.actors.length > 1 ? { delegation_chain: s.actors.slice(1) } : {}),
      ...(declared as Partial<AgenticContext>),
    }
    out['agentic'] = agentic
    return out
  }

  #rctx(ctx: Readonly<Record<string, unknown>> | undefined, authn: string, refuse: Refuse): Record<string, unknown> {
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(ctx ?? {})) {
      if (k === 'authn') refuse('ERR_TOKEN_REQUEST_INVALID', 'invalid request_context', 'request_context.authn is set by the broker')
      if (!(typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') || (typeof v === 'string' && v.length > MAX_CTX_STRING))
        refuse('ERR_TOKEN_REQUEST_INVALID', 'invalid request_context', `request_context.${k.slice(0, 64)} must be a string, number or boolean`)
      out[k] = v
    }
    out['authn'] = authn
    return out
  }
}
