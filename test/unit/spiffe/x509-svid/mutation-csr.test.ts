import { createPublicKey, ECDH, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { SpiffeId } from '../../../../src/spiffe/spiffe-id.js'
import { createCsr, MAX_CSR_BYTES, parseCsr, verifyCsr, type EcdsaVerify } from '../../../../src/spiffe/x509-svid/csr.js'
import { DerError, bitString, DER_NULL, octetString, oid, seq, set, smallInteger, tlv, unsignedInteger } from '../../../../src/spiffe/x509-svid/der.js'
import { spkiOf } from '../../../../src/spiffe/x509-svid/spki.js'
import { name, refusal } from './mutation-certs.js'

// csr.ts: each refusal of parseCsr / verifyCsr with its exact code, message
// and cause; every signature algorithm; the RSA size limits at their
// boundaries; which SPKI shapes go to an outside ECDSA verifier; createCsr's
// input checks (test/mutation-survivors.md, x509-svid). Titles stay plain:
// Stryker's vitest runner selects tests by name.

const ID = 'spiffe://example.org/agent'
const EC_PUBLIC_KEY = '1.2.840.10045.2.1'
const P256 = '1.2.840.10045.3.1.7'
const P384 = '1.3.132.0.34'
const ALG = {
  ES256: '1.2.840.10045.4.3.2',
  ES384: '1.2.840.10045.4.3.3',
  ES512: '1.2.840.10045.4.3.4',
  RS256: '1.2.840.113549.1.1.11',
  RS384: '1.2.840.113549.1.1.12',
  RS512: '1.2.840.113549.1.1.13',
} as const

const ec256 = generateKeyPairSync('ec', { namedCurve: 'P-256' })
const ec384 = generateKeyPairSync('ec', { namedCurve: 'P-384' })
const rsa2048 = generateKeyPairSync('rsa', { modulusLength: 2048 })
const spkiDer = (k: KeyObject) => k.export({ type: 'spki', format: 'der' })

interface CsrParts {
  version?: Uint8Array
  subject?: Uint8Array
  spki?: Uint8Array
  attributes?: Uint8Array
  /** Replaces the whole CertificationRequestInfo. */
  info?: Uint8Array
  alg?: string
  hash?: string
  key?: KeyObject
}

function sanExtensions(names: Uint8Array[]): Buffer {
  return seq(seq(oid('2.5.29.17'), octetString(seq(...names))))
}
const uri = (s: string) => tlv(0x86, Buffer.from(s, 'latin1'))
const dns = (s: string) => tlv(0x82, Buffer.from(s, 'latin1'))
const extReq = (exts: Uint8Array) => seq(oid('1.2.840.113549.1.9.14'), set(exts))

/** A CSR signed by `key` (default P-256), each part replaceable. */
function csr(p: CsrParts = {}): Uint8Array {
  const key = p.key ?? ec256.privateKey
  const info =
    p.info ??
    seq(
      p.version ?? smallInteger(0),
      p.subject ?? name('csr'),
      p.spki ?? spkiDer(createPublicKey(key)),
      p.attributes ?? tlv(0xa0, extReq(sanExtensions([uri(ID), dns('a.example.org')]))),
    )
  const isEc = key.asymmetricKeyType === 'ec'
  const alg = p.alg ?? (isEc ? ALG.ES256 : ALG.RS256)
  const hash = p.hash ?? 'sha256'
  const sig = sign(hash, info, key)
  return new Uint8Array(seq(info, isEc ? seq(oid(alg)) : seq(oid(alg), DER_NULL), bitString(sig)))
}

const csrInvalid = (reason: string) => ({ code: 'ERR_CSR_INVALID', message: `invalid CSR: ${reason}` })

/** The refusal of parseCsr and of verifyCsr, which must be the same. */
function refusalBoth(der: Uint8Array) {
  const a = refusal(() => parseCsr(der))
  const b = refusal(() => verifyCsr(der))
  expect(b.message).toBe(a.message)
  expect(b.code).toBe(a.code)
  return a
}

function rsaSpki(bits: number): Buffer {
  const n = randomBytes(Math.ceil(bits / 8))
  const extra = n.length * 8 - bits
  n[0] = (n[0]! & (0xff >> extra)) | (0x80 >> extra)
  n[n.length - 1] = n[n.length - 1]! | 1
  return seq(seq(oid('1.2.840.113549.1.1.1'), DER_NULL), bitString(seq(unsignedInteger(n), unsignedInteger(Buffer.from([1, 0, 1])))))
}

describe('parseCsr input and DER checks', () => {
  it('TypeError for a non-Uint8Array', () => {
    expect(() => parseCsr('x' as never)).toThrow(new TypeError('CSR must be a Uint8Array'))
    expect(() => verifyCsr([1] as never)).toThrow(new TypeError('CSR must be a Uint8Array'))
  })

  it('refuses one byte over the size limit and reads the limit', () => {
    expect(MAX_CSR_BYTES).toBe(16384)
    const over = refusalBoth(new Uint8Array(MAX_CSR_BYTES + 1))
    expect(over).toMatchObject(csrInvalid('exceeds 16384 bytes'))
    expect(over.cause).toBeUndefined()
    expect(refusalBoth(new Uint8Array(MAX_CSR_BYTES))).toMatchObject(csrInvalid('malformed DER'))
  })

  const attr = (type: string, ...values: Uint8Array[]) => seq(oid(type), set(...values))
  const malformed: Array<[CsrParts, string]> = [
    [{ info: seq(smallInteger(0), name('x'), spkiDer(ec256.publicKey)) }, 'CertificationRequestInfo must have 4 elements'],
    [{ version: smallInteger(1) }, 'unsupported version'],
    [{ version: octetString(Buffer.from([0])) }, 'version: unexpected or missing element'],
    [{ subject: set() }, 'subject: unexpected or missing element'],
    [{ spki: octetString(Buffer.from([0])) }, 'subjectPKInfo: unexpected or missing element'],
    [{ attributes: seq() }, 'attributes: unexpected or missing element'],
    [{ attributes: tlv(0xa0, set()) }, 'Attribute: unexpected or missing element'],
    [{ attributes: tlv(0xa0, seq(oid('1.2.3'))) }, 'bad Attribute'],
    [{ attributes: tlv(0xa0, seq(oid('1.2.3'), set(), set())) }, 'bad Attribute'],
    [{ attributes: tlv(0xa0, seq(oid('1.2.3'), seq())) }, 'Attribute values: unexpected or missing element'],
    [{ attributes: tlv(0xa0, attr('1.2.840.113549.1.9.14')) }, 'extensionRequest must have one value'],
    [{ attributes: tlv(0xa0, attr('1.2.840.113549.1.9.14', sanExtensions([uri(ID)]), sanExtensions([uri(ID)]))) }, 'extensionRequest must have one value'],
    [{ attributes: tlv(0xa0, attr('1.2.840.113549.1.9.14', set())) }, 'Extensions: unexpected or missing element'],
    [
      { attributes: tlv(0xa0, extReq(seq(seq(oid('2.5.29.17'), octetString(seq(uri(ID)))), seq(oid('2.5.29.17'), octetString(seq(uri(ID))))))) },
      'duplicate extension 2.5.29.17',
    ],
  ]
  it.each(malformed)('malformed case %#', (parts, causeMessage) => {
    const r = refusalBoth(csr(parts))
    expect(r).toMatchObject(csrInvalid('malformed DER'))
    expect(r.cause).toBeInstanceOf(DerError)
    expect((r.cause as Error).message).toBe(causeMessage)
  })

  it('skips attributes other than extensionRequest, whatever their values', () => {
    const der = csr({ attributes: tlv(0xa0, attr('1.2.840.113549.1.9.7', stringOf('pw'), stringOf('pw2')), extReq(sanExtensions([uri(ID)]))) })
    expect(verifyCsr(der).spiffeId).toBe(ID)
    expect(verifyCsr(csr({ attributes: tlv(0xa0, attr('1.2.840.113549.1.9.7')) })).spiffeId).toBeUndefined()
  })

  it('refuses trailing bytes and a truncated CSR as malformed', () => {
    const der = csr()
    expect(refusalBoth(new Uint8Array([...der, 0]))).toMatchObject(csrInvalid('malformed DER'))
    expect((refusalBoth(new Uint8Array([...der, 0])).cause as Error).message).toBe('trailing data')
  })
})

function stringOf(s: string): Buffer {
  return tlv(0x0c, Buffer.from(s))
}

describe('parseCsr signature algorithms and keys', () => {
  const algCases: Array<[string, string, KeyObject]> = [
    [ALG.ES256, 'sha256', ec256.privateKey],
    [ALG.ES384, 'sha384', ec384.privateKey],
    [ALG.ES512, 'sha512', ec256.privateKey],
    [ALG.RS256, 'sha256', rsa2048.privateKey],
    [ALG.RS384, 'sha384', rsa2048.privateKey],
    [ALG.RS512, 'sha512', rsa2048.privateKey],
  ]
  it.each(algCases)('accepts algorithm case %#', (alg, hash, key) => {
    const der = csr({ alg, hash, key })
    expect(parseCsr(der).publicKey.equals(createPublicKey(key))).toBe(true)
    expect(Buffer.from(verifyCsr(der).spki)).toEqual(spkiDer(createPublicKey(key)))
  })

  it.each(algCases)('refuses a signature made with another hash, case %#', (alg, hash, key) => {
    const other = hash === 'sha256' ? 'sha384' : 'sha256'
    const r = refusalBoth(csr({ alg, hash: other, key }))
    expect(r).toMatchObject(csrInvalid('signature verification failed'))
  })

  it('refuses an unsupported signature algorithm', () => {
    expect(refusalBoth(csr({ alg: '1.2.840.10045.4.1', hash: 'sha1' }))).toMatchObject(csrInvalid('unsupported signature algorithm'))
    expect(refusalBoth(csr({ alg: '1.2.840.113549.1.1.5', hash: 'sha1', key: rsa2048.privateKey }))).toMatchObject(
      csrInvalid('unsupported signature algorithm'),
    )
  })

  it('refuses an algorithm of the other key type', () => {
    const ecKeyRsaAlg = csr({ alg: ALG.RS256 })
    expect(refusalBoth(ecKeyRsaAlg)).toMatchObject(csrInvalid('signature algorithm does not match the public key'))
    const rsaKeyEcAlg = csr({ alg: ALG.ES256, key: rsa2048.privateKey })
    expect(refusalBoth(rsaKeyEcAlg)).toMatchObject(csrInvalid('signature algorithm does not match the public key'))
  })

  it('refuses EC curves other than P-256 and P-384', () => {
    for (const curve of ['P-521', 'secp256k1']) {
      const key = generateKeyPairSync('ec', { namedCurve: curve }).privateKey
      expect(refusalBoth(csr({ key }))).toMatchObject(csrInvalid('unsupported EC curve (P-256 or P-384 required)'))
    }
  })

  it('refuses key types other than EC and RSA', () => {
    const ed = generateKeyPairSync('ed25519')
    const info = seq(smallInteger(0), name('x'), spkiDer(ed.publicKey), tlv(0xa0))
    const der = new Uint8Array(seq(info, seq(oid(ALG.ES256)), bitString(sign(null, info, ed.privateKey))))
    expect(refusalBoth(der)).toMatchObject(csrInvalid('unsupported public key type'))
  })

  it('refuses RSA moduli below 2048 and above 8192 bits, and reaches the signature check at both limits', () => {
    const tooSmall = `RSA key must be 2048 to 8192 bits`
    expect(refusalBoth(csr({ key: rsa2048.privateKey, spki: rsaSpki(2047) }))).toMatchObject(csrInvalid(tooSmall))
    expect(refusalBoth(csr({ key: rsa2048.privateKey, spki: rsaSpki(8193) }))).toMatchObject(csrInvalid(tooSmall))
    expect(refusalBoth(csr({ key: rsa2048.privateKey, spki: rsaSpki(2048) }))).toMatchObject(csrInvalid('signature verification failed'))
    expect(refusalBoth(csr({ key: rsa2048.privateKey, spki: rsaSpki(8192) }))).toMatchObject(csrInvalid('signature verification failed'))
  })

  it('refuses a public key that cannot be imported, with the cause', () => {
    const bad = seq(seq(oid(EC_PUBLIC_KEY), oid(P256)), bitString(Buffer.alloc(65, 1)))
    const r = refusalBoth(csr({ spki: bad }))
    expect(r).toMatchObject(csrInvalid('public key cannot be parsed'))
    expect(r.cause).toBeInstanceOf(Error)
  })

  it('parseCsr remembers the CSR SPKI bytes for the key (a compressed point stays compressed)', () => {
    const raw = spkiDer(ec256.publicKey).subarray(-65)
    const compressed = ECDH.convertKey(raw, 'prime256v1', undefined, undefined, 'compressed') as Buffer
    const spki = seq(seq(oid(EC_PUBLIC_KEY), oid(P256)), bitString(compressed))
    const der = csr({ spki })
    expect(spkiOf(parseCsr(der).publicKey)).toEqual(spki)
    expect(Buffer.from(verifyCsr(der).spki)).toEqual(spki)
  })
})

describe('parseCsr SANs', () => {
  const withNames = (...names: Uint8Array[]) => csr({ attributes: tlv(0xa0, extReq(sanExtensions(names))) })

  it('reads the URI SAN and the DNS names in order', () => {
    const p = parseCsr(withNames(dns('b.example.org'), uri(ID), dns('c.example.org')))
    expect(p.spiffeId?.toString()).toBe(ID)
    expect(p.dnsNames).toEqual(['b.example.org', 'c.example.org'])
    const v = verifyCsr(withNames(dns('b.example.org')))
    expect(v).toMatchObject({ spiffeId: undefined, dnsNames: ['b.example.org'] })
  })

  it('has no SANs without the extension', () => {
    expect(verifyCsr(csr({ attributes: tlv(0xa0) }))).toMatchObject({ spiffeId: undefined, dnsNames: [] })
    expect(parseCsr(csr({ attributes: tlv(0xa0, extReq(seq(seq(oid('2.5.29.15'), octetString(bitString(Buffer.from([0x80]))))))) })).dnsNames).toEqual([])
  })

  it('refuses a malformed SAN with the DER error as cause', () => {
    const der = csr({ attributes: tlv(0xa0, extReq(seq(seq(oid('2.5.29.17'), octetString(seq()))))) })
    const r = refusalBoth(der)
    expect(r).toMatchObject(csrInvalid('subjectAltName is malformed'))
    expect((r.cause as Error).message).toBe('empty SubjectAltName')
  })

  it('refuses two URI SANs', () => {
    const r = refusalBoth(withNames(uri(ID), uri('spiffe://example.org/b')))
    expect(r).toMatchObject(csrInvalid('more than one URI SAN'))
    expect(r.cause).toBeUndefined()
  })

  it('refuses a URI SAN that is not a SPIFFE ID, with the cause', () => {
    const r = refusalBoth(withNames(uri('https://example.org/x')))
    expect(r).toMatchObject(csrInvalid('URI SAN is not a valid SPIFFE ID'))
    expect((r.cause as Error).message).toBe('invalid SPIFFE ID: scheme is missing or invalid')
  })
})

describe('verifyCsr with an outside ECDSA verifier', () => {
  interface Call {
    curve: string
    point: Buffer
    hash: string
    data: Buffer
    signature: Buffer
  }
  function recorder(answer: ReturnType<EcdsaVerify> | Error): { calls: Call[]; ecdsa: EcdsaVerify } {
    const calls: Call[] = []
    return {
      calls,
      ecdsa: (curve, point, hash, data, signature) => {
        calls.push({ curve, point: Buffer.from(point), hash, data: Buffer.from(data), signature: Buffer.from(signature) })
        if (answer instanceof Error) throw answer
        return answer
      },
    }
  }

  it('passes curve, point, hash, signed bytes and signature, and takes a valid answer', () => {
    for (const [key, curve, alg, hash] of [
      [ec256, 'P-256', ALG.ES256, 'sha256'],
      [ec384, 'P-384', ALG.ES384, 'sha384'],
      [ec256, 'P-256', ALG.ES512, 'sha512'],
    ] as const) {
      const der = csr({ key: key.privateKey, alg, hash })
      const { calls, ecdsa } = recorder('valid')
      const v = verifyCsr(der, { ecdsa })
      expect(v.spiffeId).toBe(ID)
      expect(calls).toHaveLength(1)
      const c = calls[0]!
      expect([c.curve, c.hash]).toEqual([curve, hash])
      expect(c.point).toEqual(spkiDer(key.publicKey).subarray(-c.point.length))
      expect(c.point[0]).toBe(4)
      expect(c.point.length).toBe(curve === 'P-256' ? 65 : 97)
      expect(Buffer.from(der).includes(c.data)).toBe(true)
      expect(c.data[0]).toBe(0x30)
      expect(Buffer.from(der).subarray(-c.signature.length)).toEqual(c.signature)
    }
  })

  it('refuses on the verifier answers', () => {
    const der = csr()
    expect(refusal(() => verifyCsr(der, { ecdsa: recorder('invalid').ecdsa }))).toMatchObject(csrInvalid('signature verification failed'))
    expect(refusal(() => verifyCsr(der, { ecdsa: recorder('bad-key').ecdsa }))).toMatchObject(csrInvalid('public key cannot be parsed'))
    const boom = new Error('boom')
    const r = refusal(() => verifyCsr(der, { ecdsa: recorder(boom).ecdsa }))
    expect(r).toMatchObject(csrInvalid('signature cannot be checked'))
    expect(r.cause).toBe(boom)
  })

  it('keeps RSA keys on node:crypto', () => {
    const { calls, ecdsa } = recorder('invalid')
    expect(verifyCsr(csr({ key: rsa2048.privateKey }), { ecdsa }).spiffeId).toBe(ID)
    expect(calls).toHaveLength(0)
  })

  // SPKI shapes that are not an uncompressed P-256/P-384 point go to node:crypto,
  // which refuses these: the verifier (which would say "valid") is never asked.
  const point = spkiDer(ec256.publicKey).subarray(-65)
  const notForTheVerifier: Array<[Uint8Array, string]> = [
    [seq(seq(oid(EC_PUBLIC_KEY), oid(P256)), bitString(point), DER_NULL), 'public key cannot be parsed'],
    [seq(seq(oid(EC_PUBLIC_KEY)), bitString(point)), 'public key cannot be parsed'],
    [seq(seq(oid('1.2.840.113549.1.1.1'), oid(P256)), bitString(point)), 'public key cannot be parsed'],
    [seq(seq(oid(EC_PUBLIC_KEY), DER_NULL), bitString(point)), 'public key cannot be parsed'],
    [seq(seq(oid(EC_PUBLIC_KEY), oid('1.3.132.0.35')), bitString(point)), 'public key cannot be parsed'],
    [seq(seq(oid(EC_PUBLIC_KEY), oid(P384)), bitString(point)), 'public key cannot be parsed'],
    [seq(seq(oid(EC_PUBLIC_KEY), oid(P256)), bitString(point.subarray(0, 64))), 'public key cannot be parsed'],
    [seq(seq(oid(EC_PUBLIC_KEY), oid(P256)), bitString(Buffer.concat([Buffer.from([5]), point.subarray(1)]))), 'public key cannot be parsed'],
    [seq(seq(oid(EC_PUBLIC_KEY), oid(P256)), octetString(point)), 'public key cannot be parsed'],
    [octetString(point), 'subjectPKInfo: unexpected or missing element'],
  ]
  it.each(notForTheVerifier)('not for the verifier, case %#', (spki, message) => {
    // The verifier would refuse: when it is not asked, the answer is node's, the same as parseCsr's.
    const { calls, ecdsa } = recorder('invalid')
    const der = csr({ spki })
    const outcome = (f: () => unknown) => {
      try {
        f()
        return 'ok'
      } catch (err) {
        return (err as Error).message
      }
    }
    const got = outcome(() => verifyCsr(der, { ecdsa }))
    expect(calls).toHaveLength(0)
    expect(got).toBe(outcome(() => parseCsr(der)))
    expect(got).toBe(
      message === 'ok' ? 'ok' : message === 'subjectPKInfo: unexpected or missing element' ? 'invalid CSR: malformed DER' : `invalid CSR: ${message}`,
    )
  })

  it('sends a point with unused bits to node:crypto', () => {
    // OpenSSL reads the BIT STRING as bytes; a key whose last byte is even gives the same point.
    let k = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    while ((spkiDer(k.publicKey).at(-1)! & 1) !== 0) k = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    const spki = seq(seq(oid(EC_PUBLIC_KEY), oid(P256)), tlv(0x03, Buffer.from([1]), spkiDer(k.publicKey).subarray(-65)))
    const { calls, ecdsa } = recorder('invalid')
    expect(Buffer.from(verifyCsr(csr({ spki, key: k.privateKey }), { ecdsa }).spki)).toEqual(spki)
    expect(calls).toHaveLength(0)
  })

  it('sends a compressed point to node:crypto', () => {
    const compressed = ECDH.convertKey(point, 'prime256v1', undefined, undefined, 'compressed') as Buffer
    const spki = seq(seq(oid(EC_PUBLIC_KEY), oid(P256)), bitString(compressed))
    const { calls, ecdsa } = recorder('invalid')
    expect(Buffer.from(verifyCsr(csr({ spki }), { ecdsa }).spki)).toEqual(spki)
    expect(calls).toHaveLength(0)
  })
})

describe('createCsr', () => {
  const key = ec256.privateKey

  it('writes version 0, an empty subject, the key, and the SANs in order', async () => {
    const der = Buffer.from(await createCsr({ privateKey: key, spiffeId: SpiffeId.fromString(ID), dnsNames: ['a.example.org', 'b.example.org'] }))
    const expected = seq(
      smallInteger(0),
      seq(),
      spkiDer(ec256.publicKey),
      tlv(0xa0, extReq(sanExtensions([uri(ID), dns('a.example.org'), dns('b.example.org')]))),
    )
    expect(der.subarray(0, 4 + expected.length).includes(expected)).toBe(true)
    expect(parseCsr(der)).toMatchObject({ dnsNames: ['a.example.org', 'b.example.org'] })
  })

  it('writes no attributes without names', async () => {
    const der = Buffer.from(await createCsr({ privateKey: key, dnsNames: [] }))
    expect(der.includes(seq(smallInteger(0), seq(), spkiDer(ec256.publicKey), tlv(0xa0)))).toBe(true)
  })

  it('TypeError for a spiffeId that is not a SpiffeId', async () => {
    await expect(createCsr({ privateKey: key, spiffeId: ID as never })).rejects.toThrow(new TypeError('spiffeId must be a SpiffeId'))
  })

  it('takes DNS names of 1 to 253 visible characters', async () => {
    const ok = ['a', 'x'.repeat(253), '!~']
    expect(parseCsr(await createCsr({ privateKey: key, dnsNames: ok })).dnsNames).toEqual(ok)
    for (const bad of ['', 'x'.repeat(254), 'a b', 'a\u007f', 'é', 7]) {
      await expect(createCsr({ privateKey: key, dnsNames: [bad as string] })).rejects.toThrow(new TypeError('invalid DNS name'))
    }
  })
})
