import { describe, expect, it } from 'vitest'
import { IdentityError } from '../../../src/errors/index.js'
import { matchAny, matchId, matchMemberOf, matchOneOf, matchPathPrefix, type Matcher } from '../../../src/spiffe/match.js'
import { SpiffeId } from '../../../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../../../src/spiffe/trust-domain.js'

const id = (s: string) => SpiffeId.fromString(s)
const td = TrustDomain.fromString('domain.test')

function outcome(m: Matcher, s: string): string {
  try {
    m(id(s))
    return 'ok'
  } catch (err) {
    if (err instanceof IdentityError) return err.code
    throw err
  }
}

const DENIED = 'ERR_ID_NOT_AUTHORIZED'

describe('matchers', () => {
  const cases: Array<{ name: string; matcher: Matcher; input: string; expected: string }> = [
    { name: 'matchAny allows anything', matcher: matchAny(), input: 'spiffe://x.test/y', expected: 'ok' },
    { name: 'matchId exact', matcher: matchId(id('spiffe://domain.test/a')), input: 'spiffe://domain.test/a', expected: 'ok' },
    { name: 'matchId after scheme normalisation', matcher: matchId(id('spiffe://domain.test/a')), input: 'SPIFFE://domain.test/a', expected: 'ok' },
    { name: 'matchId other path', matcher: matchId(id('spiffe://domain.test/a')), input: 'spiffe://domain.test/b', expected: DENIED },
    { name: 'matchId path case differs', matcher: matchId(id('spiffe://domain.test/a')), input: 'spiffe://domain.test/A', expected: DENIED },
    { name: 'matchId child path', matcher: matchId(id('spiffe://domain.test/a')), input: 'spiffe://domain.test/a/b', expected: DENIED },
    { name: 'matchId other trust domain', matcher: matchId(id('spiffe://domain.test/a')), input: 'spiffe://other.test/a', expected: DENIED },
    {
      name: 'matchOneOf member',
      matcher: matchOneOf(id('spiffe://domain.test/a'), id('spiffe://domain.test/b')),
      input: 'spiffe://domain.test/b',
      expected: 'ok',
    },
    {
      name: 'matchOneOf non-member',
      matcher: matchOneOf(id('spiffe://domain.test/a'), id('spiffe://domain.test/b')),
      input: 'spiffe://domain.test/c',
      expected: DENIED,
    },
    { name: 'matchOneOf with no IDs denies all', matcher: matchOneOf(), input: 'spiffe://domain.test/a', expected: DENIED },
    { name: 'matchMemberOf same domain', matcher: matchMemberOf(td), input: 'spiffe://domain.test/any/path', expected: 'ok' },
    { name: 'matchMemberOf trust-domain ID', matcher: matchMemberOf(td), input: 'spiffe://domain.test', expected: 'ok' },
    { name: 'matchMemberOf other domain', matcher: matchMemberOf(td), input: 'spiffe://other.test/any', expected: DENIED },
    { name: 'matchMemberOf suffix domain', matcher: matchMemberOf(td), input: 'spiffe://sub.domain.test/any', expected: DENIED },
    { name: 'matchPathPrefix exact', matcher: matchPathPrefix(td, '/agents/pay'), input: 'spiffe://domain.test/agents/pay', expected: 'ok' },
    { name: 'matchPathPrefix below', matcher: matchPathPrefix(td, '/agents/pay'), input: 'spiffe://domain.test/agents/pay/bot', expected: 'ok' },
    {
      name: 'matchPathPrefix not on segment boundary',
      matcher: matchPathPrefix(td, '/agents/pay'),
      input: 'spiffe://domain.test/agents/payments',
      expected: DENIED,
    },
    { name: 'matchPathPrefix parent', matcher: matchPathPrefix(td, '/agents/pay'), input: 'spiffe://domain.test/agents', expected: DENIED },
    { name: 'matchPathPrefix other domain', matcher: matchPathPrefix(td, '/agents'), input: 'spiffe://other.test/agents/x', expected: DENIED },
  ]
  it.each(cases)('$name', ({ matcher, input, expected }) => {
    expect(outcome(matcher, input)).toBe(expected)
  })

  it('denial names the offending ID and is a PERMISSION_DENIED error', () => {
    try {
      matchId(id('spiffe://domain.test/a'))(id('spiffe://domain.test/b'))
      expect.unreachable()
    } catch (err) {
      const e = err as IdentityError
      expect(e.code).toBe(DENIED)
      expect(e.grpcStatus).toBe(7)
      expect(e.message).toContain('spiffe://domain.test/b')
    }
  })
})
