import { IdentityError } from '../../../src/errors/identity-error.js'

/** Wire format shared by both halves of x509pop. */
export const X509POP_CONTEXT = Buffer.from('warrant-x509pop-v1\0')
const MAX_PAYLOAD = 64 * 1024
const MAX_CERTS = 8

export interface X509PopPayload {
  /** DER certificates, leaf first, then intermediates. */
  chain: Uint8Array[]
}

export interface X509PopChallenge {
  nonce: Uint8Array
}

export interface X509PopAnswer {
  /** Signature over CONTEXT ‖ nonce with the leaf key (ECDSA DER or RSA PKCS#1 v1.5, SHA-256). */
  signature: Uint8Array
}

const bad = (why: string): never => {
  throw new IdentityError('ERR_ATTESTATION_PAYLOAD_INVALID', `x509pop: ${why}`)
}

function decode(bytes: Uint8Array): Record<string, unknown> {
  if (bytes.length === 0 || bytes.length > MAX_PAYLOAD) bad('payload size out of range')
  try {
    const v = JSON.parse(Buffer.from(bytes).toString('utf8')) as unknown
    if (v === null || typeof v !== 'object' || Array.isArray(v)) bad('payload is not an object')
    return v as Record<string, unknown>
  } catch (e) {
    if (e instanceof IdentityError) throw e
    return bad('payload is not JSON')
  }
}

function b64(v: unknown, what: string, max: number): Uint8Array {
  if (typeof v !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(v)) bad(`${what} is not base64`)
  const b = Buffer.from(v as string, 'base64')
  if (b.length === 0 || b.length > max) bad(`${what} size out of range`)
  return new Uint8Array(b)
}

export const encodePayload = (p: X509PopPayload): Uint8Array =>
  Buffer.from(JSON.stringify({ v: 1, chain: p.chain.map((c) => Buffer.from(c).toString('base64')) }))

export function decodePayload(bytes: Uint8Array): X509PopPayload {
  const o = decode(bytes)
  if (o.v !== 1) bad('unsupported payload version')
  if (!Array.isArray(o.chain) || o.chain.length === 0 || o.chain.length > MAX_CERTS) bad('chain must hold 1-8 certificates')
  return { chain: (o.chain as unknown[]).map((c, i) => b64(c, `chain[${i}]`, 16 * 1024)) }
}

export const encodeChallenge = (c: X509PopChallenge): Uint8Array => Buffer.from(JSON.stringify({ v: 1, nonce: Buffer.from(c.nonce).toString('base64') }))

export function decodeChallenge(bytes: Uint8Array): X509PopChallenge {
  const o = decode(bytes)
  const nonce = b64(o.nonce, 'nonce', 64)
  if (nonce.length !== 32) bad('nonce must be 32 bytes')
  return { nonce }
}

export const encodeAnswer = (a: X509PopAnswer): Uint8Array => Buffer.from(JSON.stringify({ v: 1, signature: Buffer.from(a.signature).toString('base64') }))

export function decodeAnswer(bytes: Uint8Array): X509PopAnswer {
  const o = decode(bytes)
  return { signature: b64(o.signature, 'signature', 1024) }
}

export const signedData = (nonce: Uint8Array): Buffer => Buffer.concat([X509POP_CONTEXT, nonce])
