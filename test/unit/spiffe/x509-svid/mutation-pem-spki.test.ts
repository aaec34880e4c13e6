import { createHash, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { spkiKeyBits } from '../../../../src/spiffe/x509-svid/certificate-fields.js'
import { readPemBlocks, toPem } from '../../../../src/spiffe/x509-svid/pem.js'
import { keyIds, rememberSpki, spkiOf } from '../../../../src/spiffe/x509-svid/spki.js'

// pem.ts and spki.ts: the PEM reader's refusals (each returns undefined), the
// PEM writer's line breaks, and spkiOf's memo, refusals and byte-exact output
// (test/mutation-survivors.md, x509-svid). Titles stay plain: Stryker's vitest
// runner selects tests by name.

const block = (label: string, body: string, end = label) => `-----BEGIN ${label}-----\n${body}\n-----END ${end}-----\n`

describe('readPemBlocks', () => {
  it('reads every block, with its label, ignoring text around them', () => {
    const text = `junk\n${block('CERTIFICATE', 'AQID')}between\n${block('EC PRIVATE KEY', 'BA==')}after`
    expect(readPemBlocks(text)).toEqual([
      { label: 'CERTIFICATE', der: Uint8Array.of(1, 2, 3) },
      { label: 'EC PRIVATE KEY', der: Uint8Array.of(4) },
    ])
    expect(readPemBlocks('no blocks')).toEqual([])
    expect(readPemBlocks('')).toEqual([])
  })

  it('drops spaces, tabs and line breaks inside the body', () => {
    expect(readPemBlocks(block('X', ' AQ\tID\r\n AQ ID '))).toEqual([{ label: 'X', der: Uint8Array.of(1, 2, 3, 1, 2, 3) }])
  })

  it('refuses a block whose END label differs', () => {
    expect(readPemBlocks(block('CERTIFICATE', 'AQID', 'PRIVATE KEY'))).toBeUndefined()
  })

  it('refuses a body that is not strict base64', () => {
    for (const body of ['AQI*', 'AQ=D', 'A===', 'AQI', 'AQIDB', '', 'AB==', 'AQJ=', 'AQID\u000b']) {
      expect(readPemBlocks(block('CERTIFICATE', body))).toBeUndefined()
    }
    // A bad block after a good one refuses the whole text.
    expect(readPemBlocks(block('A', 'AQID') + block('B', 'AB=='))).toBeUndefined()
  })

  it('takes base64 with padding', () => {
    expect(readPemBlocks(block('A', 'AQ=='))).toEqual([{ label: 'A', der: Uint8Array.of(1) }])
    expect(readPemBlocks(block('A', 'AQI='))).toEqual([{ label: 'A', der: Uint8Array.of(1, 2) }])
    expect(readPemBlocks(block('A', '+/+/'))).toEqual([{ label: 'A', der: Uint8Array.of(0xfb, 0xff, 0xbf) }])
  })

  it('labels are 1 to 64 characters of A-Z, 0-9 and space', () => {
    expect(readPemBlocks(block('A'.repeat(64), 'AQID'))).toEqual([{ label: 'A'.repeat(64), der: Uint8Array.of(1, 2, 3) }])
    expect(readPemBlocks(block('A'.repeat(65), 'AQID'))).toEqual([])
    expect(readPemBlocks(block('lower', 'AQID'))).toEqual([])
  })
})

describe('toPem', () => {
  it('breaks the body every 64 characters, with no empty line', () => {
    const der48 = new Uint8Array(48).fill(0xff)
    expect(toPem('X', der48)).toBe(`-----BEGIN X-----\n${'/'.repeat(64)}\n-----END X-----\n`)
    const der49 = new Uint8Array(49).fill(0xff)
    expect(toPem('X', der49)).toBe(`-----BEGIN X-----\n${'/'.repeat(64)}\n/w==\n-----END X-----\n`)
    expect(toPem('X', new Uint8Array(0))).toBe('-----BEGIN X-----\n-----END X-----\n')
  })

  it('writes only the bytes of a view', () => {
    const buf = Uint8Array.of(9, 1, 2, 3, 9)
    expect(toPem('X', buf.subarray(1, 4))).toBe('-----BEGIN X-----\nAQID\n-----END X-----\n')
  })
})

describe('spkiOf', () => {
  const exported = (k: KeyObject) => k.export({ type: 'spki', format: 'der' })

  it('falls back to the SPKI encoder for other EC curves', () => {
    const k = createPublicKey(generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).privateKey)
    expect(spkiOf(k)).toEqual(exported(k))
  })

  it('gives the same bytes as OpenSSL for P-256, P-384, P-521 and RSA, twice', () => {
    for (const k of [
      generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey,
      generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey,
      generateKeyPairSync('ec', { namedCurve: 'P-521' }).publicKey,
      generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey,
    ]) {
      expect(spkiOf(k)).toEqual(exported(k))
      expect(spkiOf(k)).toBe(spkiOf(k))
    }
  })

  it('answers with remembered bytes', () => {
    const k = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey
    const fake = Uint8Array.of(0x30, 0x00)
    rememberSpki(k, fake)
    fake[1] = 9
    expect(spkiOf(k)).toEqual(Buffer.from([0x30, 0x00]))
  })

  it('TypeError for anything but a public key', () => {
    const err = new TypeError('publicKey must be a public KeyObject')
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    expect(() => spkiOf(privateKey)).toThrow(err)
    expect(() => spkiOf(null as never)).toThrow(err)
    expect(() => spkiOf('public' as never)).toThrow(err)
    expect(() => spkiOf(Object.assign(() => undefined, { type: 'public' }) as never)).toThrow(err)
  })

  it('TypeError naming an unsupported key type', () => {
    expect(() => spkiOf(generateKeyPairSync('ed25519').publicKey)).toThrow(new TypeError('unsupported public key type ed25519'))
    expect(() => spkiOf(generateKeyPairSync('x25519').publicKey)).toThrow(new TypeError('unsupported public key type x25519'))
    expect(() => spkiOf({ type: 'public' } as never)).toThrow(new TypeError('unsupported public key type ?'))
  })
})

describe('keyIds', () => {
  it('is the SPKI and the SHA-1 of the key bits, remembered', () => {
    const k = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey
    const ids = keyIds(k)
    expect(ids.spki).toEqual(k.export({ type: 'spki', format: 'der' }))
    expect(ids.ski).toEqual(createHash('sha1').update(spkiKeyBits(ids.spki)).digest())
    expect(keyIds(k)).toBe(ids)
  })
})
