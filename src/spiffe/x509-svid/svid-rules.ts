import { IdentityError } from '../../errors/identity-error.js'
import { SpiffeId } from '../spiffe-id.js'
import { decodeBasicConstraints, decodeKeyUsage, decodeSubjectAltName, OID, parseCertificateFields, type CertificateFields } from './certificate-fields.js'

/** Internal: the X.509-SVID rules (SPIFFE X509-SVID §4, §5; go-spiffe x509svid) shared by parse and verify. */

/** Largest certificate accepted anywhere in this module. */
export const MAX_CERTIFICATE_BYTES = 64 * 1024
/** Largest number of certificates in one chain. */
export const MAX_CHAIN_LENGTH = 16

export function svidError(message: string, cause?: unknown): IdentityError {
  return new IdentityError('ERR_X509_SVID_INVALID', `x509svid: ${message}`, cause === undefined ? undefined : { cause })
}

/** Parses one DER certificate, mapping any failure to ERR_X509_SVID_INVALID. */
export function parseFields(der: Uint8Array, what: string): CertificateFields {
  if (!(der instanceof Uint8Array)) throw new TypeError(`${what} must be a Uint8Array`)
  if (der.length > MAX_CERTIFICATE_BYTES) throw svidError(`${what} exceeds ${MAX_CERTIFICATE_BYTES} bytes`)
  try {
    return parseCertificateFields(der)
  } catch (cause) {
    throw svidError(`${what} cannot be parsed`, cause)
  }
}

function decoded<T>(fn: () => T, what: string): T {
  try {
    return fn()
  } catch (cause) {
    throw svidError(`${what} extension is malformed`, cause)
  }
}

/**
 * Checks the leaf rules and returns the SPIFFE ID: exactly one URI SAN holding
 * a valid SPIFFE ID with a path, a critical SAN when the subject is empty, not
 * a CA, KeyUsage present with digitalSignature and without keyCertSign/cRLSign.
 * Validity dates are not checked here.
 */
export function checkLeaf(leaf: CertificateFields): SpiffeId {
  const sanExt = leaf.extensions.get(OID.SUBJECT_ALT_NAME)
  if (!sanExt) throw svidError('certificate has no URI SAN')
  const san = decoded(() => decodeSubjectAltName(sanExt.value), 'subjectAltName')
  if (san.uris.length === 0) throw svidError('certificate has no URI SAN')
  if (san.uris.length > 1) throw svidError('certificate contains more than one URI SAN')
  let id: SpiffeId
  try {
    id = SpiffeId.fromString(san.uris[0]!)
  } catch (cause) {
    throw svidError('URI SAN is not a valid SPIFFE ID', cause)
  }
  if (id.isTrustDomainId()) throw svidError('leaf SPIFFE ID must have a non-root path')
  if (leaf.subjectEmpty && !sanExt.critical) throw svidError('subjectAltName must be critical when the subject is empty')
  const bc = leaf.extensions.get(OID.BASIC_CONSTRAINTS)
  if (bc && decoded(() => decodeBasicConstraints(bc.value), 'basicConstraints').ca) {
    throw svidError('leaf certificate must not have CA flag set to true')
  }
  const kuExt = leaf.extensions.get(OID.KEY_USAGE)
  if (!kuExt) throw svidError('leaf certificate must have a key usage extension')
  const ku = decoded(() => decodeKeyUsage(kuExt.value), 'keyUsage')
  if (!ku.digitalSignature) throw svidError("leaf certificate must have 'digitalSignature' set as key usage")
  if (ku.keyCertSign) throw svidError("leaf certificate must not have 'keyCertSign' set as key usage")
  if (ku.cRLSign) throw svidError("leaf certificate must not have 'cRLSign' set as key usage")
  return id
}

/** A signing (intermediate or root) certificate must be a CA with keyCertSign. Returns its pathLen. */
export function checkSigningCertificate(cert: CertificateFields, what = 'signing certificate'): number | undefined {
  const bcExt = cert.extensions.get(OID.BASIC_CONSTRAINTS)
  const bc = bcExt ? decoded(() => decodeBasicConstraints(bcExt.value), 'basicConstraints') : undefined
  if (!bc?.ca) throw svidError(`${what} must have CA flag set to true`)
  const kuExt = cert.extensions.get(OID.KEY_USAGE)
  const ku = kuExt ? decoded(() => decodeKeyUsage(kuExt.value), 'keyUsage') : undefined
  if (!ku?.keyCertSign) throw svidError(`${what} must have 'keyCertSign' set as key usage`)
  return bc.pathLen
}
