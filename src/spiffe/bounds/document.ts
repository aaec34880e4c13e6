import type { KeyObject } from 'node:crypto'
import { flattenedVerify } from 'jose'
import { IdentityError, isIdentityError } from '../../errors/identity-error.js'
import type { JwtBundleSource } from '../bundle/sources.js'
import { algorithmsForKey, defaultAlgorithmForKey } from '../jwt-svid/parse.js'
import { SIGNATURE_ALGORITHMS, type SignatureAlgorithm, type Signer } from '../signer.js'
import { TrustDomain } from '../trust-domain.js'
import { BoundsSet, type PrefixBoundsJson } from './bounds-set.js'

/** The JWS `typ` of a signed bounds document. */
export const BOUNDS_DOCUMENT_TYPE = 'warrant-bounds+jwt'

/** Largest document accepted, characters. */
export const MAX_BOUNDS_DOCUMENT_LENGTH = 1024 * 1024

/** The payload of a signed bounds document. */
export interface BoundsDocumentPayload {
  trust_domain: string
  /** Increases with every change of the bounds. */
  sequence: number
  /** Seconds since the epoch. */
  issued_at: number
  bounds: PrefixBoundsJson[]
}

/** A verified bounds document. */
export interface BoundsDocument {
  readonly trustDomain: TrustDomain
  readonly sequence: number
  readonly issuedAt: Date
  /** The key that signed it (a JWT authority of the trust domain's bundle). */
  readonly kid: string
  readonly set: BoundsSet
}

export interface SignBoundsDocumentOptions {
  set: BoundsSet
  sequence: number
  issuedAt: Date
  /** The trust domain's JWT signing key. */
  signer: Signer
  /** That key's id in the JWT bundle. */
  kid: string
  /** Default from the key (ES256 for P-256). */
  alg?: SignatureAlgorithm
}

const ALGS: ReadonlySet<string> = new Set(SIGNATURE_ALGORITHMS)
const ECDSA_SIG_BYTES: Partial<Record<SignatureAlgorithm, number>> = { ES256: 64, ES384: 96, ES512: 132 }
const B64URL = /^[A-Za-z0-9_-]+$/

const b64json = (v: unknown) => Buffer.from(JSON.stringify(v), 'utf8').toString('base64url')

/**
 * Signs the bounds as a compact JWS, header `{alg, kid, typ: "warrant-bounds+jwt"}`,
 * payload `{trust_domain, sequence, issued_at, bounds: [{prefix, ...}]}`.
 * Bad options throw TypeError / RangeError; signer errors propagate.
 */
export async function signBoundsDocument(opts: SignBoundsDocumentOptions): Promise<string> {
  const { set, signer, kid } = opts
  if (!(set instanceof BoundsSet)) throw new TypeError('set must be a BoundsSet')
  if (!Number.isSafeInteger(opts.sequence) || opts.sequence < 0) throw new RangeError('sequence must be a non-negative integer')
  if (!(opts.issuedAt instanceof Date) || Number.isNaN(opts.issuedAt.getTime())) throw new TypeError('issuedAt must be a valid Date')
  if (typeof kid !== 'string' || kid.length === 0) throw new TypeError('kid must be a non-empty string')
  if (!signer || typeof signer.sign !== 'function' || !signer.publicKey) throw new TypeError('signer must implement Signer')
  const alg = opts.alg ?? defaultAlgorithmForKey(signer.publicKey)
  if (alg === undefined || !ALGS.has(alg)) throw new TypeError('signer key cannot sign a bounds document')
  if (!algorithmsForKey(signer.publicKey).has(alg)) throw new TypeError(`signer key cannot sign with ${alg}`)
  const payload: BoundsDocumentPayload = {
    trust_domain: set.trustDomain.name,
    sequence: opts.sequence,
    issued_at: Math.floor(opts.issuedAt.getTime() / 1000),
    bounds: set.toJSON(),
  }
  const input = `${b64json({ alg, kid, typ: BOUNDS_DOCUMENT_TYPE })}.${b64json(payload)}`
  const sig = await signer.sign(Buffer.from(input, 'ascii'), alg)
  const ecLen = ECDSA_SIG_BYTES[alg]
  if (!(sig instanceof Uint8Array) || sig.byteLength === 0 || (ecLen !== undefined && sig.byteLength !== ecLen)) {
    throw new TypeError(`signer returned an unusable ${alg} signature`)
  }
  return `${input}.${Buffer.from(sig.buffer, sig.byteOffset, sig.byteLength).toString('base64url')}`
}

export interface VerifyBoundsDocumentOptions {
  /** The trust domain the document must be for. */
  trustDomain?: TrustDomain
  /** With `maxAgeSeconds`: reject documents issued earlier than now - maxAge, or later than now + leeway. */
  now?: Date
  maxAgeSeconds?: number
  /** Default 30. */
  leewaySeconds?: number
  /** Reject documents older than one already seen (rollback). */
  minSequence?: number
}

function invalid(message: string, cause?: unknown): never {
  throw new IdentityError('ERR_BOUNDS_INVALID', `bounds document: ${message}`, cause === undefined ? undefined : { cause })
}
function untrusted(message: string, cause?: unknown): never {
  throw new IdentityError('ERR_BOUNDS_UNTRUSTED', `bounds document: ${message}`, cause === undefined ? undefined : { cause })
}

function decode(segment: string, what: string): Record<string, unknown> {
  if (!B64URL.test(segment)) invalid(`${what} is not base64url`)
  let v: unknown
  try {
    v = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(Buffer.from(segment, 'base64url')))
  } catch {
    invalid(`${what} is not JSON`)
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) invalid(`${what} is not a JSON object`)
  return v as Record<string, unknown>
}

/**
 * Verifies a signed bounds document with the JWT authorities of its trust
 * domain (`bundles`), then parses and checks the bounds (each prefix narrows
 * its ancestors). Malformed → ERR_BOUNDS_INVALID; unknown key, bad signature,
 * wrong trust domain, too old or rolled back → ERR_BOUNDS_UNTRUSTED.
 */
export async function verifyBoundsDocument(doc: string, bundles: JwtBundleSource, opts: VerifyBoundsDocumentOptions = {}): Promise<BoundsDocument> {
  if (typeof doc !== 'string') throw new TypeError('doc must be a string')
  if (doc.length > MAX_BOUNDS_DOCUMENT_LENGTH) invalid('too large')
  const parts = doc.trim().split('.')
  if (parts.length !== 3) invalid('not a compact JWS')
  const [h, p, s] = parts as [string, string, string]
  const header = decode(h, 'header')
  for (const k of Object.keys(header)) if (k !== 'alg' && k !== 'kid' && k !== 'typ') invalid(`unexpected header "${k.slice(0, 32)}"`)
  if (header.typ !== BOUNDS_DOCUMENT_TYPE) invalid(`typ must be "${BOUNDS_DOCUMENT_TYPE}"`)
  if (typeof header.alg !== 'string' || !ALGS.has(header.alg)) invalid('alg is missing or not allowed')
  if (typeof header.kid !== 'string' || header.kid.length === 0) invalid('kid is missing')
  const alg = header.alg as SignatureAlgorithm
  const kid = header.kid
  const payload = decode(p, 'payload')
  if (typeof payload.trust_domain !== 'string') invalid('trust_domain is missing')
  let td: TrustDomain
  try {
    td = TrustDomain.fromString(payload.trust_domain)
  } catch (cause) {
    invalid('trust_domain is invalid', cause)
  }
  if (opts.trustDomain && !opts.trustDomain.equals(td)) untrusted(`is for trust domain "${td.name}", expected "${opts.trustDomain.name}"`)

  let key: KeyObject | undefined
  try {
    key = bundles.getJwtBundleForTrustDomain(td).findKey(kid)
  } catch (cause) {
    if (isIdentityError(cause, 'ERR_BUNDLE_NOT_FOUND') || isIdentityError(cause, 'ERR_BUNDLE_INVALID'))
      untrusted(`no usable JWT bundle for trust domain "${td.name}"`, cause)
    throw cause
  }
  if (!key) untrusted(`no key "${kid.slice(0, 64)}" in the JWT bundle of "${td.name}"`)
  if (!algorithmsForKey(key).has(alg)) untrusted(`key "${kid.slice(0, 64)}" cannot verify ${alg}`)
  try {
    await flattenedVerify({ protected: h, payload: p, signature: s }, key, { algorithms: [alg] })
  } catch (cause) {
    untrusted('signature verification failed', cause)
  }

  const seq = payload.sequence
  const iat = payload.issued_at
  if (!Number.isSafeInteger(seq) || (seq as number) < 0) invalid('sequence must be a non-negative integer')
  if (typeof iat !== 'number' || !Number.isFinite(iat) || iat < 0 || iat > 8.64e12) invalid('issued_at must be a NumericDate')
  if (!Array.isArray(payload.bounds)) invalid('bounds must be a list')
  for (const k of Object.keys(payload)) {
    if (!['trust_domain', 'sequence', 'issued_at', 'bounds'].includes(k)) invalid(`unexpected member "${k.slice(0, 32)}"`)
  }
  if (opts.minSequence !== undefined && (seq as number) < opts.minSequence) untrusted(`sequence ${String(seq)} is older than ${opts.minSequence}`)
  if (opts.now) {
    const leeway = opts.leewaySeconds ?? 30
    const now = opts.now.getTime() / 1000
    if (iat > now + leeway) untrusted('issued in the future')
    if (opts.maxAgeSeconds !== undefined && iat < now - opts.maxAgeSeconds) untrusted(`older than ${opts.maxAgeSeconds}s`)
  }
  let set: BoundsSet
  try {
    set = BoundsSet.parse(td, payload.bounds)
  } catch (cause) {
    if (isIdentityError(cause, 'ERR_BOUNDS_INVALID'))
      throw new IdentityError('ERR_BOUNDS_INVALID', `bounds document: ${cause.message}`, { cause, ...(cause.details ? { details: { ...cause.details } } : {}) })
    throw cause
  }
  return Object.freeze({ trustDomain: td, sequence: seq as number, issuedAt: new Date(iat * 1000), kid, set })
}
