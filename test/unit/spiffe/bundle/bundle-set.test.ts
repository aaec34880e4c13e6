import { beforeAll, describe, expect, it } from 'vitest'
import { IdentityError } from '../../../../src/errors/index.js'
import { BundleSet } from '../../../../src/spiffe/bundle/bundle-set.js'
import { JwtBundle } from '../../../../src/spiffe/bundle/jwt-bundle.js'
import type { JwtBundleSource, X509BundleSource } from '../../../../src/spiffe/bundle/sources.js'
import { SpiffeBundle } from '../../../../src/spiffe/bundle/spiffe-bundle.js'
import { X509Bundle } from '../../../../src/spiffe/bundle/x509-bundle.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { makeCaCert, makeJwk } from './test-certs.js'

const tdA = TrustDomain.fromString('a.test')
const tdB = TrustDomain.fromString('b.test')
const tdC = TrustDomain.fromString('c.test')

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (err) {
    if (err instanceof IdentityError) return err.code
    throw err
  }
  return undefined
}

let caA: Uint8Array
let caB: Uint8Array
beforeAll(async () => {
  ;[caA, caB] = await Promise.all([makeCaCert('ec-p256', 'a.test'), makeCaCert('ec-p256', 'b.test')])
})
const kA = makeJwk().pub
const kB = makeJwk().pub

describe('BundleSet', () => {
  it('keeps each trust domain apart and implements both sources', () => {
    const a = SpiffeBundle.from({ trustDomain: tdA, x509Authorities: [caA], jwtAuthorities: [['ka', kA]], sequenceNumber: 1 })
    const b = SpiffeBundle.from({ trustDomain: tdB, x509Authorities: [caB], jwtAuthorities: [['kb', kB]] })
    const set = new BundleSet([b, a])
    const x509Source: X509BundleSource = set
    const jwtSource: JwtBundleSource = set

    expect(set.trustDomains().map((t) => t.name)).toEqual(['a.test', 'b.test'])
    expect(set.size).toBe(2)
    expect(set.get(tdA)).toBe(a)
    expect(set.get(tdC)).toBeUndefined()
    expect(set.has(tdB)).toBe(true)
    expect(x509Source.getX509BundleForTrustDomain(tdA).hasAuthority(caA)).toBe(true)
    expect(x509Source.getX509BundleForTrustDomain(tdA).hasAuthority(caB)).toBe(false)
    expect([...jwtSource.getJwtBundleForTrustDomain(tdB).keys.keys()]).toEqual(['kb'])
    expect(codeOf(() => set.getX509BundleForTrustDomain(tdC))).toBe('ERR_BUNDLE_NOT_FOUND')
    expect(codeOf(() => set.getJwtBundleForTrustDomain(tdC))).toBe('ERR_BUNDLE_NOT_FOUND')
  })

  it('set() replaces a trust domain without touching others (never merges domains)', () => {
    const set = new BundleSet()
    set.set(SpiffeBundle.from({ trustDomain: tdA, x509Authorities: [caA] }))
    set.set(SpiffeBundle.from({ trustDomain: tdB, x509Authorities: [caB] }))
    const a2 = SpiffeBundle.from({ trustDomain: tdA, jwtAuthorities: [['ka', kA]], sequenceNumber: 2 })
    set.set(a2)
    expect(set.get(tdA)).toBe(a2)
    expect(set.getX509BundleForTrustDomain(tdA).isEmpty()).toBe(true)
    expect(set.getX509BundleForTrustDomain(tdB).hasAuthority(caB)).toBe(true)
    expect(set.getX509BundleForTrustDomain(tdB).hasAuthority(caA)).toBe(false)
  })

  it('delete() removes only that trust domain', () => {
    const set = new BundleSet([new X509Bundle(tdA, [caA]), new X509Bundle(tdB, [caB])])
    expect(set.delete(tdA)).toBe(true)
    expect(set.delete(tdA)).toBe(false)
    expect(set.trustDomains().map((t) => t.name)).toEqual(['b.test'])
    expect(codeOf(() => set.getX509BundleForTrustDomain(tdA))).toBe('ERR_BUNDLE_NOT_FOUND')
  })

  it('X.509 and JWT halves of one trust domain set separately (Workload API streams)', () => {
    const set = new BundleSet()
    set.set(new X509Bundle(tdA, [caA]))
    expect(codeOf(() => set.getJwtBundleForTrustDomain(tdA))).toBe('ERR_BUNDLE_NOT_FOUND')
    set.set(new JwtBundle(tdA, [['ka', kA]]))
    expect(set.getX509BundleForTrustDomain(tdA).hasAuthority(caA)).toBe(true)
    expect([...set.getJwtBundleForTrustDomain(tdA).keys.keys()]).toEqual(['ka'])
    const joined = set.get(tdA)!
    expect(joined.x509Authorities).toHaveLength(1)
    expect([...joined.jwtAuthorities.keys()]).toEqual(['ka'])
    // Replacing the X.509 half keeps the JWT half.
    set.set(new X509Bundle(tdA, [caB]))
    expect(set.getX509BundleForTrustDomain(tdA).hasAuthority(caB)).toBe(true)
    expect(set.getJwtBundleForTrustDomain(tdA).keys.has('ka')).toBe(true)
    expect(set.get(tdA)!.x509Authorities).toHaveLength(1)
  })

  it('set() rejects something that is not a bundle', () => {
    expect(() => new BundleSet().set({ trustDomain: tdA } as unknown as X509Bundle)).toThrow(TypeError)
  })
})
