/**
 * The agent side of the broker (issue 19, "For agents"): discovers the broker
 * by its RFC 8414 metadata, authenticates by the agent's SVID (mutual TLS with
 * the X.509-SVID from the Workload API, or a JWT-SVID as a
 * `jwt-spiffe` client assertion), binds tokens to its DPoP key (or, with
 * `binding: 'mtls'`, to its client certificate), and speaks the broker's
 * token endpoint as `src/broker/http/form.ts` parses it:
 *
 *   requestToken   client_credentials (task_id, scope, resource, audience, authorization_details)
 *   exchangeJwtSvid token exchange with the agent's JWT-SVID as subject_token
 *   renew          token exchange with the agent's own token as subject_token (same key; never wider)
 *   delegate       the same with `may_act`: a one-time delegation grant for one sub-agent
 *   redeemGrant    the sub-agent exchanges that grant for a token bound to its own key
 *   backchannelAuthorize / approvedToken   OpenID CIBA (poll mode): an intent that waits for a
 *                  human, then its action-bound token once approved
 *   introspect / revoke (RFC 7662 / 7009), and `fetchWithToken` for resource servers.
 *
 * A `use_dpop_nonce` answer (broker: 400; resource server: 401) is retried
 * once with the server's DPoP-Nonce, and the last nonce of each origin is
 * sent with the next proof. Refusals are IdentityErrors whose code is the
 * OAuth `error` mapped back (errors.ts); no message or log line carries a
 * token, proof or key.
 */
import { systemClock, type Clock } from '../common/clock.js'
import { F, nullLogger, type Logger } from '../common/log/logger.js'
import { IdentityError } from '../errors/identity-error.js'
import { GRANT_TYPE, TOKEN_TYPE, CLIENT_ASSERTION_TYPE, type AuthorizationDetail } from '../tokens/claims.js'
import { AccessToken, type IssuedTokenType } from './access-token.js'
import { DpopKey } from './dpop-key.js'
import { oauthError } from './errors.js'
import { TokenSource, type TokenSourceOptions } from './token-source.js'
import { httpsTransport, type HttpResponse, type Transport, type X509SvidSource } from './transport.js'

/** The parts of RFC 8414 metadata the client uses. */
export interface BrokerMetadata {
  issuer: string
  token_endpoint: string
  jwks_uri?: string
  introspection_endpoint?: string
  revocation_endpoint?: string
  dpop_signing_alg_values_supported?: string[]
  [k: string]: unknown
}

export interface BrokerClientOptions {
  /** The broker's issuer URL (WARRANT_BROKER_URL). */
  issuer: string
  /** The agent's X.509-SVID (an `X509Source` of the Workload API): the mutual-TLS client certificate. */
  source?: X509SvidSource
  /**
   * Client authentication by JWT-SVID assertion instead of mutual TLS: returns a JWT-SVID
   * for `audience` (the issuer). The broker accepts each assertion once, so it must be fresh per call.
   */
  jwtSvid?: (audience: string) => Promise<string>
  /** PEM that verifies the broker's and resource servers' TLS certificates (WARRANT_BROKER_CA); default: the source's bundles. */
  ca?: string
  /** The DPoP key; default a fresh non-extractable ES256 key, held only in memory. */
  dpopKey?: DpopKey
  /** 'dpop' (default): tokens bound to the DPoP key; 'mtls': bound to the client certificate (RFC 8705). */
  binding?: 'dpop' | 'mtls'
  clock?: Clock
  log?: Logger
  timeoutMs?: number
  /** Replaces HTTPS (tests). */
  transport?: Transport
  signal?: AbortSignal
}

/** What a token may be asked for; every field optional (the broker grants the task ∩ ceiling then). */
export interface TokenParams {
  taskId?: string
  scopes?: readonly string[]
  resources?: readonly string[]
  audiences?: readonly string[]
  authorizationDetails?: readonly AuthorizationDetail[]
}

export type NarrowParams = Omit<TokenParams, 'taskId'>

export interface DelegateParams extends NarrowParams {
  /** The sub-agent's SPIFFE ID: the only client that can redeem the grant. */
  to: string
}

/** RFC 7662 answer. */
export type Introspection = { active: false } | ({ active: true } & Record<string, unknown>)

export interface CallOpts {
  signal?: AbortSignal
}

const FORM = 'application/x-www-form-urlencoded'

/** OpenID CIBA Core §10.1: the grant type of a poll for an approved request's token. */
export const CIBA_GRANT_TYPE = 'urn:openid:params:grant-type:ciba'

/** A CIBA request the broker accepted (OpenID CIBA Core §7.3). */
export interface BackchannelRequest {
  readonly authReqId: string
  /** Seconds until the request expires. */
  readonly expiresIn: number
  /** Least seconds between two polls. */
  readonly interval: number
  /** warrant's id of the intent (`intent_id`, an extension): what approvers see in `warrant approval` and the console. */
  readonly intentId?: string
}

function json(res: HttpResponse): unknown {
  try {
    return JSON.parse(res.body.toString('utf8'))
  } catch {
    return undefined
  }
}

function header(res: HttpResponse, name: string): string | undefined {
  const v = res.headers[name]
  return Array.isArray(v) ? v[0] : v
}

function formOf(params: TokenParams, extra: Record<string, string | undefined>): URLSearchParams {
  const f = new URLSearchParams()
  for (const [k, v] of Object.entries(extra)) if (v !== undefined) f.append(k, v)
  if (params.taskId !== undefined) f.append('task_id', params.taskId)
  if (params.scopes !== undefined && params.scopes.length > 0) f.append('scope', params.scopes.join(' '))
  for (const r of params.resources ?? []) f.append('resource', r)
  for (const a of params.audiences ?? []) f.append('audience', a)
  if (params.authorizationDetails !== undefined && params.authorizationDetails.length > 0)
    f.append('authorization_details', JSON.stringify(params.authorizationDetails))
  return f
}

export class BrokerClient {
  readonly metadata: BrokerMetadata
  readonly dpopKey: DpopKey
  readonly binding: 'dpop' | 'mtls'
  readonly #o: BrokerClientOptions
  readonly #request: Transport
  readonly #close: () => void
  readonly #clock: Clock
  readonly #log: Logger
  /** Last DPoP-Nonce per origin. */
  readonly #nonces = new Map<string, string>()
  readonly #sources = new Set<TokenSource>()

  private constructor(o: BrokerClientOptions, metadata: BrokerMetadata, dpopKey: DpopKey, request: Transport, close: () => void) {
    this.#o = o
    this.metadata = metadata
    this.dpopKey = dpopKey
    this.binding = o.binding ?? 'dpop'
    this.#request = request
    this.#close = close
    this.#clock = o.clock ?? systemClock
    this.#log = (o.log ?? nullLogger).child({ [F.SUBSYSTEM]: 'broker_client' })
  }

  /** Discovers the broker (RFC 8414 §3) and returns a client; the DPoP key is generated unless given. */
  static async create(o: BrokerClientOptions): Promise<BrokerClient> {
    let issuer: URL
    try {
      issuer = new URL(o.issuer)
    } catch {
      throw new IdentityError('ERR_CONFIG_INVALID', 'broker-client: the issuer must be an absolute URL')
    }
    if (issuer.protocol !== 'https:') throw new IdentityError('ERR_CONFIG_INVALID', 'broker-client: the issuer must be https')
    if (o.binding === 'mtls' && o.source === undefined)
      throw new IdentityError('ERR_CONFIG_INVALID', 'broker-client: certificate-bound tokens need an X.509-SVID source')
    if (o.source === undefined && o.jwtSvid === undefined)
      throw new IdentityError('ERR_CONFIG_INVALID', 'broker-client: an X.509-SVID source or a JWT-SVID function is needed to authenticate')
    const t = o.transport
      ? { request: o.transport, close: () => {} }
      : httpsTransport({
          ...(o.source ? { source: o.source } : {}),
          ...(o.ca !== undefined ? { ca: o.ca } : {}),
          ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
        })
    try {
      const path = issuer.pathname.replace(/\/+$/, '')
      const url = `${issuer.origin}/.well-known/oauth-authorization-server${path}`
      const res = await t.request(url, { method: 'GET', headers: { accept: 'application/json' }, ...(o.signal ? { signal: o.signal } : {}) })
      const m = json(res) as BrokerMetadata | undefined
      if (res.status !== 200 || m === undefined || typeof m !== 'object')
        throw new IdentityError('ERR_UNAVAILABLE', `broker-client: no metadata at the issuer (HTTP ${res.status})`)
      // RFC 8414 §3.3: the issuer in the document must be the one asked for.
      if (m.issuer !== o.issuer)
        throw new IdentityError('ERR_CONFIG_INVALID', 'broker-client: the metadata names another issuer', {
          details: { issuer: String(m.issuer).slice(0, 200) },
        })
      for (const k of ['token_endpoint', 'introspection_endpoint', 'revocation_endpoint', 'jwks_uri'] as const) {
        const v = m[k]
        if (v !== undefined && (typeof v !== 'string' || !v.startsWith('https://')))
          throw new IdentityError('ERR_CONFIG_INVALID', `broker-client: metadata ${k} is not an https URL`)
      }
      if (typeof m.token_endpoint !== 'string') throw new IdentityError('ERR_CONFIG_INVALID', 'broker-client: metadata has no token_endpoint')
      if ((o.binding ?? 'dpop') === 'dpop' && Array.isArray(m.dpop_signing_alg_values_supported) && !m.dpop_signing_alg_values_supported.includes('ES256')) {
        throw new IdentityError('ERR_UNSUPPORTED', 'broker-client: the broker does not accept ES256 DPoP proofs')
      }
      const key = o.dpopKey ?? (await DpopKey.generate())
      return new BrokerClient(o, m, key, t.request, t.close)
    } catch (err) {
      t.close()
      throw err
    }
  }

  get issuer(): string {
    return this.metadata.issuer
  }

  // ------------------------------------------------------------ tokens

  /** client_credentials: a token for the agent itself, within its task and ceiling. */
  requestToken(p: TokenParams = {}, opts: CallOpts = {}): Promise<AccessToken> {
    return this.#token('token request', formOf(p, { grant_type: GRANT_TYPE.clientCredentials }), opts)
  }

  /** Token exchange with the agent's own JWT-SVID (audience: the issuer) as the subject token. */
  exchangeJwtSvid(jwtSvid: string, p: TokenParams = {}, opts: CallOpts = {}): Promise<AccessToken> {
    return this.#token(
      'token exchange',
      formOf(p, { grant_type: GRANT_TYPE.tokenExchange, subject_token: jwtSvid, subject_token_type: TOKEN_TYPE.jwtSvid }),
      opts,
    )
  }

  /** A successor of `token` (same identity and key, fresh TTL, same or narrower scope and targets; counted against the renewal limit). */
  renew(token: AccessToken, p: NarrowParams = {}, opts: CallOpts = {}): Promise<AccessToken> {
    return this.#token(
      'renewal',
      formOf(p, { grant_type: GRANT_TYPE.tokenExchange, subject_token: token.value, subject_token_type: TOKEN_TYPE.accessToken }),
      opts,
    )
  }

  /** A one-time delegation grant for the sub-agent `to` (narrower or equal scope), to hand to it for `redeemGrant`. */
  delegate(token: AccessToken, p: DelegateParams, opts: CallOpts = {}): Promise<AccessToken> {
    const { to, ...narrow } = p
    if (typeof to !== 'string' || !to.startsWith('spiffe://')) throw new TypeError('broker-client: delegate needs the sub-agent SPIFFE ID in "to"')
    return this.#token(
      'delegation',
      formOf(narrow, {
        grant_type: GRANT_TYPE.tokenExchange,
        subject_token: token.value,
        subject_token_type: TOKEN_TYPE.accessToken,
        requested_token_type: TOKEN_TYPE.jwt,
        may_act: to,
      }),
      opts,
    )
  }

  /** The sub-agent's side: exchanges a delegation grant (a string, or the AccessToken `delegate` returned) for its own token. */
  redeemGrant(grant: string | AccessToken, p: NarrowParams = {}, opts: CallOpts = {}): Promise<AccessToken> {
    const value = typeof grant === 'string' ? grant : grant.value
    return this.#token('grant redemption', formOf(p, { grant_type: GRANT_TYPE.tokenExchange, subject_token: value, subject_token_type: TOKEN_TYPE.jwt }), opts)
  }

  /**
   * A Txn-Token (draft-ietf-oauth-transaction-tokens) for a transaction this workload starts: the subject is its own
   * broker token (default), its JWT-SVID, or what a gateway vouches for. `details` become `tctx`, `context` `rctx`.
   * Send it onward in the `Txn-Token` header; it is not bound to a key and needs no DPoP proof.
   */
  txnToken(
    subject: AccessToken | { token: string; type: string },
    p: { scopes?: readonly string[]; details?: Record<string, unknown>; context?: Record<string, unknown>; audience?: string } = {},
    opts: CallOpts = {},
  ): Promise<AccessToken> {
    const form = new URLSearchParams({
      grant_type: GRANT_TYPE.tokenExchange,
      requested_token_type: TOKEN_TYPE.txnToken,
      subject_token: subject instanceof AccessToken ? subject.value : subject.token,
      subject_token_type: subject instanceof AccessToken ? TOKEN_TYPE.accessToken : subject.type,
    })
    if (p.scopes && p.scopes.length > 0) form.set('scope', p.scopes.join(' '))
    if (p.details) form.set('request_details', JSON.stringify(p.details))
    if (p.context) form.set('request_context', JSON.stringify(p.context))
    if (p.audience) form.set('audience', p.audience)
    return this.#token('txn token request', form, opts, false)
  }

  /** A replacement of a Txn-Token this service received, to call onward: same transaction, same or narrower scope, this service appended to its path. */
  replaceTxnToken(incoming: string, p: { scopes?: readonly string[] } = {}, opts: CallOpts = {}): Promise<AccessToken> {
    return this.txnToken({ token: incoming, type: TOKEN_TYPE.txnToken }, p, opts)
  }

  /**
   * A source that holds a token and renews it at 75% of its lifetime; `acquire`
   * (default: `requestToken(p)`) gets the first one and a fresh one after expiry.
   */
  async tokenSource(
    p: TokenParams = {},
    o: Omit<TokenSourceOptions, 'acquire' | 'renew'> & { acquire?: () => Promise<AccessToken> } = {},
  ): Promise<TokenSource> {
    const src = await TokenSource.start({
      clock: this.#clock,
      log: this.#log,
      ...o,
      acquire: o.acquire ?? (() => this.requestToken(p)),
      renew: (t) => this.renew(t),
    })
    this.#sources.add(src)
    src.once('closed', () => this.#sources.delete(src))
    return src
  }

  async #token(what: string, form: URLSearchParams, opts: CallOpts, bound = true): Promise<AccessToken> {
    const url = this.metadata.token_endpoint
    const res = await this.#post(what, url, form, opts, bound && this.binding === 'dpop')
    const body = json(res) as Record<string, unknown> | undefined
    if (res.status !== 200 || body === undefined) throw oauthError(what, res.status, body, header(res, 'www-authenticate'))
    const { access_token: at, token_type: tt, expires_in: exp, issued_token_type: itt, scope } = body
    if (typeof at !== 'string' || typeof exp !== 'number' || !(exp > 0) || typeof tt !== 'string') {
      throw new IdentityError('ERR_INTERNAL', `broker-client: malformed ${what} response`)
    }
    const tokenType: IssuedTokenType = /^dpop$/i.test(tt) ? 'DPoP' : /^n_a$/i.test(tt) ? 'N_A' : 'Bearer'
    if (bound && this.binding === 'dpop' && tokenType === 'Bearer')
      throw new IdentityError('ERR_TOKEN_REQUEST_INVALID', `broker-client: ${what} returned an unbound token for a DPoP request`)
    const now = this.#clock.now()
    const token = new AccessToken(at, {
      tokenType,
      issuedTokenType: typeof itt === 'string' ? itt : TOKEN_TYPE.accessToken,
      scopes: typeof scope === 'string' ? scope.split(' ').filter((s) => s !== '') : [],
      receivedAt: now,
      expiresAt: now + exp * 1000,
    })
    this.#log.debug({ endpoint: what, [F.JTI]: token.jti, token_type: tokenType, expires_in: exp }, 'Broker token received')
    return token
  }

  // ------------------------------------------------------------ CIBA

  /**
   * OpenID CIBA §7.1 on the broker's `backchannel_authentication_endpoint`:
   * asks for approval of what `authorizationDetails` declare (a
   * `warrant_intent`); a forbidden intent is refused here
   * (ERR_INTENT_REFUSED, `access_denied`).
   */
  async backchannelAuthorize(
    p: { authorizationDetails: readonly AuthorizationDetail[]; bindingMessage?: string; loginHint?: string; scopes?: readonly string[] },
    opts: CallOpts = {},
  ): Promise<BackchannelRequest> {
    const url = this.metadata['backchannel_authentication_endpoint']
    if (typeof url !== 'string') throw new IdentityError('ERR_UNSUPPORTED', 'broker-client: the broker has no backchannel authentication endpoint')
    const form = formOf(
      { authorizationDetails: p.authorizationDetails, ...(p.scopes ? { scopes: p.scopes } : {}) },
      {
        binding_message: p.bindingMessage,
        login_hint: p.loginHint,
      },
    )
    const res = await this.#post('backchannel authentication', url, form, opts, false)
    const body = json(res) as Record<string, unknown> | undefined
    if (res.status !== 200 || body === undefined) throw oauthError('backchannel authentication', res.status, body, header(res, 'www-authenticate'))
    const { auth_req_id: id, expires_in: exp, interval } = body
    if (typeof id !== 'string' || typeof exp !== 'number')
      throw new IdentityError('ERR_INTERNAL', 'broker-client: malformed backchannel authentication response')
    return {
      authReqId: id,
      expiresIn: exp,
      interval: typeof interval === 'number' && interval > 0 ? interval : 5,
      ...(typeof body.intent_id === 'string' ? { intentId: body.intent_id } : {}),
    }
  }

  /**
   * One CIBA poll (§10.1): the token once a human approved; ERR_APPROVAL_PENDING
   * (`authorization_pending`, or `slow_down`: wait longer) while nobody has,
   * ERR_APPROVAL_DENIED (`access_denied`), ERR_APPROVAL_EXPIRED (`expired_token`).
   */
  approvedToken(authReqId: string, opts: CallOpts = {}): Promise<AccessToken> {
    return this.#token('backchannel token request', new URLSearchParams({ grant_type: CIBA_GRANT_TYPE, auth_req_id: authReqId }), opts)
  }

  /** Polls `approvedToken` at the request's interval until approved (the token), denied or expired (thrown), or `opts.signal` aborts. */
  async waitForApproval(req: BackchannelRequest, opts: CallOpts = {}): Promise<AccessToken> {
    let interval = req.interval
    for (;;) {
      try {
        return await this.approvedToken(req.authReqId, opts)
      } catch (err) {
        const wire = err instanceof IdentityError ? err.details?.['oauth_error'] : undefined
        if (wire === 'slow_down') interval += 5
        else if (wire !== 'authorization_pending') throw err
      }
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(resolve, interval * 1000)
        opts.signal?.addEventListener('abort', () => (clearTimeout(t), reject(opts.signal!.reason as Error)), { once: true })
      })
    }
  }

  // ------------------------------------------------- introspect, revoke

  /** RFC 7662 (the caller must be on the broker's introspection allow-list). */
  async introspect(token: AccessToken | string, opts: CallOpts = {}): Promise<Introspection> {
    const url = this.metadata.introspection_endpoint
    if (url === undefined) throw new IdentityError('ERR_UNSUPPORTED', 'broker-client: the broker has no introspection endpoint')
    const form = new URLSearchParams({ token: typeof token === 'string' ? token : token.value, token_type_hint: 'access_token' })
    const res = await this.#post('introspection', url, form, opts, false)
    const body = json(res) as Record<string, unknown> | undefined
    if (res.status !== 200 || body === undefined || typeof body.active !== 'boolean')
      throw oauthError('introspection', res.status, body, header(res, 'www-authenticate'))
    return body.active ? (body as Introspection) : { active: false }
  }

  /** RFC 7009: revokes the token and every token derived from it. Succeeds for unknown tokens too. */
  async revoke(token: AccessToken | string, opts: CallOpts = {}): Promise<void> {
    const url = this.metadata.revocation_endpoint
    if (url === undefined) throw new IdentityError('ERR_UNSUPPORTED', 'broker-client: the broker has no revocation endpoint')
    const form = new URLSearchParams({ token: typeof token === 'string' ? token : token.value, token_type_hint: 'access_token' })
    const res = await this.#post('revocation', url, form, opts, false)
    if (res.status !== 200) throw oauthError('revocation', res.status, json(res), header(res, 'www-authenticate'))
  }

  // ----------------------------------------------------- wire helpers

  async #clientAuth(form: URLSearchParams): Promise<URLSearchParams> {
    if (this.#o.jwtSvid === undefined) return form
    const f = new URLSearchParams(form)
    f.set('client_assertion_type', CLIENT_ASSERTION_TYPE.jwtSpiffe)
    f.set('client_assertion', await this.#o.jwtSvid(this.issuer))
    return f
  }

  /** One form POST to the broker, with a DPoP proof when asked, retried once on use_dpop_nonce. */
  async #post(what: string, url: string, form: URLSearchParams, opts: CallOpts, dpop: boolean): Promise<HttpResponse> {
    const body = (await this.#clientAuth(form)).toString()
    const origin = new URL(url).origin
    const signal = opts.signal ?? this.#o.signal
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = { 'content-type': FORM, accept: 'application/json' }
      if (dpop) {
        const nonce = this.#nonces.get(origin)
        headers.dpop = await this.dpopKey.proof({
          method: 'POST',
          url,
          nowSec: Math.floor(this.#clock.now() / 1000),
          ...(nonce !== undefined ? { nonce } : {}),
        })
      }
      const res = await this.#request(url, { method: 'POST', headers, body, ...(signal ? { signal } : {}) })
      const fresh = header(res, 'dpop-nonce')
      if (fresh !== undefined) this.#nonces.set(origin, fresh)
      if (dpop && attempt === 0 && res.status === 400 && fresh !== undefined && (json(res) as { error?: unknown } | undefined)?.error === 'use_dpop_nonce') {
        this.#log.debug({ endpoint: what }, 'Broker asked for a DPoP nonce; retrying once')
        continue
      }
      return res
    }
  }

  /**
   * Calls a resource server with `token`: `Authorization: DPoP <token>` and a
   * DPoP proof (`htm`, `htu`, `ath`, the origin's last nonce) for DPoP-bound
   * tokens, `Bearer` for the others (an mTLS-bound token is proved by the
   * client certificate this client presents). A 401 `use_dpop_nonce` with a
   * DPoP-Nonce is retried once. The body must be replayable (string or bytes).
   * Pass a TokenSource instead of a token to use its current token.
   */
  async fetchWithToken(
    url: string,
    init: { method?: string; headers?: Record<string, string>; body?: string | Uint8Array; signal?: AbortSignal } = {},
    tokenOrSource: AccessToken | Pick<TokenSource, 'getToken'>,
  ): Promise<Response> {
    const token = tokenOrSource instanceof AccessToken ? tokenOrSource : await tokenOrSource.getToken()
    if (token.isGrant) throw new TypeError('broker-client: a delegation grant is not an access token')
    const method = (init.method ?? 'GET').toUpperCase()
    const u = new URL(url)
    const htu = `${u.origin}${u.pathname}`
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = {}
      for (const [k, v] of Object.entries(init.headers ?? {})) headers[k.toLowerCase()] = v
      if (token.tokenType === 'DPoP') {
        const nonce = this.#nonces.get(u.origin)
        headers.authorization = `DPoP ${token.value}`
        headers.dpop = await this.dpopKey.proof({
          method,
          url: htu,
          accessToken: token.value,
          nowSec: Math.floor(this.#clock.now() / 1000),
          ...(nonce !== undefined ? { nonce } : {}),
        })
      } else headers.authorization = `Bearer ${token.value}`
      const signal = init.signal ?? this.#o.signal
      const res = await this.#request(url, { method, headers, ...(init.body !== undefined ? { body: init.body } : {}), ...(signal ? { signal } : {}) })
      const fresh = header(res, 'dpop-nonce')
      if (fresh !== undefined) this.#nonces.set(u.origin, fresh)
      if (
        token.tokenType === 'DPoP' &&
        attempt === 0 &&
        res.status === 401 &&
        fresh !== undefined &&
        /error="use_dpop_nonce"/.test(header(res, 'www-authenticate') ?? '')
      )
        continue
      const h = new Headers()
      for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) h.set(k, Array.isArray(v) ? v.join(', ') : v)
      const nullBody = res.status === 204 || res.status === 304 || method === 'HEAD'
      return new Response(nullBody ? null : res.body, { status: res.status, headers: h })
    }
  }

  /** Stops every token source and closes connections. */
  async close(): Promise<void> {
    for (const s of [...this.#sources]) s.close()
    this.#close()
  }
}
