import { SIGNATURE_ALGORITHMS, type SignatureAlgorithm, type Signer } from '../signer.js'
import { SpiffeId } from '../spiffe-id.js'
import { algorithmsForKey, defaultAlgorithmForKey } from './parse.js'
import { isList } from '../guards.js'

/** Options of `mintJwtSvid`. */
export interface MintJwtSvidOptions {
  /** The `sub` claim. */
  spiffeId: SpiffeId
  /** The `aud` claim: non-empty, each value non-empty. One value is encoded as a string, several as an array (as SPIRE / go-jose do). */
  audience: readonly string[]
  /** The `exp` claim (truncated to whole seconds). */
  expiresAt: Date
  /** The `iat` claim (truncated to whole seconds). Default: the current time. */
  issuedAt?: Date
  /** Signs `header.payload`; an HSM or TPM may be behind it. */
  signer: Signer
  /** The `kid` header: the key's id in the trust domain's JWT bundle. */
  kid: string
  /** Default from the signer's public key: P-256 ES256, P-384 ES384, P-521 ES512, RSA RS256 (RSA-PSS PS256). */
  alg?: SignatureAlgorithm
  /** The `iss` claim (SPIRE's `jwt_issuer`). */
  issuer?: string
  /** More claims; they may not override sub, aud, exp, iat (nor iss when `issuer` is set). */
  extraClaims?: Record<string, unknown>
}

const ALGS: ReadonlySet<string> = new Set(SIGNATURE_ALGORITHMS)
const RESERVED = ['sub', 'aud', 'exp', 'iat'] as const
/** Raw r||s length of an ECDSA signature per JWS algorithm. */
const ECDSA_SIG_BYTES: Partial<Record<SignatureAlgorithm, number>> = { ES256: 64, ES384: 96, ES512: 132 }

function b64json(value: unknown): string {
  return Buffer.from(JSON.stringify(value), 'utf8').toString('base64url')
}

/**
 * Mints a JWT-SVID: header `{alg, kid, typ: "JWT"}`, claims `sub`, `aud`,
 * `exp`, `iat` (and `iss`, extra claims), signed through `signer` as the JWS
 * compact serialization. Bad options (empty audience, unknown alg, a key that
 * cannot sign with `alg`, reserved extra claims) throw TypeError / RangeError;
 * signer failures propagate unchanged.
 */
export async function mintJwtSvid(opts: MintJwtSvidOptions): Promise<string> {
  const { spiffeId, audience, expiresAt, signer, kid } = opts
  if (!(spiffeId instanceof SpiffeId)) throw new TypeError('spiffeId must be a SpiffeId')
  if (!isList(audience) || audience.length === 0) throw new TypeError('audience must be a non-empty array')
  for (const a of audience) {
    if (typeof a !== 'string' || a.length === 0) throw new TypeError('audience values must be non-empty strings')
  }
  if (typeof kid !== 'string' || kid.length === 0) throw new TypeError('kid must be a non-empty string')
  if (!signer || typeof signer.sign !== 'function' || !signer.publicKey) throw new TypeError('signer must implement Signer')
  const exp = epochSeconds(expiresAt, 'expiresAt')
  const iat = epochSeconds(opts.issuedAt ?? new Date(), 'issuedAt')
  if (exp <= iat) throw new RangeError('expiresAt must be at least one second after issuedAt')
  if (opts.issuer !== undefined && (typeof opts.issuer !== 'string' || opts.issuer.length === 0)) {
    throw new TypeError('issuer must be a non-empty string')
  }

  const alg = opts.alg ?? defaultAlgorithmForKey(signer.publicKey)
  if (alg === undefined) throw new TypeError(`signer key type "${String(signer.publicKey.asymmetricKeyType)}" cannot sign a JWT-SVID`)
  if (!ALGS.has(alg)) throw new TypeError(`alg "${String(alg)}" is not allowed for JWT-SVIDs`)
  if (!algorithmsForKey(signer.publicKey).has(alg)) throw new TypeError(`signer key cannot sign with ${alg}`)

  const extra = opts.extraClaims ?? {}
  if (extra === null || typeof extra !== 'object' || Array.isArray(extra)) throw new TypeError('extraClaims must be an object')
  for (const name of RESERVED) {
    if (Object.hasOwn(extra, name)) throw new TypeError(`extraClaims may not set "${name}"`)
  }
  if (opts.issuer !== undefined && Object.hasOwn(extra, 'iss')) throw new TypeError('extraClaims may not set "iss" when issuer is given')

  const claims: Record<string, unknown> = {
    ...extra,
    sub: spiffeId.toString(),
    aud: audience.length === 1 ? audience[0] : [...audience],
    exp,
    iat,
  }
  if (opts.issuer !== undefined) claims.iss = opts.issuer

  const signingInput = `${b64json({ alg, kid, typ: 'JWT' })}.${b64json(claims)}`
  const signature = await signer.sign(Buffer.from(signingInput, 'ascii'), alg)
  if (!(signature instanceof Uint8Array) || signature.byteLength === 0) throw new TypeError('signer returned no signature')
  const ecLen = ECDSA_SIG_BYTES[alg]
  if (ecLen !== undefined && signature.byteLength !== ecLen) {
    throw new TypeError(`signer returned a ${signature.byteLength}-byte ${alg} signature; JWS needs ${ecLen} bytes (IEEE P1363 r||s)`)
  }
  const sig = Buffer.from(signature.buffer, signature.byteOffset, signature.byteLength).toString('base64url')
  return `${signingInput}.${sig}`
}

function epochSeconds(d: Date, what: string): number {
  if (!(d instanceof Date) || Number.isNaN(d.getTime())) throw new TypeError(`${what} must be a valid Date`)
  return Math.floor(d.getTime() / 1000)
}
