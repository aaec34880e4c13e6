export { JwtSvid, type ParseInsecureOptions } from './jwt-svid.js'
export { mintJwtSvid, type MintJwtSvidOptions } from './mint-jwt-svid.js'
export { validateJwtSvid, type ValidateJwtSvidOptions } from './validate-jwt-svid.js'
export { DEFAULT_LEEWAY_SECONDS, MAX_JWT_SVID_LENGTH } from './parse.js'
