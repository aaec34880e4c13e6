/**
 * Client authentication by SVID at the broker's endpoints:
 *
 * - `tls_client_auth` (RFC 8705 §2.1): the certificate chain the client
 *   presented in the TLS handshake is verified the SPIFFE way (exactly one
 *   URI SAN, leaf rules, path validation) against the X.509 bundle of the
 *   leaf's own trust domain. The TLS layer requests a certificate but does
 *   not verify it (clients without one may use an assertion instead).
 * - a JWT-SVID as client assertion (`client_assertion_type` jwt-spiffe, the
 *   SPIFFE client-authentication profile, or RFC 7523 jwt-bearer):
 *   verified against the JWT bundle of its trust domain, `aud` must contain
 *   the issuer, lifetime at most `maxAssertionLifetimeSeconds`, and each
 *   assertion is accepted once (its `jti`, or its hash when it has none).
 *
 * A trust domain other than the local one is admitted only when the config
 * names it. When an assertion is sent, it is the authentication (RFC 6749
 * §2.3: one method per request); a `client_id`, when sent, must name the
 * authenticated client. Every failure is ERR_CLIENT_AUTH_FAILED with the
 * reason in `details.reason` for the log; the caller learns only
 * `invalid_client`.
 */
import { createHash, X509Certificate } from 'node:crypto'
import { IdentityError, isIdentityError } from '../../errors/identity-error.js'
import type { JwtBundleSource, X509BundleSource } from '../../spiffe/bundle/sources.js'
import type { JwtBundle } from '../../spiffe/bundle/jwt-bundle.js'
import type { X509Bundle } from '../../spiffe/bundle/x509-bundle.js'
import { validateJwtSvid } from '../../spiffe/jwt-svid/validate-jwt-svid.js'
import type { TrustDomain } from '../../spiffe/trust-domain.js'
import { verifyX509Svid } from '../../spiffe/x509-svid/verify.js'
import { CLIENT_ASSERTION_TYPE } from '../../tokens/claims.js'
import type { AuthenticatedClient } from '../contract.js'
import { single, type Form } from './form.js'

/** Where trust comes from: live (rotating) bundles and the local trust domain. */
export interface TrustSource {
  /** The broker's own trust domain (from its SVID, or the server's config). */
  localTrustDomain(): TrustDomain
  bundles(): X509BundleSource & JwtBundleSource
  /**
   * A value that changes (by identity) whenever the bundles change. When
   * given, a client certificate verified on a connection is reused for that
   * connection's later requests until the bundles change, the leaf expires or
   * a minute passes; without it, every request verifies.
   */
  version?(): unknown
}

/** How long one connection's verified client certificate is reused at most. */
const CERT_CACHE_MS = 60_000

export interface ClientAuthenticatorOptions {
  issuer: string
  trust: TrustSource
  /** Foreign trust domains admitted (by name). */
  federatedTrustDomains: readonly TrustDomain[]
  maxAssertionLifetimeSeconds: number
  now: () => number
  /** Most assertions remembered at once (replay cache); beyond it new assertions are refused, not old ones forgotten. */
  maxRememberedAssertions?: number
}

function failed(reason: string, cause?: unknown, details?: Record<string, unknown>): IdentityError {
  return new IdentityError('ERR_CLIENT_AUTH_FAILED', 'client authentication failed', {
    ...(cause !== undefined ? { cause } : {}),
    details: { reason, ...details },
  })
}

export class ClientAuthenticator {
  readonly #o: ClientAuthenticatorOptions
  /** Assertions seen: replay key → expiry (ms). */
  readonly #seen = new Map<string, number>()
  readonly #max: number
  #lastSweep = 0
  /** Per connection: the verified client certificate, while the trust it was verified with holds. */
  readonly #verified = new WeakMap<object, { leaf: Uint8Array; version: unknown; untilMs: number; client: AuthenticatedClient }>()

  constructor(o: ClientAuthenticatorOptions) {
    this.#o = o
    this.#max = o.maxRememberedAssertions ?? 100_000
  }

  /** Bundles of the admitted trust domains only. */
  #admitted(): X509BundleSource & JwtBundleSource {
    const local = this.#o.trust.localTrustDomain()
    const fed = this.#o.federatedTrustDomains
    const all = this.#o.trust.bundles()
    const admit = (td: TrustDomain) => {
      if (!td.equals(local) && !fed.some((f) => f.equals(td))) throw new IdentityError('ERR_BUNDLE_NOT_FOUND', `trust domain "${td.name}" is not admitted`)
    }
    return {
      getX509BundleForTrustDomain(td: TrustDomain): X509Bundle {
        admit(td)
        return all.getX509BundleForTrustDomain(td)
      },
      getJwtBundleForTrustDomain(td: TrustDomain): JwtBundle {
        admit(td)
        return all.getJwtBundleForTrustDomain(td)
      },
    }
  }

  /**
   * Authenticates the caller of one request. `peerChain` is the DER chain the
   * client presented in the TLS handshake (leaf first), empty when none.
   */
  async authenticate(
    form: Form,
    peerChain: readonly Uint8Array[],
    opts: { authorizationHeader?: string | undefined; connection?: object } = {},
  ): Promise<AuthenticatedClient> {
    const { client, commit } = await this.verify(form, peerChain, opts)
    commit()
    return client
  }

  /**
   * Verifies the caller's credentials without consuming them: `commit()`
   * records a client assertion as used (throws ERR_CLIENT_AUTH_FAILED when
   * it was used meanwhile). The token endpoint commits only once the rest of
   * the request has passed its checks, so a request refused for a DPoP nonce
   * can be retried with the same assertion.
   */
  async verify(
    form: Form,
    peerChain: readonly Uint8Array[],
    opts: { authorizationHeader?: string | undefined; connection?: object } = {},
  ): Promise<{ client: AuthenticatedClient; commit(): void }> {
    if (opts.authorizationHeader !== undefined) throw failed('Authorization header authentication is not supported')
    if (form.has('client_secret')) throw failed('client_secret is not supported')
    const assertionType = single(form, 'client_assertion_type')
    const assertion = single(form, 'client_assertion')
    const clientId = single(form, 'client_id')
    let client: AuthenticatedClient
    let commit = (): void => {}
    if (assertionType !== undefined || assertion !== undefined) {
      if (assertionType === undefined || assertion === undefined) throw failed('client_assertion and client_assertion_type go together')
      const method =
        assertionType === CLIENT_ASSERTION_TYPE.jwtSpiffe ? 'jwt-spiffe' : assertionType === CLIENT_ASSERTION_TYPE.jwtBearer ? 'jwt-bearer' : undefined
      if (!method) throw failed('unsupported client_assertion_type', undefined, { assertion_type: assertionType.slice(0, 100) })
      const a = await this.#assertion(assertion)
      client = { spiffeId: a.spiffeId, method }
      commit = a.commit
    } else if (peerChain.length > 0) {
      client = await this.#certificate(peerChain, opts.connection)
    } else {
      throw failed('no client credentials')
    }
    if (clientId !== undefined && clientId !== client.spiffeId)
      throw failed('client_id does not name the authenticated client', undefined, { client_id: clientId.slice(0, 2048), spiffe_id: client.spiffeId })
    return { client, commit }
  }

  async #certificate(chain: readonly Uint8Array[], connection: object | undefined): Promise<AuthenticatedClient> {
    const nowMs = this.#o.now()
    const version = this.#o.trust.version?.()
    const leaf = chain[0]!
    if (connection !== undefined && version !== undefined) {
      const hit = this.#verified.get(connection)
      if (hit && hit.version === version && nowMs < hit.untilMs && Buffer.from(hit.leaf).equals(leaf)) return hit.client
    }
    let verified
    try {
      verified = await verifyX509Svid(chain, this.#admitted(), { now: new Date(nowMs) })
    } catch (cause) {
      throw failed(isIdentityError(cause) ? `client certificate: ${cause.message}` : 'client certificate could not be verified', cause)
    }
    const client: AuthenticatedClient = { spiffeId: verified.id.toString(), method: 'tls_client_auth', certDer: leaf }
    if (connection !== undefined && version !== undefined) {
      const notAfter = Date.parse(new X509Certificate(leaf).validTo)
      this.#verified.set(connection, { leaf, version, untilMs: Math.min(notAfter, nowMs + CERT_CACHE_MS), client })
    }
    return client
  }

  async #assertion(token: string): Promise<{ spiffeId: string; commit(): void }> {
    if (token.length > 16_384) throw failed('client assertion too large')
    const nowMs = this.#o.now()
    let svid
    try {
      svid = await validateJwtSvid(token, this.#admitted(), { audience: this.#o.issuer, now: new Date(nowMs) })
    } catch (cause) {
      throw failed(isIdentityError(cause) ? `client assertion: ${cause.message}` : 'client assertion could not be verified', cause)
    }
    const expSec = Math.floor(svid.expiry.getTime() / 1000)
    const nowSec = Math.floor(nowMs / 1000)
    const iat = typeof svid.claims.iat === 'number' ? svid.claims.iat : undefined
    const lifetime = expSec - (iat ?? nowSec)
    if (lifetime > this.#o.maxAssertionLifetimeSeconds || expSec - nowSec > this.#o.maxAssertionLifetimeSeconds) {
      throw failed('client assertion lives too long', undefined, { spiffe_id: svid.id.toString(), lifetime_s: lifetime })
    }
    const spiffeId = svid.id.toString()
    const key =
      typeof svid.claims.jti === 'string' && svid.claims.jti !== ''
        ? `jti:${spiffeId}:${svid.claims.jti}`
        : `sha256:${createHash('sha256').update(token).digest('base64url')}`
    this.#sweep(nowMs)
    if (this.#seen.has(key)) throw failed('client assertion replayed', undefined, { spiffe_id: spiffeId })
    return {
      spiffeId,
      commit: () => {
        // Synchronous check-and-set: of two requests racing with one assertion, one commits.
        if (this.#seen.has(key)) throw failed('client assertion replayed', undefined, { spiffe_id: spiffeId })
        if (this.#seen.size >= this.#max) throw new IdentityError('ERR_RESOURCE_EXHAUSTED', 'too many client assertions in flight')
        // Remembered until it expires (plus leeway: validateJwtSvid accepts 30 s past exp).
        this.#seen.set(key, expSec * 1000 + 60_000)
      },
    }
  }

  #sweep(nowMs: number): void {
    if (nowMs - this.#lastSweep < 1000 && this.#seen.size < this.#max) return
    this.#lastSweep = nowMs
    for (const [k, exp] of this.#seen) if (exp <= nowMs) this.#seen.delete(k)
  }
}
