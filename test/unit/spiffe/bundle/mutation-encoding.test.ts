import { X509Certificate, createSecretKey, generateKeyPairSync, type KeyObject } from 'node:crypto'
import { beforeAll, describe, expect, it } from 'vitest'
import {
  bundleError,
  canonicalPublicJwk,
  decodeBase64Strict,
  importPublicJwk,
  inputText,
  isPlainObject,
  MAX_BUNDLE_BYTES,
  orderedJwk,
  parseCertificate,
  parseJsonObject,
  parsePemBlocks,
  splitDerSequence,
  toPemBlock,
} from '../../../../src/spiffe/bundle/encoding.js'
import { makeCaCert, makeJwk } from './test-certs.js'
import { thrown } from '../../../helpers/thrown.js'

/*
 * The shared bundle helpers (src/spiffe/bundle/encoding.ts), each refusal by
 * code and exact message, each boundary from both sides. Kept for the
 * mutation run (`WARRANT_MUTATE_GROUP=bundle npm run mutate`): test titles
 * stay plain (no JSON, no regex characters), see test/mutation-survivors.md.
 */

function refusal(fn: () => unknown): [string, string] {
  const err = thrown(fn)
  return [err.code, err.message]
}

const bytes = (...b: number[]) => new Uint8Array(b)
const cat = (...parts: Uint8Array[]) => new Uint8Array(Buffer.concat(parts))
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex')
const INVALID = 'ERR_BUNDLE_INVALID'

let ca: Uint8Array
beforeAll(async () => {
  ca = await makeCaCert('ec-p256')
})

describe('bundleError keeps the cause it is given', () => {
  it('with a cause', () => {
    const cause = new Error('inner')
    const err = bundleError('outer', cause)
    expect([err.code, err.message, err.cause]).toEqual([INVALID, 'outer', cause])
    expect(err.cause).toBe(cause)
  })

  it('without a cause', () => {
    const err = bundleError('outer')
    expect([err.code, err.message]).toEqual([INVALID, 'outer'])
    expect('cause' in err).toBe(false)
  })

  it('a JSON syntax error is kept as the cause', () => {
    const err = thrown(() => parseJsonObject('{', 'doc'))
    expect([err.code, err.message]).toEqual([INVALID, 'doc is not valid JSON'])
    expect(err.cause).toBeInstanceOf(SyntaxError)
  })
})

describe('inputText size limit and types', () => {
  it('a string of exactly the limit is read', () => {
    const s = ' '.repeat(MAX_BUNDLE_BYTES)
    expect(inputText(s, 'doc')).toBe(s)
  })

  it('a string one character over the limit is refused', () => {
    expect(refusal(() => inputText(' '.repeat(MAX_BUNDLE_BYTES + 1), 'doc'))).toEqual([INVALID, 'doc exceeds 4194304 bytes'])
  })

  it('a string under the limit in characters but over it in UTF-8 bytes is refused', () => {
    const s = '\u00e9'.repeat(MAX_BUNDLE_BYTES / 2 + 1)
    expect(s.length).toBeLessThan(MAX_BUNDLE_BYTES)
    expect(refusal(() => inputText(s, 'doc'))).toEqual([INVALID, 'doc exceeds 4194304 bytes'])
  })

  it('a string of exactly the limit in UTF-8 bytes is read', () => {
    const s = '\u00e9'.repeat(MAX_BUNDLE_BYTES / 2)
    expect(inputText(s, 'doc')).toBe(s)
  })

  it('bytes of exactly the limit are read', () => {
    expect(inputText(new Uint8Array(MAX_BUNDLE_BYTES).fill(0x20), 'doc')).toHaveLength(MAX_BUNDLE_BYTES)
  })

  it('bytes one over the limit are refused', () => {
    expect(refusal(() => inputText(new Uint8Array(MAX_BUNDLE_BYTES + 1).fill(0x20), 'doc'))).toEqual([INVALID, 'doc exceeds 4194304 bytes'])
  })

  it('bytes that are not UTF-8 are refused with the decoder error as cause', () => {
    const err = thrown(() => inputText(bytes(0xc3, 0x28), 'doc'))
    expect([err.code, err.message]).toEqual([INVALID, 'doc is not valid UTF-8'])
    expect(err.cause).toBeInstanceOf(TypeError)
  })

  it('neither a string nor bytes is a TypeError naming the input', () => {
    expect(() => inputText(42 as unknown as string, 'doc')).toThrow(new TypeError('doc must be a string or Uint8Array'))
    expect(() => inputText({ byteLength: 1 } as unknown as Uint8Array, 'doc')).toThrow(new TypeError('doc must be a string or Uint8Array'))
  })
})

describe('parseJsonObject and isPlainObject', () => {
  it.each([['"text"'], ['5'], ['true'], ['null'], ['[]']])('refuses a JSON value that is not an object, case %#', (text) => {
    expect(refusal(() => parseJsonObject(text, 'doc'))).toEqual([INVALID, 'doc must be a JSON object'])
  })

  it('reads an object', () => {
    expect(parseJsonObject('{"a":1}', 'doc')).toEqual({ a: 1 })
  })

  it('isPlainObject answers for each kind of value', () => {
    expect([{}, [], null, undefined, 'x', 5, true].map(isPlainObject)).toEqual([true, false, false, false, false, false, false])
  })
})

describe('decodeBase64Strict', () => {
  it('reads canonical padded base64', () => {
    expect(hex(decodeBase64Strict('AA==')!)).toBe('00')
    expect(hex(decodeBase64Strict('AAE=')!)).toBe('0001')
    expect(hex(decodeBase64Strict('AAEC')!)).toBe('000102')
    expect(decodeBase64Strict('')).toEqual(new Uint8Array())
  })

  it('refuses set pad bits, missing padding, base64url and stray characters', () => {
    for (const s of ['AB==', 'AAF=', 'AA', 'AA=', '_w==', '-w==', 'AA==\n', ' AA==', 'AAAA====', 'A===']) {
      expect(decodeBase64Strict(s), s).toBeUndefined()
    }
  })
})

describe('splitDerSequence refusals, at an offset after a first element', () => {
  // A first element (an empty SEQUENCE) so that each message names offset 2.
  const first = bytes(0x30, 0x00)
  it.each([
    [bytes(0x04, 0x01, 0x00), 'DER element at offset 2 is not a SEQUENCE'],
    [bytes(0x30), 'DER element at offset 2 is truncated'],
    [bytes(0x30, 0x80), 'DER element at offset 2 uses indefinite length'],
    [bytes(0x30, 0x80, 0x00, 0x00), 'DER element at offset 2 uses indefinite length'],
    [bytes(0x30, 0x85, 0, 0, 0, 1, 0), 'DER element at offset 2 has an over-long length'],
    [bytes(0x30, 0x84, 0x01, 0x00, 0x00, 0x00), 'DER element at offset 2 is truncated'],
    [bytes(0x30, 0x84, 0x00, 0x00, 0x00, 0x80), 'DER element at offset 2 has a non-minimal length'],
    [bytes(0x30, 0x82, 0x01), 'DER element at offset 2 is truncated'],
    [bytes(0x30, 0x81), 'DER element at offset 2 is truncated'],
    [bytes(0x30, 0x81, 0x05), 'DER element at offset 2 has a non-minimal length'],
    [bytes(0x30, 0x81, 0x80), 'DER element at offset 2 is truncated'],
    [cat(bytes(0x30, 0x81, 0x7f), new Uint8Array(0x7f)), 'DER element at offset 2 has a non-minimal length'],
    [cat(bytes(0x30, 0x82, 0x00, 0x80), new Uint8Array(0x80).fill(1)), 'DER element at offset 2 has a non-minimal length'],
    [cat(bytes(0x30, 0x83, 0x00, 0x01, 0x00), new Uint8Array(0x100).fill(1)), 'DER element at offset 2 has a non-minimal length'],
    [bytes(0x30, 0x05, 0x01, 0x02), 'DER element at offset 2 is truncated'],
    [cat(bytes(0x30, 0x81, 0x80), new Uint8Array(0x7f)), 'DER element at offset 2 is truncated'],
  ])('refusal case %#', (rest, message) => {
    expect(refusal(() => splitDerSequence(cat(first, rest)))).toEqual([INVALID, message])
  })

  it('the first element is at offset 0', () => {
    expect(refusal(() => splitDerSequence(bytes(0x31, 0x00)))).toEqual([INVALID, 'DER element at offset 0 is not a SEQUENCE'])
  })
})

describe('splitDerSequence splits at each length form', () => {
  it('short form up to 127 content bytes', () => {
    const a = bytes(0x30, 0x00)
    const b = cat(bytes(0x30, 0x7f), new Uint8Array(0x7f).fill(2))
    const c = bytes(0x30, 0x01, 0x05)
    const parts = splitDerSequence(cat(a, b, c))
    expect(parts.map(hex)).toEqual([a, b, c].map(hex))
  })

  it('long form with one, two and three length bytes', () => {
    const one = cat(bytes(0x30, 0x81, 0x80), new Uint8Array(0x80).fill(1))
    const two = cat(bytes(0x30, 0x82, 0x01, 0x00), new Uint8Array(0x100).fill(2))
    const twoNoZeroContent = cat(bytes(0x30, 0x82, 0x01, 0x01), new Uint8Array(0x101).fill(3))
    const three = cat(bytes(0x30, 0x83, 0x01, 0x00, 0x00), new Uint8Array(0x10000).fill(4))
    const parts = splitDerSequence(cat(one, two, twoNoZeroContent, three))
    expect(parts.map((p) => p.length)).toEqual([one.length, two.length, twoNoZeroContent.length, three.length])
    expect(parts.map(hex)).toEqual([one, two, twoNoZeroContent, three].map(hex))
  })

  it('a real certificate and nothing', () => {
    expect(splitDerSequence(cat(ca, ca)).map(hex)).toEqual([ca, ca].map(hex))
    expect(splitDerSequence(new Uint8Array())).toEqual([])
  })
})

describe('parseCertificate', () => {
  it('refuses empty input and anything not starting with a SEQUENCE tag, before node reads it', () => {
    expect(refusal(() => parseCertificate(new Uint8Array(), 'cert 3'))).toEqual([INVALID, 'cert 3 is not a DER certificate'])
    // node:crypto would read PEM text; the DER check refuses it.
    const pem = new TextEncoder().encode(new X509Certificate(ca).toString())
    expect(refusal(() => parseCertificate(pem, 'cert 3'))).toEqual([INVALID, 'cert 3 is not a DER certificate'])
  })

  it('a SEQUENCE that is not a certificate cannot be parsed, with the cause kept', () => {
    const err = thrown(() => parseCertificate(bytes(0x30, 0x03, 0x02, 0x01, 0x01), 'cert 3'))
    expect([err.code, err.message]).toEqual([INVALID, 'cert 3 cannot be parsed'])
    expect(err.cause).toBeInstanceOf(Error)
  })

  it('parses a DER certificate', () => {
    expect(parseCertificate(ca, 'cert').ca).toBe(true)
  })
})

describe('toPemBlock line breaking', () => {
  const body = (n: number) => toPemBlock('X', new Uint8Array(n)).split('\n').slice(1, -2)
  it('48 bytes make exactly one 64-character line', () => {
    expect(toPemBlock('X', new Uint8Array(48))).toBe(`-----BEGIN X-----\n${'A'.repeat(64)}\n-----END X-----\n`)
  })

  it('49 bytes make a full line and a short one', () => {
    expect(body(49).map((l) => l.length)).toEqual([64, 4])
  })

  it('96 bytes make two full lines and no empty one', () => {
    expect(body(96).map((l) => l.length)).toEqual([64, 64])
  })
})

describe('parsePemBlocks refusals', () => {
  const ok = (label: string, b64 = 'AAEC') => `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`
  it.each([
    ['-----BEGIN CERTIFICATE\nAAEC\n', 'PEM block has a malformed BEGIN line'],
    [`${ok('A')}-----BEGIN CERTIFICATE\nAAEC\n`, 'PEM block has a malformed BEGIN line'],
    [ok('certificate'), 'PEM block has a malformed label'],
    [ok(' CERTIFICATE'), 'PEM block has a malformed label'],
    [ok('CERTIFICATEx'), 'PEM block has a malformed label'],
    [ok('CERT-X'), 'PEM block has a malformed label'],
    [ok(''), 'PEM block has a malformed label'],
    [ok('A'.repeat(65)), 'PEM block has a malformed label'],
    ['-----BEGIN A-----\nAAEC\n', 'PEM block "A" has no END line'],
    ['-----BEGIN A-----\nAAEC\n-----END B-----\n', 'PEM block "A" has no END line'],
    ['-----BEGIN A-----\nAAEC\n-----BEGIN B-----\nAAEC\n-----END A-----\n', 'PEM block "A" is malformed'],
    ['-----BEGIN A-----\nProc-Type: 4,ENCRYPTED\n\nAAEC\n-----END A-----\n', 'PEM block "A" has headers'],
    [ok('A', '!!!!'), 'PEM block "A" has invalid base64'],
    [ok('A', 'AB=='), 'PEM block "A" has invalid base64'],
    [ok('A', ''), 'PEM block "A" has invalid base64'],
    [`${ok('A')}${ok('B', 'AAE')}`, 'PEM block "B" has invalid base64'],
  ])('refusal case %#', (text, message) => {
    expect(refusal(() => parsePemBlocks(text))).toEqual([INVALID, message])
  })
})

describe('parsePemBlocks reading', () => {
  it('reads labels of one and of 64 characters, with spaces and digits', () => {
    const long = `A${' B'.repeat(31)}C`
    expect(long).toHaveLength(64)
    const text = `-----BEGIN A-----\nAA==\n-----END A-----\n-----BEGIN ${long}-----\nAAE=\n-----END ${long}-----\n-----BEGIN X509 CRL-----\nAAEC\n-----END X509 CRL-----\n`
    expect(parsePemBlocks(text).map((b) => [b.label, hex(b.der)])).toEqual([
      ['A', '00'],
      [long, '0001'],
      ['X509 CRL', '000102'],
    ])
  })

  it('reads blocks with short bodies one after the other, each once', () => {
    const text = '-----BEGIN A-----\nAA==\n-----END A-----\n-----BEGIN B-----\nAQ==\n-----END B-----\n'
    expect(parsePemBlocks(text).map((b) => [b.label, hex(b.der)])).toEqual([
      ['A', '00'],
      ['B', '01'],
    ])
  })

  it('a body that starts on the BEGIN line is read once, the search going on after the END line', () => {
    // Searching again from before the END line would find "-----BEGIN AAA" at the end of the BEGIN line.
    const blocks = parsePemBlocks('-----BEGIN A-----BEGIN AAA\n-----END A-----\n')
    expect(blocks.map((b) => [b.label, Buffer.from(b.der).toString('base64')])).toEqual([['A', 'BEGINAAA']])
  })

  it('skips text around blocks and strips spaces, tabs and CRLF inside the body', () => {
    const text = 'before\n-----BEGIN A-----\r\n AA\tEC \r\n-----END A-----\nbetween\n-----BEGIN A-----\nAQ==\n-----END A-----after'
    expect(parsePemBlocks(text).map((b) => hex(b.der))).toEqual(['000102', '01'])
    expect(parsePemBlocks('no blocks here')).toEqual([])
  })
})

describe('importPublicJwk refusals', () => {
  const ec = makeJwk('ec-p256')
  it.each([
    [{ ...ec.priv }, 'key 2 contains private or secret key material'],
    [{ ...ec.pub, k: 'AA' }, 'key 2 contains private or secret key material'],
    [{ kty: 'RSA', n: 'AQAB', e: 'AQAB', qi: 'AA' }, 'key 2 contains private or secret key material'],
    [{ kty: 'oct' }, 'key 2 is not an asymmetric public key'],
    [{ kty: 'toString' }, 'key 2 is not an asymmetric public key'],
    [{ kty: 5 }, 'key 2 is not an asymmetric public key'],
    // A non-string kty whose property key is a known type.
    [{ kty: ['EC'], crv: 'P-256', x: ec.pub.x, y: ec.pub.y }, 'key 2 is not an asymmetric public key'],
    [{}, 'key 2 is not an asymmetric public key'],
    [{ kty: 'EC', crv: 'P-256', x: ec.pub.x }, 'key 2 has no string "y" member'],
    [{ kty: 'EC', crv: 'P-256', x: ec.pub.x, y: 5 }, 'key 2 has no string "y" member'],
    [{ kty: 'RSA', e: 'AQAB' }, 'key 2 has no string "n" member'],
    [{ kty: 'OKP', x: 'AA' }, 'key 2 has no string "crv" member'],
  ])('refusal case %#', (jwk, message) => {
    expect(refusal(() => importPublicJwk(jwk as Record<string, unknown>, 'key 2'))).toEqual([INVALID, message])
  })

  it('a key node cannot import is refused with the cause kept', () => {
    const err = thrown(() => importPublicJwk({ kty: 'EC', crv: 'P-256', x: 'AA', y: 'AA' }, 'key 2'))
    expect([err.code, err.message]).toEqual([INVALID, 'key 2 cannot be imported as a public key'])
    expect(err.cause).toBeInstanceOf(Error)
  })

  it('returns only the public members, and the key', () => {
    const { jwk, key } = importPublicJwk({ ...ec.pub, kid: 'k', use: 'sig', alg: 'ES256' }, 'key 2')
    expect(Object.entries(jwk)).toEqual([
      ['kty', 'EC'],
      ['crv', 'P-256'],
      ['x', ec.pub.x],
      ['y', ec.pub.y],
    ])
    expect(key.type).toBe('public')
  })
})

describe('canonicalPublicJwk', () => {
  it('a key node cannot export as a JWK is unsupported, with the cause kept', () => {
    // A Diffie-Hellman key (@types/node has no overload for the group option).
    const dh = generateKeyPairSync as unknown as (type: 'dh', opts: { group: string }) => { publicKey: KeyObject }
    const { publicKey } = dh('dh', { group: 'modp14' })
    const err = thrown(() => canonicalPublicJwk(publicKey, 'key 2'))
    expect([err.code, err.message]).toEqual([INVALID, 'key 2 has an unsupported key type'])
    expect(err.cause).toBeInstanceOf(Error)
  })

  it('a secret key is unsupported', () => {
    expect(refusal(() => canonicalPublicJwk(createSecretKey(Buffer.alloc(16, 1)), 'key 2'))).toEqual([INVALID, 'key 2 has an unsupported key type'])
  })

  // Exports node never makes, through a stand-in for the KeyObject.
  const fake = (jwk: Record<string, unknown>) => ({ export: () => jwk }) as unknown as KeyObject
  it.each([[{}], [{ kty: 'toString' }], [{ kty: 'oct', k: 'AA' }], [{ kty: 'EC', crv: 'P-256', x: 'AA', y: 5 }], [{ kty: 'RSA', n: 'AA' }]])(
    'an export without a known type or with a missing member is unsupported, case %#',
    (jwk) => {
      expect(refusal(() => canonicalPublicJwk(fake(jwk), 'key 2'))).toEqual([INVALID, 'key 2 has an unsupported key type'])
    },
  )

  it('keeps the members of each key type in order, and nothing else', () => {
    const okp = generateKeyPairSync('ed25519').publicKey
    const okpJwk = okp.export({ format: 'jwk' })
    expect(Object.entries(canonicalPublicJwk(okp, 'k'))).toEqual([
      ['kty', 'OKP'],
      ['crv', 'Ed25519'],
      ['x', okpJwk.x],
    ])
    expect(Object.keys(canonicalPublicJwk(fake({ kty: 'RSA', e: 'AQAB', n: 'AA', extra: 'z' }), 'k'))).toEqual(['kty', 'n', 'e'])
  })
})

describe('orderedJwk', () => {
  const ec = makeJwk('ec-p256').pub
  it('use and kid only when given, in SPIRE order', () => {
    expect(Object.keys(orderedJwk({}, ec))).toEqual(['kty', 'crv', 'x', 'y'])
    expect(Object.keys(orderedJwk({ kid: 'a' }, ec))).toEqual(['kty', 'kid', 'crv', 'x', 'y'])
    expect(Object.keys(orderedJwk({ use: 'u' }, ec))).toEqual(['use', 'kty', 'crv', 'x', 'y'])
    expect(Object.keys(orderedJwk({ use: 'u', kid: 'a' }, ec, { x5c: ['AA=='] }))).toEqual(['use', 'kty', 'kid', 'crv', 'x', 'y', 'x5c'])
  })

  it('drops members outside the key type', () => {
    expect(orderedJwk({ kid: 'a' }, { ...ec, alg: 'ES256', kid: 'b', use: 'sig' })).toStrictEqual({ kty: 'EC', kid: 'a', crv: 'P-256', x: ec.x, y: ec.y })
  })

  it('a key of another type keeps its own members, but not its use and kid', () => {
    const other = { kty: 'oct', use: 'enc', kid: 'inner', k: 'AA', alg: 'HS256' }
    expect(Object.entries(orderedJwk({}, other))).toEqual([
      ['kty', 'oct'],
      ['k', 'AA'],
      ['alg', 'HS256'],
    ])
    expect(Object.entries(orderedJwk({ use: 'jwt-svid', kid: 'outer' }, other, { x5c: [] }))).toEqual([
      ['use', 'jwt-svid'],
      ['kty', 'oct'],
      ['kid', 'outer'],
      ['k', 'AA'],
      ['alg', 'HS256'],
      ['x5c', []],
    ])
  })

  it('a key without kty keeps its members', () => {
    expect(Object.entries(orderedJwk({ kid: 'a' }, { x: 'AA' }))).toEqual([
      ['kty', undefined],
      ['kid', 'a'],
      ['x', 'AA'],
    ])
  })
})
