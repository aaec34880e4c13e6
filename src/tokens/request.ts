/**
 * The one check a resource server runs per request: the access token, its
 * binding (a DPoP proof for this request with `ath` and the token's
 * `cnf.jkt`, or the mutual-TLS client certificate against `cnf.x5t#S256`;
 * bearer only for a token with no `cnf` and only when allowed), the
 * delegation chain and the route's scopes. On failure it throws a
 * ResourceRequestError: the typed error (code and `details.reason` for the
 * log) plus what goes on the wire, the status and the `WWW-Authenticate`
 * challenge (RFC 6750 §3, RFC 9449 §7.1), and a fresh `DPoP-Nonce` when the
 * proof lacked a valid one (RFC 9449 §9). Pure.
 */
import { revocableClaims, type RevocationSet } from './revocation.js'
import { ERROR_CODES, IdentityError, type ErrorCode } from '../errors/index.js'
import { oauthWireError } from '../errors/oauth.js'
import { verifyAccessToken, requireScopes, invalidToken, type VerifyAccessTokenOptions } from './access-token.js'
import type { AccessTokenClaims } from './claims.js'
import { DPOP_ALGORITHMS, verifyDpopProof, x5tS256, type DpopNonces, type DpopReplayCache, type VerifiedDpopProof } from './dpop.js'

export interface ResourceRequest {
  /** The `Authorization` header value. */
  authorization: string | undefined
  /** The `DPoP` header value(s); more than one is refused (RFC 9449 §4.3). */
  dpop: string | readonly string[] | undefined
  method: string
  /** The absolute URL the request was addressed to (scheme, host and path as the client used them). */
  url: string
  /** DER of the client certificate of the mutual-TLS connection, if any. */
  clientCertDer?: Uint8Array
}

export interface ResourceRequestOptions extends Omit<VerifyAccessTokenOptions, 'nowSec' | 'requiredScopes'> {
  nowSec?: number
  /** The route's scopes: all of them must be granted. */
  requiredScopes?: readonly string[]
  /** Accept tokens without `cnf` sent as `Bearer` (default false: binding required). */
  allowBearer?: boolean
  /** Refuse delegated tokens (any `act`) on this route. */
  refuseDelegated?: boolean
  dpop: {
    replay: DpopReplayCache
    /** When set, every proof must carry one of these nonces. */
    nonces?: DpopNonces
    /** Proof algorithms accepted, advertised in `algs` (default DPOP_ALGORITHMS). */
    algorithms?: readonly string[]
    maxAgeSec?: number
    clockSkewSec?: number
  }
  /** `realm` of the challenges, if any. */
  realm?: string
  /**
   * The revocations this verifier knows (a RevocationSet fed by the broker's
   * revocation feed or a signed list): a covered token is refused as
   * invalid_token, like an expired one.
   */
  revocations?: Pick<RevocationSet, 'covering'>
}

export type Binding = 'dpop' | 'mtls' | 'bearer'

export interface VerifiedResourceRequest {
  claims: AccessTokenClaims
  binding: Binding
  /** The verified proof, for `binding: 'dpop'`. */
  proof?: VerifiedDpopProof
  /** The current actor (outermost `act.sub`) of a delegated token. */
  actor?: string
  /** Actors from the current one back to the first delegator (`act`, `act.act`, ...); empty for a direct token. */
  chain: string[]
  /** A nonce to send as `DPoP-Nonce` with the response, when nonces are on. */
  dpopNonce?: string
}

/** A refused request: the typed error plus its wire form. */
export class ResourceRequestError extends IdentityError {
  readonly status: number
  /** The `WWW-Authenticate` value; undefined for errors that carry none (5xx). */
  readonly wwwAuthenticate: string | undefined
  /** A fresh nonce for the `DPoP-Nonce` header, when the error is use_dpop_nonce. */
  readonly dpopNonce: string | undefined
  /** The OAuth `error` value (also inside the challenge). */
  readonly error: string

  constructor(
    code: ErrorCode,
    init: { status: number; error: string; wwwAuthenticate?: string; dpopNonce?: string; details?: Record<string, unknown>; cause?: unknown },
  ) {
    super(code, `request refused: ${init.error}`, { details: init.details ?? {}, cause: init.cause })
    this.name = 'ResourceRequestError'
    this.status = init.status
    this.error = init.error
    this.wwwAuthenticate = init.wwwAuthenticate
    this.dpopNonce = init.dpopNonce
  }
}

const TOKEN68 = /^[A-Za-z0-9\-._~+/]+=*$/

function malformed(reason: string): IdentityError {
  return new IdentityError('ERR_REQUEST_MALFORMED', 'malformed request', { details: { reason } })
}

function quote(v: string): string {
  return `"${v.replace(/[\\"]/g, (c) => `\\${c}`)}"`
}

/** Status at a resource server (RFC 6750 §3.1, RFC 9449 §7.1): 400 malformed, 403 scope, 503 unavailable, 401 otherwise. */
function statusFor(code: ErrorCode): number {
  switch (code) {
    case 'ERR_REQUEST_MALFORMED':
      return 400
    case 'ERR_SCOPE_INSUFFICIENT':
      return 403
    case 'ERR_UNAVAILABLE':
    case 'ERR_RESOURCE_EXHAUSTED':
      return 503
    default:
      return ERROR_CODES[code] === ERROR_CODES.ERR_INTERNAL ? 500 : 401
  }
}

/**
 * The challenges for a refused request: a DPoP challenge (with `algs`) always,
 * a Bearer one when bearer or mTLS-bound tokens are accepted; the `error`
 * goes on the scheme the request used (DPoP when it used none). A request
 * with no credentials at all gets challenges without `error` (RFC 6750 §3.1).
 */
function challenge(
  opts: ResourceRequestOptions,
  scheme: 'dpop' | 'bearer' | undefined,
  error: string | undefined,
  scope: readonly string[] | undefined,
): string {
  const attrs = (withError: boolean, extra: string[]): string => {
    const a: string[] = []
    if (opts.realm !== undefined) a.push(`realm=${quote(opts.realm)}`)
    if (withError && error !== undefined) {
      a.push(`error=${quote(error)}`)
      if (scope !== undefined && scope.length > 0) a.push(`scope=${quote(scope.join(' '))}`)
    }
    a.push(...extra)
    return a.join(', ')
  }
  const algs = `algs=${quote((opts.dpop.algorithms ?? DPOP_ALGORITHMS).join(' '))}`
  const dpop = `DPoP ${attrs(scheme !== 'bearer', [algs])}`.trimEnd()
  const offerBearer = opts.allowBearer === true || scheme === 'bearer'
  if (!offerBearer) return dpop
  const bearer = `Bearer ${attrs(scheme === 'bearer', [])}`.trimEnd()
  return scheme === 'bearer' ? `${bearer}, ${dpop}` : `${dpop}, ${bearer}`
}

function refuse(err: unknown, opts: ResourceRequestOptions, scheme: 'dpop' | 'bearer' | undefined, nowSec: number): ResourceRequestError {
  if (err instanceof ResourceRequestError) return err
  if (!(err instanceof IdentityError)) {
    return new ResourceRequestError('ERR_INTERNAL', { status: 500, error: 'server_error', details: { reason: 'internal' }, cause: err })
  }
  const status = statusFor(err.code)
  const wire = status === 500 ? { error: 'server_error' } : oauthWireError(err.code)
  const noCredentials = err.details?.['reason'] === 'no_credentials'
  const scope = err.code === 'ERR_SCOPE_INSUFFICIENT' ? opts.requiredScopes : undefined
  const init: ConstructorParameters<typeof ResourceRequestError>[1] = { status, error: wire.error, details: { ...err.details }, cause: err }
  if (status === 401 || status === 403 || status === 400) init.wwwAuthenticate = challenge(opts, scheme, noCredentials ? undefined : wire.error, scope)
  if (err.code === 'ERR_DPOP_NONCE_REQUIRED' && opts.dpop.nonces !== undefined) init.dpopNonce = opts.dpop.nonces.issue(nowSec)
  return new ResourceRequestError(err.code, init)
}

function chainOf(claims: AccessTokenClaims): string[] {
  const out: string[] = []
  for (let a = claims.act; a !== undefined; a = a.act) out.push(a.sub)
  return out
}

/** Verifies one request to a resource server; see the module comment. */
export async function verifyResourceRequest(req: ResourceRequest, opts: ResourceRequestOptions): Promise<VerifiedResourceRequest> {
  const nowSec = opts.nowSec ?? Math.floor(Date.now() / 1000)
  let scheme: 'dpop' | 'bearer' | undefined
  try {
    // 1. the Authorization header: one scheme, one token68
    const authz = req.authorization
    if (authz === undefined || authz.length === 0) {
      throw new IdentityError('ERR_ACCESS_TOKEN_INVALID', 'no credentials', { details: { reason: 'no_credentials' } })
    }
    const sp = authz.indexOf(' ')
    const schemeName = sp < 0 ? authz : authz.slice(0, sp)
    const token = sp < 0 ? '' : authz.slice(sp + 1).trim()
    const lower = schemeName.toLowerCase()
    if (lower === 'dpop') scheme = 'dpop'
    else if (lower === 'bearer') scheme = 'bearer'
    else throw new IdentityError('ERR_ACCESS_TOKEN_INVALID', 'no credentials', { details: { reason: 'no_credentials', scheme: schemeName.slice(0, 32) } })
    if (token.length === 0 || !TOKEN68.test(token)) throw malformed('authorization')
    const proofs = req.dpop === undefined ? [] : typeof req.dpop === 'string' ? [req.dpop] : req.dpop
    if (proofs.length > 1) throw new IdentityError('ERR_DPOP_PROOF_INVALID', 'invalid DPoP proof', { details: { reason: 'multiple' } })

    // 2. the token itself, and whether a revocation covers it
    const claims = await verifyAccessToken(token, { ...opts, nowSec })
    const cnf = claims.cnf
    const revoked = opts.revocations?.covering(revocableClaims(claims as unknown as Record<string, unknown>), nowSec)
    if (revoked !== undefined) throw invalidToken('revoked', { jti: claims.jti, seq: revoked.seq, revocation: revoked.kind })

    // 3. its binding
    let binding: Binding
    let proof: VerifiedDpopProof | undefined
    if (cnf?.jkt !== undefined) {
      // RFC 9449 §7.2: a DPoP-bound token is accepted only with the DPoP scheme and a proof by its key
      if (scheme !== 'dpop') throw invalidToken('dpop_bound_as_bearer', { jti: claims.jti })
      const p = proofs[0]
      if (p === undefined) throw new IdentityError('ERR_DPOP_PROOF_INVALID', 'invalid DPoP proof', { details: { reason: 'missing' } })
      const check = {
        method: req.method,
        url: req.url,
        nowSec,
        accessToken: token,
        expectedJkt: cnf.jkt,
        replay: opts.dpop.replay,
        ...(opts.dpop.nonces === undefined ? {} : { nonces: opts.dpop.nonces }),
        ...(opts.dpop.algorithms === undefined ? {} : { algorithms: opts.dpop.algorithms }),
        ...(opts.dpop.maxAgeSec === undefined ? {} : { maxAgeSec: opts.dpop.maxAgeSec }),
        ...(opts.dpop.clockSkewSec === undefined ? {} : { clockSkewSec: opts.dpop.clockSkewSec }),
      }
      proof = await verifyDpopProof(p, check)
      binding = 'dpop'
    } else if (scheme === 'dpop') {
      // the DPoP scheme is only for DPoP-bound tokens (RFC 9449 §7.1)
      throw invalidToken('not_dpop_bound', { jti: claims.jti })
    } else if (cnf?.['x5t#S256'] !== undefined) {
      binding = 'mtls'
    } else {
      if (opts.allowBearer !== true) throw invalidToken('unbound', { jti: claims.jti })
      binding = 'bearer'
    }
    // RFC 8705 §3: a certificate-bound token needs the same certificate on this connection (checked for DPoP tokens too, if they carry both)
    const x5t = cnf?.['x5t#S256']
    if (x5t !== undefined) {
      if (req.clientCertDer === undefined) throw invalidToken('mtls_certificate_missing', { jti: claims.jti })
      if (x5tS256(req.clientCertDer) !== x5t) throw invalidToken('mtls_binding', { jti: claims.jti })
    }

    // 4. the delegation chain (structure and depth were checked with the token)
    const chain = chainOf(claims)
    if (opts.refuseDelegated === true && chain.length > 0) throw invalidToken('delegated', { jti: claims.jti, depth: chain.length })

    // 5. the route's scopes
    if (opts.requiredScopes !== undefined) requireScopes(claims, opts.requiredScopes)

    const out: VerifiedResourceRequest = { claims, binding, chain }
    if (proof !== undefined) out.proof = proof
    if (chain[0] !== undefined) out.actor = chain[0]
    if (opts.dpop.nonces !== undefined) out.dpopNonce = opts.dpop.nonces.issue(nowSec)
    return out
  } catch (err) {
    throw refuse(err, opts, scheme, nowSec)
  }
}
