import { describe, expect, it } from 'vitest'
import { IdentityError } from '../../../src/errors/index.js'
import { matchId, matchMemberOf, matchOneOf, matchPathPrefix } from '../../../src/spiffe/match.js'
import { MAX_SPIFFE_ID_BYTES, SpiffeId } from '../../../src/spiffe/spiffe-id.js'
import { TrustDomain, truncate } from '../../../src/spiffe/trust-domain.js'
import { thrown } from '../../helpers/thrown.js'

/*
 * The reason a SPIFFE ID or trust domain is refused is what an operator reads
 * in the log and in `warrant entry create`'s answer; the code alone says only
 * "invalid". These tests pin each reason (go-spiffe's wording), the value
 * echoed back in `details` (truncated), and the matchers' denial messages.
 */

const td = TrustDomain.fromString('domain.test')

const TD_CHARS = 'characters are limited to lowercase letters, numbers, dots, dashes, and underscores'
const PATH_CHARS = 'path segment characters are limited to letters, numbers, dots, dashes, and underscores'

describe('SpiffeId.fromString: the reason for each refusal', () => {
  it.each([
    ['', 'cannot be empty'],
    ['spiffe', 'scheme is missing or invalid'],
    ['spiffe:/', 'scheme is missing or invalid'],
    ['http://domain.test/x', 'scheme is missing or invalid'],
    // exactly the scheme: the scheme is present, the trust domain is not
    ['spiffe://', 'trust domain is missing'],
    ['SPIFFE://', 'trust domain is missing'],
    ['spiffe:///path', 'trust domain is missing'],
    ['spiffe://Domain.test/x', `trust domain ${TD_CHARS} (uppercase found)`],
    // the ends of the uppercase range, and its neighbours @ and [
    ['spiffe://dAmain.test/x', `trust domain ${TD_CHARS} (uppercase found)`],
    ['spiffe://dZmain.test/x', `trust domain ${TD_CHARS} (uppercase found)`],
    ['spiffe://d[main.test/x', `trust domain ${TD_CHARS}`],
    ['spiffe://d`main.test/x', `trust domain ${TD_CHARS}`],
    ['spiffe://d{main.test/x', `trust domain ${TD_CHARS}`],
    ['spiffe://domain.test:8080/x', 'trust domain must not include a port'],
    ['spiffe://user@domain.test/x', 'trust domain must not include userinfo'],
    ['spiffe://domain%2etest/x', 'trust domain must not be percent-encoded'],
    ['spiffe://domain test/x', `trust domain ${TD_CHARS}`],
    ['spiffe://domain.test?q', `trust domain ${TD_CHARS}`],
    [`spiffe://${'a'.repeat(256)}/x`, 'trust domain exceeds 255 bytes'],
    ['spiffe://domain.test/path/', 'path cannot have a trailing slash'],
    ['spiffe://domain.test/', 'path cannot have a trailing slash'],
    ['spiffe://domain.test//path', 'path cannot contain empty segments'],
    ['spiffe://domain.test/a/./b', 'path cannot contain dot segments'],
    ['spiffe://domain.test/a/..', 'path cannot contain dot segments'],
    ['spiffe://domain.test/elem%5Aent', 'path cannot be percent-encoded'],
    ['spiffe://domain.test/path?query=1', 'must not include a query'],
    ['spiffe://domain.test/path#frag', 'must not include a fragment'],
    ['spiffe://domain.test/pa:th', PATH_CHARS],
    ['spiffe://domain.test/pa th', PATH_CHARS],
    [`spiffe://domain.test/${'a'.repeat(MAX_SPIFFE_ID_BYTES)}`, 'exceeds 2048 bytes'],
  ])('%j: %s', (input, reason) => {
    const err = thrown(() => SpiffeId.fromString(input))
    expect(err.code).toBe('ERR_SPIFFE_ID_INVALID')
    expect(err.message).toBe(`invalid SPIFFE ID: ${reason}`)
    expect(err.details).toEqual({ value: truncate(input) })
  })

  it('echoes a long input truncated to 128 characters', () => {
    const input = `spiffe://domain.test/${'x'.repeat(3000)}`
    expect(thrown(() => SpiffeId.fromString(input)).details).toEqual({ value: `${input.slice(0, 128)}…` })
  })

  it('refuses a non-string with a TypeError that says so', () => {
    expect(() => SpiffeId.fromString(42 as unknown as string)).toThrow(new TypeError('SPIFFE ID must be a string'))
  })
})

describe('SpiffeId.fromPath and fromSegments: the reason for each refusal', () => {
  it.each([
    ['ns/web', 'path must have a leading slash'],
    ['/', 'path cannot have a trailing slash'],
    ['/ns//web', 'path cannot contain empty segments'],
    ['/ns/../web', 'path cannot contain dot segments'],
    ['/ns/%41', 'path cannot be percent-encoded'],
    ['/ns?x=1', 'must not include a query'],
    ['/ns#x', 'must not include a fragment'],
    ['/ns/w*b', PATH_CHARS],
  ])('fromPath(td, %j): %s', (path, reason) => {
    const err = thrown(() => SpiffeId.fromPath(td, path))
    expect(err.code).toBe('ERR_SPIFFE_ID_INVALID')
    expect(err.message).toBe(`invalid SPIFFE ID path: ${reason}`)
    expect(err.details).toEqual({ value: path })
  })

  it('fromPath builds an ID of exactly 2048 bytes and refuses one of 2049', () => {
    const room = MAX_SPIFFE_ID_BYTES - 'spiffe://domain.test/'.length
    const exact = SpiffeId.fromPath(td, `/${'a'.repeat(room)}`)
    expect(Buffer.byteLength(exact.toString())).toBe(MAX_SPIFFE_ID_BYTES)
    const err = thrown(() => SpiffeId.fromPath(td, `/${'a'.repeat(room + 1)}`))
    expect(err.code).toBe('ERR_SPIFFE_ID_INVALID')
    expect(err.message).toBe('invalid SPIFFE ID: exceeds 2048 bytes')
  })

  it.each([
    ['', 'path cannot contain empty segments'],
    ['..', 'path cannot contain dot segments'],
    ['a/b', PATH_CHARS],
    ['%2F', 'path cannot be percent-encoded'],
    ['a?b', 'must not include a query'],
    ['a#b', 'must not include a fragment'],
  ])('fromSegments(td, "ok", %j): %s', (seg, reason) => {
    const err = thrown(() => SpiffeId.fromSegments(td, 'ok', seg))
    expect(err.code).toBe('ERR_SPIFFE_ID_INVALID')
    expect(err.message).toBe(`invalid SPIFFE ID path segment: ${reason}`)
    expect(err.details).toEqual({ value: seg })
  })

  it('fromSegments echoes a long segment truncated', () => {
    const seg = `${'a'.repeat(200)}%`
    expect(thrown(() => SpiffeId.fromSegments(td, seg)).details).toEqual({ value: `${'a'.repeat(128)}…` })
  })
})

describe('TrustDomain.fromString: the reason for each refusal', () => {
  it.each([
    ['', 'trust domain is missing'],
    ['Domain.test', `trust domain ${TD_CHARS} (uppercase found)`],
    ['domain.test:443', 'trust domain must not include a port'],
    ['user@domain.test', 'trust domain must not include userinfo'],
    ['domain%2etest', 'trust domain must not be percent-encoded'],
    ['domain.test/path', `trust domain ${TD_CHARS}`],
    ['a'.repeat(256), 'trust domain exceeds 255 bytes'],
    ['spiffe://domain.test/path', 'trust domain ID must not have a path'],
    ['spiffe://domain.test:443', 'invalid trust domain ID: trust domain must not include a port'],
    ['spiffe://', 'invalid trust domain ID: trust domain is missing'],
    ['https://domain.test', 'invalid trust domain ID: scheme is missing or invalid'],
    ['spiffe://domain.test/', 'invalid trust domain ID: path cannot have a trailing slash'],
  ])('%j: %s', (input, message) => {
    const err = thrown(() => TrustDomain.fromString(input))
    expect(err.code).toBe('ERR_TRUST_DOMAIN_INVALID')
    expect(err.message).toBe(message)
    expect(err.details).toEqual({ value: truncate(input) })
  })

  it('keeps the SPIFFE ID error of a trust-domain ID as its cause', () => {
    const err = thrown(() => TrustDomain.fromString('spiffe://Domain.test'))
    const cause = err.cause as IdentityError
    expect(cause).toBeInstanceOf(IdentityError)
    expect(cause.code).toBe('ERR_SPIFFE_ID_INVALID')
    expect(cause.message).toBe(`invalid SPIFFE ID: trust domain ${TD_CHARS} (uppercase found)`)
  })

  it('a name error has no cause', () => {
    expect(thrown(() => TrustDomain.fromString('Domain.test')).cause).toBeUndefined()
  })

  it('refuses a non-string with a TypeError that says so', () => {
    expect(() => TrustDomain.fromString(7 as unknown as string)).toThrow(new TypeError('trust domain must be a string'))
  })
})

describe('truncate', () => {
  it('keeps up to n characters and marks a cut with an ellipsis', () => {
    expect(truncate('abc')).toBe('abc')
    expect(truncate('a'.repeat(128))).toBe('a'.repeat(128))
    expect(truncate('a'.repeat(129))).toBe(`${'a'.repeat(128)}…`)
    expect(truncate('abcdef', 3)).toBe('abc…')
    expect(truncate('abc', 3)).toBe('abc')
  })
})

describe('matchers: the denial names the ID and what was expected', () => {
  const id = (s: string) => SpiffeId.fromString(s)
  it.each([
    [matchId(id('spiffe://domain.test/a')), 'spiffe://domain.test/b', 'expected "spiffe://domain.test/a"'],
    [matchOneOf(id('spiffe://domain.test/a')), 'spiffe://domain.test/b', 'not one of the expected IDs'],
    [matchMemberOf(td), 'spiffe://other.test/a', 'expected trust domain "domain.test"'],
    [matchPathPrefix(td, '/agents'), 'spiffe://domain.test/web', 'expected an ID under "spiffe://domain.test/agents"'],
    [matchPathPrefix(td, '/agents'), 'spiffe://other.test/agents', 'expected an ID under "spiffe://domain.test/agents"'],
  ])('%#', (matcher, input, why) => {
    const err = thrown(() => matcher(id(input)))
    expect(err.code).toBe('ERR_ID_NOT_AUTHORIZED')
    expect(err.message).toBe(`unexpected ID "${input}": ${why}`)
  })
})
