export {
  createCaCertificate,
  createX509Svid,
  DEFAULT_ORGANIZATION,
  NOT_BEFORE_BACKDATE_MS,
  type CreateCaCertificateOptions,
  type CreateX509SvidOptions,
  type X509Subject,
} from './certificate-builder.js'
export { createCsr, parseCsr, MAX_CSR_BYTES, type CreateCsrOptions, type ParsedCsr } from './csr.js'
export { parseLeafSpiffeId, verifyX509Svid, type VerifiedX509Svid } from './verify.js'
export { X509Svid } from './x509-svid.js'
export { MAX_CERTIFICATE_BYTES, MAX_CHAIN_LENGTH } from './svid-rules.js'
