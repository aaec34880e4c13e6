import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto'
import { IdentityError } from '../../errors/identity-error.js'
import type { SpiffeId } from '../spiffe-id.js'
import type { CertificateFields } from './certificate-fields.js'
import { readTlv } from './der.js'
import { readPemBlocks, toPem } from './pem.js'
import { checkLeaf, checkSigningCertificate, MAX_CERTIFICATE_BYTES, MAX_CHAIN_LENGTH, parseFields, svidError } from './svid-rules.js'

const MAX_INPUT_BYTES = MAX_CERTIFICATE_BYTES * MAX_CHAIN_LENGTH
const MAX_HINT_BYTES = 1024

function keyError(message: string, cause?: unknown): IdentityError {
  return new IdentityError('ERR_KEY_INVALID', `x509svid: ${message}`, cause === undefined ? undefined : { cause })
}

/**
 * An X.509-SVID: the certificate chain (DER, leaf first) and, when held, its
 * private key. Parsing checks the SVID rules (as go-spiffe's Parse/ParseRaw)
 * but not trust: use `verifyX509Svid` for that.
 */
export class X509Svid {
  readonly id: SpiffeId
  readonly certificates: readonly Uint8Array[]
  readonly privateKey: KeyObject | undefined
  /** Workload API hint; '' when none. */
  readonly hint: string
  readonly notBefore: Date
  readonly notAfter: Date

  private constructor(id: SpiffeId, certs: Uint8Array[], leaf: CertificateFields, privateKey: KeyObject | undefined, hint: string) {
    this.id = id
    this.certificates = Object.freeze(certs)
    this.privateKey = privateKey
    this.hint = hint
    this.notBefore = leaf.notBefore
    this.notAfter = leaf.notAfter
  }

  /**
   * Parses certificates (PEM CERTIFICATE blocks, or concatenated DER) and
   * optionally a private key (PEM PKCS#8 / SEC1 / PKCS#1, or DER PKCS#8),
   * which must match the leaf. Throws ERR_X509_SVID_INVALID or ERR_KEY_INVALID.
   */
  static parse(certs: string | Uint8Array, key?: string | Uint8Array, opts: { hint?: string } = {}): X509Svid {
    const ders = readCertificates(certs)
    const privateKey = key === undefined ? undefined : readPrivateKey(key)
    return X509Svid.fromChain(ders, privateKey, opts)
  }

  /** Builds from DER certificates (leaf first) and an optional private KeyObject that must match the leaf. */
  static fromChain(chainDer: readonly Uint8Array[], privateKey?: KeyObject, opts: { hint?: string } = {}): X509Svid {
    if (!Array.isArray(chainDer)) throw new TypeError('chainDer must be an array of DER certificates')
    if (chainDer.length === 0) throw svidError('no certificates found')
    if (chainDer.length > MAX_CHAIN_LENGTH) throw svidError(`chain has more than ${MAX_CHAIN_LENGTH} certificates`)
    const hint = opts.hint ?? ''
    if (typeof hint !== 'string' || Buffer.byteLength(hint) > MAX_HINT_BYTES) throw new TypeError(`hint must be a string of at most ${MAX_HINT_BYTES} bytes`)
    const copies = chainDer.map((d) => {
      if (!(d instanceof Uint8Array)) throw new TypeError('certificates must be Uint8Array')
      return new Uint8Array(d)
    })
    const fields = copies.map((d, i) => parseFields(d, i === 0 ? 'leaf certificate' : `certificate ${i}`))
    const leaf = fields[0]!
    const id = checkLeaf(leaf)
    fields.slice(1).forEach((f) => checkSigningCertificate(f))
    if (privateKey !== undefined) {
      if (!privateKey || typeof privateKey !== 'object' || privateKey.type !== 'private') {
        throw new TypeError('privateKey must be a private KeyObject')
      }
      let spki: Buffer
      try {
        spki = createPublicKey(privateKey).export({ type: 'spki', format: 'der' })
      } catch (cause) {
        throw keyError('private key cannot be used', cause)
      }
      if (Buffer.compare(spki, leaf.spkiRaw) !== 0) throw keyError('private key does not match certificate public key')
    }
    return new X509Svid(id, copies, leaf, privateKey, hint)
  }

  /** The leaf certificate (DER). */
  get leaf(): Uint8Array {
    return this.certificates[0]!
  }

  /** The Workload API form: all certificates' DER concatenated. */
  certificatesDer(): Uint8Array {
    return new Uint8Array(Buffer.concat(this.certificates))
  }

  certificatesPem(): string {
    return this.certificates.map((d) => toPem('CERTIFICATE', d)).join('')
  }

  /** The private key as unencrypted PKCS#8 DER (the Workload API `x509_svid_key`). TypeError when none is held. */
  privateKeyPkcs8Der(): Uint8Array {
    if (!this.privateKey) throw new TypeError('this X509Svid holds no private key')
    return new Uint8Array(this.privateKey.export({ type: 'pkcs8', format: 'der' }))
  }

  privateKeyPem(): string {
    return toPem('PRIVATE KEY', this.privateKeyPkcs8Der())
  }

  /** A copy with another hint. */
  withHint(hint: string): X509Svid {
    return X509Svid.fromChain(this.certificates, this.privateKey, { hint })
  }
}

function readCertificates(input: string | Uint8Array): Uint8Array[] {
  if (typeof input !== 'string' && !(input instanceof Uint8Array)) throw new TypeError('certificates must be a string or Uint8Array')
  const size = typeof input === 'string' ? input.length : input.byteLength
  if (size > MAX_INPUT_BYTES * 2) throw svidError(`certificate input exceeds ${MAX_INPUT_BYTES} bytes`)
  if (input instanceof Uint8Array && input[0] === 0x30) return splitDer(input)
  const text = typeof input === 'string' ? input : Buffer.from(input).toString('latin1')
  const blocks = readPemBlocks(text)
  if (!blocks) throw svidError('certificate PEM is malformed')
  const certs = blocks.filter((b) => b.label === 'CERTIFICATE').map((b) => b.der)
  if (certs.length === 0) throw svidError('no certificates found')
  return certs
}

function splitDer(der: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = []
  let off = 0
  try {
    while (off < der.length) {
      const t = readTlv(der, off, der.length)
      if (t.tag !== 0x30) throw new Error('not a SEQUENCE')
      out.push(der.subarray(off, t.end))
      off = t.end
      if (out.length > MAX_CHAIN_LENGTH) throw new Error('too many certificates')
    }
  } catch (cause) {
    throw svidError('certificate DER is malformed', cause)
  }
  return out
}

const KEY_LABELS: Readonly<Record<string, 'pkcs8' | 'sec1' | 'pkcs1'>> = {
  'PRIVATE KEY': 'pkcs8',
  'EC PRIVATE KEY': 'sec1',
  'RSA PRIVATE KEY': 'pkcs1',
}

function readPrivateKey(input: string | Uint8Array): KeyObject {
  if (typeof input !== 'string' && !(input instanceof Uint8Array)) throw new TypeError('key must be a string or Uint8Array')
  const size = typeof input === 'string' ? input.length : input.byteLength
  if (size > MAX_CERTIFICATE_BYTES) throw keyError(`key input exceeds ${MAX_CERTIFICATE_BYTES} bytes`)
  let der: Uint8Array
  let type: 'pkcs8' | 'sec1' | 'pkcs1' = 'pkcs8'
  if (input instanceof Uint8Array && input[0] === 0x30) {
    der = input
  } else {
    const text = typeof input === 'string' ? input : Buffer.from(input).toString('latin1')
    const blocks = readPemBlocks(text)?.filter((b) => b.label in KEY_LABELS)
    if (!blocks || blocks.length !== 1) throw keyError('expected exactly one unencrypted private key PEM block')
    der = blocks[0]!.der
    type = KEY_LABELS[blocks[0]!.label]!
  }
  let key: KeyObject
  try {
    key = createPrivateKey({ key: Buffer.from(der), format: 'der', type })
  } catch (cause) {
    throw keyError('private key cannot be parsed', cause)
  }
  const t = key.asymmetricKeyType
  if (t !== 'ec' && t !== 'rsa') throw keyError(`unsupported private key type ${t ?? '?'}`)
  return key
}
