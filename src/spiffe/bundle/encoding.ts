import { X509Certificate, createPublicKey, type JsonWebKey, type KeyObject } from 'node:crypto'
import { IdentityError } from '../../errors/identity-error.js'

/**
 * Internal helpers shared by the bundle types: size cap, strict base64, DER
 * splitting, PEM, and JWK normalisation. Not part of the public API.
 */

/** Largest bundle document (JSON, PEM or concatenated DER) any parser accepts. */
export const MAX_BUNDLE_BYTES = 4 * 1024 * 1024

export function bundleError(message: string, cause?: unknown): IdentityError {
  return new IdentityError('ERR_BUNDLE_INVALID', message, cause === undefined ? undefined : { cause })
}

export function asBuffer(b: Uint8Array): Buffer {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength)
}

/** Decodes input as UTF-8 text (fatal on invalid UTF-8), enforcing the size cap. */
export function inputText(doc: string | Uint8Array, what: string): string {
  if (typeof doc === 'string') {
    if (doc.length > MAX_BUNDLE_BYTES || Buffer.byteLength(doc) > MAX_BUNDLE_BYTES) {
      throw bundleError(`${what} exceeds ${MAX_BUNDLE_BYTES} bytes`)
    }
    return doc
  }
  if (!(doc instanceof Uint8Array)) throw new TypeError(`${what} must be a string or Uint8Array`)
  if (doc.byteLength > MAX_BUNDLE_BYTES) throw bundleError(`${what} exceeds ${MAX_BUNDLE_BYTES} bytes`)
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(doc)
  } catch (cause) {
    throw bundleError(`${what} is not valid UTF-8`, cause)
  }
}

/** Parses JSON text into a plain object or throws ERR_BUNDLE_INVALID. */
export function parseJsonObject(text: string, what: string): Record<string, unknown> {
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch (cause) {
    throw bundleError(`${what} is not valid JSON`, cause)
  }
  if (!isPlainObject(v)) throw bundleError(`${what} must be a JSON object`)
  return v
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

const B64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/

/** Strict standard base64 (RFC 4648 §4, padded), as `x5c` uses. */
export function decodeBase64Strict(s: string): Uint8Array | undefined {
  if (!B64_RE.test(s)) return undefined
  const buf = Buffer.from(s, 'base64')
  // Reject non-canonical encodings (non-zero pad bits).
  if (buf.toString('base64') !== s) return undefined
  return new Uint8Array(buf)
}

/**
 * Splits concatenated DER SEQUENCEs (the Workload API bundle form) by reading
 * each TLV header. Rejects indefinite or over-long lengths, truncation and
 * trailing bytes. Does not parse the contents.
 */
export function splitDerSequence(der: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = []
  let off = 0
  while (off < der.length) {
    const start = off
    if (der[off] !== 0x30) throw bundleError(`DER element at offset ${start} is not a SEQUENCE`)
    off++
    if (off >= der.length) throw bundleError(`DER element at offset ${start} is truncated`)
    const first = der[off++]!
    let len: number
    if (first < 0x80) {
      len = first
    } else {
      const n = first & 0x7f
      if (n === 0) throw bundleError(`DER element at offset ${start} uses indefinite length`)
      if (n > 4) throw bundleError(`DER element at offset ${start} has an over-long length`)
      if (off + n > der.length) throw bundleError(`DER element at offset ${start} is truncated`)
      len = 0
      for (let i = 0; i < n; i++) len = len * 256 + der[off++]!
      // DER requires the minimal length encoding.
      if (len < 0x80 || (n > 1 && der[off - n] === 0)) throw bundleError(`DER element at offset ${start} has a non-minimal length`)
    }
    if (off + len > der.length) throw bundleError(`DER element at offset ${start} is truncated`)
    off += len
    out.push(der.subarray(start, off))
  }
  return out
}

/** Parses one DER certificate or throws ERR_BUNDLE_INVALID. */
export function parseCertificate(der: Uint8Array, what: string): X509Certificate {
  // node's X509Certificate also accepts PEM text; insist on DER.
  if (der.length === 0 || der[0] !== 0x30) throw bundleError(`${what} is not a DER certificate`)
  try {
    return new X509Certificate(asBuffer(der))
  } catch (cause) {
    throw bundleError(`${what} cannot be parsed`, cause)
  }
}

const PEM_LINE = 64

export function toPemBlock(label: string, der: Uint8Array): string {
  const b64 = asBuffer(der).toString('base64')
  let body = ''
  for (let i = 0; i < b64.length; i += PEM_LINE) body += `${b64.slice(i, i + PEM_LINE)}\n`
  return `-----BEGIN ${label}-----\n${body}-----END ${label}-----\n`
}

/**
 * Reads every PEM block of `text` (text outside blocks is ignored, as in RFC
 * 7468 parsers). Rejects blocks without a matching END line, headers and bad base64.
 */
export function parsePemBlocks(text: string): Array<{ label: string; der: Uint8Array }> {
  const out: Array<{ label: string; der: Uint8Array }> = []
  const BEGIN = '-----BEGIN '
  let pos = 0
  for (;;) {
    const b = text.indexOf(BEGIN, pos)
    if (b === -1) break
    const labelEnd = text.indexOf('-----', b + BEGIN.length)
    if (labelEnd === -1) throw bundleError('PEM block has a malformed BEGIN line')
    const label = text.slice(b + BEGIN.length, labelEnd)
    if (!/^[A-Z0-9][A-Z0-9 ]{0,63}$/.test(label)) throw bundleError('PEM block has a malformed label')
    const endLine = `-----END ${label}-----`
    const bodyStart = labelEnd + 5
    const e = text.indexOf(endLine, bodyStart)
    if (e === -1) throw bundleError(`PEM block "${label}" has no END line`)
    const body = text.slice(bodyStart, e)
    if (body.includes('-----')) throw bundleError(`PEM block "${label}" is malformed`)
    if (body.includes(':')) throw bundleError(`PEM block "${label}" has headers`)
    const der = decodeBase64Strict(body.replace(/[ \t\r\n]/g, ''))
    if (!der || der.length === 0) throw bundleError(`PEM block "${label}" has invalid base64`)
    out.push({ label, der })
    pos = e + endLine.length
  }
  return out
}

/** The JWK members SPIRE writes for each key type, in its order. */
const PUBLIC_MEMBERS: Readonly<Record<string, readonly string[]>> = {
  EC: ['crv', 'x', 'y'],
  RSA: ['n', 'e'],
  OKP: ['crv', 'x'],
}

/** JWK key types defined by RFC 7518 / RFC 8037; other `kty` values are ignored in bundles. */
export const KNOWN_KTY: ReadonlySet<string> = new Set(['EC', 'RSA', 'OKP', 'oct'])

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const

/**
 * Imports a JWK as a public key and returns its canonical public form
 * (`{kty, crv, x, y}` / `{kty, n, e}` / `{kty, crv, x}`) plus the KeyObject.
 * Only the key members are read (`use`, `kid`, `alg`, `x5c` are the caller's
 * business). Rejects private or secret key material and symmetric keys.
 */
export function importPublicJwk(jwk: Record<string, unknown>, what: string): { jwk: JsonWebKey; key: KeyObject } {
  for (const m of PRIVATE_MEMBERS) {
    if (Object.hasOwn(jwk, m)) throw bundleError(`${what} contains private or secret key material`)
  }
  const kty = jwk.kty
  if (typeof kty !== 'string' || !Object.hasOwn(PUBLIC_MEMBERS, kty)) throw bundleError(`${what} is not an asymmetric public key`)
  const material: Record<string, unknown> = { kty }
  for (const m of PUBLIC_MEMBERS[kty]!) {
    const v = jwk[m]
    if (typeof v !== 'string') throw bundleError(`${what} has no string "${m}" member`)
    material[m] = v
  }
  let key: KeyObject
  try {
    key = createPublicKey({ key: material as JsonWebKey, format: 'jwk' })
  } catch (cause) {
    throw bundleError(`${what} cannot be imported as a public key`, cause)
  }
  return { jwk: canonicalPublicJwk(key, what), key }
}

/** The canonical public JWK of a public KeyObject. */
export function canonicalPublicJwk(key: KeyObject, what: string): JsonWebKey {
  let exported: JsonWebKey
  try {
    exported = key.export({ format: 'jwk' })
  } catch (cause) {
    throw bundleError(`${what} has an unsupported key type`, cause)
  }
  const kty = exported.kty
  const members = kty !== undefined && Object.hasOwn(PUBLIC_MEMBERS, kty) ? PUBLIC_MEMBERS[kty] : undefined
  if (!members || kty === undefined) throw bundleError(`${what} has an unsupported key type`)
  const out: Record<string, unknown> = { kty }
  for (const m of members) {
    const v = (exported as Record<string, unknown>)[m]
    if (typeof v !== 'string') throw bundleError(`${what} has an unsupported key type`)
    out[m] = v
  }
  return out
}

/** A canonical public JWK with SPIRE's member order: use, kty, kid, key members, then `tail` (x5c). */
export function orderedJwk(opts: { use?: string; kid?: string }, jwk: JsonWebKey, tail?: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  if (opts.use !== undefined) out.use = opts.use
  out.kty = jwk.kty
  if (opts.kid !== undefined) out.kid = opts.kid
  const src = jwk as Record<string, unknown>
  if (jwk.kty !== undefined && Object.hasOwn(PUBLIC_MEMBERS, jwk.kty)) {
    for (const m of PUBLIC_MEMBERS[jwk.kty]!) out[m] = src[m]
  } else {
    // A JWK of a type we do not canonicalise (only reachable through a constructor): keep its members.
    for (const [m, v] of Object.entries(src)) if (!(m in out) && m !== 'use' && m !== 'kid') out[m] = v
  }
  if (tail) Object.assign(out, tail)
  return out
}
