/**
 * Transaction tokens (IETF `draft-ietf-oauth-transaction-tokens`, editor's
 * copy after -08) as warrant issues and checks them: the claims contract, the
 * agentic transaction context (`tctx`), verification by any service of the
 * trust domain, and call-chain policies. Pure (jose and node:crypto only).
 *
 * A Txn-Token carries who a call is for (`sub`), what it may do (`scope`,
 * `tctx`), who asked for it (`req_wl`), and, in warrant's `txn_path` claim,
 * every workload the transaction passed through, in order: the broker appends
 * the requesting workload each time a service exchanges the token it received
 * for a replacement, and signs the result. `txn`, `sub`, `aud`, `tctx` and
 * `act` never change across replacements; `scope` only narrows; `exp` never
 * moves later.
 */
import { compactVerify, decodeProtectedHeader } from 'jose'
import { IdentityError } from '../errors/index.js'
import { SpiffeId } from '../spiffe/spiffe-id.js'
import { ACCESS_TOKEN_ALGORITHMS, DEFAULT_CLOCK_SKEW_SEC } from './access-token.js'
import type { ActClaim, AuthorizationDetail } from './claims.js'
import type { JwksCache } from './jwks-cache.js'
import { actorsOf, type RevocableClaims, type RevocationSet } from './revocation.js'

/** JOSE `typ` of a Txn-Token (media type `application/txntoken+jwt`). */
export const TXN_TOKEN_TYP = 'txntoken+jwt'
/** The HTTP header a Txn-Token travels in (exactly one; never `Authorization`). */
export const TXN_TOKEN_HEADER = 'txn-token'
/** Draft subject token type: a JSON object `{"sub": ...}` vouched for by the (authenticated, trusted) requesting workload. */
export const UNSIGNED_JSON_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:unsigned_json'
/** The longest `txn_path` accepted (hops, the original requester included). */
export const MAX_TXN_PATH = 32

const MAX_TOKEN_LENGTH = 32_768
const MAX_STRING = 2048
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/
const TYPS = new Set([TXN_TOKEN_TYP, `application/${TXN_TOKEN_TYP}`])

/** One hop of the call chain: the workload that asked for this token (or its replacement), when, with which scope. */
export interface TxnPathHop {
  /** The requesting workload's SPIFFE ID. */
  readonly wl: string
  readonly iat: number
  /** The scope the token had from this hop on. */
  readonly scope: string
}

/**
 * The agentic part of the transaction context (after the agent-identity
 * reference architecture and `draft-araut-oauth-transaction-tokens-for-agents`).
 * Only what the broker established is authoritative: `agent_id` and the
 * delegation chain come from verified tokens; the rest is what the agent
 * declared, recorded as declared.
 */
export interface AgenticContext {
  /** The acting agent instance's SPIFFE ID (also `act.sub`). */
  readonly agent_id: string
  /** Earlier agents of the delegation chain, most recent first. */
  readonly delegation_chain?: readonly string[]
  readonly agent_type?: string
  readonly agent_version?: string
  /** The agent's declared intent for this transaction, as declared. */
  readonly intent?: string
  /** Actions the agent declared it will take; a service may refuse others. */
  readonly allowed_actions?: readonly string[]
  /** Environment constraints (e.g. `{"region": "eu"}`), as declared. */
  readonly environment?: Readonly<Record<string, string>>
}

/** `tctx`: immutable for the life of the transaction. */
export interface TransactionContext {
  readonly purpose?: string
  readonly task_id?: string
  readonly orchestration_id?: string
  readonly authorization_details?: readonly AuthorizationDetail[]
  readonly agentic?: AgenticContext
  /** The jti of the broker access token the transaction started from (set by the broker): revoking that token, or its chain, revokes the transaction. */
  readonly source_jti?: string
  /** Further request_details members (strings, numbers, booleans). */
  readonly [k: string]: unknown
}

/** `rctx`: the requester's environment when the transaction started. */
export interface RequesterContext {
  readonly req_ip?: string
  /** How the subject was authenticated: `access_token`, `jwt-svid`, `x509-svid`, `gateway`. */
  readonly authn?: string
  readonly [k: string]: unknown
}

export interface TxnTokenClaims {
  readonly iss: string
  /** The trust domain (`spiffe://<td>`). */
  readonly aud: string
  readonly iat: number
  readonly exp: number
  /** Unique per token (replacements get their own). */
  readonly jti: string
  /** The transaction ID: unchanged across replacements. */
  readonly txn: string
  /** Whom the transaction is for: the agent, or the human principal it acts for. */
  readonly sub: string
  readonly scope: string
  /** The workload that requested this token (the last hop of `txn_path`). */
  readonly req_wl: string
  readonly tctx: TransactionContext
  readonly rctx?: RequesterContext
  /** The acting agent outermost, earlier agents nested (RFC 8693 §4.1). */
  readonly act?: ActClaim
  readonly txn_path: readonly TxnPathHop[]
}

/**
 * The documented JSON schema of `tctx` (draft 2020-12). Services may rely on
 * these members; other members are request_details the agent supplied.
 */
export const TCTX_JSON_SCHEMA = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  $id: 'urn:warrant:schema:txn-token:tctx',
  type: 'object',
  properties: {
    purpose: { type: 'string', maxLength: 256 },
    task_id: { type: 'string', maxLength: 256 },
    orchestration_id: { type: 'string', maxLength: 256 },
    source_jti: { type: 'string', maxLength: 256 },
    authorization_details: { type: 'array', items: { type: 'object', required: ['type'], properties: { type: { type: 'string' } } } },
    agentic: {
      type: 'object',
      required: ['agent_id'],
      properties: {
        agent_id: { type: 'string', format: 'uri', pattern: '^spiffe://' },
        delegation_chain: { type: 'array', items: { type: 'string', pattern: '^spiffe://' } },
        agent_type: { type: 'string', maxLength: 256 },
        agent_version: { type: 'string', maxLength: 256 },
        intent: { type: 'string', maxLength: 2048 },
        allowed_actions: { type: 'array', items: { type: 'string', maxLength: 256 } },
        environment: { type: 'object', additionalProperties: { type: 'string', maxLength: 256 } },
      },
      additionalProperties: false,
    },
  },
  additionalProperties: { type: ['string', 'number', 'boolean'] },
} as const

export function invalidTxnToken(reason: string, extra: Record<string, unknown> = {}, cause?: unknown): IdentityError {
  return new IdentityError('ERR_TXN_TOKEN_INVALID', 'invalid transaction token', {
    details: { reason, ...extra },
    ...(cause === undefined ? {} : { cause }),
  })
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function isBoundedString(v: unknown, max = MAX_STRING): v is string {
  return typeof v === 'string' && v.length > 0 && v.length <= max
}

function isNumericDate(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0
}

function isSpiffeId(v: unknown): v is string {
  return isBoundedString(v) && SpiffeId.isValid(v)
}

/** The scopes of a space-separated `scope`. */
export function txnScopes(scope: string): string[] {
  return scope.split(' ').filter((s) => s.length > 0)
}

/** Checks the shape of `txn_path`; returns it. */
function checkPath(v: unknown): TxnPathHop[] {
  if (!Array.isArray(v) || v.length === 0) throw invalidTxnToken('txn_path')
  if (v.length > MAX_TXN_PATH) throw invalidTxnToken('txn_path_length', { max: MAX_TXN_PATH })
  let lastIat = 0
  for (const h of v) {
    if (!isRecord(h) || !isSpiffeId(h['wl']) || !isNumericDate(h['iat']) || typeof h['scope'] !== 'string' || h['scope'].length > 8192)
      throw invalidTxnToken('txn_path')
    if (h['iat'] < lastIat) throw invalidTxnToken('txn_path_order')
    lastIat = h['iat']
  }
  return v as TxnPathHop[]
}

function checkAct(act: unknown): void {
  let depth = 0
  for (let a: unknown = act; a !== undefined; a = a['act']) {
    if (++depth > 16) throw invalidTxnToken('act_depth')
    if (!isRecord(a) || !isSpiffeId(a['sub'])) throw invalidTxnToken('act')
  }
}

export interface VerifyTxnTokenOptions {
  /** The broker's issuer URL: `iss` must equal it. */
  issuer: string
  /** This trust domain (`spiffe://<td>`): `aud` must equal it. */
  trustDomain: string
  /** The broker's keys (the same JWKS as its access tokens). */
  keys: JwksCache
  nowSec: number
  clockSkewSec?: number
  algorithms?: readonly string[]
  /** Scopes the route needs, all of them. */
  requiredScopes?: readonly string[]
  /** The route's call-chain policy. */
  policy?: ChainPolicy
  /** Revocations known to this service (the broker's feed or signed list). */
  revocations?: Pick<RevocationSet, 'covering'>
}

/**
 * Verifies a Txn-Token: shape, `typ`, `alg`, `kid` from the issuer's JWKS,
 * signature, `iss`, `aud` = the trust domain, times, the required claims and
 * their types, `req_wl` = the last hop of `txn_path`; then revocation, scopes
 * and the call-chain policy. Throws ERR_TXN_TOKEN_INVALID (with
 * `details.reason`), ERR_SCOPE_INSUFFICIENT or ERR_CALL_CHAIN_REFUSED.
 */
export async function verifyTxnToken(token: string, opts: VerifyTxnTokenOptions): Promise<TxnTokenClaims> {
  const algorithms = opts.algorithms ?? ACCESS_TOKEN_ALGORITHMS
  const skew = opts.clockSkewSec ?? DEFAULT_CLOCK_SKEW_SEC
  const now = opts.nowSec
  if (typeof token !== 'string' || token.length === 0) throw invalidTxnToken('missing')
  if (token.length > MAX_TOKEN_LENGTH) throw invalidTxnToken('too_large')
  if (!COMPACT_JWS.test(token)) throw invalidTxnToken('malformed')
  let header: Record<string, unknown>
  try {
    header = decodeProtectedHeader(token)
  } catch (err) {
    throw invalidTxnToken('malformed', {}, err)
  }
  if (typeof header['typ'] !== 'string' || !TYPS.has(header['typ'].toLowerCase())) throw invalidTxnToken('typ')
  const alg = header['alg']
  if (typeof alg !== 'string' || !algorithms.includes(alg)) throw invalidTxnToken('alg')
  const kid = header['kid']
  if (!isBoundedString(kid, 256)) throw invalidTxnToken('kid')
  if (header['jwk'] !== undefined || header['jku'] !== undefined || header['x5u'] !== undefined || header['x5c'] !== undefined)
    throw invalidTxnToken('header_key')
  let key: Awaited<ReturnType<JwksCache['getKey']>>
  try {
    key = await opts.keys.getKey(kid, alg)
  } catch (err) {
    throw invalidTxnToken('kid_unknown', { kid: kid.slice(0, 128) }, err)
  }
  let payload: Uint8Array
  try {
    payload = (await compactVerify(token, key, { algorithms: [alg] })).payload
  } catch (err) {
    throw invalidTxnToken('signature', { kid }, err)
  }
  let c: unknown
  try {
    c = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload))
  } catch (err) {
    throw invalidTxnToken('payload', {}, err)
  }
  if (!isRecord(c)) throw invalidTxnToken('payload')
  const claims = checkTxnClaims(c, opts.issuer, opts.trustDomain, now, skew)
  if (opts.revocations) {
    const hit = opts.revocations.covering(txnRevocableClaims(claims), now)
    if (hit) throw invalidTxnToken('revoked', { seq: hit.seq, kind: hit.kind })
  }
  if (opts.requiredScopes !== undefined && opts.requiredScopes.length > 0) {
    const granted = new Set(txnScopes(claims.scope))
    const missing = opts.requiredScopes.filter((s) => !granted.has(s))
    if (missing.length > 0) throw new IdentityError('ERR_SCOPE_INSUFFICIENT', 'insufficient scope', { details: { reason: 'scope', missing, txn: claims.txn } })
  }
  if (opts.policy) checkChainPolicy(claims, opts.policy)
  return claims
}

/** The claim checks of verifyTxnToken, after the signature (also used by the broker on a token it signed). */
export function checkTxnClaims(c: Record<string, unknown>, issuer: string, trustDomain: string, now: number, skew = DEFAULT_CLOCK_SKEW_SEC): TxnTokenClaims {
  if (c['iss'] !== issuer) throw invalidTxnToken('iss')
  if (c['aud'] !== trustDomain) throw invalidTxnToken('aud')
  const { exp, iat } = c
  if (!isNumericDate(exp)) throw invalidTxnToken('exp')
  if (!isNumericDate(iat)) throw invalidTxnToken('iat')
  if (now >= exp + skew) throw invalidTxnToken('expired', { exp, now })
  if (iat > now + skew) throw invalidTxnToken('iat_future', { iat, now })
  if (!isBoundedString(c['jti'], 256)) throw invalidTxnToken('jti')
  if (!isBoundedString(c['txn'], 256)) throw invalidTxnToken('txn')
  if (!isBoundedString(c['sub'])) throw invalidTxnToken('sub')
  if (typeof c['scope'] !== 'string' || c['scope'].length > 8192) throw invalidTxnToken('scope')
  if (!isSpiffeId(c['req_wl'])) throw invalidTxnToken('req_wl')
  if (!isRecord(c['tctx'])) throw invalidTxnToken('tctx')
  if (c['rctx'] !== undefined && !isRecord(c['rctx'])) throw invalidTxnToken('rctx')
  if (c['act'] !== undefined) checkAct(c['act'])
  const path = checkPath(c['txn_path'])
  if (path[path.length - 1]!.wl !== c['req_wl']) throw invalidTxnToken('req_wl_path')
  const ag = c['tctx']['agentic']
  if (ag !== undefined && (!isRecord(ag) || !isSpiffeId(ag['agent_id']))) throw invalidTxnToken('tctx_agentic')
  return c as unknown as TxnTokenClaims
}

/** The revocable view of a Txn-Token: its task, its subject, its agents and every workload on its path. */
export function txnRevocableClaims(c: TxnTokenClaims): RevocableClaims {
  const actors = actorsOf(c.act)
  for (const h of c.txn_path) if (!actors.includes(h.wl)) actors.push(h.wl)
  return {
    jti: c.jti,
    sub: c.sub,
    ...(c.tctx.agentic ? { clientId: c.tctx.agentic.agent_id } : {}),
    ...(typeof c.tctx.task_id === 'string' ? { taskId: c.tctx.task_id } : {}),
    ...(typeof c.tctx.source_jti === 'string' ? { sourceJtis: [c.tctx.source_jti] } : {}),
    actors,
  }
}

// ---------------------------------------------------------------- call-chain policies

/** A workload pattern: a SPIFFE ID, or a prefix ending in `/` (path-segment aware). */
export type WorkloadPattern = string

/**
 * What a route requires of a transaction's path. All given conditions must hold.
 * `txn_path` order is the order the transaction passed through the workloads.
 */
export interface ChainPolicy {
  /** Workloads that must appear in `txn_path`, in this order (others may come between). */
  readonly require?: readonly WorkloadPattern[]
  /** Workloads that must not appear anywhere in `txn_path` or `act`. */
  readonly forbid?: readonly WorkloadPattern[]
  /** The immediate requester (`req_wl`) must match one of these. */
  readonly callers?: readonly WorkloadPattern[]
  /** The transaction's subject must match one of these. */
  readonly subjects?: readonly WorkloadPattern[]
  /** `tctx.purpose` must be one of these. */
  readonly purposes?: readonly string[]
  /** Scopes the token must still carry, all of them. */
  readonly scopes?: readonly string[]
  /** At most this many hops. */
  readonly maxHops?: number
  /**
   * `tctx` members that must have exactly these values (e.g. `{ tool: 'payments' }`, so a Txn-Token minted for a call
   * to one tool is refused by another tool of the trust domain it was replayed to).
   */
  readonly context?: Readonly<Record<string, string | number | boolean>>
}

export function matchesWorkload(id: string, pattern: WorkloadPattern): boolean {
  return pattern.endsWith('/') ? id.length > pattern.length && id.startsWith(pattern) : id === pattern
}

function chainRefused(reason: string, extra: Record<string, unknown>): IdentityError {
  return new IdentityError('ERR_CALL_CHAIN_REFUSED', 'call chain not allowed', { details: { reason, ...extra } })
}

/** Checks a verified Txn-Token against a route's chain policy; throws ERR_CALL_CHAIN_REFUSED (reason in details). */
export function checkChainPolicy(c: Pick<TxnTokenClaims, 'txn' | 'sub' | 'req_wl' | 'scope' | 'tctx' | 'act' | 'txn_path'>, p: ChainPolicy): void {
  const path = c.txn_path.map((h) => h.wl)
  if (p.maxHops !== undefined && path.length > p.maxHops) throw chainRefused('max_hops', { txn: c.txn, hops: path.length })
  if (p.callers && !p.callers.some((pat) => matchesWorkload(c.req_wl, pat))) throw chainRefused('caller', { txn: c.txn, req_wl: c.req_wl })
  if (p.subjects && !p.subjects.some((pat) => matchesWorkload(c.sub, pat))) throw chainRefused('subject', { txn: c.txn })
  if (p.forbid) {
    const everyone = [...path, ...actorsOf(c.act)]
    const bad = everyone.find((id) => p.forbid!.some((pat) => matchesWorkload(id, pat)))
    if (bad !== undefined) throw chainRefused('forbidden_hop', { txn: c.txn, workload: bad })
  }
  if (p.require) {
    let i = 0
    for (const pat of p.require) {
      while (i < path.length && !matchesWorkload(path[i]!, pat)) i++
      if (i === path.length) throw chainRefused('missing_hop', { txn: c.txn, required: pat })
      i++
    }
  }
  if (p.context) {
    for (const [k, v] of Object.entries(p.context)) if (c.tctx[k] !== v) throw chainRefused('context', { txn: c.txn, member: k })
  }
  if (p.purposes && !(typeof c.tctx.purpose === 'string' && p.purposes.includes(c.tctx.purpose))) throw chainRefused('purpose', { txn: c.txn })
  if (p.scopes) {
    const granted = new Set(txnScopes(c.scope))
    const missing = p.scopes.filter((s) => !granted.has(s))
    if (missing.length > 0) throw chainRefused('scope', { txn: c.txn, missing })
  }
}
