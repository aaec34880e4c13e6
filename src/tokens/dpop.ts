/**
 * DPoP (RFC 9449): proof-of-possession proofs, checked exactly as §4.3 lists,
 * plus the two pieces of server state the checks need (a `jti` replay cache
 * and stateless server nonces, §8) and the thumbprints that bind tokens to
 * keys (RFC 7638 `cnf.jkt`, RFC 8705 `cnf.x5t#S256`).
 *
 * Pure: node:crypto and jose only. Every rejection is an IdentityError
 * ERR_DPOP_PROOF_INVALID (or ERR_DPOP_NONCE_REQUIRED) with `details.reason`
 * naming the failed check; messages stay generic.
 */
import { createHash, createHmac, randomBytes, randomUUID, timingSafeEqual, type JsonWebKey, type webcrypto } from 'node:crypto'
import { calculateJwkThumbprint, compactVerify, decodeProtectedHeader, exportJWK, importJWK, SignJWT, type JWK } from 'jose'
import { IdentityError } from '../errors/index.js'
import { DPOP_PROOF_TYP } from './claims.js'

type CryptoKey = webcrypto.CryptoKey
type CryptoKeyPair = webcrypto.CryptoKeyPair

/** Asymmetric algorithms accepted for proofs unless the caller narrows the list (no `none`, no HMAC). */
export const DPOP_ALGORITHMS: readonly string[] = ['ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512', 'RS256', 'EdDSA', 'Ed25519']

/** Defaults for the `iat` window: a proof is fresh for 60 s, with 10 s of clock skew either way. */
export const DPOP_DEFAULT_MAX_AGE_SEC = 60
export const DPOP_DEFAULT_CLOCK_SKEW_SEC = 10

/** Upper bounds on attacker-controlled sizes (a proof is a few hundred bytes; an RSA-4096 jwk makes it ~1.5 KB). */
const MAX_PROOF_LENGTH = 8192
const MAX_JTI_LENGTH = 256

/** JWK members that only a private or symmetric key has (RFC 7518 §6.2.2, §6.3.2, §6.4). */
const PRIVATE_JWK_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const

export interface DpopReplayCache {
  /** false when `key` was already seen (and has not expired); remembers it until `expiresAtSec`. */
  remember(key: string, expiresAtSec: number): boolean
}

/**
 * An in-memory replay cache with a bounded number of entries. Expired entries
 * are dropped as new ones arrive (insertion order is close to expiry order, so
 * checking the oldest few keeps it amortised O(1)); a cache full of live
 * entries refuses with ERR_RESOURCE_EXHAUSTED rather than forget one, which
 * would let that proof be replayed.
 */
export class MemoryReplayCache implements DpopReplayCache {
  readonly #entries = new Map<string, number>()
  readonly #maxEntries: number
  readonly #nowSec: () => number

  readonly #what: string

  /** `what` names the cache in its error (default `DPoP`; the SET receiver's is `SET`). */
  constructor(opts: { maxEntries?: number; nowSec?: () => number; what?: string } = {}) {
    const max = opts.maxEntries ?? 100_000
    if (!Number.isInteger(max) || max < 1) throw new RangeError('maxEntries must be a positive integer')
    this.#maxEntries = max
    this.#nowSec = opts.nowSec ?? (() => Math.floor(Date.now() / 1000))
    this.#what = opts.what ?? 'DPoP'
  }

  get size(): number {
    return this.#entries.size
  }

  remember(key: string, expiresAtSec: number): boolean {
    const now = this.#nowSec()
    const seen = this.#entries.get(key)
    if (seen !== undefined && seen >= now) return false
    if (seen !== undefined) this.#entries.delete(key)
    this.#evictExpired(now, 4)
    if (this.#entries.size >= this.#maxEntries) {
      this.#evictExpired(now, Number.POSITIVE_INFINITY)
      if (this.#entries.size >= this.#maxEntries) {
        throw new IdentityError('ERR_RESOURCE_EXHAUSTED', `${this.#what} replay cache is full`, {
          details: { reason: 'replay_cache_full', max_entries: this.#maxEntries },
        })
      }
    }
    this.#entries.set(key, expiresAtSec)
    return true
  }

  /** Forgets `key` (a receiver that failed to apply a SET forgets it, so its retransmission is processed). */
  forget(key: string): void {
    this.#entries.delete(key)
  }

  /** Drops expired entries: the oldest `limit` in insertion order (stopping at the first live one), or all when limit is Infinity. */
  #evictExpired(now: number, limit: number): void {
    let looked = 0
    for (const [k, exp] of this.#entries) {
      if (exp < now) this.#entries.delete(k)
      else if (limit !== Number.POSITIVE_INFINITY) return
      if (++looked >= limit) return
    }
  }
}

export interface DpopNonces {
  issue(nowSec: number): string
  check(nonce: string, nowSec: number): boolean
}

const NONCE_TIME_BYTES = 8
const NONCE_MAC_BYTES = 16
const NONCE_LABEL = Buffer.from('warrant dpop nonce v1\0')

/**
 * Stateless server nonces (RFC 9449 §8): base64url(issuedAt ‖ HMAC-SHA-256(secret, label ‖ issuedAt)[:16]).
 * A nonce is accepted for `windowSec` after it was issued (and not if it
 * claims to come from the future). Several processes that share `secret`
 * accept each other's nonces; with no secret, a random one per instance.
 */
export function createDpopNonces(opts: { secret?: Uint8Array; windowSec: number }): DpopNonces {
  const secret = opts.secret ?? randomBytes(32)
  if (secret.length < 32) throw new RangeError('DPoP nonce secret must be at least 32 bytes')
  if (!Number.isInteger(opts.windowSec) || opts.windowSec < 1) throw new RangeError('windowSec must be a positive integer')
  const windowSec = opts.windowSec
  const key = Buffer.from(secret)
  const mac = (time: Buffer): Buffer => createHmac('sha256', key).update(NONCE_LABEL).update(time).digest().subarray(0, NONCE_MAC_BYTES)
  return {
    issue(nowSec: number): string {
      const time = Buffer.alloc(NONCE_TIME_BYTES)
      time.writeBigUInt64BE(BigInt(Math.max(0, Math.floor(nowSec))))
      return Buffer.concat([time, mac(time)]).toString('base64url')
    },
    check(nonce: string, nowSec: number): boolean {
      if (typeof nonce !== 'string' || nonce.length !== Math.ceil(((NONCE_TIME_BYTES + NONCE_MAC_BYTES) * 4) / 3)) return false
      if (!/^[A-Za-z0-9_-]+$/.test(nonce)) return false
      const raw = Buffer.from(nonce, 'base64url')
      if (raw.length !== NONCE_TIME_BYTES + NONCE_MAC_BYTES) return false
      const time = raw.subarray(0, NONCE_TIME_BYTES)
      if (!timingSafeEqual(raw.subarray(NONCE_TIME_BYTES), mac(time))) return false
      const issued = Number(time.readBigUInt64BE())
      return issued <= nowSec && nowSec - issued <= windowSec
    },
  }
}

export interface DpopCheck {
  /** The request's HTTP method, as received (compared exactly with `htm`). */
  method: string
  /** The request's absolute URL (compared with `htu` after `normalizeHtu` on both). */
  url: string
  nowSec: number
  /** How old `iat` may be (default 60 s). */
  maxAgeSec?: number
  /** Tolerance either side of the `iat` window (default 10 s). */
  clockSkewSec?: number
  /** Allowed `alg` values, a subset of DPOP_ALGORITHMS (the default). */
  algorithms?: readonly string[]
  /** The access token presented with the proof: `ath` is then required and must match. */
  accessToken?: string
  /** The token's `cnf.jkt`: the proof's key must be that one. */
  expectedJkt?: string
  /** When set, the proof must carry a nonce these nonces accept. */
  nonces?: DpopNonces
  replay: DpopReplayCache
}

export interface VerifiedDpopProof {
  /** RFC 7638 thumbprint (SHA-256, base64url) of the proof's key. */
  jkt: string
  jti: string
  iat: number
  /** The proof's public key, as it appeared in the header. */
  jwk: JsonWebKey
  nonce?: string
}

function invalid(reason: string, extra: Record<string, unknown> = {}, cause?: unknown): IdentityError {
  return new IdentityError('ERR_DPOP_PROOF_INVALID', 'invalid DPoP proof', { details: { reason, ...extra }, ...(cause === undefined ? {} : { cause }) })
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/** Validates the caller's allow-list once: a programmer who lists `none` or an HMAC gets a TypeError, not a weaker check. */
function allowedAlgorithms(list: readonly string[] | undefined): readonly string[] {
  if (list === undefined) return DPOP_ALGORITHMS
  for (const a of list) {
    if (!DPOP_ALGORITHMS.includes(a)) throw new TypeError(`DPoP algorithm not allowed: ${a} (asymmetric algorithms only)`)
  }
  return list
}

/**
 * Verifies a DPoP proof (RFC 9449 §4.3) for one request and records its `jti`.
 * Order: shape and header (cheap), signature by the header's key, then the
 * claims, and only for a proof that passed everything else the replay cache,
 * so a rejected proof leaves no trace in it.
 */
export async function verifyDpopProof(proof: string, check: DpopCheck): Promise<VerifiedDpopProof> {
  const algorithms = allowedAlgorithms(check.algorithms)
  const maxAge = check.maxAgeSec ?? DPOP_DEFAULT_MAX_AGE_SEC
  const skew = check.clockSkewSec ?? DPOP_DEFAULT_CLOCK_SKEW_SEC
  const expectedHtu = normalizeHtu(check.url)

  // 1. exactly one well-formed compact JWS
  if (typeof proof !== 'string' || proof.length === 0) throw invalid('missing')
  if (proof.length > MAX_PROOF_LENGTH) throw invalid('too_large')
  if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(proof)) throw invalid('malformed')
  let header: Record<string, unknown>
  try {
    header = decodeProtectedHeader(proof)
  } catch (err) {
    throw invalid('malformed', {}, err)
  }
  if (!isRecord(header)) throw invalid('malformed')

  // 2. header: typ, alg, jwk (public)
  if (header['typ'] !== DPOP_PROOF_TYP) throw invalid('typ')
  const alg = header['alg']
  if (typeof alg !== 'string' || !algorithms.includes(alg)) throw invalid('alg', { alg: typeof alg === 'string' ? alg.slice(0, 32) : undefined })
  const jwk = header['jwk']
  if (!isRecord(jwk)) throw invalid('jwk_missing')
  for (const m of PRIVATE_JWK_MEMBERS) if (m in jwk) throw invalid('jwk_private')
  if (jwk['kty'] !== 'EC' && jwk['kty'] !== 'RSA' && jwk['kty'] !== 'OKP') throw invalid('jwk_kty')

  // 3. signature by that key (jose checks that the key suits alg, e.g. P-256 for ES256, and rejects unknown `crit`)
  const { key, jkt } = await proofKey(jwk, alg)
  let payloadBytes: Uint8Array
  try {
    payloadBytes = (await compactVerify(proof, key, { algorithms: [alg] })).payload
  } catch (err) {
    throw invalid('signature', {}, err)
  }
  let claims: unknown
  try {
    claims = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payloadBytes))
  } catch (err) {
    throw invalid('payload', {}, err)
  }
  if (!isRecord(claims)) throw invalid('payload')

  // 4. required claims, well typed
  const { jti, htm, htu, iat } = claims
  if (typeof jti !== 'string' || jti.length === 0 || jti.length > MAX_JTI_LENGTH) throw invalid('jti')
  if (typeof htm !== 'string') throw invalid('htm')
  if (typeof htu !== 'string') throw invalid('htu')
  if (typeof iat !== 'number' || !Number.isFinite(iat)) throw invalid('iat')

  // 5. bound to this request
  if (htm !== check.method) throw invalid('htm')
  let proofHtu: string
  try {
    proofHtu = normalizeHtu(htu)
  } catch (err) {
    throw invalid('htu', {}, err)
  }
  if (proofHtu !== expectedHtu) throw invalid('htu')

  // 6. fresh
  if (iat > check.nowSec + skew) throw invalid('iat_future', { iat, now: check.nowSec })
  if (iat < check.nowSec - maxAge - skew) throw invalid('iat_expired', { iat, now: check.nowSec })

  // 7. bound to the access token presented with it
  if (check.accessToken !== undefined) {
    if (typeof claims['ath'] !== 'string') throw invalid('ath_missing')
    if (!constantTimeEqual(claims['ath'], accessTokenHash(check.accessToken))) throw invalid('ath')
  }

  // 8. the key the token is bound to
  if (check.expectedJkt !== undefined && !constantTimeEqual(jkt, check.expectedJkt)) throw invalid('jkt')

  // 9. server nonce (RFC 9449 §8: missing or stale both answer use_dpop_nonce)
  const nonce = claims['nonce']
  if (nonce !== undefined && typeof nonce !== 'string') throw invalid('nonce')
  if (check.nonces !== undefined) {
    if (nonce === undefined) throw new IdentityError('ERR_DPOP_NONCE_REQUIRED', 'DPoP nonce required', { details: { reason: 'nonce_missing' } })
    if (!check.nonces.check(nonce, check.nowSec))
      throw new IdentityError('ERR_DPOP_NONCE_REQUIRED', 'DPoP nonce required', { details: { reason: 'nonce_stale' } })
  }

  // 10. not seen before (keyed by key and jti, kept until the proof could no longer pass step 6)
  if (!check.replay.remember(`${jkt}.${jti}`, Math.floor(iat) + maxAge + skew)) throw invalid('replay', { jti })

  const out: VerifiedDpopProof = { jkt, jti, iat, jwk: jwk }
  if (nonce !== undefined) out.nonce = nonce
  return out
}

type VerifyKey = Awaited<ReturnType<typeof importJWK>>

/**
 * Imported proof keys and their thumbprints, by algorithm and the header's
 * exact jwk (a client sends the same key with every proof; importing it
 * and hashing it again each time was a fifth of a verification). Bounded;
 * the oldest entry goes first.
 */
const PROOF_KEYS = new Map<string, { key: VerifyKey; jkt: string }>()
const PROOF_KEYS_MAX = 1024

async function proofKey(jwk: Record<string, unknown>, alg: string): Promise<{ key: VerifyKey; jkt: string }> {
  // keyed by the header's exact jwk, so a hit is a key jose already accepted for this alg
  const id = `${alg}|${JSON.stringify(jwk)}`
  const hit = id.length <= 4096 ? PROOF_KEYS.get(id) : undefined
  if (hit !== undefined) return hit
  let found: { key: VerifyKey; jkt: string }
  try {
    found = { key: await importJWK(jwk as JWK, alg), jkt: await jwkThumbprint(jwk) }
  } catch (err) {
    throw invalid('jwk_invalid', {}, err)
  }
  if (id.length <= 4096) {
    if (PROOF_KEYS.size >= PROOF_KEYS_MAX) PROOF_KEYS.delete(PROOF_KEYS.keys().next().value as string)
    PROOF_KEYS.set(id, found)
  }
  return found
}

function constantTimeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a)
  const y = Buffer.from(b)
  return x.length === y.length && timingSafeEqual(x, y)
}

/** RFC 9449 §4.2 `ath`: base64url(SHA-256(ASCII access token)). */
export function accessTokenHash(accessToken: string): string {
  return createHash('sha256').update(accessToken, 'ascii').digest('base64url')
}

/** RFC 7638 JWK thumbprint with SHA-256, base64url (the value of `cnf.jkt`). */
export async function jwkThumbprint(jwk: JsonWebKey): Promise<string> {
  return calculateJwkThumbprint(jwk, 'sha256')
}

/** RFC 8705 §3.1: base64url(SHA-256(DER certificate)), the value of `cnf.x5t#S256`. */
export function x5tS256(certDer: Uint8Array): string {
  return createHash('sha256').update(certDer).digest('base64url')
}

/**
 * The form of an `htu` compared by RFC 9449 §4.3: an http(s) URL without query
 * and fragment, scheme and host lowercased, default port dropped, path
 * normalised (dot segments) by the WHATWG URL parser. Throws TypeError for
 * anything that is not an absolute http(s) URL.
 */
export function normalizeHtu(url: string): string {
  let u: URL
  try {
    u = new URL(url)
  } catch {
    throw new TypeError('htu is not an absolute URL')
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new TypeError('htu is not an http(s) URL')
  return `${u.protocol}//${u.host}${u.pathname}`
}

/** The JWS `alg` for a WebCrypto key pair, or TypeError for keys DPoP cannot use. */
function algForKey(key: CryptoKey): string {
  const a = key.algorithm as { name: string; namedCurve?: string; hash?: { name: string } }
  switch (a.name) {
    case 'ECDSA':
      if (a.namedCurve === 'P-256') return 'ES256'
      if (a.namedCurve === 'P-384') return 'ES384'
      if (a.namedCurve === 'P-521') return 'ES512'
      break
    case 'Ed25519':
      return 'Ed25519'
    case 'RSA-PSS':
      return `PS${a.hash?.name.slice(4) ?? ''}`
    case 'RSASSA-PKCS1-v1_5':
      if (a.hash?.name === 'SHA-256') return 'RS256'
      break
  }
  throw new TypeError(`no DPoP algorithm for key ${a.name}`)
}

/** Public JWKs of proof keys, exported once per key (a CryptoKey never changes). */
const publicJwks = new WeakMap<CryptoKey, JWK>()

/**
 * Creates a DPoP proof (RFC 9449 §4.2) with a key pair whose private half may
 * be non-extractable (only the public key is exported, into the header).
 */
export async function createDpopProof(
  key: CryptoKeyPair,
  opts: { method: string; url: string; accessToken?: string; nonce?: string; nowSec?: number; jti?: string },
): Promise<string> {
  const alg = algForKey(key.privateKey)
  let jwk = publicJwks.get(key.publicKey)
  if (jwk === undefined) {
    jwk = await exportJWK(key.publicKey)
    publicJwks.set(key.publicKey, jwk)
  }
  const claims: Record<string, unknown> = {
    jti: opts.jti ?? randomUUID(),
    htm: opts.method,
    htu: normalizeHtu(opts.url),
    iat: opts.nowSec ?? Math.floor(Date.now() / 1000),
  }
  if (opts.accessToken !== undefined) claims['ath'] = accessTokenHash(opts.accessToken)
  if (opts.nonce !== undefined) claims['nonce'] = opts.nonce
  return new SignJWT(claims).setProtectedHeader({ alg, typ: DPOP_PROOF_TYP, jwk }).sign(key.privateKey)
}
