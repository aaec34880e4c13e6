/** A SPIFFE trust domain name; defined with SpiffeId in `spiffe-id.ts` (each needs the other). */
export { TrustDomain, trustDomainNameProblem, truncate } from './spiffe-id.js'
