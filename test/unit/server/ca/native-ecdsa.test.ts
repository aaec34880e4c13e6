import { generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { isIdentityError } from '../../../../src/errors/index.js'
import { nativeEcdsa, nativeEcdsaError } from '../../../../src/server/ca/native-ecdsa.js'
import { SpiffeId } from '../../../../src/spiffe/spiffe-id.js'
import { createCsr, verifyCsr, type EcdsaVerify } from '../../../../src/spiffe/x509-svid/csr.js'
import { bitString, oid, seq, tlv } from '../../../../src/spiffe/x509-svid/der.js'

type Curve = 'P-256' | 'P-384'
type Hash = 'sha256' | 'sha384' | 'sha512'

function loaded(): EcdsaVerify {
  const v = nativeEcdsa()
  // npm ci builds the addon (binding.gyp); a missing addon is a broken install, not a reason to skip.
  if (!v) throw new Error(`native ecverify addon did not load: ${String(nativeEcdsaError())}`)
  return v
}

function keyPair(curve: Curve): { privateKey: KeyObject; point: Uint8Array } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: curve })
  const spki = publicKey.export({ type: 'spki', format: 'der' })
  return { privateKey, point: new Uint8Array(spki.subarray(spki.length - (curve === 'P-256' ? 65 : 97))) }
}

/** DER with an extra leading zero in r: the same integers, not the canonical encoding. */
function nonCanonical(sig: Buffer): Buffer {
  const rLen = sig[3]!
  const r = sig.subarray(4, 4 + rLen)
  const rest = sig.subarray(4 + rLen)
  const body = Buffer.concat([Buffer.from([0x02, rLen + 1, 0x00]), r, rest])
  return Buffer.concat([Buffer.from([0x30, body.length]), body])
}

describe('native ECDSA verification (ecverify addon)', () => {
  const v = loaded()
  const data = Buffer.from('to be signed: a CertificationRequestInfo')

  const cases: {
    name: string
    curve: Curve
    hash: Hash
    make: (k: ReturnType<typeof keyPair>) => { point: Uint8Array; data: Uint8Array; sig: Uint8Array }
    want: string
  }[] = [
    { name: 'P-256 SHA-256', curve: 'P-256', hash: 'sha256', make: (k) => ({ point: k.point, data, sig: sign('sha256', data, k.privateKey) }), want: 'valid' },
    { name: 'P-256 SHA-384', curve: 'P-256', hash: 'sha384', make: (k) => ({ point: k.point, data, sig: sign('sha384', data, k.privateKey) }), want: 'valid' },
    { name: 'P-384 SHA-384', curve: 'P-384', hash: 'sha384', make: (k) => ({ point: k.point, data, sig: sign('sha384', data, k.privateKey) }), want: 'valid' },
    { name: 'P-384 SHA-512', curve: 'P-384', hash: 'sha512', make: (k) => ({ point: k.point, data, sig: sign('sha512', data, k.privateKey) }), want: 'valid' },
    {
      name: 'hash differs from the signer’s',
      curve: 'P-256',
      hash: 'sha384',
      make: (k) => ({ point: k.point, data, sig: sign('sha256', data, k.privateKey) }),
      want: 'invalid',
    },
    {
      name: 'other data',
      curve: 'P-256',
      hash: 'sha256',
      make: (k) => ({ point: k.point, data: Buffer.from('other'), sig: sign('sha256', data, k.privateKey) }),
      want: 'invalid',
    },
    {
      name: 'other key',
      curve: 'P-256',
      hash: 'sha256',
      make: (k) => ({ point: keyPair('P-256').point, data, sig: sign('sha256', data, k.privateKey) }),
      want: 'invalid',
    },
    {
      name: 'non-canonical DER',
      curve: 'P-256',
      hash: 'sha256',
      make: (k) => ({ point: k.point, data, sig: nonCanonical(sign('sha256', data, k.privateKey)) }),
      want: 'invalid',
    },
    {
      name: 'trailing byte after the signature',
      curve: 'P-256',
      hash: 'sha256',
      make: (k) => ({ point: k.point, data, sig: Buffer.concat([sign('sha256', data, k.privateKey), Buffer.from([0])]) }),
      want: 'invalid',
    },
    {
      name: 'P1363 instead of DER',
      curve: 'P-256',
      hash: 'sha256',
      make: (k) => ({ point: k.point, data, sig: sign('sha256', data, { key: k.privateKey, dsaEncoding: 'ieee-p1363' }) }),
      want: 'invalid',
    },
    { name: 'empty signature', curve: 'P-256', hash: 'sha256', make: (k) => ({ point: k.point, data, sig: new Uint8Array(0) }), want: 'invalid' },
    {
      name: 'point off the curve',
      curve: 'P-256',
      hash: 'sha256',
      make: (k) => {
        const p = k.point.slice()
        p[64] = p[64]! ^ 1
        return { point: p, data, sig: sign('sha256', data, k.privateKey) }
      },
      want: 'bad-key',
    },
    {
      name: 'P-384 point given as P-256',
      curve: 'P-256',
      hash: 'sha256',
      make: () => ({ point: keyPair('P-384').point, data, sig: new Uint8Array(8) }),
      want: 'bad-key',
    },
    {
      name: 'compressed point',
      curve: 'P-256',
      hash: 'sha256',
      make: (k) => ({ point: Uint8Array.of(0x02 | (k.point[64]! & 1), ...k.point.subarray(1, 33)), data, sig: sign('sha256', data, k.privateKey) }),
      want: 'bad-key',
    },
    {
      name: 'all-zero point',
      curve: 'P-256',
      hash: 'sha256',
      make: () => ({ point: Uint8Array.of(4, ...new Uint8Array(64)), data, sig: new Uint8Array(8) }),
      want: 'bad-key',
    },
  ]
  it.each(cases)('$name → $want', ({ curve, hash, make, want }) => {
    const k = keyPair(curve)
    const m = make(k)
    expect(v(curve, m.point, hash, m.data, m.sig)).toBe(want)
  })

  it('agrees with node:crypto on random data, keys and corrupted signatures', () => {
    const keys = { 'P-256': keyPair('P-256'), 'P-384': keyPair('P-384') }
    fc.assert(
      fc.property(
        fc.constantFrom<Curve>('P-256', 'P-384'),
        fc.constantFrom<Hash>('sha256', 'sha384', 'sha512'),
        fc.uint8Array({ maxLength: 600 }),
        fc.option(fc.nat(), { nil: undefined }),
        (curve, hash, msg, flip) => {
          const k = keys[curve]
          const sig = sign(hash, msg, k.privateKey)
          if (flip !== undefined) sig[flip % sig.length] = sig[flip % sig.length]! ^ (1 << (flip % 8))
          const spki = Buffer.concat([curve === 'P-256' ? P256_SPKI_PREFIX : P384_SPKI_PREFIX, k.point])
          let expected: boolean
          try {
            expected = verify(hash, msg, { key: spki, format: 'der', type: 'spki' }, sig)
          } catch {
            expected = false
          }
          expect(v(curve, k.point, hash, msg, sig)).toBe(expected ? 'valid' : 'invalid')
        },
      ),
      { numRuns: 300 },
    )
  })

  it('throws TypeError for arguments of the wrong kind', () => {
    const addon = v as unknown as (...a: unknown[]) => unknown
    const k = keyPair('P-256')
    expect(() => addon('P-256', 'not bytes', 'sha256', data, new Uint8Array(8))).toThrow(TypeError)
    expect(() => addon('P-256', k.point, 'sha256', 'not bytes', new Uint8Array(8))).toThrow(TypeError)
    expect(() => addon('P-256', k.point, 'sha256', data, [1, 2])).toThrow(TypeError)
    expect(() => addon('P-256', new Uint16Array(33), 'sha256', data, new Uint8Array(8))).toThrow(TypeError)
  })
})

const P256_SPKI_PREFIX = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex')
const P384_SPKI_PREFIX = Buffer.from('3076301006072a8648ce3d020106052b81040022036200', 'hex')

describe('verifyCsr with the native verifier', () => {
  const ecdsa = loaded()
  const id = SpiffeId.fromString('spiffe://example.org/workload')
  const ec = (namedCurve: string) => generateKeyPairSync('ec', { namedCurve }).privateKey

  function outcome(f: () => unknown): string {
    try {
      f()
      return 'ok'
    } catch (err) {
      if (isIdentityError(err)) return `${err.code}: ${err.message}`
      if (err instanceof TypeError) return 'TypeError'
      throw err
    }
  }

  /** A CSR signed with `sigAlg` over a P-256 key, with the signature transformed by `fix`. */
  function handmade(fix: (sig: Buffer) => Buffer, sigAlg = '1.2.840.10045.4.3.2', hash = 'sha256'): Uint8Array {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    const spki = publicKey.export({ type: 'spki', format: 'der' })
    const info = seq(Buffer.from([0x02, 0x01, 0x00]), seq(), spki, tlv(0xa0))
    return seq(info, seq(oid(sigAlg)), bitString(fix(sign(hash, info, privateKey))))
  }

  function offCurve(der: Uint8Array): Uint8Array {
    const out = Buffer.from(der)
    const at = out.indexOf(P256_SPKI_PREFIX)
    out[at + P256_SPKI_PREFIX.length + 64] = out[at + P256_SPKI_PREFIX.length + 64]! ^ 0x01
    return out
  }

  const cases: { name: string; csr: () => Promise<Uint8Array> | Uint8Array }[] = [
    { name: 'P-256 with SPIFFE ID and DNS names', csr: () => createCsr({ privateKey: ec('P-256'), spiffeId: id, dnsNames: ['a.example.org'] }) },
    { name: 'P-384', csr: () => createCsr({ privateKey: ec('P-384') }) },
    { name: 'RSA (node:crypto path)', csr: () => createCsr({ privateKey: generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey }) },
    { name: 'P-521 (node:crypto path, refused)', csr: () => createCsr({ privateKey: ec('P-521') }) },
    { name: 'ECDSA-with-SHA384 over P-256', csr: () => handmade((s) => s, '1.2.840.10045.4.3.3', 'sha384') },
    { name: 'RSA signature algorithm over an EC key', csr: () => handmade((s) => s, '1.2.840.113549.1.1.11') },
    { name: 'non-canonical signature DER', csr: () => handmade(nonCanonical) },
    { name: 'corrupted signature', csr: () => handmade((s) => ((s[10] = s[10]! ^ 0x40), s)) },
    { name: 'point off the curve', csr: async () => offCurve(await createCsr({ privateKey: ec('P-256') })) },
  ]
  it.each(cases)('$name: same outcome as with node:crypto', async ({ csr }) => {
    const der = await csr()
    const want = outcome(() => verifyCsr(der))
    expect(outcome(() => verifyCsr(der, { ecdsa }))).toBe(want)
  })

  it('hands back the same plain data', async () => {
    const der = await createCsr({ privateKey: ec('P-256'), spiffeId: id, dnsNames: ['b.example.org'] })
    expect(verifyCsr(der, { ecdsa })).toEqual(verifyCsr(der))
  })
})
