import { webcrypto } from 'node:crypto'
import * as asn1js from 'asn1js'
import * as pkijs from 'pkijs'
import { IdentityError } from '../../errors/identity-error.js'
import type { X509BundleSource } from '../bundle/sources.js'
import type { SpiffeId } from '../spiffe-id.js'
import type { CertificateFields } from './certificate-fields.js'
import { checkLeaf, checkSigningCertificate, MAX_CHAIN_LENGTH, parseFields, svidError } from './svid-rules.js'
import { isList } from '../guards.js'

export interface VerifiedX509Svid {
  readonly id: SpiffeId
  /** Leaf first, then the intermediates used, ending with the trusted authority from the bundle. */
  readonly verifiedChain: Uint8Array[]
}

let cryptoEngine: pkijs.CryptoEngine | undefined
/** pkijs engine on node's WebCrypto, passed explicitly (no global engine is set). */
function engine(): pkijs.CryptoEngine {
  cryptoEngine ??= new pkijs.CryptoEngine({ name: 'warrant-node', crypto: webcrypto })
  return cryptoEngine
}

function untrusted(message: string, opts?: { cause?: unknown; details?: Record<string, unknown> }): IdentityError {
  return new IdentityError('ERR_X509_SVID_UNTRUSTED', `x509svid: ${message}`, opts)
}

function toPkijs(der: Uint8Array, what: string): pkijs.Certificate {
  try {
    const copy = new Uint8Array(der) // pkijs keeps views into the buffer
    const asn = asn1js.fromBER(copy)
    if (asn.offset === -1) throw new Error(asn.result.error)
    return new pkijs.Certificate({ schema: asn.result })
  } catch (cause) {
    throw untrusted(`${what} cannot be parsed for path validation`, { cause })
  }
}

/**
 * Reads the SPIFFE ID of a leaf certificate (DER), checking the leaf rules but
 * not the chain or dates. Throws ERR_X509_SVID_INVALID.
 */
export function parseLeafSpiffeId(der: Uint8Array): SpiffeId {
  return checkLeaf(parseFields(der, 'leaf certificate'))
}

/**
 * Verifies an X.509-SVID chain (DER, leaf first, then intermediates) against
 * the bundle of the leaf's trust domain: the leaf rules, the leaf's validity
 * at `now`, then RFC 5280 path validation (pkijs) to an authority of that
 * bundle, with every signing certificate a CA with keyCertSign and path
 * length constraints honoured.
 *
 * Errors: ERR_X509_SVID_INVALID (malformed or rule-breaking leaf, expired or
 * not yet valid leaf), ERR_BUNDLE_NOT_FOUND (no bundle for the trust domain),
 * ERR_X509_SVID_UNTRUSTED (no valid path to the bundle).
 */
export async function verifyX509Svid(chain: readonly Uint8Array[], bundles: X509BundleSource, opts: { now?: Date } = {}): Promise<VerifiedX509Svid> {
  if (!isList(chain)) throw new TypeError('chain must be an array of DER certificates')
  if (chain.length === 0) throw svidError('empty certificate chain')
  if (chain.length > MAX_CHAIN_LENGTH) throw svidError(`chain has more than ${MAX_CHAIN_LENGTH} certificates`)
  const now = opts.now ?? new Date()
  const fields = chain.map((d, i) => parseFields(d, i === 0 ? 'leaf certificate' : `certificate ${i}`))
  const leaf = fields[0]!
  const id = checkLeaf(leaf)
  if (now.getTime() < leaf.notBefore.getTime()) throw svidError('leaf certificate is not yet valid')
  if (now.getTime() > leaf.notAfter.getTime()) throw svidError('leaf certificate has expired')

  const bundle = bundles.getX509BundleForTrustDomain(id.trustDomain)
  if (!bundle.trustDomain.equals(id.trustDomain)) {
    throw untrusted(`bundle of trust domain "${bundle.trustDomain.name}" returned for "${id.trustDomain.name}"`)
  }
  const authorities = bundle.authorities
  if (authorities.length === 0) throw untrusted(`bundle for trust domain "${id.trustDomain.name}" is empty`)

  // Map every pkijs certificate back to the caller's DER bytes.
  const derOf = new Map<pkijs.Certificate, { der: Uint8Array; fields: CertificateFields | undefined }>()
  const trusted = authorities.map((der, i) => {
    const c = toPkijs(der, `authority ${i}`)
    derOf.set(c, { der, fields: undefined })
    return c
  })
  const certs = chain.map((der, i) => {
    const c = toPkijs(der, i === 0 ? 'leaf certificate' : `certificate ${i}`)
    derOf.set(c, { der, fields: fields[i] })
    return c
  })
  // pkijs takes the last entry of `certs` as the end-entity certificate.
  const ordered = [...certs.slice(1), certs[0]!]
  const validator = new pkijs.CertificateChainValidationEngine({ trustedCerts: trusted, certs: ordered, checkDate: now })
  let result: pkijs.CertificateChainValidationEngineVerifyResult
  try {
    result = await validator.verify({}, engine())
  } catch (cause) {
    throw untrusted('could not verify leaf certificate', { cause })
  }
  if (!result.result || !result.certificatePath || result.certificatePath.length < 2) {
    throw untrusted('could not verify leaf certificate', { details: { reason: result.resultMessage, code: result.resultCode } })
  }
  const path = result.certificatePath
  const verifiedChain: Uint8Array[] = []
  for (let i = 0; i < path.length; i++) {
    const entry = derOf.get(path[i]!)
    if (!entry) throw untrusted('path validation returned an unknown certificate')
    verifiedChain.push(entry.der)
    if (i === 0) continue
    let f = entry.fields
    if (!f) {
      try {
        f = parseFields(entry.der, `authority`)
      } catch (cause) {
        throw untrusted('a bundle authority cannot be parsed', { cause })
      }
    }
    let pathLen: number | undefined
    try {
      pathLen = checkSigningCertificate(f)
    } catch (cause) {
      throw untrusted(`certificate ${i} of the path is not a valid signing certificate`, { cause })
    }
    // Certificates between this CA and the leaf (RFC 5280 §4.2.1.9).
    if (pathLen !== undefined && i - 1 > pathLen) throw untrusted(`certificate ${i} of the path exceeds its path length constraint`)
  }
  if (verifiedChain[0] !== chain[0]) throw untrusted('path validation did not start at the leaf')
  return { id, verifiedChain }
}
