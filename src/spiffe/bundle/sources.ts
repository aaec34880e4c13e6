/** The bundle source interfaces, each declared beside its bundle type. */
export type { X509BundleSource } from './x509-bundle.js'
export type { JwtBundleSource } from './jwt-bundle.js'
