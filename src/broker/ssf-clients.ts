/**
 * Shared Signals receivers that are not SPIFFE workloads (a SIEM, an IdP):
 * OAuth clients the broker registers (issue 22: "an OAuth client credential
 * issued by the broker"). An operator creates one over the admin socket
 * (`warrant signal client create <name>`): its client_id is `ssf:<name>`, its
 * secret 32 random bytes (base64url), shown once, of which only the SHA-256 is
 * stored. The client gets a 300 s Bearer token at `<issuer>/token` by
 * `client_credentials` with `client_secret_basic` (RFC 6749 §2.3.1) and uses
 * it at the SSF API only: the token's `aud` is `<issuer>/ssf`, it is never
 * recorded as a broker token (so introspection, exchange, renewal and revocation
 * know nothing of it), and the agents' client authentication never accepts
 * these credentials. Every request re-checks that the client is still
 * registered, so deleting it ends its live tokens at once.
 */
import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto'
import { compactVerify, decodeProtectedHeader } from 'jose'
import type { AuditEventInput } from '../audit/event.js'
import { F, type Logger } from '../common/log/logger.js'
import { IdentityError } from '../errors/identity-error.js'
import { ACCESS_TOKEN_TYP } from '../tokens/claims.js'
import type { ActiveKey, SigningKeys } from './keys.js'
import { signJwt } from './mint.js'
import type { SsfStore } from './store/ssf-store.js'

export const SSF_CLIENT_PREFIX = 'ssf:'
export const SSF_SCOPE = 'ssf'
export const SSF_TOKEN_TTL_SECONDS = 300
const NAME = /^[a-z0-9-]{1,64}$/
const MAX_TOKEN = 4096

export function isSsfClientId(id: string): boolean {
  return id.startsWith(SSF_CLIENT_PREFIX) && NAME.test(id.slice(SSF_CLIENT_PREFIX.length))
}

export interface SsfClientsOptions {
  readonly issuer: string
  readonly store: SsfStore
  /** The broker's current signing key (`SigningKeys.active()`). */
  readonly signingKey: () => ActiveKey
  /** The published key of `kid` (`SigningKeys.publicKeyFor`). */
  readonly publicKeyFor: SigningKeys['publicKeyFor']
  readonly log: Logger
  readonly audit?: (e: AuditEventInput) => void
  /** Milliseconds since the epoch (default Date.now). */
  readonly now?: () => number
}

export interface SsfClientInfo {
  readonly client_id: string
  /** Epoch seconds. */
  readonly created_at: number
}

export interface SsfTokenResponse {
  readonly access_token: string
  readonly token_type: 'Bearer'
  readonly expires_in: number
  readonly scope: string
}

const sha256 = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest()
/** Compared against when the client is unknown, so an unknown id costs what a wrong secret does. */
const DUMMY_HASH = sha256(randomBytes(32).toString('base64url'))

function invalidClient(reason: string, clientId?: string): IdentityError {
  return new IdentityError('ERR_CLIENT_AUTH_FAILED', 'client authentication failed', {
    details: { reason, ...(clientId !== undefined ? { client_id: clientId } : {}) },
  })
}

/** application/x-www-form-urlencoded decoding of one Basic credential part (RFC 6749 §2.3.1). */
function formDecode(s: string): string | undefined {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '))
  } catch {
    return undefined
  }
}

/** The client id and secret of an `Authorization: Basic` header, or undefined when it is not one. */
export function parseBasic(header: string | undefined): { id: string; secret: string } | undefined {
  if (header === undefined) return undefined
  const m = /^Basic ([A-Za-z0-9+/]+={0,2})$/i.exec(header.trim())
  if (m === null) return undefined
  const raw = Buffer.from(m[1]!, 'base64').toString('utf8')
  const i = raw.indexOf(':')
  if (i < 0) return undefined
  const id = formDecode(raw.slice(0, i))
  const secret = formDecode(raw.slice(i + 1))
  return id === undefined || secret === undefined ? undefined : { id, secret }
}

export class SsfClients {
  readonly #o: SsfClientsOptions
  readonly #now: () => number

  constructor(o: SsfClientsOptions) {
    this.#o = o
    this.#now = o.now ?? Date.now
  }

  get #nowSec(): number {
    return Math.floor(this.#now() / 1000)
  }

  get audience(): string {
    return `${this.#o.issuer}/ssf`
  }

  #name(name: unknown): string {
    if (typeof name !== 'string' || !NAME.test(name)) throw new IdentityError('ERR_INVALID_ARGUMENT', 'client name must be 1-64 characters of a-z 0-9 -')
    return name
  }

  /** Registers `ssf:<name>`; the secret is returned here once and never again. */
  create(name: unknown): SsfClientInfo & { client_secret: string } {
    const clientId = SSF_CLIENT_PREFIX + this.#name(name)
    const secret = randomBytes(32).toString('base64url')
    const createdAt = this.#nowSec
    if (!this.#o.store.insertClient({ clientId, secretSha256: sha256(secret), createdAt }))
      throw new IdentityError('ERR_ALREADY_EXISTS', `SSF client ${clientId} already exists`)
    this.#o.log.info({ client_id: clientId }, 'SSF client created')
    this.#audit('ssf_client.created', clientId)
    return { client_id: clientId, client_secret: secret, created_at: createdAt }
  }

  list(): SsfClientInfo[] {
    return this.#o.store.listClients().map((c) => ({ client_id: c.clientId, created_at: c.createdAt }))
  }

  delete(name: unknown): boolean {
    const clientId = SSF_CLIENT_PREFIX + this.#name(name)
    // its streams go with it (nobody could poll them again)
    const { gone, streams } = this.#o.store.tx(() => {
      const streams = this.#o.store.listStreams(clientId).map((s) => s.streamId)
      const gone = this.#o.store.deleteClient(clientId)
      if (gone) for (const id of streams) this.#o.store.deleteStream(id)
      return { gone, streams: gone ? streams.length : 0 }
    })
    if (gone) {
      this.#o.log.info({ client_id: clientId, streams }, 'SSF client deleted')
      this.#audit('ssf_client.deleted', clientId)
    }
    return gone
  }

  isRegistered(clientId: string): boolean {
    return isSsfClientId(clientId) && this.#o.store.getClient(clientId) !== undefined
  }

  #audit(action: string, clientId: string): void {
    try {
      this.#o.audit?.({ type: 'signal', outcome: 'success', attributes: { action, client_id: clientId } })
    } catch (err) {
      this.#o.log.error({ [F.ERR]: err instanceof Error ? err.message : String(err), client_id: clientId }, 'SSF client audit event not recorded')
    }
  }

  /**
   * The token endpoint for SSF clients: `grant_type=client_credentials`, the
   * client authenticated by HTTP Basic only, `scope` absent or `ssf`. Throws
   * ERR_CLIENT_AUTH_FAILED (401 invalid_client) for any failed authentication,
   * the reason in `details` only.
   */
  async token(authorization: string | undefined, form: ReadonlyMap<string, readonly string[]>): Promise<SsfTokenResponse> {
    const basic = parseBasic(authorization)
    if (basic === undefined) throw invalidClient('malformed Basic credentials')
    for (const k of ['client_secret', 'client_assertion', 'client_assertion_type'])
      if (form.has(k)) throw new IdentityError('ERR_TOKEN_REQUEST_INVALID', 'one client authentication method only (client_secret_basic)')
    for (const [k, v] of form) if (v.length !== 1) throw new IdentityError('ERR_TOKEN_REQUEST_INVALID', `parameter "${k.slice(0, 64)}" is repeated`)
    const formId = form.get('client_id')?.[0]
    if (formId !== undefined && formId !== basic.id) throw invalidClient('client_id in the body differs from the Basic credentials')
    const rec = isSsfClientId(basic.id) ? this.#o.store.getClient(basic.id) : undefined
    const presented = sha256(basic.secret)
    const match = timingSafeEqual(presented, rec !== undefined ? Buffer.from(rec.secretSha256) : DUMMY_HASH)
    if (rec === undefined) throw invalidClient('unknown client', isSsfClientId(basic.id) ? basic.id : undefined)
    if (!match) throw invalidClient('wrong client secret', rec.clientId)
    if (form.get('grant_type')?.[0] !== 'client_credentials')
      throw new IdentityError('ERR_GRANT_TYPE_UNSUPPORTED', 'unsupported grant_type', { details: { client_id: rec.clientId } })
    const scope = form.get('scope')?.[0]
    if (scope !== undefined && scope !== SSF_SCOPE) throw new IdentityError('ERR_SCOPE_INVALID', 'invalid scope', { details: { client_id: rec.clientId } })
    const iat = this.#nowSec
    const { key, kid, alg } = this.#o.signingKey()
    const jti = randomUUID()
    const token = await signJwt(
      { iss: this.#o.issuer, aud: this.audience, sub: rec.clientId, client_id: rec.clientId, scope: SSF_SCOPE, jti, iat, exp: iat + SSF_TOKEN_TTL_SECONDS },
      { signer: key, kid, alg, typ: ACCESS_TOKEN_TYP },
    )
    this.#o.log.info({ client_id: rec.clientId, jti }, 'SSF client token issued')
    return { access_token: token, token_type: 'Bearer', expires_in: SSF_TOKEN_TTL_SECONDS, scope: SSF_SCOPE }
  }

  /**
   * The SSF client a `Bearer` token from `token()` names: signature by a
   * published broker key, `typ`, `iss`, `aud`, `exp`, `scope`, and the client
   * still registered. Throws ERR_CLIENT_AUTH_FAILED otherwise.
   */
  async verifyBearer(token: string): Promise<string> {
    if (token.length === 0 || token.length > MAX_TOKEN) throw invalidClient('malformed SSF token')
    let header: ReturnType<typeof decodeProtectedHeader>
    try {
      header = decodeProtectedHeader(token)
    } catch {
      throw invalidClient('malformed SSF token')
    }
    if (header.typ !== ACCESS_TOKEN_TYP || typeof header.kid !== 'string') throw invalidClient('not an SSF token')
    const k = this.#o.publicKeyFor(header.kid)
    if (k === undefined || header.alg !== k.alg) throw invalidClient('SSF token key unknown')
    let claims: Record<string, unknown>
    try {
      const r = await compactVerify(token, k.key, { algorithms: [k.alg] })
      claims = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(r.payload)) as Record<string, unknown>
    } catch {
      throw invalidClient('SSF token signature invalid')
    }
    if (claims === null || typeof claims !== 'object') throw invalidClient('malformed SSF token')
    if (claims['iss'] !== this.#o.issuer) throw invalidClient('SSF token issuer')
    if (claims['aud'] !== this.audience) throw invalidClient('SSF token audience')
    const now = this.#nowSec
    if (typeof claims['exp'] !== 'number' || claims['exp'] <= now) throw invalidClient('SSF token expired')
    if (claims['scope'] !== SSF_SCOPE) throw invalidClient('SSF token scope')
    const sub = claims['sub']
    if (typeof sub !== 'string') throw invalidClient('SSF token subject')
    // only `ssf:<name>` ids are ever registered: a deleted client's (or any other) subject ends here
    if (this.#o.store.getClient(sub) === undefined) throw invalidClient('SSF client no longer registered', sub)
    return sub
  }
}
