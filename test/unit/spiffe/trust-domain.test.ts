import { describe, expect, it } from 'vitest'
import { IdentityError } from '../../../src/errors/index.js'
import { TrustDomain } from '../../../src/spiffe/trust-domain.js'

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (err) {
    if (err instanceof IdentityError) return err.code
    throw err
  }
  return undefined
}

describe('TrustDomain.fromString accepts names and trust-domain IDs', () => {
  it.each([
    ['domain.test', 'domain.test'],
    ['a', 'a'],
    ['a-b_c.9', 'a-b_c.9'],
    ['192.168.2.2', '192.168.2.2'],
    ['spiffe://domain.test', 'domain.test'],
    ['SPIFFE://domain.test', 'domain.test'],
    ['a'.repeat(255), 'a'.repeat(255)],
  ])('%j → %s', (input, name) => {
    const td = TrustDomain.fromString(input)
    expect(td.name).toBe(name)
    expect(td.toString()).toBe(name)
    expect(td.idString()).toBe(`spiffe://${name}`)
    expect(td.id().toString()).toBe(`spiffe://${name}`)
    expect(td.id().isTrustDomainId()).toBe(true)
    expect(TrustDomain.isValid(input)).toBe(true)
  })
})

describe('TrustDomain.fromString rejects with ERR_TRUST_DOMAIN_INVALID', () => {
  it.each([
    ['empty', ''],
    ['uppercase', 'Domain.test'],
    ['port', 'domain.test:8080'],
    ['userinfo', 'user@domain.test'],
    ['percent-encoding', 'domain%2etest'],
    ['space', 'domain test'],
    ['slash', 'domain.test/path'],
    ['non-ASCII', 'dömain.test'],
    ['longer than 255 bytes', 'a'.repeat(256)],
    ['ID with a path', 'spiffe://domain.test/path'],
    ['ID with empty trust domain', 'spiffe://'],
    ['ID with wrong scheme', 'https://domain.test'],
    ['ID with port', 'spiffe://domain.test:443'],
    ['ID with uppercase trust domain', 'spiffe://DOMAIN.test'],
    ['ID with trailing slash', 'spiffe://domain.test/'],
    ['ID with query', 'spiffe://domain.test?x'],
  ])('%s', (_name, input) => {
    expect(codeOf(() => TrustDomain.fromString(input))).toBe('ERR_TRUST_DOMAIN_INVALID')
    expect(TrustDomain.isValid(input)).toBe(false)
  })

  it('rejects a non-string with TypeError', () => {
    expect(() => TrustDomain.fromString(undefined as unknown as string)).toThrow(TypeError)
  })

  it('chains the ID parse error as cause', () => {
    try {
      TrustDomain.fromString('spiffe://domain.test:443')
      expect.unreachable()
    } catch (err) {
      expect((err as IdentityError).cause).toBeInstanceOf(IdentityError)
      expect(((err as IdentityError).cause as IdentityError).code).toBe('ERR_SPIFFE_ID_INVALID')
    }
  })
})

describe('TrustDomain equality', () => {
  it('compares by name; scheme case is irrelevant', () => {
    const a = TrustDomain.fromString('domain.test')
    expect(a.equals(TrustDomain.fromString('SPIFFE://domain.test'))).toBe(true)
    expect(a.equals(TrustDomain.fromString('other.test'))).toBe(false)
    expect(a.equals(undefined)).toBe(false)
    expect(JSON.stringify(a)).toBe('"domain.test"')
  })
})
