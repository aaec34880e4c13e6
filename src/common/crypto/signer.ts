export type { Signer, SignatureAlgorithm } from '../../spiffe/signer.js'
export { SIGNATURE_ALGORITHMS } from '../../spiffe/signer.js'
