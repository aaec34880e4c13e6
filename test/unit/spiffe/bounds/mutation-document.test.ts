import { generateKeyPairSync, type KeyObject } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { IdentityError } from '../../../../src/errors/identity-error.js'
import {
  BOUNDS_DOCUMENT_TYPE,
  BoundsSet,
  MAX_BOUNDS_DOCUMENT_LENGTH,
  signBoundsDocument,
  verifyBoundsDocument,
  type BoundsIssue,
} from '../../../../src/spiffe/bounds/index.js'
import { JwtBundle } from '../../../../src/spiffe/bundle/jwt-bundle.js'
import type { JwtBundleSource } from '../../../../src/spiffe/bundle/sources.js'
import { generateKeyPair, KeyObjectSigner } from '../../../../src/spiffe/key-signer.js'
import type { SignatureAlgorithm, Signer } from '../../../../src/spiffe/signer.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'

// Exact refusals (code and message) of signBoundsDocument and verifyBoundsDocument,
// each payload field's parsing and boundaries, and the canonical encoding
// (test/mutation-survivors.md). Test titles stay plain: Stryker's vitest runner
// selects tests by name.

const td = TrustDomain.fromString('corp.example')
const NOW = new Date(Date.UTC(2026, 0, 1))
const NOW_S = NOW.getTime() / 1000
const kp = generateKeyPair('ec-p256')
const signer = new KeyObjectSigner(kp.privateKey)
const jwk = (k: KeyObject) => k.export({ format: 'jwk' })
const bundle = new JwtBundle(td, [['k1', jwk(kp.publicKey)]])
const set = BoundsSet.parse(td, { '/agents/payments': { jwt_svid_ttl: 300 } })
const sign = (o: Partial<Parameters<typeof signBoundsDocument>[0]> = {}) => signBoundsDocument({ set, sequence: 7, issuedAt: NOW, signer, kid: 'k1', ...o })

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url')
const raw = (s: string) => Buffer.from(s).toString('base64url')
const HEADER = { alg: 'ES256', kid: 'k1', typ: BOUNDS_DOCUMENT_TYPE }
const PAYLOAD = { trust_domain: 'corp.example', sequence: 7, issued_at: NOW_S, bounds: [{ prefix: '/a', jwt_svid_ttl: 60 }] }

/** A document over the given header and payload segments, validly signed by `signer` with ES256. */
async function signedSegments(h: string, p: string, by: Signer = signer, alg: SignatureAlgorithm = 'ES256'): Promise<string> {
  const sig = Buffer.from(await by.sign(Buffer.from(`${h}.${p}`), alg)).toString('base64url')
  return `${h}.${p}.${sig}`
}
const signed = (header: Record<string, unknown> = HEADER, payload: Record<string, unknown> = PAYLOAD) => signedSegments(b64(header), b64(payload))
const withPayload = (o: Record<string, unknown>) => signed(HEADER, { ...PAYLOAD, ...o })
const withHeader = (o: Record<string, unknown>) => signed({ ...HEADER, ...o })

interface Refusal {
  code: string
  message: string
  cause: unknown
  details: Readonly<Record<string, unknown>> | undefined
}

async function refusal(p: Promise<unknown>): Promise<Refusal> {
  try {
    await p
  } catch (err) {
    expect(err).toBeInstanceOf(IdentityError)
    const e = err as IdentityError
    return { code: e.code, message: e.message, cause: e.cause, details: e.details }
  }
  throw new Error('expected a refusal')
}
const verify = (doc: string, opts: Parameters<typeof verifyBoundsDocument>[2] = {}, source: JwtBundleSource = bundle) => verifyBoundsDocument(doc, source, opts)
const invalidMsg = async (doc: string | Promise<string>, opts: Parameters<typeof verifyBoundsDocument>[2] = {}) => {
  const r = await refusal(verify(await doc, opts))
  expect(r.code).toBe('ERR_BOUNDS_INVALID')
  return r.message
}
const untrustedMsg = async (doc: string | Promise<string>, opts: Parameters<typeof verifyBoundsDocument>[2] = {}, source: JwtBundleSource = bundle) => {
  const r = await refusal(verify(await doc, opts, source))
  expect(r.code).toBe('ERR_BOUNDS_UNTRUSTED')
  return r.message
}

/** A signer that records what it was asked to sign and returns `sig`. */
function fakeSigner(publicKey: KeyObject, sig: (data: Uint8Array) => unknown): Signer & { calls: [Uint8Array, SignatureAlgorithm][] } {
  const calls: [Uint8Array, SignatureAlgorithm][] = []
  return {
    publicKey,
    calls,
    sign: async (data: Uint8Array, alg: SignatureAlgorithm) => {
      calls.push([data, alg])
      return sig(data) as Uint8Array
    },
  }
}

describe('signBoundsDocument option checks', () => {
  it('set must be a BoundsSet', async () => {
    await expect(sign({ set: set.toJSON() as unknown as BoundsSet })).rejects.toThrow(new TypeError('set must be a BoundsSet'))
  })

  it('sequence must be a non-negative safe integer; 0 and the largest safe integer are accepted', async () => {
    for (const sequence of [-1, 1.5, Number.NaN, 2 ** 53, '7' as unknown as number]) {
      await expect(sign({ sequence })).rejects.toThrow(new RangeError('sequence must be a non-negative integer'))
    }
    const zero = await sign({ sequence: 0 })
    expect((await verify(zero)).sequence).toBe(0)
    const top = await sign({ sequence: Number.MAX_SAFE_INTEGER })
    expect((await verify(top)).sequence).toBe(Number.MAX_SAFE_INTEGER)
  })

  it('issuedAt must be a valid Date', async () => {
    for (const issuedAt of [NOW.getTime() as unknown as Date, new Date(Number.NaN), '2026-01-01' as unknown as Date]) {
      await expect(sign({ issuedAt })).rejects.toThrow(new TypeError('issuedAt must be a valid Date'))
    }
  })

  it('kid must be a non-empty string; one character is enough', async () => {
    for (const kid of ['', 5 as unknown as string, undefined as unknown as string]) {
      await expect(sign({ kid })).rejects.toThrow(new TypeError('kid must be a non-empty string'))
    }
    const doc = await sign({ kid: 'x' })
    expect((await verify(doc, {}, new JwtBundle(td, [['x', jwk(kp.publicKey)]]))).kid).toBe('x')
  })

  it('signer must have a sign function and a public key', async () => {
    const bad = [
      null,
      undefined,
      { publicKey: kp.publicKey },
      { publicKey: kp.publicKey, sign: 'no' },
      { sign: signer.sign.bind(signer) },
      { publicKey: null, sign: signer.sign.bind(signer) },
    ]
    for (const s of bad) {
      await expect(sign({ signer: s as unknown as Signer })).rejects.toThrow(new TypeError('signer must implement Signer'))
    }
  })

  it('a key with no JOSE algorithm, or an unknown alg, cannot sign a bounds document', async () => {
    const ed = generateKeyPairSync('ed25519')
    const edSigner = fakeSigner(ed.publicKey, () => new Uint8Array(64))
    await expect(sign({ signer: edSigner })).rejects.toThrow(new TypeError('signer key cannot sign a bounds document'))
    await expect(sign({ alg: 'HS256' as SignatureAlgorithm })).rejects.toThrow(new TypeError('signer key cannot sign a bounds document'))
    await expect(sign({ alg: 'none' as SignatureAlgorithm })).rejects.toThrow(new TypeError('signer key cannot sign a bounds document'))
    expect(edSigner.calls).toEqual([])
  })

  it('an alg the key does not fit is refused by name', async () => {
    await expect(sign({ alg: 'ES384' })).rejects.toThrow(new TypeError('signer key cannot sign with ES384'))
    await expect(sign({ alg: 'RS256' })).rejects.toThrow(new TypeError('signer key cannot sign with RS256'))
  })

  it('the default alg comes from the key: ES384 for P-384, ES512 for P-521', async () => {
    const p384 = generateKeyPair('ec-p384')
    const d384 = await sign({ signer: new KeyObjectSigner(p384.privateKey) })
    expect(JSON.parse(Buffer.from(d384.split('.')[0]!, 'base64url').toString())).toEqual({ alg: 'ES384', kid: 'k1', typ: BOUNDS_DOCUMENT_TYPE })
    expect(Buffer.from(d384.split('.')[2]!, 'base64url').length).toBe(96)
    expect((await verify(d384, {}, new JwtBundle(td, [['k1', jwk(p384.publicKey)]]))).kid).toBe('k1')
    const p521 = generateKeyPair('ec-p521')
    const d521 = await sign({ signer: new KeyObjectSigner(p521.privateKey) })
    expect(Buffer.from(d521.split('.')[2]!, 'base64url').length).toBe(132)
    expect((await verify(d521, {}, new JwtBundle(td, [['k1', jwk(p521.publicKey)]]))).kid).toBe('k1')
  })
})

describe('signBoundsDocument encoding', () => {
  it('header and payload are canonical JSON in a fixed member order, signed as ASCII', async () => {
    const s = fakeSigner(kp.publicKey, () => new Uint8Array(64).fill(1))
    const doc = await sign({ signer: s, issuedAt: new Date(NOW.getTime() + 999) })
    const [h, p, sig] = doc.split('.') as [string, string, string]
    expect(Buffer.from(h, 'base64url').toString()).toBe('{"alg":"ES256","kid":"k1","typ":"warrant-bounds+jwt"}')
    expect(Buffer.from(p, 'base64url').toString()).toBe(
      `{"trust_domain":"corp.example","sequence":7,"issued_at":${NOW_S},"bounds":[{"prefix":"/agents/payments","jwt_svid_ttl":300}]}`,
    )
    expect(sig).toBe(Buffer.alloc(64, 1).toString('base64url'))
    expect(s.calls).toHaveLength(1)
    expect(Buffer.from(s.calls[0]![0]).toString('latin1')).toBe(`${h}.${p}`)
    expect(s.calls[0]![1]).toBe('ES256')
    expect(doc.split('.')).toHaveLength(3)
  })

  it('issued_at is the issue time in whole seconds, rounded down', async () => {
    const part = async (issuedAt: Date) => JSON.parse(Buffer.from((await sign({ issuedAt })).split('.')[1]!, 'base64url').toString()) as { issued_at: number }
    expect((await part(new Date(NOW.getTime() + 999))).issued_at).toBe(NOW_S)
    expect((await part(new Date(NOW.getTime() + 1000))).issued_at).toBe(NOW_S + 1)
    expect((await part(new Date(0))).issued_at).toBe(0)
  })

  it('the signature is the bytes of the returned view, not of its whole buffer', async () => {
    const backing = new Uint8Array(100).map((_, i) => i)
    const view = backing.subarray(10, 74)
    const doc = await sign({ signer: fakeSigner(kp.publicKey, () => view) })
    expect(doc.split('.')[2]).toBe(Buffer.from(backing.slice(10, 74)).toString('base64url'))
  })

  it('an explicit alg is used and passed to the signer', async () => {
    const rsa = generateKeyPair('rsa-2048')
    const s = new KeyObjectSigner(rsa.privateKey)
    const doc = await sign({ signer: s, alg: 'PS384', kid: 'r1' })
    expect(JSON.parse(Buffer.from(doc.split('.')[0]!, 'base64url').toString())).toEqual({ alg: 'PS384', kid: 'r1', typ: BOUNDS_DOCUMENT_TYPE })
    expect((await verify(doc, {}, new JwtBundle(td, [['r1', jwk(rsa.publicKey)]]))).kid).toBe('r1')
  })

  it('refuses an unusable signature: not bytes, empty, or an ECDSA signature of the wrong length', async () => {
    const cases: [() => unknown, string][] = [
      () => [...new Uint8Array(64)],
      () => Buffer.alloc(64).toString('base64'),
      () => undefined,
      () => new Uint8Array(0),
      () => new Uint8Array(63),
      () => new Uint8Array(65),
      () => new Uint8Array(72),
    ].map((f) => [f, 'signer returned an unusable ES256 signature'])
    for (const [f, msg] of cases) {
      await expect(sign({ signer: fakeSigner(kp.publicKey, f) })).rejects.toThrow(new TypeError(msg))
    }
    const p384 = generateKeyPair('ec-p384').publicKey
    await expect(sign({ signer: fakeSigner(p384, () => new Uint8Array(64)) })).rejects.toThrow(new TypeError('signer returned an unusable ES384 signature'))
    expect(await sign({ signer: fakeSigner(p384, () => new Uint8Array(96)) })).toMatch(/^[\w-]+\.[\w-]+\.[\w-]{128}$/)
    const p521 = generateKeyPair('ec-p521').publicKey
    await expect(sign({ signer: fakeSigner(p521, () => new Uint8Array(130)) })).rejects.toThrow(new TypeError('signer returned an unusable ES512 signature'))
    expect(await sign({ signer: fakeSigner(p521, () => new Uint8Array(132)) })).toMatch(/^[\w-]+\.[\w-]+\.[\w-]{176}$/)
  })

  it('an RSA signature of any non-empty length is passed through; an empty one is refused', async () => {
    const rsa = generateKeyPair('rsa-2048').publicKey
    const doc = await sign({ signer: fakeSigner(rsa, () => new Uint8Array([1, 2, 3])) })
    expect(doc.split('.')[2]).toBe('AQID')
    expect(JSON.parse(Buffer.from(doc.split('.')[0]!, 'base64url').toString()).alg).toBe('RS256')
    await expect(sign({ signer: fakeSigner(rsa, () => new Uint8Array(0)) })).rejects.toThrow(new TypeError('signer returned an unusable RS256 signature'))
  })

  it('signer errors propagate unchanged', async () => {
    const boom = new Error('hsm offline')
    const s: Signer = { publicKey: kp.publicKey, sign: () => Promise.reject(boom) }
    await expect(sign({ signer: s })).rejects.toBe(boom)
  })
})

describe('verifyBoundsDocument framing', () => {
  it('doc must be a string', async () => {
    await expect(verify(5 as unknown as string)).rejects.toThrow(new TypeError('doc must be a string'))
  })

  it('too large: more than MAX_BOUNDS_DOCUMENT_LENGTH characters; exactly that many is parsed', async () => {
    expect(MAX_BOUNDS_DOCUMENT_LENGTH).toBe(1024 * 1024)
    expect(await invalidMsg('a'.repeat(MAX_BOUNDS_DOCUMENT_LENGTH + 1))).toBe('bounds document: too large')
    expect(await invalidMsg('a'.repeat(MAX_BOUNDS_DOCUMENT_LENGTH))).toBe('bounds document: not a compact JWS')
  })

  it('not a compact JWS: two or four segments', async () => {
    const doc = await signed()
    const [h, p, s] = doc.split('.')
    expect(await invalidMsg(`${h}.${p}`)).toBe('bounds document: not a compact JWS')
    expect(await invalidMsg(`${h}.${p}.${s}.x`)).toBe('bounds document: not a compact JWS')
    expect(await invalidMsg('')).toBe('bounds document: not a compact JWS')
  })

  it('surrounding whitespace is trimmed', async () => {
    const doc = await signed()
    expect((await verify(` \n${doc}\t \n`)).sequence).toBe(7)
  })

  it('the header must be base64url, anchored at both ends and non-empty', async () => {
    const doc = await signed()
    const [h, p, s] = doc.split('.') as [string, string, string]
    for (const bad of ['', `+${h}`, `${h}+`, `${h}=`, `!${h}`, `${h.slice(0, 4)} ${h.slice(4)}`, '/']) {
      expect(await invalidMsg(`${bad}.${p}.${s}`)).toBe('bounds document: header is not base64url')
    }
  })

  it('the payload must be base64url', async () => {
    const doc = await signed()
    const [h, p, s] = doc.split('.') as [string, string, string]
    for (const bad of ['', `+${p}`, `${p}=`, `${p}/`]) {
      expect(await invalidMsg(`${h}.${bad}.${s}`)).toBe('bounds document: payload is not base64url')
    }
  })

  it('every base64url character is accepted in a segment', async () => {
    // a kid whose JSON encodes to both "-" and "_"
    const kid = '>>>???~~~'
    const h = b64({ ...HEADER, kid })
    expect(h).toMatch(/-/)
    expect(h).toMatch(/_/)
    expect(await untrustedMsg(signed({ ...HEADER, kid }))).toBe(`bounds document: no key "${kid}" in the JWT bundle of "corp.example"`)
    const all = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
    expect(await invalidMsg(`${all}.${all}.${all}`)).toBe('bounds document: header is not JSON')
  })

  it('a segment that is not UTF-8 JSON', async () => {
    const doc = await signed()
    const [h, p, s] = doc.split('.') as [string, string, string]
    expect(await invalidMsg(`${raw('{"alg":')}.${p}.${s}`)).toBe('bounds document: header is not JSON')
    // JSON whose string holds a byte that is not UTF-8 (a lenient decoder would read U+FFFD)
    const notUtf8 = Buffer.concat([Buffer.from('{"alg":"ES256","kid":"k1","typ":"'), Buffer.from([0xff]), Buffer.from('"}')]).toString('base64url')
    expect(await invalidMsg(`${notUtf8}.${p}.${s}`)).toBe('bounds document: header is not JSON')
    expect(await invalidMsg(`${h}.${raw('{"trust_domain":')}.${s}`)).toBe('bounds document: payload is not JSON')
    const payloadNotUtf8 = Buffer.concat([Buffer.from('{"trust_domain":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]).toString('base64url')
    expect(await invalidMsg(`${h}.${payloadNotUtf8}.${s}`)).toBe('bounds document: payload is not JSON')
  })

  it('a segment that is JSON but not an object', async () => {
    const doc = await signed()
    const [h, p, s] = doc.split('.') as [string, string, string]
    for (const v of ['null', '5', '"x"', '[]', '[{}]', 'true']) {
      expect(await invalidMsg(`${raw(v)}.${p}.${s}`)).toBe('bounds document: header is not a JSON object')
      expect(await invalidMsg(`${h}.${raw(v)}.${s}`)).toBe('bounds document: payload is not a JSON object')
    }
  })
})

describe('verifyBoundsDocument header', () => {
  it('unexpected header members are named, cut to 32 characters', async () => {
    expect(await invalidMsg(withHeader({ jku: 'https://x' }))).toBe('bounds document: unexpected header "jku"')
    const long = `x${'y'.repeat(40)}`
    expect(await invalidMsg(withHeader({ [long]: 1 }))).toBe(`bounds document: unexpected header "${long.slice(0, 32)}"`)
    // checked before typ / alg / kid
    expect(await invalidMsg(signed({ crit: ['b64'] }))).toBe('bounds document: unexpected header "crit"')
  })

  it('typ must be the bounds document type', async () => {
    for (const typ of [undefined, 'JWT', 'warrant-bounds+JWT', 5]) {
      const h: Record<string, unknown> = { ...HEADER, typ }
      if (typ === undefined) delete h.typ
      expect(await invalidMsg(signed(h))).toBe('bounds document: typ must be "warrant-bounds+jwt"')
    }
  })

  it('alg must be a known JOSE signature algorithm', async () => {
    for (const alg of [undefined, 'none', 'HS256', 'EdDSA', 'es256', 5, ['ES256']]) {
      const h: Record<string, unknown> = { ...HEADER, alg }
      if (alg === undefined) delete h.alg
      expect(await invalidMsg(signed(h))).toBe('bounds document: alg is missing or not allowed')
    }
  })

  it('kid must be a non-empty string', async () => {
    for (const kid of [undefined, '', 5, ['k1']]) {
      const h: Record<string, unknown> = { ...HEADER, kid }
      if (kid === undefined) delete h.kid
      expect(await invalidMsg(signed(h))).toBe('bounds document: kid is missing')
    }
  })
})

describe('verifyBoundsDocument trust domain and key', () => {
  it('trust_domain must be a string', async () => {
    for (const trust_domain of [undefined, 5, null, ['corp.example']]) {
      const p: Record<string, unknown> = { ...PAYLOAD, trust_domain }
      if (trust_domain === undefined) delete p.trust_domain
      expect(await invalidMsg(signed(HEADER, p))).toBe('bounds document: trust_domain is missing')
    }
  })

  it('trust_domain must be a valid trust domain name, the parse error kept as cause', async () => {
    for (const trust_domain of ['', 'Corp.Example', 'a/b', 'corp example']) {
      const r = await refusal(verify(await withPayload({ trust_domain })))
      expect(r.code).toBe('ERR_BOUNDS_INVALID')
      expect(r.message).toBe('bounds document: trust_domain is invalid')
      expect(r.cause).toBeInstanceOf(IdentityError)
    }
  })

  it('another trust domain than the expected one is untrusted, both named', async () => {
    const other = TrustDomain.fromString('partner.example')
    expect(await untrustedMsg(signed(), { trustDomain: other })).toBe('bounds document: is for trust domain "corp.example", expected "partner.example"')
    expect((await verify(await signed(), { trustDomain: TrustDomain.fromString('corp.example') })).trustDomain.name).toBe('corp.example')
  })

  it('no bundle for the trust domain is untrusted, the bundle error kept as cause', async () => {
    const otherBundle = new JwtBundle(TrustDomain.fromString('partner.example'), [['k1', jwk(kp.publicKey)]])
    const r = await refusal(verify(await signed(), {}, otherBundle))
    expect(r.code).toBe('ERR_BOUNDS_UNTRUSTED')
    expect(r.message).toBe('bounds document: no usable JWT bundle for trust domain "corp.example"')
    expect((r.cause as IdentityError).code).toBe('ERR_BUNDLE_NOT_FOUND')
  })

  it('an unusable bundle is untrusted, the bundle error kept as cause', async () => {
    const cause = new IdentityError('ERR_BUNDLE_INVALID', 'JWT authority "k1" cannot be imported')
    const source = {
      getJwtBundleForTrustDomain: () => ({
        findKey: () => {
          throw cause
        },
      }),
    } as unknown as JwtBundleSource
    const r = await refusal(verify(await signed(), {}, source))
    expect(r.code).toBe('ERR_BOUNDS_UNTRUSTED')
    expect(r.message).toBe('bounds document: no usable JWT bundle for trust domain "corp.example"')
    expect(r.cause).toBe(cause)
  })

  it('other errors of the bundle source propagate unchanged', async () => {
    for (const err of [new Error('cache closed'), new IdentityError('ERR_BOUNDS_INVALID', 'x'), new IdentityError('ERR_INTERNAL', 'y')]) {
      const source = {
        getJwtBundleForTrustDomain: () => {
          throw err
        },
      } as unknown as JwtBundleSource
      await expect(verify(await signed(), {}, source)).rejects.toBe(err)
    }
  })

  it('an unknown kid is untrusted, named and cut to 64 characters', async () => {
    expect(await untrustedMsg(withHeader({ kid: 'nope' }))).toBe('bounds document: no key "nope" in the JWT bundle of "corp.example"')
    const long = `k${'2'.repeat(80)}`
    expect(await untrustedMsg(withHeader({ kid: long }))).toBe(`bounds document: no key "${long.slice(0, 64)}" in the JWT bundle of "corp.example"`)
  })

  it('a key that cannot verify the header alg is untrusted, kid cut to 64 characters', async () => {
    expect(await untrustedMsg(withHeader({ alg: 'ES384' }))).toBe('bounds document: key "k1" cannot verify ES384')
    expect(await untrustedMsg(withHeader({ alg: 'RS256' }))).toBe('bounds document: key "k1" cannot verify RS256')
    const long = `k${'3'.repeat(80)}`
    const b = new JwtBundle(td, [[long, jwk(kp.publicKey)]])
    expect(await untrustedMsg(withHeader({ alg: 'PS256', kid: long }), {}, b)).toBe(`bounds document: key "${long.slice(0, 64)}" cannot verify PS256`)
  })

  it('a bad signature is untrusted with the verifier error as cause', async () => {
    const doc = await signed()
    const [h, p, s] = doc.split('.') as [string, string, string]
    const flipped = Buffer.from(s, 'base64url')
    flipped[0] = flipped[0]! ^ 1
    for (const bad of [flipped.toString('base64url'), '', s.slice(0, 20)]) {
      const r = await refusal(verify(`${h}.${p}.${bad}`))
      expect(r.code).toBe('ERR_BOUNDS_UNTRUSTED')
      expect(r.message).toBe('bounds document: signature verification failed')
      expect(r.cause).toBeInstanceOf(Error)
    }
    // a signature over another payload
    const other = (await withPayload({ sequence: 8 })).split('.')[2]
    expect(await untrustedMsg(`${h}.${p}.${other}`)).toBe('bounds document: signature verification failed')
  })

  it('the signature is checked before the payload members', async () => {
    const doc = await withPayload({ sequence: -1, extra: 1 })
    const [h, p] = doc.split('.')
    expect(await untrustedMsg(`${h}.${p}.${'A'.repeat(86)}`)).toBe('bounds document: signature verification failed')
  })

  it('verifies with the RSA algorithm named in the header', async () => {
    const rsa = generateKeyPair('rsa-2048')
    const rs = new KeyObjectSigner(rsa.privateKey)
    const b = new JwtBundle(td, [['r1', jwk(rsa.publicKey)]])
    for (const alg of ['RS384', 'PS512'] as const) {
      const doc = await signedSegments(b64({ alg, kid: 'r1', typ: BOUNDS_DOCUMENT_TYPE }), b64(PAYLOAD), rs, alg)
      expect((await verify(doc, {}, b)).kid).toBe('r1')
      // the same signature under another alg of the key fails
      const [, p, s] = doc.split('.')
      const h2 = b64({ alg: alg === 'RS384' ? 'RS256' : 'PS256', kid: 'r1', typ: BOUNDS_DOCUMENT_TYPE })
      expect(await untrustedMsg(`${h2}.${p}.${s}`, {}, b)).toBe('bounds document: signature verification failed')
    }
  })
})

describe('verifyBoundsDocument payload members', () => {
  it('sequence must be a non-negative safe integer; 0 is accepted', async () => {
    for (const sequence of [-1, 1.5, '7', null, 2 ** 53, undefined]) {
      const p: Record<string, unknown> = { ...PAYLOAD, sequence }
      if (sequence === undefined) delete p.sequence
      expect(await invalidMsg(signed(HEADER, p))).toBe('bounds document: sequence must be a non-negative integer')
    }
    expect((await verify(await withPayload({ sequence: 0 }))).sequence).toBe(0)
    expect((await verify(await withPayload({ sequence: Number.MAX_SAFE_INTEGER }))).sequence).toBe(Number.MAX_SAFE_INTEGER)
  })

  it('issued_at must be a NumericDate from 0 to 8.64e12 seconds', async () => {
    for (const issued_at of [-1, -0.5, '1', null, 8.64e12 + 1, 1e300, undefined, true]) {
      const p: Record<string, unknown> = { ...PAYLOAD, issued_at }
      if (issued_at === undefined) delete p.issued_at
      expect(await invalidMsg(signed(HEADER, p))).toBe('bounds document: issued_at must be a NumericDate')
    }
    const inf = raw(JSON.stringify(PAYLOAD).replace(`"issued_at":${NOW_S}`, '"issued_at":1e400'))
    expect(await invalidMsg(signedSegments(b64(HEADER), inf))).toBe('bounds document: issued_at must be a NumericDate')
    expect((await verify(await withPayload({ issued_at: 0 }))).issuedAt.getTime()).toBe(0)
    expect((await verify(await withPayload({ issued_at: 8.64e12 }))).issuedAt.getTime()).toBe(8.64e15)
    expect((await verify(await withPayload({ issued_at: 1.5 }))).issuedAt.getTime()).toBe(1500)
  })

  it('bounds must be a list (the object form of BoundsSet.parse is not taken)', async () => {
    for (const bounds of [{ '/a': { jwt_svid_ttl: 60 } }, {}, null, 'x', undefined]) {
      const p: Record<string, unknown> = { ...PAYLOAD, bounds }
      if (bounds === undefined) delete p.bounds
      expect(await invalidMsg(signed(HEADER, p))).toBe('bounds document: bounds must be a list')
    }
    expect((await verify(await withPayload({ bounds: [] }))).set.size).toBe(0)
  })

  it('unexpected members are named, cut to 32 characters', async () => {
    expect(await invalidMsg(withPayload({ exp: 1 }))).toBe('bounds document: unexpected member "exp"')
    const long = `m${'n'.repeat(40)}`
    expect(await invalidMsg(withPayload({ [long]: 1 }))).toBe(`bounds document: unexpected member "${long.slice(0, 32)}"`)
  })

  it('member checks run in order: sequence, issued_at, bounds, then unexpected members', async () => {
    expect(await invalidMsg(withPayload({ sequence: -1, issued_at: -1, bounds: {}, extra: 1 }))).toBe(
      'bounds document: sequence must be a non-negative integer',
    )
    expect(await invalidMsg(withPayload({ issued_at: -1, bounds: {}, extra: 1 }))).toBe('bounds document: issued_at must be a NumericDate')
    expect(await invalidMsg(withPayload({ bounds: {}, extra: 1 }))).toBe('bounds document: bounds must be a list')
    // malformed members come before the freshness checks
    expect(await invalidMsg(withPayload({ extra: 1 }), { minSequence: 100, now: new Date(0), maxAgeSeconds: 1 })).toBe(
      'bounds document: unexpected member "extra"',
    )
  })

  it('bounds that do not parse keep BoundsSet.parse message, issues and cause', async () => {
    const r = await refusal(
      verify(
        await withPayload({
          bounds: [
            { prefix: '/a', jwt_svid_ttl: 60 },
            { prefix: '/a/b', jwt_svid_ttl: 120 },
          ],
        }),
      ),
    )
    expect(r.code).toBe('ERR_BOUNDS_INVALID')
    const issues: BoundsIssue[] = [{ path: '/a/b.jwt_svid_ttl', message: 'widens ancestor "/a": 120s is wider than 60s' }]
    expect(r.message).toBe('bounds document: invalid bounds: /a/b.jwt_svid_ttl: widens ancestor "/a": 120s is wider than 60s')
    expect(r.details).toEqual({ issues })
    const cause = r.cause as IdentityError
    expect(cause).toBeInstanceOf(IdentityError)
    expect(cause.code).toBe('ERR_BOUNDS_INVALID')
    expect(cause.message).toBe('invalid bounds: /a/b.jwt_svid_ttl: widens ancestor "/a": 120s is wider than 60s')
    expect(r.details).not.toBe(cause.details)
    expect(r.details).toEqual(cause.details)
  })

  it('a malformed bounds entry is reported through the document error', async () => {
    const r = await refusal(verify(await withPayload({ bounds: [5, { jwt_svid_ttl: 1 }] })))
    expect(r.message).toBe('bounds document: invalid bounds: 0: must be an object; 1.prefix: is required')
    expect(r.details).toEqual({
      issues: [
        { path: '0', message: 'must be an object' },
        { path: '1.prefix', message: 'is required' },
      ],
    })
  })
})

describe('verifyBoundsDocument freshness and rollback', () => {
  it('minSequence: equal is accepted, greater refuses with both numbers', async () => {
    const doc = await signed()
    expect((await verify(doc, { minSequence: 7 })).sequence).toBe(7)
    expect((await verify(doc, { minSequence: 0 })).sequence).toBe(7)
    expect(await untrustedMsg(doc, { minSequence: 8 })).toBe('bounds document: sequence 7 is older than 8')
    expect(await untrustedMsg(withPayload({ sequence: 0 }), { minSequence: 1 })).toBe('bounds document: sequence 0 is older than 1')
  })

  it('default leeway is 30 seconds into the future', async () => {
    const now = new Date((NOW_S - 30) * 1000)
    expect((await verify(await signed(), { now })).sequence).toBe(7)
    expect(await untrustedMsg(signed(), { now: new Date((NOW_S - 31) * 1000) })).toBe('bounds document: issued in the future')
    expect(await untrustedMsg(signed(), { now: new Date((NOW_S - 30) * 1000 - 1) })).toBe('bounds document: issued in the future')
  })

  it('an explicit leeway replaces the default, 0 included', async () => {
    expect((await verify(await signed(), { now: NOW, leewaySeconds: 0 })).sequence).toBe(7)
    expect(await untrustedMsg(signed(), { now: new Date(NOW.getTime() - 1), leewaySeconds: 0 })).toBe('bounds document: issued in the future')
    expect(await untrustedMsg(signed(), { now: new Date(NOW.getTime() - 1000), leewaySeconds: 0 })).toBe('bounds document: issued in the future')
    expect((await verify(await signed(), { now: new Date(NOW.getTime() - 100_000), leewaySeconds: 100 })).sequence).toBe(7)
    expect(await untrustedMsg(signed(), { now: new Date(NOW.getTime() - 100_001), leewaySeconds: 100 })).toBe('bounds document: issued in the future')
  })

  it('maxAgeSeconds: exactly that old is accepted, older refuses naming the limit', async () => {
    expect((await verify(await signed(), { now: new Date(NOW.getTime() + 60_000), maxAgeSeconds: 60 })).sequence).toBe(7)
    expect(await untrustedMsg(signed(), { now: new Date(NOW.getTime() + 60_001), maxAgeSeconds: 60 })).toBe('bounds document: older than 60s')
    expect(await untrustedMsg(signed(), { now: new Date(NOW.getTime() + 1), maxAgeSeconds: 0 })).toBe('bounds document: older than 0s')
    expect((await verify(await signed(), { now: NOW, maxAgeSeconds: 0 })).sequence).toBe(7)
  })

  it('without maxAgeSeconds any age is accepted; without now neither check runs', async () => {
    expect((await verify(await signed(), { now: new Date(NOW.getTime() + 10 * 365 * 86_400_000) })).sequence).toBe(7)
    expect((await verify(await signed(), { maxAgeSeconds: 1 })).sequence).toBe(7)
    expect((await verify(await signed(), { leewaySeconds: 0 })).sequence).toBe(7)
    expect((await verify(await withPayload({ issued_at: 8.64e12 }), { maxAgeSeconds: 1, leewaySeconds: 0 })).sequence).toBe(7)
  })

  it('rollback is checked before freshness, the future before age', async () => {
    expect(await untrustedMsg(signed(), { minSequence: 8, now: new Date(0), maxAgeSeconds: 1 })).toBe('bounds document: sequence 7 is older than 8')
    expect(await untrustedMsg(signed(), { now: new Date(0), maxAgeSeconds: -1e12 })).toBe('bounds document: issued in the future')
  })
})

describe('verifyBoundsDocument result', () => {
  it('is a frozen document with the parsed fields', async () => {
    const v = await verify(await withPayload({ sequence: 42, issued_at: NOW_S + 5 }), { trustDomain: td })
    expect(Object.isFrozen(v)).toBe(true)
    expect(Object.keys(v).sort()).toEqual(['issuedAt', 'kid', 'sequence', 'set', 'trustDomain'])
    expect(v.trustDomain.name).toBe('corp.example')
    expect(v.sequence).toBe(42)
    expect(v.issuedAt).toEqual(new Date(NOW.getTime() + 5000))
    expect(v.kid).toBe('k1')
    expect(v.set).toBeInstanceOf(BoundsSet)
    expect(v.set.toJSON()).toEqual([{ prefix: '/a', jwt_svid_ttl: 60 }])
    expect(v.set.trustDomain.name).toBe('corp.example')
  })

  it('a document from signBoundsDocument round-trips', async () => {
    const doc = await sign({ sequence: 3, issuedAt: new Date(NOW.getTime() + 1500) })
    const v = await verify(doc, { trustDomain: td, now: NOW, maxAgeSeconds: 0 })
    expect(v.sequence).toBe(3)
    expect(v.issuedAt).toEqual(new Date(NOW.getTime() + 1000))
    expect(v.set.toJSON()).toEqual(set.toJSON())
  })
})
