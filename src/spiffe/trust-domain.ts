import { IdentityError } from '../errors/identity-error.js'
import { SpiffeId } from './spiffe-id.js'

const MAX_TRUST_DOMAIN_BYTES = 255

/** A SPIFFE trust domain name such as `corp.example`. Immutable; compare with `equals`. */
export class TrustDomain {
  readonly name: string

  private constructor(name: string) {
    this.name = name
  }

  /**
   * Parses a trust domain name (`corp.example`) or a trust-domain SPIFFE ID
   * (`spiffe://corp.example`). Throws ERR_TRUST_DOMAIN_INVALID.
   */
  static fromString(s: string): TrustDomain {
    if (typeof s !== 'string') throw new TypeError('trust domain must be a string')
    if (s.includes(':/')) {
      let id: SpiffeId
      try {
        id = SpiffeId.fromString(s)
      } catch (cause) {
        const reason = cause instanceof IdentityError ? cause.message.replace(/^invalid SPIFFE ID: /, '') : 'invalid'
        throw new IdentityError('ERR_TRUST_DOMAIN_INVALID', `invalid trust domain ID: ${reason}`, { cause, details: { value: truncate(s) } })
      }
      if (id.path !== '') {
        throw new IdentityError('ERR_TRUST_DOMAIN_INVALID', 'trust domain ID must not have a path', {
          details: { value: truncate(s) },
        })
      }
      return id.trustDomain
    }
    const problem = trustDomainNameProblem(s)
    if (problem) throw new IdentityError('ERR_TRUST_DOMAIN_INVALID', `trust domain ${problem}`, { details: { value: truncate(s) } })
    return new TrustDomain(s)
  }

  /** @internal used by SpiffeId after it validated the name itself. */
  static unsafe(name: string): TrustDomain {
    return new TrustDomain(name)
  }

  static isValid(s: string): boolean {
    try {
      TrustDomain.fromString(s)
      return true
    } catch {
      return false
    }
  }

  /** `spiffe://<name>`: the form used as map key in the Workload API. */
  idString(): string {
    return `spiffe://${this.name}`
  }

  id(): SpiffeId {
    return SpiffeId.fromString(this.idString())
  }

  toString(): string {
    return this.name
  }

  toJSON(): string {
    return this.name
  }

  equals(other: TrustDomain | undefined | null): boolean {
    return !!other && other.name === this.name
  }
}

/** Returns a human reason when `name` is not a valid trust domain name, else undefined. */
export function trustDomainNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'is missing'
  if (Buffer.byteLength(name) > MAX_TRUST_DOMAIN_BYTES) return `exceeds ${MAX_TRUST_DOMAIN_BYTES} bytes`
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i)
    const ok =
      (c >= 0x61 && c <= 0x7a) || // a-z
      (c >= 0x30 && c <= 0x39) || // 0-9
      c === 0x2e || // .
      c === 0x2d || // -
      c === 0x5f // _
    if (!ok) {
      if (c >= 0x41 && c <= 0x5a) return 'characters are limited to lowercase letters, numbers, dots, dashes, and underscores (uppercase found)'
      if (c === 0x3a) return 'must not include a port'
      if (c === 0x40) return 'must not include userinfo'
      if (c === 0x25) return 'must not be percent-encoded'
      return 'characters are limited to lowercase letters, numbers, dots, dashes, and underscores'
    }
  }
  return undefined
}

export function truncate(s: string, n = 128): string {
  return s.length > n ? `${s.slice(0, n)}…` : s
}
