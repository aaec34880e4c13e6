import { exportJWK, generateKeyPair } from 'jose'
import { describe, expect, it } from 'vitest'
import { IdentityError } from '../../../src/errors/index.js'
import { JwksCache } from '../../../src/tokens/jwks-cache.js'

async function jwk(kid: string, extra: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
  const { publicKey } = await generateKeyPair('ES256', { extractable: true })
  return { ...(await exportJWK(publicKey)), kid, ...extra }
}

function counting(docs: () => unknown) {
  const calls = { n: 0 }
  return {
    calls,
    fetchJwks: async () => {
      calls.n++
      const d = docs()
      if (d instanceof Error) throw d
      return d
    },
  }
}

async function codeOf(p: Promise<unknown>): Promise<[string, unknown]> {
  try {
    await p
  } catch (e) {
    if (e instanceof IdentityError) return [e.code, e.details?.['reason']]
    throw e
  }
  throw new Error('expected a rejection')
}

describe('JwksCache', () => {
  it('fetches once, caches by kid, and reuses the imported key', async () => {
    const k1 = await jwk('k1')
    const f = counting(() => ({ keys: [k1] }))
    const c = new JwksCache({ ...f, nowSec: () => 100 })
    const a = await c.getKey('k1', 'ES256')
    const b = await c.getKey('k1', 'ES256')
    expect(a).toBe(b)
    expect(f.calls.n).toBe(1)
    expect(c.kids()).toEqual(['k1'])
  })

  it('refetches on an unknown kid at most once per interval', async () => {
    let now = 100
    const keys = [await jwk('k1')]
    const f = counting(() => ({ keys }))
    const c = new JwksCache({ ...f, refetchIntervalSec: 30, nowSec: () => now })
    expect(await codeOf(c.getKey('k2', 'ES256'))).toEqual(['ERR_ACCESS_TOKEN_INVALID', 'kid_unknown'])
    expect(f.calls.n).toBe(1)
    keys.push(await jwk('k2'))
    now = 110
    expect(await codeOf(c.getKey('k2', 'ES256'))).toEqual(['ERR_ACCESS_TOKEN_INVALID', 'kid_unknown'])
    expect(f.calls.n).toBe(1)
    now = 130
    await expect(c.getKey('k2', 'ES256')).resolves.toBeDefined()
    expect(f.calls.n).toBe(2)
  })

  it('coalesces concurrent fetches', async () => {
    const k1 = await jwk('k1')
    const f = counting(() => ({ keys: [k1] }))
    const c = new JwksCache({ ...f, nowSec: () => 100 })
    await Promise.all([c.getKey('k1', 'ES256'), c.getKey('k1', 'ES256'), c.getKey('k1', 'ES256')])
    expect(f.calls.n).toBe(1)
  })

  it('keeps a key removed from the JWKS for the overlap window, then drops it', async () => {
    let now = 100
    const k1 = await jwk('k1')
    const k2 = await jwk('k2')
    let keys = [k1]
    const c = new JwksCache({ fetchJwks: async () => ({ keys }), maxAgeSec: 60, overlapSec: 120, nowSec: () => now })
    await c.getKey('k1', 'ES256')
    keys = [k2]
    now = 160 // stale: the lookup refreshes, k1 is retired until 280
    await expect(c.getKey('k1', 'ES256')).resolves.toBeDefined()
    expect(c.kids().sort()).toEqual(['k1', 'k2'])
    now = 280
    await expect(c.getKey('k1', 'ES256')).resolves.toBeDefined()
    now = 281
    expect(await codeOf(c.getKey('k1', 'ES256'))).toEqual(['ERR_ACCESS_TOKEN_INVALID', 'kid_unknown'])
  })

  it('a key that reappears is live again; a kid reused for another key replaces it at once', async () => {
    let now = 100
    const k1 = await jwk('k1')
    let keys = [k1]
    const c = new JwksCache({ fetchJwks: async () => ({ keys }), maxAgeSec: 10, overlapSec: 5, nowSec: () => now })
    const first = await c.getKey('k1', 'ES256')
    keys = []
    now = 110
    await c.getKey('k1', 'ES256')
    keys = [k1]
    now = 120
    expect(await c.getKey('k1', 'ES256')).toBe(first)
    keys = [await jwk('k1')]
    now = 130
    expect(await c.getKey('k1', 'ES256')).not.toBe(first)
  })

  it('ignores private, encryption-use, kid-less and surplus keys', async () => {
    const { privateKey } = await generateKeyPair('ES256', { extractable: true })
    const priv = { ...(await exportJWK(privateKey)), kid: 'priv' }
    const enc = await jwk('enc', { use: 'enc' })
    const noKid = await jwk('x')
    delete noKid['kid']
    const many = await Promise.all([1, 2, 3].map((i) => jwk(`m${i}`)))
    const c = new JwksCache({ fetchJwks: async () => ({ keys: [priv, enc, noKid, 'junk', ...many] }), maxKeys: 2, nowSec: () => 1 })
    for (const kid of ['priv', 'enc', 'm3']) expect(await codeOf(c.getKey(kid, 'ES256'))).toEqual(['ERR_ACCESS_TOKEN_INVALID', 'kid_unknown'])
    expect(c.kids()).toEqual(['m1', 'm2'])
  })

  it('refuses a key for another algorithm than its own alg or its curve', async () => {
    const c = new JwksCache({ fetchJwks: async () => ({ keys: [await jwk('a', { alg: 'ES256' }), await jwk('b')] }), nowSec: () => 1 })
    expect(await codeOf(c.getKey('a', 'ES384'))).toEqual(['ERR_ACCESS_TOKEN_INVALID', 'alg_key_mismatch'])
    expect(await codeOf(c.getKey('b', 'ES384'))).toEqual(['ERR_ACCESS_TOKEN_INVALID', 'alg_key_mismatch'])
    expect(await codeOf(c.getKey('b', 'RS256'))).toEqual(['ERR_ACCESS_TOKEN_INVALID', 'alg_key_mismatch'])
  })

  it('a failed or malformed fetch is ERR_UNAVAILABLE and rate-limited; a failed background refresh keeps the keys', async () => {
    let now = 100
    let doc: unknown = new Error('down')
    const f = counting(() => doc)
    const c = new JwksCache({ ...f, refetchIntervalSec: 30, maxAgeSec: 60, nowSec: () => now })
    expect(await codeOf(c.getKey('k1', 'ES256'))).toEqual(['ERR_UNAVAILABLE', 'jwks_fetch_failed'])
    expect(await codeOf(c.getKey('k1', 'ES256'))).toEqual(['ERR_UNAVAILABLE', 'jwks_unavailable'])
    expect(f.calls.n).toBe(1)
    now = 130
    doc = { keys: 'nope' }
    expect(await codeOf(c.getKey('k1', 'ES256'))).toEqual(['ERR_UNAVAILABLE', 'jwks_invalid'])
    now = 160
    doc = { keys: [await jwk('k1')] }
    await c.getKey('k1', 'ES256')
    now = 230
    doc = new Error('down again')
    await expect(c.getKey('k1', 'ES256')).resolves.toBeDefined()
    expect(f.calls.n).toBe(4)
  })

  it('refuses negative options', () => {
    expect(() => new JwksCache({ fetchJwks: async () => ({ keys: [] }), overlapSec: -1 })).toThrow(RangeError)
  })
})
