import type { AuthorizationDetail } from '../tokens/claims.js'

/**
 * The seam between the broker's wire (`http/`: HTTPS, client authentication,
 * DPoP proof checks, form parsing, OAuth error bodies) and its domain (tasks,
 * ceilings, the exchange / renewal / delegation rules, minting, the token
 * store). The wire authenticates and proves; the domain decides and signs.
 * Every method throws IdentityError with a stable code (see errors/oauth.ts
 * for the wire form) and changes nothing when it throws.
 */

/** A client the wire has authenticated by its SVID. */
export interface AuthenticatedClient {
  /** The client's SPIFFE ID (URI SAN of the X.509-SVID, or `sub` of the JWT-SVID). */
  readonly spiffeId: string
  readonly method: 'tls_client_auth' | 'jwt-spiffe' | 'jwt-bearer'
  /** DER of the client's X.509-SVID leaf when it authenticated by mutual TLS. */
  readonly certDer?: Uint8Array
}

/** The key the issued token is bound to, as the wire proved it. */
export type KeyBinding = { readonly kind: 'dpop'; readonly jkt: string } | { readonly kind: 'mtls'; readonly x5tS256: string } | { readonly kind: 'bearer' }

/** A token request after form parsing (RFC 6749 §4.4, RFC 8693 §2.1, RFC 8707, RFC 9396). */
export interface TokenRequest {
  readonly grantType: string
  readonly subjectToken?: string
  readonly subjectTokenType?: string
  /**
   * RFC 8693 §2.1 actor token: with a delegation grant as subject_token, a token of the actor's own (its
   * JWT-SVID, or its own broker access token) whose subject must be the authenticated client.
   */
  readonly actorToken?: string
  readonly actorTokenType?: string
  readonly requestedTokenType?: string
  /** RFC 8707 `resource` values (absolute URIs), in request order. */
  readonly resources: readonly string[]
  /** RFC 8693 `audience` values. */
  readonly audiences: readonly string[]
  /** Requested scopes; undefined when the request had no `scope`. */
  readonly scopes?: readonly string[]
  readonly authorizationDetails?: readonly AuthorizationDetail[]
  /** warrant extension: the task a client_credentials request is for. */
  readonly taskId?: string
  /**
   * warrant extension (form parameter `may_act`, named after the RFC 8693 §4.4
   * claim): the SPIFFE ID of the sub-agent a delegation grant is for. With a
   * broker access token as subject_token it asks for a one-time delegation
   * grant (issued_token_type `...:token-type:jwt`, token_type `N_A`) that only
   * that sub-agent can exchange for its own token.
   */
  readonly mayAct?: string
  /** Txn-Token requests (draft-ietf-oauth-transaction-tokens): `request_details`, a JSON object that becomes `tctx`. */
  readonly requestDetails?: Readonly<Record<string, unknown>>
  /** Txn-Token requests: `request_context`, a JSON object that becomes `rctx`. */
  readonly requestContext?: Readonly<Record<string, unknown>>
}

/** RFC 6749 §5.1 / RFC 8693 §2.2.1 success body. */
export interface TokenResponse {
  readonly access_token: string
  readonly issued_token_type: string
  readonly token_type: 'DPoP' | 'Bearer' | 'N_A'
  readonly expires_in: number
  readonly scope: string
}

/** RFC 7662 §2.2: `{ active: false }` for anything unknown, expired, revoked or not the caller's to see. */
export type IntrospectionResponse = { readonly active: false } | ({ readonly active: true } & Readonly<Record<string, unknown>>)

/** A task: what one unit of agent work may ever get. */
export interface TaskSpec {
  readonly taskId?: string
  readonly orchestrationId?: string
  /** The agent SPIFFE ID or prefix (ending in `/`) the task is for. */
  readonly agent: string
  readonly scopes: readonly string[]
  readonly resources: readonly string[]
  readonly ttlSeconds: number
  readonly maxRenewals: number
}

export interface Task extends Required<Omit<TaskSpec, 'orchestrationId'>> {
  readonly orchestrationId?: string
  readonly createdBy: string
  readonly createdAt: number
  readonly expiresAt: number
  readonly endedAt?: number
}

import type { RevocationEntry, RevocationKind } from '../tokens/revocation.js'

/** A revocation to record (admin socket, `warrant revoke`, a revocation admin). */
/** A person who revoked through an admin surface (the console): recorded in the audit event. */
export interface RevocationOperator {
  readonly id: string
  readonly method: string
}

export interface RevocationRequest {
  readonly kind: RevocationKind
  readonly value: string
  readonly reason?: string
  /** Prefix quarantines only: the end, epoch seconds. */
  readonly notAfter?: number
}

/** A revocation as the broker stores it: the feed entry plus who made it and why. */
export interface StoredRevocation extends RevocationEntry {
  readonly reason?: string
  readonly createdBy: string
}

/** What the wire needs from the domain. */
export interface BrokerService {
  /** The issuer URL (`iss`, metadata `issuer`). */
  readonly issuer: string
  token(req: TokenRequest, client: AuthenticatedClient, binding: KeyBinding): Promise<TokenResponse>
  /** Only for authenticated resource servers / clients; never reveals why a token is inactive. */
  introspect(token: string, caller: AuthenticatedClient): Promise<IntrospectionResponse>
  /** RFC 7009: succeeds whether or not the token was known; revokes only tokens the caller may revoke. */
  revoke(token: string, caller: AuthenticatedClient): Promise<void>
  /** The public signing keys, current and overlapping, as a JWKS. */
  jwks(): Promise<{ keys: Record<string, unknown>[] }>
  createTask(spec: TaskSpec, creator: AuthenticatedClient | 'admin'): Promise<Task>
  getTask(taskId: string): Promise<Task>
  listTasks(filter?: { agent?: string; orchestrationId?: string; includeEnded?: boolean }): Promise<Task[]>
  endTask(taskId: string, by: AuthenticatedClient | 'admin'): Promise<Task>
  /** Records a revocation at one of the five levels (admin socket, `warrant revoke`); idempotent per kind and value. */
  /** With `by` = 'admin', `operator` names the person behind it (the console's signed-in operator) in the audit event. */
  revokeAt(
    req: RevocationRequest,
    by: AuthenticatedClient | 'admin',
    operator?: RevocationOperator,
  ): Promise<{ entry: StoredRevocation; created: boolean; tokens: number }>
  /** Unexpired revocations after `sinceSeq`, in feed order. */
  listRevocations(sinceSeq?: number, includeExpired?: boolean): Promise<StoredRevocation[]>
  /** The signed revocation list: a JWS (`typ` revocation-list+jwt) with every unexpired entry, its last seq and a short expiry. */
  signedRevocationList(): Promise<string>
  /** New revocations, after they are durable; returns the unsubscribe. */
  onRevocation(fn: (e: StoredRevocation) => void): () => void
  close(): Promise<void>
}
