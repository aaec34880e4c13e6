/**
 * The quickstart demo's own minimal OAuth client for the broker (not a
 * library: the agent-side client is src/broker-client): an SVID for mutual
 * TLS, a non-extractable ES256 DPoP key, token requests with the
 * `use_dpop_nonce` retry (RFC 9449 §8), and resource calls with a proof
 * (`ath`). Proofs come from src/tokens (createDpopProof).
 */
import type { webcrypto } from 'node:crypto'
import { request } from 'node:https'
import { generateKeyPair } from 'jose'
import { toPemBlock } from '../common/crypto/pem.js'
import type { X509Svid } from '../spiffe/x509-svid/x509-svid.js'
import { GRANT_TYPE, TOKEN_TYPE } from '../tokens/claims.js'
import { createDpopProof } from '../tokens/dpop.js'

export interface HttpsReply {
  status: number
  headers: Record<string, string>
  body: string
}

/** One HTTPS request (no keep-alive), the server verified against `ca`; `svid` is presented as the client certificate. */
export function httpsCall(
  url: string,
  o: { method: string; ca: string; svid?: X509Svid; headers?: Record<string, string>; body?: string; timeoutMs?: number },
): Promise<HttpsReply> {
  return new Promise((resolve, reject) => {
    const headers = { ...o.headers, ...(o.body !== undefined ? { 'content-length': String(Buffer.byteLength(o.body)) } : {}) }
    const client = o.svid
      ? {
          cert: o.svid.certificates.map((c) => toPemBlock('CERTIFICATE', c)).join(''),
          key: o.svid.privateKey!.export({ type: 'pkcs8', format: 'pem' }) as string,
        }
      : {}
    const req = request(url, { method: o.method, ca: o.ca, headers, agent: false, timeout: o.timeoutMs ?? 10_000, ...client }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        const h: Record<string, string> = {}
        for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) h[k] = Array.isArray(v) ? v.join(', ') : v
        resolve({ status: res.statusCode ?? 0, headers: h, body: Buffer.concat(chunks).toString('utf8') })
      })
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error(`${o.method} ${url} timed out`)))
    req.on('error', reject)
    if (o.body !== undefined) req.write(o.body)
    req.end()
  })
}

export interface TokenReply {
  access_token: string
  token_type: string
  issued_token_type?: string
  expires_in: number
  scope?: string
}

/** An OAuth error answer of the broker or a resource server. */
export class OAuthRefusal extends Error {
  readonly status: number
  readonly error: string

  constructor(status: number, error: string) {
    super(`HTTP ${status} ${error}`)
    this.status = status
    this.error = error
  }
}

/** The error code of a refusal: the JSON body's `error`, else the WWW-Authenticate challenge's. */
export function oauthError(r: HttpsReply): string {
  try {
    const e = (JSON.parse(r.body) as { error?: unknown }).error
    if (typeof e === 'string') return e
  } catch {
    // not JSON
  }
  return /error="([^"]+)"/.exec(r.headers['www-authenticate'] ?? '')?.[1] ?? ''
}

type CryptoKeyPair = webcrypto.CryptoKeyPair

/** A workload's client of the broker: its SVID (mutual TLS) and its own DPoP key. */
export class DemoOAuthClient {
  readonly #issuer: string
  readonly #ca: string
  readonly #svid: () => X509Svid
  readonly key: CryptoKeyPair
  #nonce: string | undefined

  private constructor(issuer: string, ca: string, svid: () => X509Svid, key: CryptoKeyPair) {
    this.#issuer = issuer
    this.#ca = ca
    this.#svid = svid
    this.key = key
  }

  static async create(o: { issuer: string; ca: string; svid: () => X509Svid }): Promise<DemoOAuthClient> {
    const key = await generateKeyPair('ES256', { extractable: false })
    return new DemoOAuthClient(o.issuer.replace(/\/$/, ''), o.ca, o.svid, key)
  }

  /** POST /token with a DPoP proof, retried once with the broker's nonce when it asks for one. */
  async token(params: Record<string, string>): Promise<TokenReply> {
    const url = `${this.#issuer}/token`
    const body = new URLSearchParams(params).toString()
    for (let attempt = 0; ; attempt++) {
      const proof = await createDpopProof(this.key, { method: 'POST', url, ...(this.#nonce !== undefined ? { nonce: this.#nonce } : {}) })
      const r = await httpsCall(url, {
        method: 'POST',
        ca: this.#ca,
        svid: this.#svid(),
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json', dpop: proof },
        body,
      })
      if (r.headers['dpop-nonce'] !== undefined) this.#nonce = r.headers['dpop-nonce']
      if (r.status === 200) return JSON.parse(r.body) as TokenReply
      const error = oauthError(r)
      if (error !== 'use_dpop_nonce' || attempt > 0) throw new OAuthRefusal(r.status, error)
    }
  }

  /** client_credentials for a task (the agent's token for itself). */
  taskToken(o: { taskId: string; scopes: readonly string[]; resource: string }): Promise<TokenReply> {
    return this.token({ grant_type: GRANT_TYPE.clientCredentials, task_id: o.taskId, scope: o.scopes.join(' '), resource: o.resource })
  }

  /** Renewal: the token exchanged for its successor with proof of the same key (optionally asking for other scopes). */
  renew(token: string, scopes?: readonly string[]): Promise<TokenReply> {
    return this.token({
      grant_type: GRANT_TYPE.tokenExchange,
      subject_token: token,
      subject_token_type: TOKEN_TYPE.accessToken,
      ...(scopes ? { scope: scopes.join(' ') } : {}),
    })
  }

  /** A one-time delegation grant that only `subAgent` can redeem. */
  delegationGrant(token: string, subAgent: string, scopes: readonly string[]): Promise<TokenReply> {
    return this.token({
      grant_type: GRANT_TYPE.tokenExchange,
      subject_token: token,
      subject_token_type: TOKEN_TYPE.accessToken,
      may_act: subAgent,
      scope: scopes.join(' '),
    })
  }

  /** The sub-agent's side: a delegation grant redeemed for a token bound to this client's key. */
  redeem(grant: string): Promise<TokenReply> {
    return this.token({ grant_type: GRANT_TYPE.tokenExchange, subject_token: grant, subject_token_type: TOKEN_TYPE.jwt })
  }

  /** A resource call with the token and a proof of this client's key (`proofKey` overrides the key: a thief's). */
  async call(url: string, o: { method: string; token: string; ca: string; proofKey?: CryptoKeyPair | null }): Promise<HttpsReply> {
    const headers: Record<string, string> = { accept: 'application/json' }
    if (o.proofKey === null) headers.authorization = `Bearer ${o.token}`
    else {
      headers.authorization = `DPoP ${o.token}`
      headers.dpop = await createDpopProof(o.proofKey ?? this.key, { method: o.method, url, accessToken: o.token })
    }
    return httpsCall(url, { method: o.method, ca: o.ca, headers })
  }
}
