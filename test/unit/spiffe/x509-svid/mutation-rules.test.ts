import { describe, expect, it } from 'vitest'
import { DerError } from '../../../../src/spiffe/x509-svid/der.js'
import { parseCertificateFields } from '../../../../src/spiffe/x509-svid/certificate-fields.js'
import {
  checkLeaf,
  checkSigningCertificate,
  MAX_CERTIFICATE_BYTES,
  MAX_CHAIN_LENGTH,
  parseFields,
  svidError,
} from '../../../../src/spiffe/x509-svid/svid-rules.js'
import { parseLeafSpiffeId, X509Svid } from '../../../../src/spiffe/x509-svid/index.js'
import { bcValue, ca, EMPTY_NAME, ext, ID, KU_BITS, kuValue, leaf, leafExtensions, name, OIDS, refusal, sanValue, type Ext } from './mutation-certs.js'

// svid-rules.ts: each leaf and signing-certificate rule refused with its exact
// code, message and cause (test/mutation-survivors.md, x509-svid). Titles stay
// plain: Stryker's vitest runner selects tests by name.

const root = ca('root')
const { DS, KCS, CRL } = { DS: KU_BITS.digitalSignature, KCS: KU_BITS.keyCertSign, CRL: KU_BITS.cRLSign }
const MALFORMED = Uint8Array.of(0x30, 0x01) // a SEQUENCE header whose contents are missing

function leafWith(over: Parameters<typeof leafExtensions>[0], subject?: Uint8Array): Uint8Array {
  return leaf(root, { extensions: leafExtensions(over), ...(subject ? { subject } : {}) })
}
const fieldsOf = (der: Uint8Array) => parseCertificateFields(der)

describe('svidError', () => {
  it('carries the code, the x509svid prefix and the cause', () => {
    const cause = new Error('inner')
    const e = svidError('something', cause)
    expect([e.code, e.message, e.cause]).toEqual(['ERR_X509_SVID_INVALID', 'x509svid: something', cause])
  })
  it('has no cause when none is given', () => {
    const e = svidError('something')
    expect(e.cause).toBeUndefined()
    expect('cause' in e).toBe(false)
  })
})

describe('parseFields', () => {
  it('names the input in the TypeError for a non-Uint8Array', () => {
    expect(() => parseFields('x' as never, 'certificate 3')).toThrow(new TypeError('certificate 3 must be a Uint8Array'))
    expect(() => parseLeafSpiffeId([1, 2] as never)).toThrow(new TypeError('leaf certificate must be a Uint8Array'))
  })

  it('refuses one byte over the size limit with its own message, and parses at the limit', () => {
    const over = refusal(() => parseFields(new Uint8Array(MAX_CERTIFICATE_BYTES + 1), 'certificate 2'))
    expect(over).toMatchObject({ code: 'ERR_X509_SVID_INVALID', message: `x509svid: certificate 2 exceeds ${MAX_CERTIFICATE_BYTES} bytes`, cause: undefined })
    const at = refusal(() => parseFields(new Uint8Array(MAX_CERTIFICATE_BYTES), 'certificate 2'))
    expect(at.message).toBe('x509svid: certificate 2 cannot be parsed')
    expect(MAX_CERTIFICATE_BYTES).toBe(65536)
    expect(MAX_CHAIN_LENGTH).toBe(16)
  })

  it('wraps a parse failure with the DER error as cause', () => {
    const r = refusal(() => parseLeafSpiffeId(Uint8Array.of(0x30, 0x03, 0x02, 0x01, 0x01)))
    expect(r.code).toBe('ERR_X509_SVID_INVALID')
    expect(r.message).toBe('x509svid: leaf certificate cannot be parsed')
    expect(r.cause).toBeInstanceOf(DerError)
    expect((r.cause as Error).message).toBe('certificate must have 3 elements')
  })

  it('returns the fields of a good certificate', () => {
    const der = leafWith({})
    expect(parseFields(der, 'leaf certificate').der).toBe(der)
  })
})

describe('checkLeaf refusals', () => {
  const cases: Array<[Parameters<typeof leafExtensions>[0], Uint8Array | undefined, string, string | undefined]> = [
    [{ SAN: null }, undefined, 'certificate has no URI SAN', undefined],
    [{ SAN: ext(OIDS.SAN, MALFORMED) }, undefined, 'subjectAltName extension is malformed', 'truncated element'],
    [{ SAN: ext(OIDS.SAN, sanValue([], ['web.example.org'])) }, undefined, 'certificate has no URI SAN', undefined],
    [{ SAN: ext(OIDS.SAN, sanValue([ID, 'spiffe://example.org/b'])) }, undefined, 'certificate contains more than one URI SAN', undefined],
    [
      { SAN: ext(OIDS.SAN, sanValue(['https://example.org/x'])) },
      undefined,
      'URI SAN is not a valid SPIFFE ID',
      'invalid SPIFFE ID: scheme is missing or invalid',
    ],
    [{ SAN: ext(OIDS.SAN, sanValue(['spiffe://example.org'])) }, undefined, 'leaf SPIFFE ID must have a non-root path', undefined],
    [{ SAN: ext(OIDS.SAN, sanValue([ID]), false) }, EMPTY_NAME, 'subjectAltName must be critical when the subject is empty', undefined],
    [{ BC: ext(OIDS.BC, bcValue(true), true) }, undefined, 'leaf certificate must not have CA flag set to true', undefined],
    [{ BC: ext(OIDS.BC, bcValue(true, 0), true) }, undefined, 'leaf certificate must not have CA flag set to true', undefined],
    [{ BC: ext(OIDS.BC, MALFORMED, true) }, undefined, 'basicConstraints extension is malformed', 'truncated element'],
    [{ KU: null }, undefined, 'leaf certificate must have a key usage extension', undefined],
    [{ KU: ext(OIDS.KU, MALFORMED, true) }, undefined, 'keyUsage extension is malformed', 'truncated element'],
    [
      { KU: ext(OIDS.KU, kuValue(KU_BITS.keyEncipherment | KU_BITS.keyAgreement), true) },
      undefined,
      "leaf certificate must have 'digitalSignature' set as key usage",
      undefined,
    ],
    [{ KU: ext(OIDS.KU, kuValue(0), true) }, undefined, "leaf certificate must have 'digitalSignature' set as key usage", undefined],
    [{ KU: ext(OIDS.KU, kuValue(DS | KCS), true) }, undefined, "leaf certificate must not have 'keyCertSign' set as key usage", undefined],
    [{ KU: ext(OIDS.KU, kuValue(DS | KCS | CRL), true) }, undefined, "leaf certificate must not have 'keyCertSign' set as key usage", undefined],
    [{ KU: ext(OIDS.KU, kuValue(DS | CRL), true) }, undefined, "leaf certificate must not have 'cRLSign' set as key usage", undefined],
    // The order of the checks: the first rule broken is the one reported.
    [{ SAN: ext(OIDS.SAN, sanValue([ID, ID])), KU: null }, undefined, 'certificate contains more than one URI SAN', undefined],
    [{ BC: ext(OIDS.BC, bcValue(true), true), KU: null }, undefined, 'leaf certificate must not have CA flag set to true', undefined],
    [
      { SAN: ext(OIDS.SAN, sanValue(['spiffe://example.org'])), BC: ext(OIDS.BC, bcValue(true), true) },
      undefined,
      'leaf SPIFFE ID must have a non-root path',
      undefined,
    ],
  ]
  it.each(cases)('leaf refusal case %#', (over, subject, message, causeMessage) => {
    const der = leafWith(over, subject)
    for (const r of [refusal(() => parseLeafSpiffeId(der)), refusal(() => X509Svid.fromChain([der])), refusal(() => checkLeaf(fieldsOf(der)))]) {
      expect(r.code).toBe('ERR_X509_SVID_INVALID')
      expect(r.message).toBe(`x509svid: ${message}`)
      if (causeMessage === undefined) {
        expect(r.cause).toBeUndefined()
      } else {
        expect((r.cause as Error).message).toBe(causeMessage)
      }
    }
  })

  const accepted: Array<[Parameters<typeof leafExtensions>[0], Uint8Array | undefined]> = [
    [{}, undefined],
    [{ BC: null }, undefined],
    [{ BC: ext(OIDS.BC, bcValue(false), false) }, undefined],
    [{ SAN: ext(OIDS.SAN, sanValue([ID], ['web.example.org']), false) }, undefined],
    [{ SAN: ext(OIDS.SAN, sanValue([ID]), true) }, EMPTY_NAME],
    [{ SAN: ext(OIDS.SAN, sanValue([ID]), true) }, name('x')],
    [{ KU: ext(OIDS.KU, kuValue(DS | KU_BITS.keyEncipherment | KU_BITS.keyAgreement), true) }, undefined],
    [{ KU: ext(OIDS.KU, kuValue(DS), false) }, undefined],
    // decipherOnly lives in the second byte: not a signing bit.
    [{ KU: ext(OIDS.KU, kuValue(DS | 0x01, 0x80), true) }, undefined],
  ]
  it.each(accepted)('leaf accepted case %#', (over, subject) => {
    const der = leafWith(over, subject)
    expect(parseLeafSpiffeId(der).toString()).toBe(ID)
    expect(X509Svid.fromChain([der]).id.toString()).toBe(ID)
  })
})

describe('checkSigningCertificate', () => {
  const leafDer = leafWith({})
  const caWith = (extensions: Ext[]) => ca('inter', root, { extensions }).der
  const BC = (v: Uint8Array) => ext(OIDS.BC, v, true)
  const KUx = (v: Uint8Array) => ext(OIDS.KU, v, true)
  const cases: Array<[Ext[], string, string | undefined]> = [
    [[KUx(kuValue(KCS))], 'must have CA flag set to true', undefined],
    [[BC(bcValue(false)), KUx(kuValue(KCS))], 'must have CA flag set to true', undefined],
    [[BC(MALFORMED), KUx(kuValue(KCS))], 'basicConstraints extension is malformed', 'truncated element'],
    [[BC(bcValue(true))], "must have 'keyCertSign' set as key usage", undefined],
    [[BC(bcValue(true)), KUx(kuValue(DS | CRL))], "must have 'keyCertSign' set as key usage", undefined],
    [[BC(bcValue(true)), KUx(MALFORMED)], 'keyUsage extension is malformed', 'truncated element'],
    [[], 'must have CA flag set to true', undefined],
  ]
  it.each(cases)('signing refusal case %#', (extensions, message, causeMessage) => {
    const der = caWith(extensions)
    const full = message.startsWith('must') ? `x509svid: signing certificate ${message}` : `x509svid: ${message}`
    for (const r of [refusal(() => X509Svid.fromChain([leafDer, der])), refusal(() => checkSigningCertificate(fieldsOf(der)))]) {
      expect(r.code).toBe('ERR_X509_SVID_INVALID')
      expect(r.message).toBe(full)
      if (causeMessage === undefined) expect(r.cause).toBeUndefined()
      else expect((r.cause as Error).message).toBe(causeMessage)
    }
    if (message.startsWith('must')) {
      expect(refusal(() => checkSigningCertificate(fieldsOf(der), 'intermediate 4')).message).toBe(`x509svid: intermediate 4 ${message}`)
    }
  })

  it('returns the path length constraint, or undefined without one', () => {
    expect(checkSigningCertificate(fieldsOf(ca('a', root, { pathLen: 0 }).der))).toBe(0)
    expect(checkSigningCertificate(fieldsOf(ca('b', root, { pathLen: 3 }).der))).toBe(3)
    expect(checkSigningCertificate(fieldsOf(ca('c', root).der))).toBeUndefined()
    expect(checkSigningCertificate(fieldsOf(root.der))).toBeUndefined()
  })

  it('checks every certificate after the leaf in fromChain', () => {
    const bad = caWith([BC(bcValue(true))])
    const r = refusal(() => X509Svid.fromChain([leafDer, root.der, bad]))
    expect(r.message).toBe("x509svid: signing certificate must have 'keyCertSign' set as key usage")
    expect(X509Svid.fromChain([leafDer, root.der]).certificates).toHaveLength(2)
  })
})
