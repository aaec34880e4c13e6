import { createHash, ECDH, generateKeyPairSync, sign, X509Certificate } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { isIdentityError } from '../../../../src/errors/index.js'
import { SpiffeId } from '../../../../src/spiffe/spiffe-id.js'
import { createX509Svid } from '../../../../src/spiffe/x509-svid/certificate-builder.js'
import { createCsr, MAX_CSR_BYTES, parseCsr, verifyCsr } from '../../../../src/spiffe/x509-svid/csr.js'
import { spkiKeyBits } from '../../../../src/spiffe/x509-svid/certificate-fields.js'
import { bitString, oid, seq, tlv } from '../../../../src/spiffe/x509-svid/der.js'
import { HOUR, makeRoot, NOW } from './pki.js'

const id = SpiffeId.fromString('spiffe://example.org/workload')

const ec = (namedCurve: string) => generateKeyPairSync('ec', { namedCurve }).privateKey
const rsa = (modulusLength: number) => generateKeyPairSync('rsa', { modulusLength }).privateKey

/** A CSR whose SPKI carries a compressed EC point (exercises the SPKI-decoder path). */
function compressedPointCsr(): Uint8Array {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const raw = publicKey.export({ type: 'spki', format: 'der' }).subarray(-65)
  const compressed = ECDH.convertKey(raw, 'prime256v1', undefined, undefined, 'compressed') as Buffer
  const spki = seq(seq(oid('1.2.840.10045.2.1'), oid('1.2.840.10045.3.1.7')), bitString(compressed))
  const info = seq(Buffer.from([0x02, 0x01, 0x00]), seq(), spki, tlv(0xa0))
  const sig = sign('sha256', info, privateKey)
  return seq(info, seq(oid('1.2.840.10045.4.3.2')), bitString(sig))
}

function tamper(der: Uint8Array): Uint8Array {
  const out = der.slice()
  out[out.length - 3] = out[out.length - 3]! ^ 0x01
  return out
}

function outcome(f: () => unknown): string {
  try {
    f()
    return 'ok'
  } catch (err) {
    if (isIdentityError(err)) return err.code
    if (err instanceof TypeError) return 'TypeError'
    throw err
  }
}

describe('verifyCsr', () => {
  const cases: { name: string; csr: () => Promise<Uint8Array> | Uint8Array; want: string }[] = [
    { name: 'P-256 with SPIFFE ID and DNS names', csr: () => createCsr({ privateKey: ec('P-256'), spiffeId: id, dnsNames: ['a.example.org'] }), want: 'ok' },
    { name: 'P-384, no SANs', csr: () => createCsr({ privateKey: ec('P-384') }), want: 'ok' },
    { name: 'RSA 2048', csr: () => createCsr({ privateKey: rsa(2048) }), want: 'ok' },
    { name: 'compressed P-256 point', csr: compressedPointCsr, want: 'ok' },
    { name: 'P-521 refused', csr: () => createCsr({ privateKey: ec('P-521') }), want: 'ERR_CSR_INVALID' },
    { name: 'RSA 1024 refused', csr: () => createCsr({ privateKey: rsa(1024) }), want: 'ERR_CSR_INVALID' },
    { name: 'tampered signature', csr: async () => tamper(await createCsr({ privateKey: ec('P-256') })), want: 'ERR_CSR_INVALID' },
    { name: 'not DER', csr: () => new Uint8Array([1, 2, 3]), want: 'ERR_CSR_INVALID' },
    { name: 'over the size cap', csr: () => new Uint8Array(MAX_CSR_BYTES + 1), want: 'ERR_CSR_INVALID' },
  ]
  it.each(cases)('$name → $want, same as parseCsr', async ({ csr, want }) => {
    const der = await csr()
    expect(outcome(() => verifyCsr(der))).toBe(want)
    expect(outcome(() => parseCsr(der))).toBe(want)
  })

  it('returns plain data: the SPKI parseCsr sees, the URI SAN as a string, the DNS names', async () => {
    const key = ec('P-256')
    const der = await createCsr({ privateKey: key, spiffeId: id, dnsNames: ['a.example.org', 'b.example.org'] })
    const v = verifyCsr(der)
    expect(Buffer.from(v.spki)).toEqual(parseCsr(der).publicKey.export({ type: 'spki', format: 'der' }))
    expect(v.spiffeId).toBe(id.toString())
    expect(v.dnsNames).toEqual(['a.example.org', 'b.example.org'])
    expect(structuredClone(v)).toEqual(v)
  })

  it('refuses a point that is not on the curve', async () => {
    const der = Buffer.from(await createCsr({ privateKey: ec('P-256') }))
    // Flip the last byte of the y coordinate, found through the P-256 SPKI prefix.
    const prefix = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex')
    const at = der.indexOf(prefix)
    expect(at).toBeGreaterThan(0)
    der[at + prefix.length + 64] = der[at + prefix.length + 64]! ^ 0x01
    expect(outcome(() => verifyCsr(der))).toBe('ERR_CSR_INVALID')
  })

  it('TypeError for a non-Uint8Array', () => {
    expect(outcome(() => verifyCsr('x' as unknown as Uint8Array))).toBe('TypeError')
  })
})

describe('createX509Svid with { spki }', () => {
  it('writes the same SPKI and SKI as with a KeyObject', async () => {
    const root = await makeRoot()
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    const spki = new Uint8Array(publicKey.export({ type: 'spki', format: 'der' }))
    const common = {
      spiffeId: id,
      signer: root.signer,
      issuer: { certificate: root.certificate },
      notBefore: new Date(NOW.getTime() - 1000),
      notAfter: new Date(NOW.getTime() + HOUR),
    }
    const a = new X509Certificate(await createX509Svid({ ...common, publicKey: { spki } }))
    const b = new X509Certificate(await createX509Svid({ ...common, publicKey }))
    expect(a.publicKey.export({ type: 'spki', format: 'der' })).toEqual(b.publicKey.export({ type: 'spki', format: 'der' }))
    const ski = createHash('sha1').update(spkiKeyBits(spki)).digest('hex')
    expect(a.checkIssued(new X509Certificate(root.certificate))).toBe(true)
    expect(a.verify(new X509Certificate(root.certificate).publicKey)).toBe(true)
    // SKI extension bytes: OCTET STRING of the SHA-1 of the key bits.
    expect(Buffer.from(a.raw).includes(Buffer.from(ski, 'hex'))).toBe(true)
  })

  it.each([
    { name: 'not bytes', spki: 'abc' },
    { name: 'not an SPKI', spki: new Uint8Array([0x30, 0x00]) },
    { name: 'truncated', spki: new Uint8Array([0x30, 0x05, 0x30]) },
  ])('TypeError for $name', async ({ spki }) => {
    const root = await makeRoot()
    await expect(
      createX509Svid({
        spiffeId: id,
        publicKey: { spki: spki as Uint8Array },
        signer: root.signer,
        issuer: { certificate: root.certificate },
        notAfter: new Date(Date.now() + HOUR),
      }),
    ).rejects.toBeInstanceOf(TypeError)
  })
})
