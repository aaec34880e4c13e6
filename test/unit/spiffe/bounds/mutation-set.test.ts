import { describe, expect, it } from 'vitest'
import { BoundsSet, boundsFor, normalizePrefix, type BoundsIssue } from '../../../../src/spiffe/bounds/index.js'
import { SpiffeId } from '../../../../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'

// Exact issues of BoundsSet construction and parsing, prefix normalisation,
// the tree queries and the effective-bounds cache (test/mutation-survivors.md).
// Test titles stay plain: Stryker's vitest runner selects tests by name.

const td = TrustDomain.fromString('corp.example')
const id = (p: string) => SpiffeId.fromPath(td, p)

function refusal(fn: () => unknown): { message: string; issues: BoundsIssue[] } {
  try {
    fn()
  } catch (err) {
    expect((err as { code: string }).code).toBe('ERR_BOUNDS_INVALID')
    return { message: (err as Error).message, issues: (err as { details: { issues: BoundsIssue[] } }).details.issues }
  }
  throw new Error('expected ERR_BOUNDS_INVALID')
}

describe('normalizePrefix', () => {
  it('accepts the root and paths and drops one trailing slash', () => {
    expect(normalizePrefix(td, '/')).toEqual({ prefix: '/' })
    expect(normalizePrefix(td, '/a/b')).toEqual({ prefix: '/a/b' })
    expect(normalizePrefix(td, '/a/b/')).toEqual({ prefix: '/a/b' })
  })

  it('names each problem', () => {
    expect(normalizePrefix(td, '')).toEqual({ problem: 'prefix must be a non-empty string' })
    expect(normalizePrefix(td, 5)).toEqual({ problem: 'prefix must be a non-empty string' })
    expect(normalizePrefix(td, 'a')).toEqual({ problem: 'prefix must be a SPIFFE ID path starting with "/"' })
    expect(normalizePrefix(td, '/a//b')).toEqual({ problem: 'path cannot contain empty segments' })
    expect(normalizePrefix(td, '/a//')).toEqual({ problem: 'path cannot have a trailing slash' })
    expect(normalizePrefix(td, '/a/./b')).toEqual({ problem: 'path cannot contain dot segments' })
  })
})

describe('BoundsSet.from and parse issues', () => {
  it('an invalid prefix is an issue at its spelling, cut to 200 characters', () => {
    const long = `x${'y'.repeat(300)}`
    expect(refusal(() => BoundsSet.parse(td, { a: {}, [long]: {} })).issues).toEqual([
      { path: 'a', message: 'prefix must be a SPIFFE ID path starting with "/"' },
      { path: long.slice(0, 200), message: 'prefix must be a SPIFFE ID path starting with "/"' },
    ])
  })

  it('two spellings of one prefix overlap', () => {
    const r = refusal(() => BoundsSet.parse(td, { '/a': {}, '/a/': { max_instances: 1 } }))
    expect(r.issues).toEqual([{ path: '/a/', message: 'overlaps "/a": both define /a' }])
    expect(r.message).toBe('invalid bounds: /a/: overlaps "/a": both define /a')
  })

  it('federation with the local trust domain is refused', () => {
    expect(refusal(() => BoundsSet.parse(td, { '/a': { federates_with: ['other.example', 'corp.example'] } })).issues).toEqual([
      { path: '/a.federates_with', message: 'cannot name the local trust domain' },
    ])
    expect(BoundsSet.parse(td, { '/a': { federates_with: ['other.example'] } }).size).toBe(1)
  })

  it('a descendant that widens an ancestor names both', () => {
    expect(refusal(() => BoundsSet.parse(td, { '/': { max_instances: 2 }, '/a/b': { max_instances: 3 }, '/a': { max_instances: 1 } })).issues).toEqual([
      { path: '/a/b.max_instances', message: 'widens ancestor "/": 3 is wider than 2' },
      { path: '/a/b.max_instances', message: 'widens ancestor "/a": 3 is wider than 1' },
    ])
  })

  it('tree issues come sorted by prefix', () => {
    expect(
      refusal(() =>
        BoundsSet.parse(td, { '/z': { max_instances: 1 }, '/z/b': { max_instances: 2 }, '/a': { max_instances: 1 }, '/a/b': { max_instances: 2 } }),
      ).issues.map((i) => i.path),
    ).toEqual(['/a/b.max_instances', '/z/b.max_instances'])
  })

  it('siblings and prefixes spelled alike are not ancestors', () => {
    expect(BoundsSet.parse(td, { '/a': { max_instances: 1 }, '/ab': { max_instances: 5 }, '/b/a': { max_instances: 5 } }).size).toBe(3)
  })

  it('the list form needs objects with a string prefix', () => {
    expect(refusal(() => BoundsSet.parse(td, [null, [], 'x', { max_instances: 1 }, { prefix: 1 }])).issues).toEqual([
      { path: '0', message: 'must be an object' },
      { path: '1', message: 'must be an object' },
      { path: '2', message: 'must be an object' },
      { path: '3.prefix', message: 'is required' },
      { path: '4.prefix', message: 'is required' },
    ])
  })

  it('list items are parsed with the prefix as their path', () => {
    expect(refusal(() => BoundsSet.parse(td, [{ prefix: '/a', max_instances: -1 }])).issues).toEqual([
      { path: '/a.max_instances', message: 'must be a non-negative integer' },
    ])
    const s = BoundsSet.parse(td, [{ prefix: '/a/', max_instances: 1 }])
    expect(s.get('/a')).toEqual({ maxInstances: 1 })
  })

  it('the object form parses each value at its prefix', () => {
    expect(refusal(() => BoundsSet.parse(td, { '/a': 'x' })).issues).toEqual([{ path: '/a', message: 'must be an object' }])
  })

  it('anything else is refused at the root', () => {
    for (const raw of [null, 'x', 3, undefined]) {
      expect(refusal(() => BoundsSet.parse(td, raw)).issues).toEqual([{ path: '(root)', message: 'must be an object or a list' }])
    }
  })

  it('issues passed in make from throw', () => {
    expect(refusal(() => BoundsSet.from(td, [], [{ path: 'p', message: 'm' }])).issues).toEqual([{ path: 'p', message: 'm' }])
    expect(BoundsSet.from(td, []).size).toBe(0)
  })
})

describe('BoundsSet queries', () => {
  const set = BoundsSet.parse(td, {
    '/b': { max_instances: 9 },
    '/': { max_instances: 10 },
    '/a/x/y': { max_instances: 3 },
    '/a': { max_instances: 5 },
  })

  it('get and has normalise the prefix and refuse invalid ones', () => {
    expect(set.get('/a/')).toEqual({ maxInstances: 5 })
    expect(set.get('/')).toEqual({ maxInstances: 10 })
    expect(set.get('a')).toBeUndefined()
    expect(set.get('/c')).toBeUndefined()
    expect(set.has('/a')).toBe(true)
    expect(set.has('/a/x')).toBe(false)
    expect(set.has('bad')).toBe(false)
  })

  it('lists prefixes and entries sorted', () => {
    expect(set.size).toBe(4)
    expect(set.prefixes()).toEqual(['/', '/a', '/a/x/y', '/b'])
    expect(set.entries()).toEqual([
      ['/', { maxInstances: 10 }],
      ['/a', { maxInstances: 5 }],
      ['/a/x/y', { maxInstances: 3 }],
      ['/b', { maxInstances: 9 }],
    ])
    expect(set.toJSON()).toEqual([
      { prefix: '/', max_instances: 10 },
      { prefix: '/a', max_instances: 5 },
      { prefix: '/a/x/y', max_instances: 3 },
      { prefix: '/b', max_instances: 9 },
    ])
  })

  it('ancestors are declared prefixes strictly above, shallowest first', () => {
    expect(set.ancestorsOf('/a/x/y')).toEqual(['/', '/a'])
    expect(set.ancestorsOf('/a/x/y/z')).toEqual(['/', '/a', '/a/x/y'])
    expect(set.ancestorsOf('/a')).toEqual(['/'])
    expect(set.ancestorsOf('/')).toEqual([])
  })

  it('descendants are declared prefixes strictly below', () => {
    expect(set.descendantsOf('/')).toEqual(['/a', '/a/x/y', '/b'])
    expect(set.descendantsOf('/a')).toEqual(['/a/x/y'])
    expect(set.descendantsOf('/a/x')).toEqual(['/a/x/y'])
    expect(set.descendantsOf('/b')).toEqual([])
    expect(BoundsSet.parse(td, { '/a': {}, '/ab': {} }).descendantsOf('/a')).toEqual([])
  })

  it('boundsFor intersects every matching prefix, frozen and cached', () => {
    const eff = set.boundsFor(id('/a/x/y/z'))!
    expect(eff).toEqual({ bounds: { maxInstances: 3 }, prefixes: ['/', '/a', '/a/x/y'] })
    expect(Object.isFrozen(eff)).toBe(true)
    expect(Object.isFrozen(eff.bounds)).toBe(true)
    expect(Object.isFrozen(eff.prefixes)).toBe(true)
    expect(set.boundsFor(id('/a/x/y/z'))).toBe(eff)
    expect(set.boundsFor(id('/b/q'))!.bounds).toEqual({ maxInstances: 9 })
    expect(set.boundsFor(id('/c'))).toEqual({ bounds: { maxInstances: 10 }, prefixes: ['/'] })
  })

  it('an ID under no prefix has no bounds, cached too', () => {
    const s = BoundsSet.parse(td, { '/a': { max_instances: 1 } })
    expect(s.boundsFor(id('/b'))).toBeUndefined()
    expect(s.boundsFor(id('/b'))).toBeUndefined()
    expect(s.boundsFor(SpiffeId.fromString('spiffe://other.example/a'))).toBeUndefined()
  })

  it('the cache keeps working past its size limit', () => {
    const s = BoundsSet.parse(td, { '/a': { max_instances: 1 } })
    const first = s.boundsFor(id('/a/0'))
    for (let i = 1; i <= 10_001; i++) s.boundsFor(id(`/a/${i}`))
    expect(s.boundsFor(id('/a/0'))).toEqual(first)
    expect(s.boundsFor(id('/a/5000'))?.prefixes).toEqual(['/a'])
  })

  it('boundsFor accepts a string and refuses other values', () => {
    expect(boundsFor('spiffe://corp.example/a', set)?.prefixes).toEqual(['/', '/a'])
    expect(() => boundsFor('nope', set)).toThrow(expect.objectContaining({ code: 'ERR_SPIFFE_ID_INVALID' }))
    expect(() => boundsFor(5 as unknown as string, set)).toThrow(new TypeError('id must be a SpiffeId or a string'))
  })
})

describe('BoundsSet with and without', () => {
  const set = BoundsSet.parse(td, { '/a': { max_instances: 5 } })

  it('with adds a prefix under its normalised name', () => {
    const next = set.with('/a/b/', { maxInstances: 2 })
    expect(next.prefixes()).toEqual(['/a', '/a/b'])
    expect(set.prefixes()).toEqual(['/a'])
    expect(next.with('/a/b', { maxInstances: 1 }).get('/a/b')).toEqual({ maxInstances: 1 })
  })

  it('with refuses an invalid prefix or a widening', () => {
    expect(refusal(() => set.with('a', {})).issues).toEqual([{ path: 'a', message: 'prefix must be a SPIFFE ID path starting with "/"' }])
    expect(refusal(() => set.with(`z${'q'.repeat(300)}`, {})).issues[0]!.path).toHaveLength(200)
    expect(refusal(() => set.with('/a/b', { maxInstances: 6 })).issues).toEqual([
      { path: '/a/b.max_instances', message: 'widens ancestor "/a": 6 is wider than 5' },
    ])
    expect(refusal(() => set.with('/a', { federatesWith: ['corp.example'] })).issues).toEqual([
      { path: '/a.federates_with', message: 'cannot name the local trust domain' },
    ])
  })

  it('without removes the normalised prefix and refuses an invalid one', () => {
    const two = set.with('/b', {})
    expect(two.without('/b/').prefixes()).toEqual(['/a'])
    expect(two.prefixes()).toEqual(['/a', '/b'])
    expect(two.without('/c').prefixes()).toEqual(['/a', '/b'])
    expect(refusal(() => set.without('a')).issues).toEqual([{ path: 'a', message: 'prefix must be a SPIFFE ID path starting with "/"' }])
    expect(refusal(() => set.without(`z${'q'.repeat(300)}`)).issues[0]!.path).toHaveLength(200)
  })

  it('empty has no prefixes', () => {
    const e = BoundsSet.empty(td)
    expect(e.size).toBe(0)
    expect(e.trustDomain).toBe(td)
    expect(e.boundsFor(id('/a'))).toBeUndefined()
  })
})
