import 'reflect-metadata'
import { generateKeyPairSync, webcrypto, type JsonWebKey } from 'node:crypto'
import { X509CertificateGenerator } from '@peculiar/x509'
import { CompactSign, exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose'
import { beforeAll, describe, expect, it } from 'vitest'
import { IdentityError } from '../../../src/errors/index.js'
import {
  accessTokenHash,
  createDpopNonces,
  createDpopProof,
  jwkThumbprint,
  MemoryReplayCache,
  normalizeHtu,
  verifyDpopProof,
  x5tS256,
  type DpopCheck,
} from '../../../src/tokens/dpop.js'

type CryptoKey = webcrypto.CryptoKey
type CryptoKeyPair = webcrypto.CryptoKeyPair

const NOW = 1_800_000_000
const URL_ = 'https://rs.example.com/api/tools'
const TOKEN = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln'

let keys: CryptoKeyPair
let publicJwk: JWK

beforeAll(async () => {
  keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify'])
  publicJwk = await exportJWK(keys.publicKey)
})

function check(over: Partial<DpopCheck> = {}): DpopCheck {
  return { method: 'POST', url: URL_, nowSec: NOW, replay: new MemoryReplayCache({ nowSec: () => NOW }), ...over }
}

/** A proof with any header and claims, signed by `signer` (default: the test key). */
async function rawProof(
  opts: { header?: Record<string, unknown>; claims?: Record<string, unknown>; signer?: CryptoKey | Uint8Array; omit?: string[] } = {},
): Promise<string> {
  const claims: Record<string, unknown> = { jti: 'j-1', htm: 'POST', htu: URL_, iat: NOW, ...opts.claims }
  for (const k of opts.omit ?? []) delete claims[k]
  const header = { alg: 'ES256', typ: 'dpop+jwt', jwk: publicJwk, ...opts.header }
  return new SignJWT(claims).setProtectedHeader(header).sign(opts.signer ?? keys.privateKey)
}

async function reason(p: Promise<unknown>): Promise<{ code: string; reason: unknown }> {
  try {
    await p
  } catch (err) {
    if (!(err instanceof IdentityError)) throw err
    return { code: err.code, reason: err.details?.['reason'] }
  }
  throw new Error('expected a rejection')
}

const bad = (r: string) => ({ code: 'ERR_DPOP_PROOF_INVALID', reason: r })

describe('verifyDpopProof accepts', () => {
  it('a proof made by createDpopProof, with the thumbprint of its key', async () => {
    const proof = await createDpopProof(keys, { method: 'POST', url: URL_, nowSec: NOW, jti: 'abc' })
    const v = await verifyDpopProof(proof, check())
    expect(v.jti).toBe('abc')
    expect(v.iat).toBe(NOW)
    expect(v.jkt).toBe(await jwkThumbprint(publicJwk as JsonWebKey))
    expect(v.jwk).toEqual(publicJwk)
    expect(v.nonce).toBeUndefined()
  })

  it('an htu that differs only in query, fragment, case of scheme and host, and default port', async () => {
    const proof = await rawProof({ claims: { htu: 'HTTPS://RS.Example.COM:443/api/tools?x=1#f' } })
    await expect(verifyDpopProof(proof, check({ url: 'https://rs.example.com/api/tools?y=2' }))).resolves.toBeDefined()
  })

  it('the edges of the iat window', async () => {
    const cases = [NOW + 10, NOW - 70]
    for (const iat of cases) {
      const proof = await rawProof({ claims: { iat, jti: `edge-${iat}` } })
      await expect(verifyDpopProof(proof, check())).resolves.toMatchObject({ iat })
    }
  })

  it('an ath matching the access token, the expected jkt and a valid nonce', async () => {
    const nonces = createDpopNonces({ windowSec: 30 })
    const nonce = nonces.issue(NOW - 5)
    const proof = await createDpopProof(keys, { method: 'GET', url: URL_, accessToken: TOKEN, nonce, nowSec: NOW })
    const jkt = await jwkThumbprint(publicJwk)
    const v = await verifyDpopProof(proof, check({ method: 'GET', accessToken: TOKEN, expectedJkt: jkt, nonces }))
    expect(v.nonce).toBe(nonce)
  })

  it('Ed25519, RSA-PSS and P-384 keys', async () => {
    const pairs = [
      await webcrypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify']),
      await webcrypto.subtle.generateKey({ name: 'RSA-PSS', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' }, false, [
        'sign',
        'verify',
      ]),
      await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, false, ['sign', 'verify']),
    ] as CryptoKeyPair[]
    for (const pair of pairs) {
      const proof = await createDpopProof(pair, { method: 'POST', url: URL_, nowSec: NOW })
      await expect(verifyDpopProof(proof, check())).resolves.toBeDefined()
    }
  })
})

describe('verifyDpopProof rejects, saying why', () => {
  it('an empty, oversized or malformed proof', async () => {
    expect(await reason(verifyDpopProof('', check()))).toEqual(bad('missing'))
    expect(await reason(verifyDpopProof('a'.repeat(9000), check()))).toEqual(bad('too_large'))
    const good = await rawProof()
    expect(await reason(verifyDpopProof(`${good}.x`, check()))).toEqual(bad('malformed'))
    expect(await reason(verifyDpopProof(good.split('.').slice(0, 2).join('.'), check()))).toEqual(bad('malformed'))
    expect(await reason(verifyDpopProof(`${good}, ${good}`, check()))).toEqual(bad('malformed'))
    expect(await reason(verifyDpopProof('bm90anNvbg.e30.c2ln', check()))).toEqual(bad('malformed'))
  })

  it('a wrong or missing typ', async () => {
    expect(await reason(verifyDpopProof(await rawProof({ header: { typ: 'JWT' } }), check()))).toEqual(bad('typ'))
    expect(await reason(verifyDpopProof(await rawProof({ header: { typ: undefined } }), check()))).toEqual(bad('typ'))
    expect(await reason(verifyDpopProof(await rawProof({ header: { typ: 'at+jwt' } }), check()))).toEqual(bad('typ'))
  })

  it("alg none, an HMAC, or one outside the caller's list", async () => {
    const enc = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url')
    const none = `${enc({ alg: 'none', typ: 'dpop+jwt', jwk: publicJwk })}.${enc({ jti: 'n', htm: 'POST', htu: URL_, iat: NOW })}.AA`
    expect(await reason(verifyDpopProof(none, check()))).toEqual(bad('alg'))
    const hmac = await rawProof({ header: { alg: 'HS256' }, signer: new Uint8Array(32).fill(7) })
    expect(await reason(verifyDpopProof(hmac, check()))).toEqual(bad('alg'))
    const es256 = await rawProof()
    expect(await reason(verifyDpopProof(es256, check({ algorithms: ['ES384'] })))).toEqual(bad('alg'))
  })

  it('a caller allow-list with none or an HMAC is a programmer error', async () => {
    const proof = await rawProof()
    await expect(verifyDpopProof(proof, check({ algorithms: ['ES256', 'none'] }))).rejects.toThrow(TypeError)
    await expect(verifyDpopProof(proof, check({ algorithms: ['HS256'] }))).rejects.toThrow(TypeError)
  })

  it('a missing jwk, a private or symmetric jwk, or one that is no key', async () => {
    expect(await reason(verifyDpopProof(await rawProof({ header: { jwk: undefined } }), check()))).toEqual(bad('jwk_missing'))
    expect(await reason(verifyDpopProof(await rawProof({ header: { jwk: 'x' } }), check()))).toEqual(bad('jwk_missing'))
    const priv = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' })
    expect(await reason(verifyDpopProof(await rawProof({ header: { jwk: priv } }), check()))).toEqual(bad('jwk_private'))
    for (const m of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k']) {
      expect(await reason(verifyDpopProof(await rawProof({ header: { jwk: { ...publicJwk, [m]: 'AAAA' } } }), check()))).toEqual(bad('jwk_private'))
    }
    expect(await reason(verifyDpopProof(await rawProof({ header: { jwk: { kty: 'oct' } } }), check()))).toEqual(bad('jwk_kty'))
    expect(await reason(verifyDpopProof(await rawProof({ header: { jwk: { ...publicJwk, x: 'AAAA' } } }), check()))).toEqual(bad('jwk_invalid'))
  })

  it('a key accepted once for ES256 is not accepted under another alg (the imported-key cache is per alg)', async () => {
    await verifyDpopProof(await rawProof({ claims: { jti: 'cache-1' } }), check())
    const p384 = await generateKeyPair('ES384')
    const proof = await rawProof({ header: { alg: 'ES384' }, claims: { jti: 'cache-2' }, signer: p384.privateKey })
    expect(await reason(verifyDpopProof(proof, check()))).toEqual(bad('jwk_invalid'))
  })

  it('a signature that is not by the header jwk, or tampered', async () => {
    const other = await generateKeyPair('ES256')
    expect(await reason(verifyDpopProof(await rawProof({ signer: other.privateKey }), check()))).toEqual(bad('signature'))
    const good = await rawProof()
    const [h, _p, s] = good.split('.') as [string, string, string]
    const p2 = Buffer.from(JSON.stringify({ jti: 'j-1', htm: 'GET', htu: URL_, iat: NOW })).toString('base64url')
    expect(await reason(verifyDpopProof(`${h}.${p2}.${s}`, check({ method: 'GET' })))).toEqual(bad('signature'))
  })

  it('a jwk that does not suit alg (a P-384 key under ES256)', async () => {
    const p384 = await generateKeyPair('ES384')
    const proof = await rawProof({ header: { jwk: await exportJWK(p384.publicKey) }, signer: keys.privateKey })
    expect(await reason(verifyDpopProof(proof, check()))).toEqual(bad('jwk_invalid'))
  })

  it('a payload that is not a JSON object', async () => {
    for (const body of ['not json', '[1,2]', 'null', '"s"']) {
      const jws = await new CompactSign(new TextEncoder().encode(body))
        .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: publicJwk })
        .sign(keys.privateKey)
      expect(await reason(verifyDpopProof(jws, check()))).toEqual(bad('payload'))
    }
  })

  it('missing or ill-typed claims', async () => {
    for (const c of ['jti', 'htm', 'htu', 'iat']) {
      expect(await reason(verifyDpopProof(await rawProof({ omit: [c] }), check()))).toEqual(bad(c))
    }
    expect(await reason(verifyDpopProof(await rawProof({ claims: { jti: '' } }), check()))).toEqual(bad('jti'))
    expect(await reason(verifyDpopProof(await rawProof({ claims: { jti: 'x'.repeat(257) } }), check()))).toEqual(bad('jti'))
    expect(await reason(verifyDpopProof(await rawProof({ claims: { jti: 5 } }), check()))).toEqual(bad('jti'))
    expect(await reason(verifyDpopProof(await rawProof({ claims: { htm: ['POST'] } }), check()))).toEqual(bad('htm'))
    expect(await reason(verifyDpopProof(await rawProof({ claims: { htu: 1 } }), check()))).toEqual(bad('htu'))
    expect(await reason(verifyDpopProof(await rawProof({ claims: { iat: String(NOW) } }), check()))).toEqual(bad('iat'))
  })

  it('another method or URL', async () => {
    expect(await reason(verifyDpopProof(await rawProof({ claims: { htm: 'post' } }), check()))).toEqual(bad('htm'))
    expect(await reason(verifyDpopProof(await rawProof({ claims: { htm: 'GET' } }), check()))).toEqual(bad('htm'))
    for (const htu of [
      'https://rs.example.com/api/tool',
      'https://rs.example.org/api/tools',
      'http://rs.example.com/api/tools',
      'https://rs.example.com:8443/api/tools',
      'not a url',
      'ftp://rs.example.com/api/tools',
    ]) {
      expect(await reason(verifyDpopProof(await rawProof({ claims: { htu } }), check()))).toEqual(bad('htu'))
    }
  })

  it('an iat outside the window', async () => {
    expect(await reason(verifyDpopProof(await rawProof({ claims: { iat: NOW + 11 } }), check()))).toEqual(bad('iat_future'))
    expect(await reason(verifyDpopProof(await rawProof({ claims: { iat: NOW - 71 } }), check()))).toEqual(bad('iat_expired'))
    expect(await reason(verifyDpopProof(await rawProof({ claims: { iat: NOW - 20 } }), check({ maxAgeSec: 5, clockSkewSec: 0 })))).toEqual(bad('iat_expired'))
  })

  it('a missing or wrong ath when a token is presented', async () => {
    expect(await reason(verifyDpopProof(await rawProof(), check({ accessToken: TOKEN })))).toEqual(bad('ath_missing'))
    const wrong = await rawProof({ claims: { ath: accessTokenHash(`${TOKEN}x`) } })
    expect(await reason(verifyDpopProof(wrong, check({ accessToken: TOKEN })))).toEqual(bad('ath'))
  })

  it('a key other than the one the token is bound to', async () => {
    const other = await generateKeyPair('ES256')
    const jkt = await jwkThumbprint(await exportJWK(other.publicKey))
    expect(await reason(verifyDpopProof(await rawProof(), check({ expectedJkt: jkt })))).toEqual(bad('jkt'))
  })

  it('a missing, stale, forged or ill-typed nonce', async () => {
    const nonces = createDpopNonces({ windowSec: 30 })
    expect(await reason(verifyDpopProof(await rawProof(), check({ nonces })))).toEqual({ code: 'ERR_DPOP_NONCE_REQUIRED', reason: 'nonce_missing' })
    const stale = nonces.issue(NOW - 31)
    expect(await reason(verifyDpopProof(await rawProof({ claims: { nonce: stale } }), check({ nonces })))).toEqual({
      code: 'ERR_DPOP_NONCE_REQUIRED',
      reason: 'nonce_stale',
    })
    const foreign = createDpopNonces({ windowSec: 30 }).issue(NOW)
    expect(await reason(verifyDpopProof(await rawProof({ claims: { nonce: foreign } }), check({ nonces })))).toEqual({
      code: 'ERR_DPOP_NONCE_REQUIRED',
      reason: 'nonce_stale',
    })
    expect(await reason(verifyDpopProof(await rawProof({ claims: { nonce: 42 } }), check({ nonces })))).toEqual(bad('nonce'))
  })

  it('a replayed proof, but not the same jti under another key, nor a proof after a rejected one', async () => {
    const replay = new MemoryReplayCache({ nowSec: () => NOW })
    const proof = await rawProof()
    await verifyDpopProof(proof, check({ replay }))
    expect(await reason(verifyDpopProof(proof, check({ replay })))).toEqual(bad('replay'))
    const other = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify'])
    await expect(
      verifyDpopProof(await createDpopProof(other, { method: 'POST', url: URL_, nowSec: NOW, jti: 'j-1' }), check({ replay })),
    ).resolves.toBeDefined()
    // a proof rejected for its method does not consume its jti
    const fresh = await rawProof({ claims: { jti: 'j-2' } })
    await expect(verifyDpopProof(fresh, check({ replay, method: 'GET' }))).rejects.toThrow(IdentityError)
    await expect(verifyDpopProof(fresh, check({ replay }))).resolves.toBeDefined()
  })
})

describe('MemoryReplayCache', () => {
  it('remembers until expiry, then forgets', () => {
    let now = 100
    const c = new MemoryReplayCache({ nowSec: () => now })
    expect(c.remember('a', 110)).toBe(true)
    expect(c.remember('a', 110)).toBe(false)
    now = 110
    expect(c.remember('a', 120)).toBe(false)
    now = 111
    expect(c.remember('a', 120)).toBe(true)
  })

  it('evicts expired entries first and refuses when full of live ones', () => {
    let now = 100
    const c = new MemoryReplayCache({ maxEntries: 3, nowSec: () => now })
    expect(c.remember('late', 200)).toBe(true)
    expect(c.remember('b', 105)).toBe(true)
    expect(c.remember('c', 105)).toBe(true)
    let err: unknown
    try {
      c.remember('d', 105)
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(IdentityError)
    expect((err as IdentityError).code).toBe('ERR_RESOURCE_EXHAUSTED')
    expect(c.size).toBe(3)
    now = 106
    expect(c.remember('d', 120)).toBe(true)
    expect(c.size).toBe(2)
    expect(c.remember('late', 300)).toBe(false)
  })

  it('refuses a bad size', () => {
    expect(() => new MemoryReplayCache({ maxEntries: 0 })).toThrow(RangeError)
  })
})

describe('createDpopNonces', () => {
  it('accepts its own nonces within the window only', () => {
    const n = createDpopNonces({ windowSec: 30 })
    const nonce = n.issue(1000)
    expect(n.check(nonce, 1000)).toBe(true)
    expect(n.check(nonce, 1030)).toBe(true)
    expect(n.check(nonce, 1031)).toBe(false)
    expect(n.check(nonce, 999)).toBe(false)
  })

  it('shares nonces between instances with one secret, and refuses forgeries', () => {
    const secret = new Uint8Array(32).fill(1)
    const a = createDpopNonces({ secret, windowSec: 30 })
    const b = createDpopNonces({ secret, windowSec: 30 })
    const nonce = a.issue(1000)
    expect(b.check(nonce, 1001)).toBe(true)
    expect(createDpopNonces({ secret: new Uint8Array(32).fill(2), windowSec: 30 }).check(nonce, 1001)).toBe(false)
    const raw = Buffer.from(nonce, 'base64url')
    raw[0] = raw[0]! ^ 1
    expect(b.check(raw.toString('base64url'), 1001)).toBe(false)
    const later = Buffer.from(nonce, 'base64url')
    later.writeBigUInt64BE(1001n, 0)
    expect(b.check(later.toString('base64url'), 1001)).toBe(false)
    for (const s of ['', 'abc', `${nonce}A`, nonce.replace(/.$/, '+')]) expect(b.check(s, 1001)).toBe(false)
  })

  it('refuses a short secret or a bad window', () => {
    expect(() => createDpopNonces({ secret: new Uint8Array(16), windowSec: 30 })).toThrow(RangeError)
    expect(() => createDpopNonces({ windowSec: 0 })).toThrow(RangeError)
  })
})

describe('thumbprints and htu', () => {
  it('jwkThumbprint matches RFC 7638 §3.1', async () => {
    const jwk = {
      kty: 'RSA',
      n: '0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw',
      e: 'AQAB',
      alg: 'RS256',
      kid: '2011-04-29',
    }
    expect(await jwkThumbprint(jwk)).toBe('NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs')
  })

  it('x5tS256 is the SHA-256 thumbprint of the DER certificate (checked against @peculiar/x509)', async () => {
    const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' }
    const k = await webcrypto.subtle.generateKey(alg, false, ['sign', 'verify'])
    const cert = await X509CertificateGenerator.createSelfSigned({ serialNumber: '01', name: 'CN=t', keys: k, signingAlgorithm: alg }, webcrypto)
    const expected = Buffer.from(await cert.getThumbprint('SHA-256', webcrypto as never)).toString('base64url')
    expect(x5tS256(new Uint8Array(cert.rawData))).toBe(expected)
  })

  it('normalizeHtu', () => {
    expect(normalizeHtu('HTTPS://Example.COM:443/a/./b/../c?q#f')).toBe('https://example.com/a/c')
    expect(normalizeHtu('http://example.com:80/')).toBe('http://example.com/')
    expect(normalizeHtu('https://example.com:8443')).toBe('https://example.com:8443/')
    expect(() => normalizeHtu('/relative')).toThrow(TypeError)
    expect(() => normalizeHtu('mailto:a@b')).toThrow(TypeError)
  })
})
