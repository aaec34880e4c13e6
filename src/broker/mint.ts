import { algorithmsForKey } from '../spiffe/jwt-svid/parse.js'
import type { SignatureAlgorithm, Signer } from '../spiffe/signer.js'
import { ACCESS_TOKEN_TYP, type AccessTokenClaims } from '../tokens/claims.js'

/** Raw r||s length of an ECDSA signature per JWS algorithm (the Signer returns IEEE P1363, as JWS needs). */
const ECDSA_SIG_BYTES: Partial<Record<SignatureAlgorithm, number>> = { ES256: 64, ES384: 96, ES512: 132 }

const b64json = (v: unknown): string => Buffer.from(JSON.stringify(v), 'utf8').toString('base64url')

export interface MintOptions {
  /** Signs `header.payload`; a PKCS#11 key's signature never leaves the HSM. */
  signer: Signer
  kid: string
  alg: SignatureAlgorithm
  /** JOSE `typ`; default `at+jwt` (RFC 9068 §2.1). */
  typ?: string
}

/**
 * Signs claims as a compact JWS with header `{alg, kid, typ}` through a
 * Signer (the same way src/spiffe mints JWT-SVIDs). Bad options throw
 * TypeError; signer failures propagate.
 */
export async function signJwt(claims: Readonly<Record<string, unknown>>, opts: MintOptions): Promise<string> {
  const { signer, kid, alg } = opts
  if (typeof kid !== 'string' || kid.length === 0) throw new TypeError('kid must be a non-empty string')
  if (!algorithmsForKey(signer.publicKey).has(alg)) throw new TypeError(`signer key cannot sign with ${alg}`)
  const input = `${b64json({ alg, kid, typ: opts.typ ?? ACCESS_TOKEN_TYP })}.${b64json(claims)}`
  const sig = await signer.sign(Buffer.from(input, 'ascii'), alg)
  const ecLen = ECDSA_SIG_BYTES[alg]
  if (!(sig instanceof Uint8Array) || sig.byteLength === 0 || (ecLen !== undefined && sig.byteLength !== ecLen)) {
    throw new TypeError(`signer returned an unusable ${alg} signature`)
  }
  return `${input}.${Buffer.from(sig.buffer, sig.byteOffset, sig.byteLength).toString('base64url')}`
}

/** Mints an RFC 9068 access token (`typ: at+jwt`). */
export function mintAccessToken(claims: AccessTokenClaims, opts: Omit<MintOptions, 'typ'>): Promise<string> {
  return signJwt(claims as unknown as Record<string, unknown>, { ...opts, typ: ACCESS_TOKEN_TYP })
}
