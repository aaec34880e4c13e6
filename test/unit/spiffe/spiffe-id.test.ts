import { describe, expect, it } from 'vitest'
import { IdentityError } from '../../../src/errors/index.js'
import { MAX_SPIFFE_ID_BYTES, SpiffeId } from '../../../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../../../src/spiffe/trust-domain.js'

const td = TrustDomain.fromString('domain.test')

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (err) {
    if (err instanceof IdentityError) return err.code
    throw err
  }
  return undefined
}

/** Builds `spiffe://domain.test/` followed by path segments so that the whole ID has exactly `n` bytes. */
function idOfLength(n: number): string {
  const prefix = 'spiffe://domain.test'
  let path = ''
  while (prefix.length + path.length < n) {
    const remaining = n - prefix.length - path.length
    const seg = 'a'.repeat(Math.min(200, remaining - 1))
    path += `/${seg}`
  }
  return prefix + path
}

// Modelled on go-spiffe v2 spiffeid/id_test.go TestFromString, plus the SPIFFE-ID spec §2 MUSTs.
describe('SpiffeId.fromString accepts valid IDs', () => {
  const cases: Array<{ name: string; input: string; td: string; path: string; str?: string }> = [
    { name: 'happy path', input: 'spiffe://domain.test/path/element', td: 'domain.test', path: '/path/element' },
    { name: 'trust domain ID (empty path)', input: 'spiffe://domain.test', td: 'domain.test', path: '' },
    {
      name: 'uppercase scheme is normalised',
      input: 'SPIFFE://domain.test/path/element',
      td: 'domain.test',
      path: '/path/element',
      str: 'spiffe://domain.test/path/element',
    },
    { name: 'mixed-case scheme', input: 'SpIfFe://domain.test', td: 'domain.test', path: '', str: 'spiffe://domain.test' },
    { name: 'path keeps its case', input: 'spiffe://domain.test/Path/ELEMENT', td: 'domain.test', path: '/Path/ELEMENT' },
    { name: 'trust domain characters . - _ and digits', input: 'spiffe://a-b_c.9.test/x', td: 'a-b_c.9.test', path: '/x' },
    { name: 'path characters . - _ and digits', input: 'spiffe://domain.test/a.b-c_d/0123', td: 'domain.test', path: '/a.b-c_d/0123' },
    { name: 'segment that contains dots but is not a dot segment', input: 'spiffe://domain.test/.../..a/.b', td: 'domain.test', path: '/.../..a/.b' },
    { name: 'IP-like trust domain without port', input: 'spiffe://192.168.2.2/x', td: '192.168.2.2', path: '/x' },
  ]
  it.each(cases)('$name', ({ input, td: tdName, path, str }) => {
    const id = SpiffeId.fromString(input)
    expect(id.trustDomain.name).toBe(tdName)
    expect(id.path).toBe(path)
    expect(id.toString()).toBe(str ?? input)
    expect(SpiffeId.isValid(input)).toBe(true)
    // Canonical form re-parses to an equal ID.
    expect(SpiffeId.fromString(id.toString()).equals(id)).toBe(true)
  })
})

describe('SpiffeId.fromString rejects invalid IDs with ERR_SPIFFE_ID_INVALID', () => {
  const cases: Array<[name: string, input: string]> = [
    ['empty', ''],
    ['missing scheme', 'domain.test/path'],
    ['host:port without scheme', '192.168.2.2:6688'],
    ['wrong scheme', 'http://domain.test/path/element'],
    ['scheme prefix only', 'spiffe'],
    ['spiffe: without //', 'spiffe:path/element'],
    ['spiffe:/ single slash', 'spiffe:/path/element'],
    ['empty trust domain', 'spiffe://'],
    ['empty trust domain with path', 'spiffe:///path/element'],
    ['query', 'spiffe://domain.test/path/element?query=1'],
    ['query on trust domain', 'spiffe://domain.test?query=1'],
    ['fragment', 'spiffe://domain.test/path/element#fragment-1'],
    ['empty query with fragment', 'spiffe://domain.test/path/element?#fragment-1'],
    ['port', 'spiffe://domain.test:8080/path/element'],
    ['empty port', 'spiffe://domain.test:/path/element'],
    ['userinfo', 'spiffe://user:password@test.org/path/element'],
    ['userinfo without password', 'spiffe://user@test.org/path/element'],
    ['uppercase trust domain', 'spiffe://Domain.Test/path'],
    ['percent-encoded trust domain', 'spiffe://domain%2Etest/path'],
    ['trust domain with space', 'spiffe://domain test/path'],
    ['trust domain with non-ASCII', 'spiffe://dömain.test/path'],
    ['trust domain with bracket (IPv6 literal)', 'spiffe://[::1]/path'],
    ['trailing slash', 'spiffe://domain.test/path/'],
    ['trailing slash on trust domain', 'spiffe://domain.test/'],
    ['empty segment', 'spiffe://domain.test/path//element'],
    ['leading empty segment', 'spiffe://domain.test//path'],
    ['dot segment', 'spiffe://domain.test/path/./element'],
    ['dot-dot segment', 'spiffe://domain.test/path/../element'],
    ['final dot segment', 'spiffe://domain.test/path/.'],
    ['percent-encoded path', 'spiffe://domain.test/path/elem%5Aent'],
    ['invalid percent escape', 'spiffe://domain.test/path/elem%5uent'],
    ['colon in path', 'spiffe://domain.test/pa:th'],
    ['at sign in path', 'spiffe://domain.test/pa@th'],
    ['sub-delims in path', "spiffe://domain.test/p!a$t&h'/(e)l*e+m,e;n=t"],
    ['bracket in path', 'spiffe://domain.test/path/elem[ent'],
    ['space in path', 'spiffe://domain.test/path element'],
    ['non-ASCII in path', 'spiffe://domain.test/pāth'],
    ['backslash in path', 'spiffe://domain.test/path\\element'],
    ['leading whitespace', ' spiffe://domain.test/path'],
    ['trailing newline', 'spiffe://domain.test/path\n'],
    ['non-ASCII lookalike scheme (dotless i)', 'SPİFFE://domain.test/path'],
    ['SPIFFE ID longer than 2048 bytes', idOfLength(MAX_SPIFFE_ID_BYTES + 1)],
    ['trust domain longer than 255 bytes', `spiffe://${'a'.repeat(256)}/path`],
  ]
  it.each(cases)('%s', (_name, input) => {
    expect(codeOf(() => SpiffeId.fromString(input))).toBe('ERR_SPIFFE_ID_INVALID')
    expect(SpiffeId.isValid(input)).toBe(false)
  })

  it('carries a reason in the message and a truncated value in details', () => {
    const long = `spiffe://domain.test/${'x'.repeat(3000)}`
    try {
      SpiffeId.fromString(long)
      expect.unreachable()
    } catch (err) {
      expect(err).toBeInstanceOf(IdentityError)
      const e = err as IdentityError
      expect(e.message).toMatch(/exceeds 2048 bytes/)
      expect(String(e.details?.value).length).toBeLessThan(200)
    }
  })

  it('rejects a non-string with TypeError', () => {
    expect(() => SpiffeId.fromString(42 as unknown as string)).toThrow(TypeError)
  })
})

describe('SpiffeId length limit (SPIFFE-ID §2.3: support up to 2048 bytes)', () => {
  it('accepts an ID of exactly 2048 bytes', () => {
    const s = idOfLength(MAX_SPIFFE_ID_BYTES)
    expect(Buffer.byteLength(s)).toBe(2048)
    expect(SpiffeId.fromString(s).toString()).toBe(s)
  })

  it('rejects an ID of 2049 bytes', () => {
    const s = idOfLength(MAX_SPIFFE_ID_BYTES + 1)
    expect(Buffer.byteLength(s)).toBe(2049)
    expect(codeOf(() => SpiffeId.fromString(s))).toBe('ERR_SPIFFE_ID_INVALID')
  })

  it('accepts a trust domain of exactly 255 bytes', () => {
    const name = 'a'.repeat(255)
    expect(SpiffeId.fromString(`spiffe://${name}/x`).trustDomain.name).toBe(name)
  })

  it('fromPath rejects a result longer than 2048 bytes', () => {
    const path = `/${'a'.repeat(2048)}`
    expect(codeOf(() => SpiffeId.fromPath(td, path))).toBe('ERR_SPIFFE_ID_INVALID')
  })
})

describe('SpiffeId.fromPath', () => {
  it.each([
    ['', 'spiffe://domain.test'],
    ['/ns/web', 'spiffe://domain.test/ns/web'],
    ['/Agents/Bot-1', 'spiffe://domain.test/Agents/Bot-1'],
  ])('fromPath(td, %j) = %s', (path, expected) => {
    const id = SpiffeId.fromPath(td, path)
    expect(id.toString()).toBe(expected)
    expect(id.trustDomain.equals(td)).toBe(true)
  })

  it.each([
    ['no leading slash', 'ns/web'],
    ['root slash', '/'],
    ['trailing slash', '/ns/'],
    ['empty segment', '/ns//web'],
    ['dot segment', '/ns/./web'],
    ['dot-dot segment', '/..'],
    ['percent-encoding', '/ns/%41'],
    ['query', '/ns?x=1'],
    ['fragment', '/ns#x'],
    ['bad character', '/ns/w*b'],
  ])('rejects %s', (_name, path) => {
    expect(codeOf(() => SpiffeId.fromPath(td, path))).toBe('ERR_SPIFFE_ID_INVALID')
  })
})

describe('SpiffeId.fromSegments and append', () => {
  it('joins validated segments', () => {
    expect(SpiffeId.fromSegments(td, 'ns', 'web').toString()).toBe('spiffe://domain.test/ns/web')
    expect(SpiffeId.fromSegments(td).toString()).toBe('spiffe://domain.test')
  })

  it.each([
    ['empty segment', ''],
    ['dot', '.'],
    ['dot-dot', '..'],
    ['slash inside a segment', 'a/b'],
    ['percent', '%2F'],
    ['colon', 'a:b'],
  ])('fromSegments rejects %s', (_name, seg) => {
    expect(codeOf(() => SpiffeId.fromSegments(td, 'ok', seg))).toBe('ERR_SPIFFE_ID_INVALID')
  })

  it('append adds child segments and validates them', () => {
    const base = SpiffeId.fromString('spiffe://domain.test/agents')
    expect(base.append('bot', 'instance-1').toString()).toBe('spiffe://domain.test/agents/bot/instance-1')
    expect(SpiffeId.fromString('spiffe://domain.test').append('x').toString()).toBe('spiffe://domain.test/x')
    expect(codeOf(() => base.append('a/b'))).toBe('ERR_SPIFFE_ID_INVALID')
    expect(codeOf(() => base.append('..'))).toBe('ERR_SPIFFE_ID_INVALID')
    // The original is unchanged (immutable).
    expect(base.toString()).toBe('spiffe://domain.test/agents')
  })

  it('segments() and isTrustDomainId()', () => {
    expect(SpiffeId.fromString('spiffe://domain.test/a/b').segments()).toEqual(['a', 'b'])
    expect(SpiffeId.fromString('spiffe://domain.test').segments()).toEqual([])
    expect(SpiffeId.fromString('spiffe://domain.test').isTrustDomainId()).toBe(true)
    expect(SpiffeId.fromString('spiffe://domain.test/a').isTrustDomainId()).toBe(false)
  })
})

describe('SpiffeId.hasPathPrefix (segment boundary)', () => {
  const id = SpiffeId.fromString('spiffe://domain.test/agents/payments/bot-1')
  it.each([
    ['/agents', true],
    ['/agents/payments', true],
    ['/agents/payments/', true],
    ['/agents/payments/bot-1', true],
    ['', true],
    ['/', true],
    ['/agents/pay', false],
    ['/agents/payments/bot', false],
    ['/agents/payments/bot-1/x', false],
    ['/other', false],
    ['/Agents', false],
  ])('prefix %j → %s', (prefix, expected) => {
    expect(id.hasPathPrefix(prefix)).toBe(expected)
  })
})

describe('SpiffeId equality, membership and serialisation', () => {
  it('paths are case-sensitive', () => {
    const a = SpiffeId.fromString('spiffe://domain.test/Path')
    const b = SpiffeId.fromString('spiffe://domain.test/path')
    expect(a.equals(b)).toBe(false)
  })

  it('scheme case does not affect equality', () => {
    expect(SpiffeId.fromString('SPIFFE://domain.test/x').equals(SpiffeId.fromString('spiffe://domain.test/x'))).toBe(true)
  })

  it('equals handles null/undefined', () => {
    const a = SpiffeId.fromString('spiffe://domain.test/x')
    expect(a.equals(undefined)).toBe(false)
    expect(a.equals(null)).toBe(false)
  })

  it('memberOf compares trust domains', () => {
    const id = SpiffeId.fromString('spiffe://domain.test/path/element')
    expect(id.memberOf(td)).toBe(true)
    expect(id.memberOf(TrustDomain.fromString('other.domain.test'))).toBe(false)
    expect(SpiffeId.fromString('spiffe://other.domain.test/x').memberOf(td)).toBe(false)
  })

  it('JSON.stringify uses the canonical string', () => {
    expect(JSON.stringify({ id: SpiffeId.fromString('SPIFFE://domain.test/x') })).toBe('{"id":"spiffe://domain.test/x"}')
  })
})
