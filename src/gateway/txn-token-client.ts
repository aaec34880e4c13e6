/**
 * The gateway's side of the broker's Transaction Token Service: per call, an
 * RFC 8693 token exchange for a Txn-Token (`requested_token_type`
 * `...:txn_token`, `audience` = the trust domain, `scope` = the tool's
 * scopes) over mutual TLS with the gateway's own X.509-SVID
 * (`tls_client_auth`). The subject is the agent: its broker access token when
 * it came with one, else `unsigned_json` `{"sub": "<agent SPIFFE ID>"}` (the
 * broker accepts that only from requesters its config trusts).
 * `request_details` carries the tool (and a purpose), `request_context` the
 * caller's address.
 *
 * The token endpoint comes from the broker's RFC 8414 metadata (discovered
 * once, issuer checked), else `<issuer>/token`. With `cache`, a token is kept
 * per (agent, tool, scope, purpose, subject token) until shortly before it
 * expires. Tokens are never logged; errors carry the broker's OAuth `error`.
 */
import { createHash } from 'node:crypto'
import { oauthError } from '../broker-client/errors.js'
import type { Transport } from '../broker-client/transport.js'
import { IdentityError } from '../errors/identity-error.js'
import { GRANT_TYPE, TOKEN_TYPE } from '../tokens/claims.js'
import { UNSIGNED_JSON_TOKEN_TYPE } from '../tokens/txn-token.js'

export interface TxnTokenRequest {
  /** The authenticated agent. */
  agentId: string
  /** The agent's broker access token, when it authenticated with one. */
  accessToken?: string
  tool: string
  scopes: readonly string[]
  purpose?: string
  /** The caller's address. */
  reqIp?: string
}

export interface IssuedTxnToken {
  readonly token: string
  /** Seconds since the epoch. */
  readonly exp: number
  /** `jti` and `txn` of the token (read from its payload, not verified here: the broker just signed it). */
  readonly jti: string | undefined
  readonly txn: string | undefined
  readonly cached: boolean
}

export interface TxnTokenClientOptions {
  issuer: string
  /** The trust domain, `spiffe://<td>` (the Txn-Token's audience). */
  trustDomain: () => string
  transport: Transport
  /** Keep tokens per (agent, tool, scope) until `cacheMarginSec` before expiry. */
  cache?: boolean
  cacheMarginSec?: number
  /** Most cached tokens (oldest dropped first). */
  maxCached?: number
  nowSec?: () => number
  timeoutMs?: number
}

const FORM = 'application/x-www-form-urlencoded'

export interface BrokerEndpoints {
  tokenEndpoint: string
  jwksUri: string
}

function payloadOf(jwt: string): Record<string, unknown> {
  try {
    const p = JSON.parse(Buffer.from(jwt.split('.')[1] ?? '', 'base64url').toString('utf8')) as unknown
    return typeof p === 'object' && p !== null ? (p as Record<string, unknown>) : {}
  } catch {
    return {}
  }
}

export class TxnTokenClient {
  readonly #o: TxnTokenClientOptions
  readonly #now: () => number
  readonly #cache = new Map<string, IssuedTxnToken>()
  readonly #credentials = new Map<string, { credential: { header: string; value: string }; until: number }>()
  #endpoints: Promise<BrokerEndpoints> | undefined

  constructor(o: TxnTokenClientOptions) {
    if (!o.issuer.startsWith('https://')) throw new TypeError('the broker issuer must be https')
    this.#o = o
    this.#now = o.nowSec ?? (() => Math.floor(Date.now() / 1000))
  }

  /** The token endpoint and JWKS: RFC 8414 metadata when the broker serves it (issuer checked), else `<issuer>/token` and `<issuer>/jwks`. */
  endpoints(): Promise<BrokerEndpoints> {
    this.#endpoints ??= this.#discover().catch((err: unknown) => {
      this.#endpoints = undefined
      throw err
    })
    return this.#endpoints
  }

  /** The broker's JWKS (for JwksCache): fetched from its `jwks_uri` over the same transport. */
  async fetchJwks(): Promise<unknown> {
    const { jwksUri } = await this.endpoints()
    const res = await this.#o.transport(jwksUri, { method: 'GET', headers: { accept: 'application/json, application/jwk-set+json' }, ...this.#signal() })
    if (res.status !== 200) throw new IdentityError('ERR_UNAVAILABLE', `gateway: broker JWKS HTTP ${res.status}`)
    return JSON.parse(res.body.toString('utf8')) as unknown
  }

  async #discover(): Promise<BrokerEndpoints> {
    const issuer = new URL(this.#o.issuer)
    const base = this.#o.issuer.replace(/\/+$/, '')
    const fallback = { tokenEndpoint: `${base}/token`, jwksUri: `${base}/jwks` }
    const url = `${issuer.origin}/.well-known/oauth-authorization-server${issuer.pathname.replace(/\/+$/, '')}`
    const res = await this.#o.transport(url, { method: 'GET', headers: { accept: 'application/json' }, ...this.#signal() })
    if (res.status === 404) return fallback
    let m: unknown
    try {
      m = JSON.parse(res.body.toString('utf8')) as unknown
    } catch {
      m = undefined
    }
    if (res.status !== 200 || typeof m !== 'object' || m === null)
      throw new IdentityError('ERR_UNAVAILABLE', `gateway: no broker metadata (HTTP ${res.status})`)
    const md = m as Record<string, unknown>
    if (md['issuer'] !== this.#o.issuer) throw new IdentityError('ERR_CONFIG_INVALID', 'gateway: the broker metadata names another issuer')
    const pick = (k: string, dflt: string): string => {
      const v = md[k]
      if (v === undefined) return dflt
      if (typeof v !== 'string' || !v.startsWith('https://')) throw new IdentityError('ERR_CONFIG_INVALID', `gateway: broker ${k} is not https`)
      return v
    }
    return { tokenEndpoint: pick('token_endpoint', fallback.tokenEndpoint), jwksUri: pick('jwks_uri', fallback.jwksUri) }
  }

  #signal(): { signal?: AbortSignal } {
    return this.#o.timeoutMs !== undefined ? { signal: AbortSignal.timeout(this.#o.timeoutMs) } : {}
  }

  #key(r: TxnTokenRequest): string {
    const subject = r.accessToken !== undefined ? createHash('sha256').update(r.accessToken).digest('base64url') : ''
    return JSON.stringify([r.agentId, r.tool, [...r.scopes].sort(), r.purpose ?? null, subject])
  }

  /** A Txn-Token for this call (from the cache when enabled and fresh). */
  /**
   * A tool's static credential, released by the broker to this gateway (a `credential_readers` workload) over the same
   * mutual TLS; kept in memory for 30 s, never logged.
   */
  async releaseCredential(tool: string): Promise<{ header: string; value: string }> {
    const hit = this.#credentials.get(tool)
    if (hit && hit.until > this.#now()) return hit.credential
    const url = `${this.#o.issuer.replace(/\/+$/, '')}/credentials/release`
    const res = await this.#o.transport(url, {
      method: 'POST',
      headers: { 'content-type': FORM, accept: 'application/json' },
      body: new URLSearchParams({ tool }).toString(),
      ...this.#signal(),
    })
    let body: unknown
    try {
      body = JSON.parse(res.body.toString('utf8')) as unknown
    } catch {
      body = undefined
    }
    if (res.status !== 200) throw oauthError('credential release', res.status, body, undefined)
    const b = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>
    if (typeof b['header'] !== 'string' || typeof b['value'] !== 'string')
      throw new IdentityError('ERR_UNAVAILABLE', 'gateway: the broker answered without a credential')
    const credential = { header: b['header'], value: b['value'] }
    this.#credentials.set(tool, { credential, until: this.#now() + 30 })
    return credential
  }

  async issue(r: TxnTokenRequest): Promise<IssuedTxnToken> {
    const key = this.#o.cache ? this.#key(r) : undefined
    if (key !== undefined) {
      const hit = this.#cache.get(key)
      if (hit && hit.exp - (this.#o.cacheMarginSec ?? 10) > this.#now()) return { ...hit, cached: true }
      this.#cache.delete(key)
    }
    const form = new URLSearchParams()
    form.set('grant_type', GRANT_TYPE.tokenExchange)
    form.set('requested_token_type', TOKEN_TYPE.txnToken)
    form.set('audience', this.#o.trustDomain())
    form.set('scope', r.scopes.join(' '))
    if (r.accessToken !== undefined) {
      form.set('subject_token', r.accessToken)
      form.set('subject_token_type', TOKEN_TYPE.accessToken)
    } else {
      form.set('subject_token', JSON.stringify({ sub: r.agentId }))
      form.set('subject_token_type', UNSIGNED_JSON_TOKEN_TYPE)
    }
    form.set('request_details', JSON.stringify({ tool: r.tool, ...(r.purpose !== undefined ? { purpose: r.purpose } : {}) }))
    if (r.reqIp !== undefined) form.set('request_context', JSON.stringify({ req_ip: r.reqIp }))
    const endpoint = (await this.endpoints()).tokenEndpoint
    const res = await this.#o.transport(endpoint, {
      method: 'POST',
      headers: { 'content-type': FORM, accept: 'application/json' },
      body: form.toString(),
      ...this.#signal(),
    })
    let body: unknown
    try {
      body = JSON.parse(res.body.toString('utf8')) as unknown
    } catch {
      body = undefined
    }
    if (res.status !== 200) {
      const www: string | string[] | undefined = res.headers['www-authenticate']
      throw oauthError('txn_token request', res.status, body, typeof www === 'string' ? www : www?.[0])
    }
    const b = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>
    if (typeof b['access_token'] !== 'string' || b['issued_token_type'] !== TOKEN_TYPE.txnToken || b['token_type'] !== 'N_A')
      throw new IdentityError('ERR_UNAVAILABLE', 'gateway: the broker answered without a Txn-Token')
    const token = b['access_token']
    const p = payloadOf(token)
    const expiresIn = typeof b['expires_in'] === 'number' ? b['expires_in'] : 0
    const exp = typeof p['exp'] === 'number' ? p['exp'] : this.#now() + expiresIn
    const out: IssuedTxnToken = {
      token,
      exp,
      jti: typeof p['jti'] === 'string' ? p['jti'] : undefined,
      txn: typeof p['txn'] === 'string' ? p['txn'] : undefined,
      cached: false,
    }
    if (key !== undefined) {
      const max = this.#o.maxCached ?? 10_000
      if (this.#cache.size >= max) this.#cache.delete(this.#cache.keys().next().value!)
      this.#cache.set(key, out)
    }
    return out
  }
}
