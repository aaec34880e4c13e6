import { beforeAll, describe, expect, it } from 'vitest'
import { IdentityError } from '../../../../src/errors/index.js'
import { BundleSet } from '../../../../src/spiffe/bundle/bundle-set.js'
import { JwtBundle } from '../../../../src/spiffe/bundle/jwt-bundle.js'
import { SpiffeBundle } from '../../../../src/spiffe/bundle/spiffe-bundle.js'
import { X509Bundle } from '../../../../src/spiffe/bundle/x509-bundle.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { makeCaCert, makeJwk } from './test-certs.js'

/* BundleSet (src/spiffe/bundle/bundle-set.ts): halves set in either order, the sort of trust domains, exact refusals. Plain titles. */

function refusal(fn: () => unknown): [string, string] {
  try {
    fn()
  } catch (err) {
    if (err instanceof IdentityError) return [err.code, err.message]
    throw err
  }
  throw new Error('expected an IdentityError, nothing was thrown')
}

const td = (name: string) => TrustDomain.fromString(name)
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex')
const k = makeJwk().pub

let ca: Uint8Array
beforeAll(async () => {
  ca = await makeCaCert('ec-p256', 'a.test')
})

describe('BundleSet halves', () => {
  it('a JWT half set first into an empty set, then the X.509 half', () => {
    const set = new BundleSet()
    set.set(new JwtBundle(td('a.test'), [['k', k]]))
    expect([...set.getJwtBundleForTrustDomain(td('a.test')).keys.keys()]).toEqual(['k'])
    expect(refusal(() => set.getX509BundleForTrustDomain(td('a.test')))).toEqual(['ERR_BUNDLE_NOT_FOUND', 'no X.509 bundle for trust domain "a.test"'])
    set.set(new X509Bundle(td('a.test'), [ca]))
    expect(set.getX509BundleForTrustDomain(td('a.test')).authorities.map(hex)).toEqual([hex(ca)])
    expect(set.getJwtBundleForTrustDomain(td('a.test')).keys.has('k')).toBe(true)
  })

  it('an X.509 half alone: the JWT lookup names the trust domain', () => {
    const set = new BundleSet([new X509Bundle(td('a.test'), [ca])])
    expect(refusal(() => set.getJwtBundleForTrustDomain(td('a.test')))).toEqual(['ERR_BUNDLE_NOT_FOUND', 'no JWT bundle for trust domain "a.test"'])
    expect(refusal(() => set.getX509BundleForTrustDomain(td('b.test')))).toEqual(['ERR_BUNDLE_NOT_FOUND', 'no X.509 bundle for trust domain "b.test"'])
    expect(refusal(() => set.getJwtBundleForTrustDomain(td('b.test')))).toEqual(['ERR_BUNDLE_NOT_FOUND', 'no JWT bundle for trust domain "b.test"'])
  })

  it('get joins the halves once, without sequence or hint', () => {
    const set = new BundleSet([new JwtBundle(td('a.test'), [['k', k]])])
    const joined = set.get(td('a.test'))!
    expect([joined.x509Authorities, [...joined.jwtAuthorities.keys()], joined.sequenceNumber, joined.refreshHintSeconds]).toEqual([
      [],
      ['k'],
      undefined,
      undefined,
    ])
    expect(set.get(td('a.test'))).toBe(joined)
  })

  it('a whole bundle replaces both halves', () => {
    const set = new BundleSet([new JwtBundle(td('a.test'), [['k', k]]), new X509Bundle(td('a.test'), [ca])])
    const whole = SpiffeBundle.from({ trustDomain: td('a.test'), sequenceNumber: 4 })
    set.set(whole)
    expect(set.get(td('a.test'))).toBe(whole)
    expect(set.getX509BundleForTrustDomain(td('a.test')).isEmpty()).toBe(true)
    expect(set.getJwtBundleForTrustDomain(td('a.test')).isEmpty()).toBe(true)
  })

  it('set refuses anything else with a TypeError naming what it expects', () => {
    expect(() => new BundleSet().set({ trustDomain: td('a.test') } as unknown as X509Bundle)).toThrow(
      new TypeError('BundleSet.set expects a SpiffeBundle, X509Bundle or JwtBundle'),
    )
  })
})

describe('BundleSet.trustDomains is sorted by name', () => {
  const names = ['d.test', 'b.test', 'e.test', 'a.test', 'c.test', 'ab.test', 'a.b.test']
  it('whatever the order they were set in', () => {
    const set = new BundleSet(names.map((n) => new X509Bundle(td(n), [])))
    expect(set.trustDomains().map((t) => t.name)).toEqual(['a.b.test', 'a.test', 'ab.test', 'b.test', 'c.test', 'd.test', 'e.test'])
  })

  it('reversed', () => {
    const set = new BundleSet(
      [...names]
        .sort()
        .reverse()
        .map((n) => new JwtBundle(td(n), [])),
    )
    expect(set.trustDomains().map((t) => t.name)).toEqual(['a.b.test', 'a.test', 'ab.test', 'b.test', 'c.test', 'd.test', 'e.test'])
  })

  it('already sorted, and one or none', () => {
    const sorted = [...names].sort()
    expect(new BundleSet(sorted.map((n) => new JwtBundle(td(n), []))).trustDomains().map((t) => t.name)).toEqual(sorted)
    expect(new BundleSet([new JwtBundle(td('z.test'), [])]).trustDomains().map((t) => t.name)).toEqual(['z.test'])
    expect(new BundleSet().trustDomains()).toEqual([])
  })

  it('size, has and delete', () => {
    const set = new BundleSet(names.map((n) => new X509Bundle(td(n), [])))
    expect(set.size).toBe(7)
    expect(set.has(td('ab.test'))).toBe(true)
    expect(set.delete(td('ab.test'))).toBe(true)
    expect(set.has(td('ab.test'))).toBe(false)
    expect(set.size).toBe(6)
  })
})
